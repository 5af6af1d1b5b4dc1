//! The asynchronous client's rules: many requests in flight, replies as they come, and a timeout
//! per request so that a reply that never comes is reported instead of waited for.
//!
//! It talks on DEALER sockets, so it writes the empty delimiter frame itself (spec 7: "clients
//! MAY use a DEALER socket ... In that case the clients MUST create the empty frame 0"):
//!
//! ```text
//! REQUEST  [""] ["MDPC01"] [service] [body...]     REPLY  [""] ["MDPC01"] [service] [body...]
//! ```
//!
//! The core names its sockets ([`ConnId`]) and tells its driver when to open and close them
//! ([`AsyncAction`]); requests go out on the *current* connection, and more than one is open only
//! while retired ones drain.
//!
//! **Several brokers** ([`AsyncCore::with_brokers`], known by index; each has its own current
//! connection): a request goes to the live broker with the fewest tries outstanding. A broker is
//! marked down when a try to it times out or its connection drops ([`AsyncCore::link`]); what it
//! held is resent through the others (within `retries`), and it is used again only once it
//! answers a probe: `mmi.service` for the service last asked of it, sent when its connection
//! comes back up, or one timeout after it went down (and every timeout after), answered `200`.
//! With one broker none of this happens: it is never marked down.
//!
//! The rules it keeps, and what they promise to the application, are explained for the user in
//! the [`crate::async_client`] module docs: matching by service or by tag, retiring the current
//! connection after a timeout with `ByService` (so a late reply cannot shift every later match),
//! timeouts oldest first, and resending within `retries`, each try a request of its own on the
//! wire. In short, every request given to [`AsyncCore::send`] ends as exactly one [`Outcome`],
//! and every reply that no request is waiting for is dropped and counted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mdp::client::{Reply, Request};
use mdp::{mmi, Frames, ServiceName};

use super::sync_core::{REFUSAL_BACKOFF_INITIAL, REFUSAL_BACKOFF_MAX};
use super::{at_least_one_frame, copy_frames, Link};
use zsocket::credentials::Refusal;
use zsocket::limit::LogLimit;

/// The target of this core's log lines: that of the driver they came from before the rules
/// moved here, so that `RUST_LOG` filters and the README's examples stay right.
const LOG_TARGET: &str = "client::async_client";

/// How replies are matched to requests; see the [`crate::async_client`] module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Matching {
    /// A reply answers the oldest outstanding request to its service. Works with any worker.
    #[default]
    ByService,
    /// Each request carries its id as its first body frame and the reply must echo it.
    ByTag,
}

/// Settings of the asynchronous client.
#[derive(Debug, Clone)]
pub struct AsyncClientConfig {
    /// How long a request waits for its reply before [`Outcome::TimedOut`]. Default 2500 ms.
    pub timeout: Duration,
    /// How replies are matched to requests. Default [`Matching::ByService`].
    pub matching: Matching,
    /// How many times a request is sent in all before [`Outcome::TimedOut`], counted as
    /// [`crate::ClientConfig::retries`] counts them; see [Resending](crate::async_client#resending).
    /// Default 1: no resends. 0 counts as 1.
    pub retries: u32,
}

impl Default for AsyncClientConfig {
    fn default() -> Self {
        AsyncClientConfig {
            timeout: Duration::from_millis(2500),
            matching: Matching::ByService,
            retries: 1,
        }
    }
}

/// Names one request given to [`AsyncCore::send`]; ids increase in sending order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How one request ended.
#[derive(Debug)]
pub enum Outcome {
    /// The reply came: its body, the time from the first try to receiving it, and how many
    /// times the request was sent (1 unless a try timed out and it was resent).
    Reply {
        /// The request's id, as [`AsyncCore::send`] returned it.
        id: RequestId,
        /// The service that answered, from the reply's header.
        service: ServiceName,
        /// The reply body, one frame or more (without the tag frame with [`Matching::ByTag`]).
        body: Frames,
        /// From the first send of the request to the arrival of this reply, across resends.
        latency: Duration,
        /// How many times the request was sent, 1 for a first-try answer.
        tries: u32,
        /// The broker that answered (an index into the list the core was made with; 0 with one
        /// broker).
        broker: usize,
    },
    /// No reply came to any of its `tries`, each within the timeout; the request is given up,
    /// and a reply that still comes for it is dropped.
    TimedOut {
        /// The request's id, as [`AsyncCore::send`] returned it.
        id: RequestId,
        /// The service the request was sent to.
        service: ServiceName,
        /// How many times the request was sent, every try timed out.
        tries: u32,
        /// True if the connection of its last try was never up while that try waited (the
        /// broker was not reached at all), as the driver's socket monitor said
        /// ([`AsyncCore::link`]).
        no_connection: bool,
        /// Set when the request was given up, before its timeout, because the broker refused
        /// our handshake ([`AsyncCore::refused`]): what it said and what to check.
        refused: Option<Refusal>,
    },
}

