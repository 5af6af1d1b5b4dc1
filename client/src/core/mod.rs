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

pub use async_core::{AsyncAction, AsyncCore, ConnId};
pub use sync_core::{SyncAction, SyncCore};

/// What a connection's socket monitor said, as the cores need it: whether the broker is there.
/// A driver reads the monitor (`zsocket::monitor`) and hands each of these over; the cores use
/// them to tell "no connection to the broker at all" from "connected, but no reply", and (with
/// several brokers) to stop using a broker whose connection dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The connection is made and the ZMTP handshake done (`HANDSHAKE_SUCCEEDED`).
    Up,
    /// The connection ended (`DISCONNECTED`); libzmq tries again in the background.
    Down,
}

impl Link {
    /// The link change an event of a connecting socket's monitor means, if any.
    pub fn of(kind: zsocket::monitor::EventKind) -> Option<Link> {
        use zsocket::monitor::EventKind;
        match kind {
            EventKind::HandshakeSucceeded => Some(Link::Up),
            EventKind::Disconnected => Some(Link::Down),
            _ => None,
        }
    }

    /// The events a driver's monitor asks for: those [`Link::of`] reads, the failed handshakes
    /// (a broker refusing our credentials: see [`zsocket::credentials::Refusal`]), and nothing
    /// that comes every reconnect interval.
    pub fn events() -> zsocket::monitor::Events {
        use zsocket::monitor::{EventKind, Events};
        Events::of(&[
            EventKind::HandshakeSucceeded,
            EventKind::Disconnected,
            EventKind::HandshakeFailedAuth,
            EventKind::HandshakeFailedProtocol,
            EventKind::HandshakeFailedNoDetail,
        ])
    }
}

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

#[cfg(test)]
mod tests;
