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
//!
//! **Several brokers** ([`SyncCore::with_brokers`], known to the core by index): the core keeps
//! using the broker that last answered, and a try that times out moves it to the next broker in
//! the list ([`SyncCore::broker`] says which one a [`SyncAction::Reopen`] connects to). So a dead
//! broker costs one timeout, and with `retries` at least the number of brokers a request fails
//! only if none of them answered.
//!
//! **No connection at all**: the driver tells the core what the socket monitor says
//! ([`SyncCore::link`]). A request whose every try timed out without its socket ever being
//! connected fails with [`Error::NoConnection`] (the broker is not there, or the endpoint is
//! wrong), not [`Error::NoReply`] (the broker is there, the service did not answer).
//!
//! What is known of each broker's link outlives the socket: a [`SyncAction::Reopen`] is the
//! client's own choice and says nothing about the broker, so the new socket is taken to be as
//! the last one to that broker was (connected, refused, or not known yet) until its own monitor
//! says otherwise. Before, every new socket started "not connected", so a resend whose fresh
//! socket had not reported its handshake by the deadline was logged as "no connection to ..."
//! with the broker up and answering handshakes. A driver whose try timed out while the link is
//! still not known ([`SyncCore::link_known`]) should give the monitor a moment to say (a
//! handshake takes a few round trips; a refused connect is reported at once) before calling
//! [`SyncCore::tick`]: silence at the deadline is not evidence that nothing is there.

use std::time::{Duration, Instant};

use log::{debug, warn};
use mdp::client::{Reply, Request};
use mdp::{Frames, ServiceName};

use zsocket::credentials::Refusal;

use super::{at_least_one_frame, copy_frames, Link};
use crate::Error;

/// The target of this core's log lines: that of the driver they came from before the rules
/// moved here, so that `RUST_LOG` filters and the README's examples stay right.
const LOG_TARGET: &str = "client::sync_client";

/// The first wait before a broker that refused our handshake is tried again; it doubles on each
/// refusal up to [`REFUSAL_BACKOFF_MAX`], and falls back once a handshake succeeds.
pub const REFUSAL_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// The longest wait before a broker that refused our handshake is tried again.
pub const REFUSAL_BACKOFF_MAX: Duration = Duration::from_secs(5);

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
    /// Close the REQ socket (linger 0: what is queued in it is no longer wanted) and open a new
    /// one, connected to the broker [`SyncCore::broker`] names (the only one, unless the core
    /// was made [`SyncCore::with_brokers`]).
    Reopen,
    /// The request has ended: the reply body, or why there is none. The last action of a request.
    Done(Result<Frames, Error>),
}

/// The synchronous client's rules as a state machine, driven as the [`crate::core`] docs say;
/// the rules are explained in [`crate::sync_client`].
#[derive(Debug)]
pub struct SyncCore {
    config: ClientConfig,
    /// The brokers' names (their endpoints), for error messages; at least one.
    brokers: Vec<String>,
    /// The broker the current socket is connected to: the one that last answered, or the next
    /// after one that did not.
    broker: usize,
    /// What the monitors last said of each broker's connection (by index), over all the sockets
    /// to it: a socket replaced by the client inherits it.
    links: Vec<LinkState>,
    /// The request being waited for, if any.
    in_flight: Option<InFlight>,
    resends: u64,
    /// This client's number in its sockets' routing identities ([`mdp::tries`]).
    number: u64,
    /// How many sockets [`SyncCore::next_socket_identity`] has named.
    sockets: u32,
    /// Per broker: its last refusal of our handshake, while it is in force (until a handshake
    /// succeeds), and when it may be tried again.
    refused: Vec<Option<(Refusal, Instant)>>,
    /// Per broker: the wait after its next refusal.
    refusal_delay: Vec<Duration>,
    /// The driver closed the socket (after a refusal): the next send needs a
    /// [`SyncAction::Reopen`] first.
    socket_closed: bool,
}