/// Names one of the client's connections (one DEALER socket); never reused, so a message that
/// arrives for a connection closed meanwhile is recognised as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// What the driver of an [`AsyncCore`] does, in the order given.
#[derive(Debug)]
pub enum AsyncAction {
    /// Open a DEALER socket for this connection and connect it to the broker
    /// ([`AsyncCore::broker_of`] says which, with several).
    Open(ConnId),
    /// Send these frames (delimiter first) on this connection's socket.
    Send {
        /// The connection whose socket sends them.
        conn: ConnId,
        /// The whole message, ready for a DEALER socket.
        frames: Frames,
    },
    /// Close this connection's socket (linger 0): nothing it carried is still wanted, and
    /// whatever still comes for it is dropped by the broker's ROUTER.
    Close(ConnId),
}

/// The asynchronous client's rules as a state machine, driven as the [`crate::core`] docs say;
/// what the rules promise is explained in [`crate::async_client`].
#[derive(Debug)]
pub struct AsyncCore {
    config: AsyncClientConfig,
    /// Whether the first connections' [`AsyncAction::Open`]s have been given.
    started: bool,
    /// The brokers, by index, each with the connection new requests to it go out on.
    brokers: Vec<Broker>,
    /// Connections retired after a timeout (see [`crate::async_client`]): they only collect replies for
    /// the requests they carried, and are closed when none of those is outstanding.
    retired: Vec<Connection>,
    next_conn: u64,
    /// The next [`RequestId`].
    next_id: u64,
    /// The next try's number: it names the try's slot, and is its tag on the wire with `ByTag`.
    /// Equal to `next_id` until a request is resent.
    next_try: u64,
    /// Requests whose outcome has not been taken by [`AsyncCore::pop_outcome`] yet.
    outstanding: usize,
    /// Outcomes decided but not yet taken, in the order they were decided.
    outcomes: VecDeque<Outcome>,
    dropped_replies: u64,
    /// With `ByTag`, replies dropped because they carried no tag this client sent.
    untagged_replies: u64,
    resends: u64,
    malformed_warnings: LogLimit,
}

/// One broker, as the core sees it.
#[derive(Debug)]
struct Broker {
    /// The connection new requests to it go out on.
    current: Connection,
    /// Marked down (only with several brokers): no new requests until a probe says it serves.
    down: bool,
    /// The service last asked of it: what a probe asks `mmi.service` about.
    last_service: Option<ServiceName>,
    /// A probe in flight: when it was sent.
    probe_sent_at: Option<Instant>,
    /// While down with no probe in flight: when the next probe goes.
    next_probe_at: Option<Instant>,
    /// Its refusal of our handshake, while in force: the current connection's socket is closed
    /// until `reopen_at`, and tries for it fail at once.
    refusal: Option<Refusal>,
    /// When a refused broker's connection is opened again.
    reopen_at: Option<Instant>,
    /// The wait after its next refusal.
    refusal_delay: Duration,
}

/// Which of the client's connections: a broker's current one or a retired one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Current(usize),
    Retired(usize),
}

/// One connection and the tries sent on it, oldest first.
#[derive(Debug)]
struct Connection {
    id: ConnId,
    /// The broker it is connected to.
    broker: usize,
    /// Tries in sending order. An answered try in the middle stays as a slot with
    /// `pending: None` until it reaches the front, so the front is always the oldest
    /// outstanding try and the numbers stay sorted for binary search.
    in_flight: VecDeque<Slot>,
    /// Slots with a `pending` try.
    outstanding: usize,
    /// Whether the connection is up, as the driver's monitor last said.
    up: bool,
    /// When it last went down after being up.
    last_up: Option<Instant>,
}

/// One try of a request.
#[derive(Debug)]
struct Slot {
    /// The try's number (see `AsyncCore::next_try`); increasing along `in_flight`.
    number: u64,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    request: RequestId,
    service: ServiceName,
    /// When this try was sent: it expires a timeout later.
    sent_at: Instant,
    /// When the first try was sent, for the latency.
    first_sent_at: Instant,
    /// How many times the request has been sent, this try included.
    tries: u32,
    /// A copy of the body for the next try, kept only while tries are left.
    resend: Option<Frames>,
}

