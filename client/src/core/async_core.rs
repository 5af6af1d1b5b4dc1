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
use mdp::{Frames, ServiceName};

use super::{at_least_one_frame, copy_frames, Link};
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
        id: RequestId,
        service: ServiceName,
        body: Frames,
        latency: Duration,
        tries: u32,
    },
    /// No reply came to any of its `tries`, each within the timeout; the request is given up,
    /// and a reply that still comes for it is dropped.
    TimedOut {
        id: RequestId,
        service: ServiceName,
        tries: u32,
        /// True if the connection of its last try was never up while that try waited (the
        /// broker was not reached at all), as the driver's socket monitor said
        /// ([`AsyncCore::link`]).
        no_connection: bool,
    },
}

/// Names one of the client's connections (one DEALER socket); never reused, so a message that
/// arrives for a connection closed meanwhile is recognised as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// What the driver of an [`AsyncCore`] does, in the order given.
#[derive(Debug)]
pub enum AsyncAction {
    /// Open a DEALER socket for this connection and connect it to the broker.
    Open(ConnId),
    /// Send these frames (delimiter first) on this connection's socket.
    Send { conn: ConnId, frames: Frames },
    /// Close this connection's socket (linger 0): nothing it carried is still wanted, and
    /// whatever still comes for it is dropped by the broker's ROUTER.
    Close(ConnId),
}

/// The asynchronous client's rules as a state machine, driven as the [`crate::core`] docs say;
/// what the rules promise is explained in [`crate::async_client`].
#[derive(Debug)]
pub struct AsyncCore {
    config: AsyncClientConfig,
    /// Whether the first connection's [`AsyncAction::Open`] has been given.
    started: bool,
    /// The connection new requests go out on.
    current: Connection,
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

/// Which of the client's connections: the current one or a retired one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Current,
    Retired(usize),
}

/// One connection and the tries sent on it, oldest first.
#[derive(Debug)]
struct Connection {
    id: ConnId,
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
    fn new(id: ConnId) -> Connection {
        Connection {
            id,
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
    /// A client with no request in flight; [`AsyncCore::start`] opens its first connection.
    pub fn new(config: AsyncClientConfig) -> AsyncCore {
        AsyncCore {
            config,
            started: false,
            current: Connection::new(ConnId(0)),
            retired: Vec::new(),
            next_conn: 1,
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

    /// Opens the first connection. Once; [`AsyncCore::send`] calls it if the driver did not.
    pub fn start(&mut self, out: &mut Vec<AsyncAction>) {
        if !self.started {
            self.started = true;
            out.push(AsyncAction::Open(self.current.id));
        }
    }

    /// Sends a request on the current connection and books it. The body frames go out as they
    /// are, without copying (with `retries` above 1, a copy is kept for resending); an empty body
    /// is sent as one empty frame (spec 7 wants at least one).
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
        self.transmit(pending, body, out);
        self.outstanding += 1;
        request
    }

    /// Sends one try of a request on the current connection and books it.
    fn transmit(&mut self, pending: Pending, body: Frames, out: &mut Vec<AsyncAction>) {
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
        out.push(AsyncAction::Send {
            conn: self.current.id,
            frames: Request::encode_for_dealer(&pending.service, body),
        });
        self.current.in_flight.push_back(Slot {
            number,
            pending: Some(pending),
        });
        self.current.outstanding += 1;
    }

    /// A message arrived on connection `conn`: the reply it answers becomes an [`Outcome`] (see
    /// [`AsyncCore::pop_outcome`]); a malformed reply, or one that no request is waiting for
    /// (late, duplicate, unknown tag), is dropped and counted. A retired connection that has
    /// nothing outstanding any more is closed. A message for a connection already closed is
    /// dropped without a count, as its socket would have.
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
        let matching = self.config.matching;
        let connection = self.connection(which);
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
                && tag_of(&reply.body).is_none_or(|number| number >= self.next_try)
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
        });
        self.close_if_drained(which, out);
    }