/// What is known of the connection to one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// No monitor event yet.
    Unknown,
    /// The handshake succeeded, and no drop or refusal was seen since.
    Up,
    /// The connection dropped, or a connect was refused, and no handshake since.
    Down,
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
    /// Whether any try of it had its socket connected to a broker at some moment.
    saw_connection: bool,
    /// The brokers its tries went to, by index, in order, without repeats.
    tried: Vec<usize>,
    /// The refusals its tries met, in order.
    refusals: Vec<Refusal>,
}

impl SyncCore {
    /// A client with no request in flight.
    pub fn new(config: ClientConfig) -> SyncCore {
        SyncCore::with_brokers(config, vec!["the broker".to_owned()])
    }

    /// A client of several brokers, named (by their endpoints, for messages) in the order they
    /// are tried; the first is used first. An empty list counts as one unnamed broker.
    pub fn with_brokers(config: ClientConfig, mut brokers: Vec<String>) -> SyncCore {
        if brokers.is_empty() {
            brokers.push("the broker".to_owned());
        }
        let brokers_len = brokers.len();
        SyncCore {
            config,
            links: vec![LinkState::Unknown; brokers.len()],
            brokers,
            broker: 0,
            in_flight: None,
            resends: 0,
            number: rand::random(),
            sockets: 0,
            refused: vec![None; brokers_len],
            refusal_delay: vec![REFUSAL_BACKOFF_INITIAL; brokers_len],
            socket_closed: false,
        }
    }

    /// The same client with `number` in its sockets' identities instead of a random one: for a
    /// simulation that must replay exactly. Two clients of one broker must not share a number.
    pub fn with_number(mut self, number: u64) -> SyncCore {
        self.number = number;
        self
    }

    /// The routing identity to give the next REQ socket the driver opens, before it connects:
    /// `req:NUMBER:N` with N counting the sockets from 1 ([`mdp::tries`]). By it a broker knows
    /// that a request from socket N replaces whatever this client sent from an older socket and
    /// still waits in a queue, and can check that the socket is still connected before a worker
    /// spends time on its request: a try given up on does not run later.
    pub fn next_socket_identity(&mut self) -> Vec<u8> {
        self.sockets = self.sockets.saturating_add(1);
        mdp::tries::TryIdentity {
            client: self.number,
            socket: self.sockets,
        }
        .encode()
    }

    /// The broker (an index into the list given to [`SyncCore::with_brokers`]) that the current
    /// socket is connected to, and a [`SyncAction::Reopen`] connects to.
    pub fn broker(&self) -> usize {
        self.broker
    }

    /// The brokers' names, in order.
    pub fn brokers(&self) -> &[String] {
        &self.brokers
    }

    /// What the current socket's monitor said. A driver hands over what it read before calling
    /// [`SyncCore::tick`], so that the core knows, when a try times out, whether there was a
    /// connection at all.
    pub fn link(&mut self, _now: Instant, link: Link) {
        let state = match link {
            Link::Up => LinkState::Up,
            Link::Down => LinkState::Down,
        };
        if let Some(known) = self.links.get_mut(self.broker) {
            *known = state;
        }
        if state == LinkState::Up {
            // A handshake succeeded: whatever it refused before, the broker takes us now.
            if let Some(refused) = self.refused.get_mut(self.broker) {
                *refused = None;
            }
            if let Some(delay) = self.refusal_delay.get_mut(self.broker) {
                *delay = REFUSAL_BACKOFF_INITIAL;
            }
        }
        if state == LinkState::Up {
            if let Some(request) = &mut self.in_flight {
                request.saw_connection = true;
            }
        }
    }

    /// True once a monitor has said anything about the current broker's connection (up, or
    /// dropped or refused). While it is false, a try that times out cannot tell "no connection"
    /// from "not yet reported": see the [`crate::sync_client`] docs
    /// (silence is not evidence).
    pub fn link_known(&self) -> bool {
        self.link_state() != LinkState::Unknown
    }