impl Connection {
    fn new(id: ConnId, broker: usize) -> Connection {
        Connection {
            id,
            broker,
            in_flight: VecDeque::new(),
            outstanding: 0,
            up: false,
            last_up: None,
        }
    }

    /// True if the connection was up at some moment since `since`.
    fn up_since(&self, since: Instant) -> bool {
        self.up || self.last_up.is_some_and(|last_up| last_up >= since)
    }

    /// Takes the try in slot `index` off the books.
    fn resolve(&mut self, index: usize) -> Option<Pending> {
        let pending = self.in_flight.get_mut(index)?.pending.take()?;
        self.outstanding -= 1;
        while self
            .in_flight
            .front()
            .is_some_and(|slot| slot.pending.is_none())
        {
            self.in_flight.pop_front();
        }
        Some(pending)
    }

    fn oldest(&self) -> Option<&Pending> {
        self.in_flight
            .front()
            .and_then(|slot| slot.pending.as_ref())
    }
}

impl AsyncCore {
    /// A client of one broker with no request in flight; [`AsyncCore::start`] opens its first
    /// connection.
    pub fn new(config: AsyncClientConfig) -> AsyncCore {
        AsyncCore::with_brokers(config, 1)
    }

    /// A client of `brokers` brokers (at least 1), known by index 0, 1, ...; see the
    /// [`crate::core`] and the [`AsyncCore`] docs. Broker `b`'s first connection is `ConnId(b)`.
    pub fn with_brokers(config: AsyncClientConfig, brokers: usize) -> AsyncCore {
        let count = brokers.max(1);
        AsyncCore {
            config,
            started: false,
            brokers: (0..count)
                .map(|broker| Broker {
                    current: Connection::new(ConnId(broker as u64), broker),
                    down: false,
                    last_service: None,
                    probe_sent_at: None,
                    next_probe_at: None,
                    refusal: None,
                    reopen_at: None,
                    refusal_delay: REFUSAL_BACKOFF_INITIAL,
                })
                .collect(),
            retired: Vec::new(),
            next_conn: count as u64,
            next_id: 0,
            next_try: 0,
            outstanding: 0,
            outcomes: VecDeque::new(),
            dropped_replies: 0,
            untagged_replies: 0,
            resends: 0,
            malformed_warnings: LogLimit::default(),
        }
    }

    /// The settings it was made with.
    pub fn config(&self) -> &AsyncClientConfig {
        &self.config
    }

    /// How many brokers it uses.
    pub fn broker_count(&self) -> usize {
        self.brokers.len()
    }

    /// The broker connection `conn` is (or was last) connected to, while it is open.
    pub fn broker_of(&self, conn: ConnId) -> Option<usize> {
        let which = self.find(conn)?;
        Some(match which {
            Which::Current(broker) => broker,
            Which::Retired(index) => self.retired[index].broker,
        })
    }

    /// True if broker `broker` is marked down (see [`crate::async_client`]).
    pub fn is_down(&self, broker: usize) -> bool {
        self.brokers.get(broker).is_some_and(|broker| broker.down)
    }

    /// Opens the first connections, one per broker. Once; [`AsyncCore::send`] calls it if the
    /// driver did not.
    pub fn start(&mut self, out: &mut Vec<AsyncAction>) {
        if !self.started {
            self.started = true;
            for broker in &self.brokers {
                out.push(AsyncAction::Open(broker.current.id));
            }
        }
    }

    /// Sends a request on the current connection of the live broker with the fewest tries
    /// outstanding, and books it. The body frames go out as they are, without copying (with
    /// `retries` above 1, a copy is kept for resending); an empty body is sent as one empty frame
    /// (spec 7 wants at least one).
    pub fn send(
        &mut self,
        now: Instant,
        service: &ServiceName,
        body: Frames,
        out: &mut Vec<AsyncAction>,
    ) -> RequestId {
        self.start(out);
        let request = RequestId(self.next_id);
        self.next_id += 1;
        let pending = Pending {
            request,
            service: service.clone(),
            sent_at: now,
            first_sent_at: now,
            tries: 1,
            resend: (self.config.retries > 1).then(|| copy_frames(&body)),
        };
        self.transmit(pending, body, None, out);
        self.outstanding += 1;
        request
    }

