//! The synchronous client's rules: one request at a time on a REQ socket, a timeout per try, and
//! spec 7's recovery when the timeout passes: close the socket, open a new one and send again, up
//! to [`ClientConfig::retries`] sends in all, then report [`Error::NoReply`].
//!
//! A REQ socket adds the empty delimiter frame to what it sends and strips it from what it
//! receives, so the frames of [`SyncAction::Send`] and of [`SyncCore::handle`] start at the
//! protocol header:
//!
//! ```text
//! REQUEST  ["MDPC01"] [service] [body...]      REPLY  ["MDPC01"] [service] [body...]
//! ```
//!
//! Why a new socket per try is explained in [`crate::sync_client`]: in short, the abandoned
//! socket takes the abandoned try's late reply with it. That is also why this core keeps no
//! bookkeeping of late replies: whatever arrives on the current socket answers the current try.

use std::time::{Duration, Instant};

use log::{debug, warn};
use mdp::client::{Reply, Request};
use mdp::{Frames, ServiceName};

use super::{at_least_one_frame, copy_frames};
use crate::Error;

/// The target of this core's log lines: that of the driver they came from before the rules
/// moved here, so that `RUST_LOG` filters and the README's examples stay right.
const LOG_TARGET: &str = "client::sync_client";

/// Timeout and retries of the synchronous client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long one try waits for the reply. Default 2500 ms, as the guide's mdcliapi.
    pub timeout: Duration,
    /// How many times a request is sent in all before [`Error::NoReply`]; counted as the
    /// guide's mdcliapi counts its `retries`: the default 3 is one send and two resends.
    /// 0 counts as 1.
    pub retries: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_millis(2500),
            retries: 3,
        }
    }
}

impl ClientConfig {
    /// How many tries a request gets: `retries`, at least 1.
    fn attempts(&self) -> u32 {
        self.retries.max(1)
    }
}

/// What the driver of a [`SyncCore`] does, in the order given.
#[derive(Debug)]
pub enum SyncAction {
    /// Send these frames on the REQ socket (which puts the empty delimiter in front).
    Send(Frames),
    /// Close the REQ socket (linger 0: what is queued in it is no longer wanted) and open and
    /// connect a new one.
    Reopen,
    /// The request has ended: the reply body, or why there is none. The last action of a request.
    Done(Result<Frames, Error>),
}

/// The synchronous client's rules as a state machine, driven as the [`crate::core`] docs say;
/// the rules are explained in [`crate::sync_client`].
#[derive(Debug)]
pub struct SyncCore {
    config: ClientConfig,
    /// The request being waited for, if any.
    in_flight: Option<InFlight>,
    resends: u64,
}

#[derive(Debug)]
struct InFlight {
    service: ServiceName,
    /// How many times it has been sent, this try included.
    tries: u32,
    /// When this try is given up; `None` for a timeout too large to add to an `Instant`.
    expires_at: Option<Instant>,
    /// A copy of the body for the next try, kept only while tries are left.
    resend: Option<Frames>,
}

impl SyncCore {
    /// A client with no request in flight.
    pub fn new(config: ClientConfig) -> SyncCore {
        SyncCore {
            config,
            in_flight: None,
            resends: 0,
        }
    }

    /// The settings it was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Starts a request to `service`: its first try is a [`SyncAction::Send`]. An empty `body` is
    /// sent as one empty frame, since spec 7 requires at least one.
    ///
    /// A request still in flight is abandoned without a [`SyncAction::Done`], after a
    /// [`SyncAction::Reopen`], because a REQ socket that is waiting for a reply refuses to send.
    /// (Only a driver that gave up on a request halfway, after a socket error, does this.)
    pub fn start(
        &mut self,
        now: Instant,
        service: &ServiceName,
        body: Frames,
        out: &mut Vec<SyncAction>,
    ) {
        if let Some(abandoned) = self.in_flight.take() {
            debug!(
                target: LOG_TARGET,
                "a new request abandons the one to {} still in flight",
                abandoned.service
            );
            out.push(SyncAction::Reopen);
        }
        let body = at_least_one_frame(body);
        let resend = (self.config.attempts() > 1).then(|| copy_frames(&body));
        out.push(SyncAction::Send(Request::encode(service, body)));
        self.in_flight = Some(InFlight {
            service: service.clone(),
            tries: 1,
            expires_at: now.checked_add(self.config.timeout),
            resend,
        });
    }

    /// A message arrived on the REQ socket: the reply to the request in flight (a REQ socket
    /// delivers nothing else), checked and handed over as [`SyncAction::Done`], or
    /// [`Error::InvalidReply`] / [`Error::WrongService`] if the broker broke spec 7. With no
    /// request in flight the message is dropped.
    pub fn handle(&mut self, _now: Instant, frames: Frames, out: &mut Vec<SyncAction>) {
        let Some(request) = self.in_flight.take() else {
            debug!(
                target: LOG_TARGET,
                "dropped a message that arrived with no request in flight"
            );
            return;
        };
        let result = match Reply::parse(frames) {
            Ok(reply) if reply.service == request.service => Ok(reply.body),
            Ok(reply) => Err(Error::WrongService {
                asked: request.service,
                replied: reply.service,
            }),
            Err(error) => Err(Error::InvalidReply(error)),
        };
        out.push(SyncAction::Done(result));
    }

    /// The timed work: when the try in flight has waited its timeout (at the deadline exactly, or
    /// later), a new socket and the next try, or, after the last, [`Error::NoReply`]. Calling it
    /// before [`SyncCore::next_deadline`] does nothing.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<SyncAction>) {
        let Some(request) = &mut self.in_flight else {
            return;
        };
        if request.expires_at.is_none_or(|expires_at| now < expires_at) {
            return;
        }
        let attempts = self.config.attempts();
        let timeout = self.config.timeout;
        if request.tries < attempts {
            if let Some(body) = request.resend.take() {
                request.tries += 1;
                warn!(
                    target: LOG_TARGET,
                    "no reply from {} within {timeout:?}, reconnecting and resending (try {} of {attempts})",
                    request.service, request.tries
                );
                if request.tries < attempts {
                    request.resend = Some(copy_frames(&body));
                }
                request.expires_at = now.checked_add(timeout);
                self.resends += 1;
                out.push(SyncAction::Reopen);
                out.push(SyncAction::Send(Request::encode(&request.service, body)));
                return;
            }
        }
        let Some(request) = self.in_flight.take() else {
            return;
        };
        // The REQ socket still waits for the abandoned reply and would refuse the next send.
        out.push(SyncAction::Reopen);
        out.push(SyncAction::Done(Err(Error::NoReply {
            service: request.service,
            attempts,
            timeout,
        })));
    }

    /// When [`SyncCore::tick`] next has work to do: the timeout of the try in flight. `None` with
    /// no request in flight (or a timeout too large to reach).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.in_flight
            .as_ref()
            .and_then(|request| request.expires_at)
    }

    /// True while a request waits for its [`SyncAction::Done`].
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// How many times a request was sent again after a try timed out, over the client's life.
    pub fn resends(&self) -> u64 {
        self.resends
    }
}