    /// What is known of the current broker's connection.
    fn link_state(&self) -> LinkState {
        self.links
            .get(self.broker)
            .copied()
            .unwrap_or(LinkState::Unknown)
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
            self.reopen(out);
        }
        // A broker that refused our handshake is not asked again before its backoff: another
        // one is, or, if every broker is backing off, the request fails at once with what
        // they said.
        if let Some(broker) = self.available_broker(now) {
            if broker != self.broker {
                self.broker = broker;
                self.socket_closed = true;
            }
        } else {
            let refusals = self
                .refused
                .iter()
                .flatten()
                .map(|(refusal, _)| refusal.clone());
            out.push(SyncAction::Done(Err(Error::AuthRefused {
                refusals: refusals.collect(),
            })));
            return;
        }
        if std::mem::take(&mut self.socket_closed) {
            self.reopen(out);
        }
        let body = at_least_one_frame(body);
        let resend = (self.config.attempts() > 1).then(|| copy_frames(&body));
        out.push(SyncAction::Send(Request::encode(service, body)));
        self.in_flight = Some(InFlight {
            service: service.clone(),
            tries: 1,
            expires_at: now.checked_add(self.config.timeout),
            resend,
            // What is known already counts when the try times out, unless the monitor has
            // said otherwise by then: a request that started on a socket taken to be connected,
            // whose connect was then refused, saw no connection.
            saw_connection: false,
            tried: vec![self.broker],
            refusals: Vec::new(),
        });
    }

    /// The broker to use at `now`: the current one unless it refused us and its backoff has
    /// not passed, else the next in the list that may be tried; `None` if none may.
    fn available_broker(&self, now: Instant) -> Option<usize> {
        let count = self.brokers.len();
        (0..count)
            .map(|offset| (self.broker + offset) % count)
            .find(|&broker| {
                self.refused
                    .get(broker)
                    .and_then(Option::as_ref)
                    .is_none_or(|(_, retry_at)| now >= *retry_at)
            })
    }

    /// What the current socket's monitor said: the broker refused its handshake (wrong
    /// credentials, or a mechanism its endpoint does not take). The driver has closed that
    /// socket, which libzmq would otherwise retry every 100 ms; the core asks for a new one
    /// ([`SyncAction::Reopen`]) when it next sends. The broker is not tried again before a
    /// backoff (100 ms, doubling on each refusal up to 5 s, back to 100 ms after a handshake
    /// succeeds): a request started before then goes to another broker, or fails at once.
    ///
    /// A request in flight is not waited for any longer: a broker that refuses counts as down
    /// for it. With tries left and another broker that may be tried, it is resent there;
    /// otherwise it ends with [`Error::AuthRefused`], naming each refusal it met.
    pub fn refused(&mut self, now: Instant, refusal: Refusal, out: &mut Vec<SyncAction>) {
        let broker = self.broker;
        let delay = self
            .refusal_delay
            .get(broker)
            .copied()
            .unwrap_or(REFUSAL_BACKOFF_INITIAL);
        if let Some(next) = self.refusal_delay.get_mut(broker) {
            *next = (delay * 2).min(REFUSAL_BACKOFF_MAX);
        }
        let retry_at = now.checked_add(delay).unwrap_or(now);
        if let Some(slot) = self.refused.get_mut(broker) {
            *slot = Some((refusal.clone(), retry_at));
        }
        if let Some(known) = self.links.get_mut(broker) {
            *known = LinkState::Down;
        }
        self.socket_closed = true;
        let Some(request) = &mut self.in_flight else {
            debug!(target: LOG_TARGET, "{refusal} (no request in flight)");
            return;
        };
        request.refusals.push(refusal);
        let attempts = self.config.attempts();
        let next = if request.tries < attempts {
            self.available_broker(now)
        } else {
            None
        };
        let resend = next.and_then(|next| {
            let request = self.in_flight.as_mut()?;
            let body = request.resend.take()?;
            Some((next, body))
        });
        let Some((next, body)) = resend else {
            let Some(request) = self.in_flight.take() else {
                return;
            };
            out.push(SyncAction::Done(Err(Error::AuthRefused {
                refusals: request.refusals,
            })));
            return;
        };
        let timeout = self.config.timeout;
        let Some(request) = &mut self.in_flight else {
            return;
        };
        request.tries += 1;
        if request.tries < attempts {
            request.resend = Some(copy_frames(&body));
        }
        request.expires_at = now.checked_add(timeout);
        if !request.tried.contains(&next) {
            request.tried.push(next);
        }
        let (tries, frames) = (request.tries, Request::encode(&request.service, body));
        warn!(
            target: LOG_TARGET,
            "broker {} refused the handshake: resending through {} (try {tries} of {attempts})",
            self.brokers[broker], self.brokers[next]
        );
        self.resends += 1;
        self.broker = next;
        self.socket_closed = false;
        self.reopen(out);
        out.push(SyncAction::Send(frames));
    }

    /// True when the current broker's connection was last seen up: a driver may then wait for
    /// the reply alone, and read the monitor only when the try times out.
    pub fn link_up(&self) -> bool {
        self.link_state() == LinkState::Up
    }

    /// A new socket, to the current broker. Its link is taken to be what was last known of that
    /// broker (closing a socket is our choice, not news about the broker) until its own monitor
    /// speaks.
    fn reopen(&mut self, out: &mut Vec<SyncAction>) {
        self.socket_closed = false;
        out.push(SyncAction::Reopen);
    }

    /// After a try timed out: the next broker in the list, if there are several.
    /// Skips a broker that refused our handshake and whose backoff has not passed at `now`,
    /// unless every broker is such.
    fn next_broker(&mut self, now: Instant) {
        let previous = self.broker;
        self.broker = (self.broker + 1) % self.brokers.len();
        if let Some(available) = self.available_broker(now) {
            self.broker = available;
        }
        if self.broker != previous {
            debug!(
                target: LOG_TARGET,
                "moving from broker {} to broker {}",
                self.brokers[previous], self.brokers[self.broker]
            );
        }
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
        let link_up = self.links.get(self.broker) == Some(&LinkState::Up);
        request.saw_connection |= link_up;
        let what = if link_up {
            "no reply from"
        } else {
            "no connection to"
        };
        let failed_broker = self.broker;
        if request.tries < attempts {
            if let Some(body) = request.resend.take() {
                request.tries += 1;
                let tries = request.tries;
                if request.tries < attempts {
                    request.resend = Some(copy_frames(&body));
                }
                request.expires_at = now.checked_add(timeout);
                let frames = Request::encode(&request.service, body);
                let service = request.service.clone();
                self.resends += 1;
                self.next_broker(now);
                let broker = self.broker;
                if let Some(request) = &mut self.in_flight {
                    if !request.tried.contains(&broker) {
                        request.tried.push(broker);
                    }
                }
                if self.brokers.len() > 1 {
                    warn!(
                        target: LOG_TARGET,
                        "{what} broker {} within {timeout:?} ({service}), resending through {} (try {tries} of {attempts})",
                        self.brokers[failed_broker], self.brokers[broker]
                    );
                } else if link_up {
                    warn!(
                        target: LOG_TARGET,
                        "no reply from {service} within {timeout:?}, reconnecting and resending (try {tries} of {attempts})"
                    );
                } else {
                    warn!(
                        target: LOG_TARGET,
                        "no connection to {} within {timeout:?}, reconnecting and resending (try {tries} of {attempts})",
                        self.brokers[failed_broker]
                    );
                }
                // The REQ socket still waits for the abandoned reply and would refuse the send.
                self.reopen(out);
                out.push(SyncAction::Send(frames));
                return;
            }
        }
        let Some(request) = self.in_flight.take() else {
            return;
        };
        self.next_broker(now);
        // The REQ socket still waits for the abandoned reply and would refuse the next send.
        self.reopen(out);
        let error = if request.saw_connection {
            Error::NoReply {
                service: request.service,
                attempts,
                timeout,
            }
        } else {
            Error::NoConnection {
                brokers: request
                    .tried
                    .iter()
                    .filter_map(|&index| self.brokers.get(index).cloned())
                    .collect(),
                attempts,
                timeout,
            }
        };
        out.push(SyncAction::Done(Err(error)));
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