    /// The broker for the next try: the only one, or the live one with the fewest tries
    /// outstanding (the lowest index among equals), other than `avoid` if another is live; when
    /// all are down, the one with the fewest outstanding.
    fn pick(&self, avoid: Option<usize>) -> usize {
        if self.brokers.len() == 1 {
            return 0;
        }
        let load = |broker: usize| {
            self.brokers[broker].current.outstanding
                + self
                    .retired
                    .iter()
                    .filter(|connection| connection.broker == broker)
                    .map(|connection| connection.outstanding)
                    .sum::<usize>()
        };
        let live = (0..self.brokers.len())
            .filter(|&broker| !self.brokers[broker].down && Some(broker) != avoid)
            .min_by_key(|&broker| load(broker));
        live.or_else(|| {
            (0..self.brokers.len())
                .filter(|&broker| !self.brokers[broker].down)
                .min_by_key(|&broker| load(broker))
        })
        .or_else(|| (0..self.brokers.len()).min_by_key(|&broker| load(broker)))
        .unwrap_or(0)
    }

    /// Sends one try of a request on the current connection of a broker chosen by
    /// [`AsyncCore::pick`], and books it.
    fn transmit(
        &mut self,
        pending: Pending,
        body: Frames,
        avoid: Option<usize>,
        out: &mut Vec<AsyncAction>,
    ) {
        let broker = self.pick(avoid);
        if let Some(refusal) = &self.brokers[broker].refusal {
            if self.brokers[broker].reopen_at.is_some() {
                // Its socket is closed until its backoff passes: nothing would carry the try.
                let refusal = refusal.clone();
                self.end_refused(pending, refusal);
                return;
            }
        }
        let number = self.next_try;
        self.next_try += 1;
        let body = match self.config.matching {
            Matching::ByTag => {
                let mut tagged = body;
                tagged.insert(0, zmq::Message::from(&number.to_be_bytes()[..]));
                tagged
            }
            Matching::ByService => at_least_one_frame(body),
        };
        let several = self.brokers.len() > 1;
        let target = &mut self.brokers[broker];
        out.push(AsyncAction::Send {
            conn: target.current.id,
            frames: Request::encode_for_dealer(&pending.service, body),
        });
        if several && target.last_service.as_ref() != Some(&pending.service) {
            target.last_service = Some(pending.service.clone());
        }
        target.current.in_flight.push_back(Slot {
            number,
            pending: Some(pending),
        });
        target.current.outstanding += 1;
    }

    /// A message arrived on connection `conn`: the reply it answers becomes an [`Outcome`] (see
    /// [`AsyncCore::pop_outcome`]); a malformed reply, or one that no request is waiting for
    /// (late, duplicate, unknown tag), is dropped and counted. A retired connection that has
    /// nothing outstanding any more is closed. A message for a connection already closed is
    /// dropped without a count, as its socket would have. A down broker's answer to its probe
    /// decides whether it is used again.
    pub fn handle(
        &mut self,
        now: Instant,
        conn: ConnId,
        frames: Frames,
        out: &mut Vec<AsyncAction>,
    ) {
        let Some(which) = self.find(conn) else {
            debug!(
                target: LOG_TARGET,
                "dropped a message for connection {conn:?}, which is closed"
            );
            return;
        };
        let mut reply = match Reply::parse(frames) {
            Ok(reply) => reply,
            Err(error) => {
                self.dropped_replies += 1;
                match self.malformed_warnings.allow(now) {
                    Some(0) => {
                        warn!(
                            target: LOG_TARGET,
                            "dropped a malformed reply from the broker: {error}"
                        )
                    }
                    Some(held_back) => warn!(
                        target: LOG_TARGET,
                        "dropped a malformed reply from the broker: {error} ({held_back} more since the last warning)"
                    ),
                    None => {
                        debug!(
                            target: LOG_TARGET,
                            "dropped a malformed reply from the broker: {error}"
                        )
                    }
                }
                return;
            }
        };
        if let Which::Current(broker) = which {
            if self.brokers[broker].probe_sent_at.is_some()
                && reply.service.as_bytes() == mmi::SERVICE
            {
                self.probe_answered(now, broker, &reply.body);
                return;
            }
        }
        let matching = self.config.matching;
        let next_try = self.next_try;
        let connection = self.connection(which);
        let broker = connection.broker;
        let slot = match matching {
            Matching::ByService => connection.in_flight.iter().position(|slot| {
                slot.pending
                    .as_ref()
                    .is_some_and(|pending| pending.service == reply.service)
            }),
            Matching::ByTag => tag_of(&reply.body).and_then(|number| {
                let index = connection
                    .in_flight
                    .binary_search_by_key(&number, |slot| slot.number)
                    .ok()?;
                let pending = connection.in_flight[index].pending.as_ref()?;
                (pending.service == reply.service).then_some(index)
            }),
        };
        let Some(pending) = slot.and_then(|slot| connection.resolve(slot)) else {
            // A tag this client never sent (or none at all): the worker did not echo it.
            if matching == Matching::ByTag
                && tag_of(&reply.body).is_none_or(|number| number >= next_try)
            {
                self.untagged_replies += 1;
            }
            debug!(
                target: LOG_TARGET,
                "dropped a reply from {} that no request is waiting for (late, duplicate or untagged)",
                reply.service
            );
            self.dropped_replies += 1;
            return;
        };
        if matching == Matching::ByTag {
            reply.body.remove(0);
        }
        self.outcomes.push_back(Outcome::Reply {
            id: pending.request,
            service: reply.service,
            body: reply.body,
            latency: now.saturating_duration_since(pending.first_sent_at),
            tries: pending.tries,
            broker,
        });
        self.close_if_drained(which, out);
    }

