//! The clients as state machines, with no sockets and no clock: everything the clients decide
//! (when a try has timed out, when to resend and on which socket, which request a reply answers,
//! what to drop) happens here, in the shape of the broker's core (`broker::core`).
//!
//! Each core is given the current time and one input (a request from the application, a message
//! from a socket, or just the time passing), appends what to do to an `out` list, and says when it
//! next needs to be woken ([`SyncCore::next_deadline`], [`AsyncCore::next_deadline`]). A driver
//! owns the sockets and the clock, executes the actions **in order**, feeds back what the sockets
//! receive, and calls `tick` when the deadline passes:
//!
//! * [`SyncCore`], one request at a time on a REQ socket; driven by [`crate::Client`].
//! * [`AsyncCore`], many requests in flight on DEALER sockets; driven by [`crate::AsyncClient`].
//!
//! Because nothing here blocks or reads the time, every timing rule is tested with a fake clock
//! (`core/tests/`), and the simulation of the whole system (crate `sim`) runs the same cores
//! against the real broker core over an in-memory model of the sockets.
//!
//! Frames are built and parsed only with `mdp`'s encoders and decoders
//! ([`mdp::client::Request::encode`], [`mdp::client::Request::encode_for_dealer`],
//! [`mdp::client::Reply::parse`]).

// Crate-visible for the configuration and outcome types they define, which the crate exports at
// its root (with the drivers that take them), not here.
pub(crate) mod async_core;
pub(crate) mod sync_core;

use std::time::{Duration, Instant};

pub use async_core::{AsyncAction, AsyncCore, ConnId};
pub use sync_core::{SyncAction, SyncCore};

use mdp::Frames;

/// A copy of each frame, for a later resend (sending consumes a message).
fn copy_frames(frames: &Frames) -> Frames {
    frames
        .iter()
        .map(|frame| zmq::Message::from(&frame[..]))
        .collect()
}

/// The body spec 7 wants: at least one frame, so an empty body becomes one empty frame.
fn at_least_one_frame(body: Frames) -> Frames {
    if body.is_empty() {
        vec![zmq::Message::new()]
    } else {
        body
    }
}

/// How often a warning that a peer can cause (a malformed reply) may be logged; those in between
/// go to the debug log and are counted in the next warning, so a broken broker cannot flood the
/// log. Once a second, as the worker core does for malformed messages.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// The rate limit of one kind of warning; see [`WARN_EVERY`].
#[derive(Debug, Default)]
struct WarnLimit {
    /// When the next warning may be logged; `None` before the first.
    next_at: Option<Instant>,
    /// Warnings sent to the debug log since the last one logged.
    held_back: u64,
}

impl WarnLimit {
    /// `Some(held back so far)` if a warning may be logged at `now` (and starts a new period);
    /// `None` if it should go to the debug log.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.next_at.is_some_and(|next_at| now < next_at) {
            self.held_back += 1;
            return None;
        }
        self.next_at = now.checked_add(WARN_EVERY);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests;