    /// What connection `conn`'s socket monitor said. A driver hands over what it read before
    /// calling [`AsyncCore::tick`], so that a request that times out is reported with
    /// `no_connection` right. A message for a connection already closed is ignored.
    pub fn link(&mut self, now: Instant, conn: ConnId, link: Link) {
        let Some(which) = self.find(conn) else {
            return;
        };
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
    }

    /// The timed work: every try that has waited its timeout (at the deadline exactly, or later),
    /// oldest first, is resent if its request has tries left, and otherwise becomes an
    /// [`Outcome::TimedOut`]. With `ByService` a timeout on the current connection retires it
    /// (see [`crate::async_client`]). Calling it before [`AsyncCore::next_deadline`] does nothing.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<AsyncAction>) {
        let timeout = self.config.timeout;
        let retries = self.config.retries.max(1);
        while let Some((which, expires_at)) = self.oldest_expiry() {
            if now < expires_at {
                return;
            }
            let connection = self.connection(which);
            let Some(mut pending) = connection.resolve(0) else {
                return;
            };
            let no_connection = !connection.up_since(pending.sent_at);
            if which == Which::Current && self.config.matching == Matching::ByService {
                info!(
                    target: LOG_TARGET,
                    "request {} to {} timed out; later requests go on a new socket, so its late reply cannot be taken for theirs",
                    pending.request, pending.service
                );
                self.retire_current(out);
            } else {
                self.close_if_drained(which, out);
            }
            if pending.tries < retries {
                if let Some(body) = pending.resend.take() {
                    pending.tries += 1;
                    info!(
                        target: LOG_TARGET,
                        "no reply to request {} from {} within {timeout:?}, resending it (try {} of {retries})",
                        pending.request, pending.service, pending.tries
                    );
                    if pending.tries < retries {
                        pending.resend = Some(copy_frames(&body));
                    }
                    pending.sent_at = now;
                    self.transmit(pending, body, out);
                    self.resends += 1;
                    continue;
                }
            }
            self.outcomes.push_back(Outcome::TimedOut {
                id: pending.request,
                service: pending.service,
                tries: pending.tries,
                no_connection,
            });
        }
    }

    /// When [`AsyncCore::tick`] next has work to do: when the oldest outstanding try times out.
    /// `None` when nothing is in flight (or the timeout is too large to reach).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.oldest_expiry().map(|(_, expires_at)| expires_at)
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

    /// How many connections are open: the current one, plus retired ones still collecting
    /// replies (see [`crate::async_client`]).
    pub fn open_connections(&self) -> usize {
        1 + self.retired.len()
    }

    /// The connection new requests go out on.
    pub fn current_connection(&self) -> ConnId {
        self.current.id
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
        if self.current.id == conn {
            return Some(Which::Current);
        }
        self.retired
            .iter()
            .position(|connection| connection.id == conn)
            .map(Which::Retired)
    }

    fn connection(&mut self, which: Which) -> &mut Connection {
        match which {
            Which::Current => &mut self.current,
            Which::Retired(index) => &mut self.retired[index],
        }
    }

    /// Every open connection with its name, the current one first.
    fn connections(&self) -> impl Iterator<Item = (Which, &Connection)> {
        std::iter::once((Which::Current, &self.current)).chain(
            self.retired
                .iter()
                .enumerate()
                .map(|(index, connection)| (Which::Retired(index), connection)),
        )
    }

    /// Opens a new current connection; the old one is retired if it still carries requests,
    /// closed if not.
    fn retire_current(&mut self, out: &mut Vec<AsyncAction>) {
        let fresh = Connection::new(ConnId(self.next_conn));
        self.next_conn += 1;
        out.push(AsyncAction::Open(fresh.id));
        let retired = std::mem::replace(&mut self.current, fresh);
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