    /// A down broker answered its probe: `200` puts it back in use; anything else (`404`: no
    /// worker for the service there) keeps it down until the next probe, a timeout later.
    fn probe_answered(&mut self, now: Instant, broker: usize, body: &Frames) {
        let timeout = self.config.timeout;
        let target = &mut self.brokers[broker];
        target.probe_sent_at = None;
        let found = body
            .first()
            .is_some_and(|status| &status[..] == mmi::Status::Found.as_bytes());
        if found {
            target.down = false;
            target.next_probe_at = None;
            info!(
                target: LOG_TARGET,
                "broker {broker} answered its probe: back in use"
            );
        } else {
            target.next_probe_at = now.checked_add(timeout);
            debug!(
                target: LOG_TARGET,
                "broker {broker} answered its probe, but not 200: still down"
            );
        }
    }

    /// What connection `conn`'s socket monitor said. A driver hands over what it reads, so that
    /// a request that times out is reported with `no_connection` right, and (with several
    /// brokers) a broker whose current connection drops is marked down at once, and probed as
    /// soon as it is back. A message for a connection already closed is ignored.
    pub fn link(&mut self, now: Instant, conn: ConnId, link: Link, out: &mut Vec<AsyncAction>) {
        let Some(which) = self.find(conn) else {
            return;
        };
        if let (Link::Up, Which::Current(broker)) = (link, which) {
            let target = &mut self.brokers[broker];
            if target.refusal.take().is_some() {
                info!(
                    target: LOG_TARGET,
                    "broker {broker} accepted the handshake"
                );
            }
            target.refusal_delay = REFUSAL_BACKOFF_INITIAL;
        }
        let connection = self.connection(which);
        match link {
            Link::Up => connection.up = true,
            Link::Down => {
                if connection.up {
                    connection.last_up = Some(now);
                }
                connection.up = false;
            }
        }
        let Which::Current(broker) = which else {
            return;
        };
        if self.brokers.len() == 1 {
            return;
        }
        match link {
            Link::Down if !self.brokers[broker].down => {
                info!(
                    target: LOG_TARGET,
                    "the connection to broker {broker} dropped: marked down"
                );
                self.mark_down(now, broker, out);
            }
            Link::Up
                if self.brokers[broker].down && self.brokers[broker].probe_sent_at.is_none() =>
            {
                self.probe(now, broker, out);
            }
            _ => {}
        }
    }

    /// Marks `broker` down: what it holds with tries left is resent through the others (each a
    /// try of its own), and it gets a fresh connection (its late replies then die at its
    /// ROUTER), which the probe, a timeout from now, goes out on.
    fn mark_down(&mut self, now: Instant, broker: usize, out: &mut Vec<AsyncAction>) {
        let timeout = self.config.timeout;
        let retries = self.config.retries.max(1);
        {
            let target = &mut self.brokers[broker];
            target.down = true;
            target.probe_sent_at = None;
            target.next_probe_at = now.checked_add(timeout);
        }
        // Take out what can be resent, from its current and retired connections.
        let mut resend = Vec::new();
        let mut take = |connection: &mut Connection| {
            for index in 0..connection.in_flight.len() {
                let can_resend = connection.in_flight[index]
                    .pending
                    .as_ref()
                    .is_some_and(|pending| pending.tries < retries && pending.resend.is_some());
                if can_resend {
                    if let Some(pending) = connection.in_flight[index].pending.take() {
                        connection.outstanding -= 1;
                        resend.push(pending);
                    }
                }
            }
            while connection
                .in_flight
                .front()
                .is_some_and(|slot| slot.pending.is_none())
            {
                connection.in_flight.pop_front();
            }
        };
        take(&mut self.brokers[broker].current);
        for connection in self.retired.iter_mut().filter(|c| c.broker == broker) {
            take(connection);
        }
        self.replace_current(broker, out);
        let mut index = 0;
        while index < self.retired.len() {
            if self.retired[index].broker == broker && self.retired[index].outstanding == 0 {
                let closed = self.retired.remove(index);
                out.push(AsyncAction::Close(closed.id));
            } else {
                index += 1;
            }
        }
        for mut pending in resend {
            let Some(body) = pending.resend.take() else {
                continue;
            };
            info!(
                target: LOG_TARGET,
                "resending request {} to {} through another broker (try {} of {retries})",
                pending.request,
                pending.service,
                pending.tries + 1
            );
            self.resend(now, pending, body, broker, out);
        }
    }

    /// Ends the request of `pending` at once with the broker's refusal of our handshake.
    fn end_refused(&mut self, pending: Pending, refusal: Refusal) {
        self.outcomes.push_back(Outcome::TimedOut {
            id: pending.request,
            service: pending.service,
            tries: pending.tries,
            no_connection: false,
            refused: Some(refusal),
        });
    }

    /// Sends the next try of `pending` (its body `body`, taken out of it) through a broker other
    /// than `broker` if there is one, keeping a copy for the try after if it has one left.
    fn resend(
        &mut self,
        now: Instant,
        mut pending: Pending,
        body: Frames,
        broker: usize,
        out: &mut Vec<AsyncAction>,
    ) {
        pending.tries += 1;
        if pending.tries < self.config.retries.max(1) {
            pending.resend = Some(copy_frames(&body));
        }
        pending.sent_at = now;
        self.transmit(pending, body, Some(broker), out);
        self.resends += 1;
    }

    /// Sends `broker`'s probe: `mmi.service` for the service last asked of it, on its current
    /// connection. With no service ever asked of it there is nothing to ask about: it is used
    /// again at once.
    fn probe(&mut self, now: Instant, broker: usize, out: &mut Vec<AsyncAction>) {
        let target = &mut self.brokers[broker];
        let Some(service) = target.last_service.clone() else {
            target.down = false;
            target.next_probe_at = None;
            return;
        };
        let Ok(mmi_service) = ServiceName::new(mmi::SERVICE) else {
            return;
        };
        target.probe_sent_at = Some(now);
        target.next_probe_at = None;
        debug!(
            target: LOG_TARGET,
            "probing broker {broker}: mmi.service {service}"
        );
        out.push(AsyncAction::Send {
            conn: target.current.id,
            frames: Request::encode_for_dealer(
                &mmi_service,
                vec![zmq::Message::from(service.as_bytes())],
            ),
        });
    }

    /// What connection `conn`'s socket monitor said: the broker refused its handshake (wrong
    /// credentials, or a mechanism its endpoint does not take). Its socket is closed at once
    /// ([`AsyncAction::Close`]; libzmq would retry it every 100 ms) and a new one opened only
    /// after a backoff (100 ms, doubling on each refusal up to 5 s, back to 100 ms once a
    /// handshake succeeds). A broker that refuses counts as down: the tries it carried are
    /// resent through another broker if there is one and they have tries left, and end at once
    /// otherwise, as [`Outcome::TimedOut`] with `refused` set; while its socket is closed, a try
    /// that has no other broker to go to ends the same way.
    pub fn refused(
        &mut self,
        now: Instant,
        conn: ConnId,
        refusal: Refusal,
        out: &mut Vec<AsyncAction>,
    ) {
        let Some(which) = self.find(conn) else {
            return;
        };
        let retries = self.config.retries.max(1);
        let several = self.brokers.len() > 1;
        let broker = self.connection(which).broker;
        // Every try the connection carried: resent elsewhere, or ended now.
        let mut taken = Vec::new();
        {
            let connection = self.connection(which);
            connection.up = false;
            for slot in connection.in_flight.drain(..) {
                taken.extend(slot.pending);
            }
            connection.outstanding = 0;
        }
        match which {
            Which::Retired(index) => {
                let closed = self.retired.remove(index);
                out.push(AsyncAction::Close(closed.id));
            }
            Which::Current(_) => {
                let target = &mut self.brokers[broker];
                let delay = target.refusal_delay;
                target.refusal_delay = (delay * 2).min(REFUSAL_BACKOFF_MAX);
                target.refusal = Some(refusal.clone());
                target.reopen_at = Some(now.checked_add(delay).unwrap_or(now));
                if several {
                    target.down = true;
                    target.probe_sent_at = None;
                    target.next_probe_at = None;
                }
                out.push(AsyncAction::Close(target.current.id));
            }
        }
        for mut pending in taken {
            let resend = if several && pending.tries < retries {
                pending.resend.take()
            } else {
                None
            };
            let Some(body) = resend else {
                self.end_refused(pending, refusal.clone());
                continue;
            };
            info!(
                target: LOG_TARGET,
                "broker {broker} refused the handshake: resending request {} through another \
                 broker (try {} of {retries})",
                pending.request,
                pending.tries + 1
            );
            self.resend(now, pending, body, broker, out);
        }
    }

    /// The timed work: every try that has waited its timeout (at the deadline exactly, or later),
    /// oldest first, is resent if its request has tries left, and otherwise becomes an
    /// [`Outcome::TimedOut`]. With `ByService` a timeout on a current connection retires it
    /// (see [`crate::async_client`]); with several brokers it marks its broker down. Probes of
    /// down brokers go out when due. Calling it before [`AsyncCore::next_deadline`] does
    /// nothing.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<AsyncAction>) {
        let timeout = self.config.timeout;
        let retries = self.config.retries.max(1);
        let several = self.brokers.len() > 1;
        for broker in 0..self.brokers.len() {
            let target = &mut self.brokers[broker];
            if target.reopen_at.is_some_and(|reopen_at| now >= reopen_at) {
                // A new socket after a refusal's backoff; its handshake says whether the
                // refusal still stands (and with several brokers, its probe whether it serves).
                target.reopen_at = None;
                let fresh = Connection::new(ConnId(self.next_conn), broker);
                self.next_conn += 1;
                out.push(AsyncAction::Open(fresh.id));
                self.brokers[broker].current = fresh;
            }
        }
        while let Some((which, expires_at)) = self.oldest_expiry() {
            if now < expires_at {
                break;
            }
            let connection = self.connection(which);
            let broker = connection.broker;
            let Some(mut pending) = connection.resolve(0) else {
                break;
            };
            let no_connection = !connection.up_since(pending.sent_at);
            if several && !self.brokers[broker].down {
                info!(
                    target: LOG_TARGET,
                    "request {} to {} timed out at broker {broker}: marked down",
                    pending.request, pending.service
                );
                // Retires (or closes) the broker's connection, which is what ByService needs.
                self.mark_down(now, broker, out);
            } else if matches!(which, Which::Current(_))
                && self.config.matching == Matching::ByService
            {
                info!(
                    target: LOG_TARGET,
                    "request {} to {} timed out; later requests go on a new socket, so its late reply cannot be taken for theirs",
                    pending.request, pending.service
                );
                self.replace_current(broker, out);
            } else {
                self.close_if_drained(which, out);
            }
            if pending.tries < retries {
                if let Some(body) = pending.resend.take() {
                    info!(
                        target: LOG_TARGET,
                        "no reply to request {} from {} within {timeout:?}, resending it (try {} of {retries})",
                        pending.request, pending.service, pending.tries + 1
                    );
                    self.resend(now, pending, body, broker, out);
                    continue;
                }
            }
            self.outcomes.push_back(Outcome::TimedOut {
                id: pending.request,
                service: pending.service,
                tries: pending.tries,
                no_connection,
                refused: None,
            });
        }
        if several {
            for broker in 0..self.brokers.len() {
                let target = &self.brokers[broker];
                if !target.down {
                    continue;
                }
                let probe_expired = target
                    .probe_sent_at
                    .and_then(|sent_at| sent_at.checked_add(timeout))
                    .is_some_and(|expires_at| now >= expires_at);
                let probe_due = target.next_probe_at.is_some_and(|probe_at| now >= probe_at);
                if probe_expired || probe_due {
                    self.probe(now, broker, out);
                }
            }
        }
    }

    /// When [`AsyncCore::tick`] next has work to do: when the oldest outstanding try times out,
    /// or a down broker's probe is due or expires. `None` when nothing is in flight (or the
    /// timeout is too large to reach).
    pub fn next_deadline(&self) -> Option<Instant> {
        let expiry = self.oldest_expiry().map(|(_, expires_at)| expires_at);
        let reopen = self
            .brokers
            .iter()
            .filter_map(|broker| broker.reopen_at)
            .min();
        let expiry = match (expiry, reopen) {
            (Some(expiry), Some(reopen)) => Some(expiry.min(reopen)),
            (expiry, reopen) => expiry.or(reopen),
        };
        if self.brokers.len() == 1 {
            return expiry;
        }
        let timeout = self.config.timeout;
        self.brokers
            .iter()
            .filter(|broker| broker.down)
            .filter_map(|broker| {
                broker
                    .probe_sent_at
                    .and_then(|sent_at| sent_at.checked_add(timeout))
                    .or(broker.next_probe_at)
            })
            .chain(expiry)
            .min()
    }

    /// True while a broker's current connection is open and has not been seen up: a driver
    /// should then watch the monitors, so that a refused handshake is known at once
    /// ([`AsyncCore::refused`]), not at the next timeout.
    pub fn awaiting_handshake(&self) -> bool {
        self.brokers
            .iter()
            .any(|broker| broker.reopen_at.is_none() && !broker.current.up)
    }

    /// The next outcome decided by [`AsyncCore::handle`] or [`AsyncCore::tick`], oldest first.
    pub fn pop_outcome(&mut self) -> Option<Outcome> {
        let outcome = self.outcomes.pop_front()?;
        self.outstanding -= 1;
        Some(outcome)
    }

    /// How many requests have not had their outcome taken by [`AsyncCore::pop_outcome`]: those
    /// in flight and those whose outcome is decided but waiting.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// How many replies were dropped because no request was waiting for them (late, duplicate,
    /// or with an unknown tag) or because they were malformed.
    pub fn dropped_replies(&self) -> u64 {
        self.dropped_replies
    }

    /// With [`Matching::ByTag`], how many of the dropped replies carried no tag this client sent
    /// (none at all, or one it never used): the service does not echo the tag, so no reply can
    /// ever match. Counted in [`AsyncCore::dropped_replies`] too.
    pub fn untagged_replies(&self) -> u64 {
        self.untagged_replies
    }

    /// How many times a request was sent again after a try timed out, over the client's life.
    pub fn resends(&self) -> u64 {
        self.resends
    }

    /// How many connections are open: one per broker, plus retired ones still collecting
    /// replies (see [`crate::async_client`]).
    pub fn open_connections(&self) -> usize {
        self.brokers.len() + self.retired.len()
    }

    /// The connection new requests to the first broker go out on.
    pub fn current_connection(&self) -> ConnId {
        self.brokers[0].current.id
    }

    /// The oldest outstanding try of all connections and when it expires.
    fn oldest_expiry(&self) -> Option<(Which, Instant)> {
        let timeout = self.config.timeout;
        self.connections()
            .filter_map(|(which, connection)| {
                Some((which, connection.oldest()?.sent_at.checked_add(timeout)?))
            })
            .min_by_key(|&(_, expires_at)| expires_at)
    }

    fn find(&self, conn: ConnId) -> Option<Which> {
        if let Some(broker) = self
            .brokers
            .iter()
            .position(|broker| broker.current.id == conn)
        {
            return Some(Which::Current(broker));
        }
        self.retired
            .iter()
            .position(|connection| connection.id == conn)
            .map(Which::Retired)
    }

    fn connection(&mut self, which: Which) -> &mut Connection {
        match which {
            Which::Current(broker) => &mut self.brokers[broker].current,
            Which::Retired(index) => &mut self.retired[index],
        }
    }

    /// Every open connection with its name, the current ones first.
    fn connections(&self) -> impl Iterator<Item = (Which, &Connection)> {
        self.brokers
            .iter()
            .enumerate()
            .map(|(broker, target)| (Which::Current(broker), &target.current))
            .chain(
                self.retired
                    .iter()
                    .enumerate()
                    .map(|(index, connection)| (Which::Retired(index), connection)),
            )
    }

    /// Opens a new current connection for `broker`; the old one is retired if it still carries
    /// requests, closed if not.
    fn replace_current(&mut self, broker: usize, out: &mut Vec<AsyncAction>) {
        let fresh = Connection::new(ConnId(self.next_conn), broker);
        self.next_conn += 1;
        out.push(AsyncAction::Open(fresh.id));
        let retired = std::mem::replace(&mut self.brokers[broker].current, fresh);
        if retired.outstanding > 0 {
            self.retired.push(retired);
        } else {
            out.push(AsyncAction::Close(retired.id));
        }
    }

    /// Closes a retired connection that has nothing outstanding: a late reply for it then dies at
    /// the broker's ROUTER.
    fn close_if_drained(&mut self, which: Which, out: &mut Vec<AsyncAction>) {
        if let Which::Retired(index) = which {
            if self.retired[index].outstanding == 0 {
                let closed = self.retired.remove(index);
                out.push(AsyncAction::Close(closed.id));
            }
        }
    }
}

/// The try number in a tagged reply's first frame.
fn tag_of(body: &Frames) -> Option<u64> {
    let bytes: [u8; 8] = body.first()?[..].try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}
