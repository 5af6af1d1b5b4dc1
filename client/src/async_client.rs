//! The asynchronous client: many requests in flight, replies as they come, and a timeout per
//! request so that a reply that never comes is reported instead of waited for.
//!
//! It talks on a DEALER socket, so it writes the empty delimiter frame itself (spec 7: "clients
//! MAY use a DEALER socket ... In that case the clients MUST create the empty frame 0"):
//!
//! ```text
//! REQUEST  [""] ["MDPC01"] [service] [body...]     REPLY  [""] ["MDPC01"] [service] [body...]
//! ```
//!
//! # Matching replies to requests
//!
//! An MDP/0.1 REPLY carries the service name and the body, and nothing else: no request id. The
//! broker routes it to the client's socket and that is all the client learns. With several
//! workers per service, replies come back in any order (a slow worker's reply overtakes nobody,
//! a fast one's overtakes it), and after a fault a reply can come late (after the client gave
//! up on it) or twice (when a broker resends a dead worker's request and the worker was only
//! slow). So a client that keeps many requests in flight must choose what it promises. This one
//! offers two [`Matching`] strategies:
//!
//! * [`Matching::ByService`] (the default; works with any worker): a reply answers the **oldest
//!   outstanding request to the same service**. The count is always right: every request ends as
//!   exactly one [`Outcome`], a reply or a timeout, and a reply that no request of its service is
//!   waiting for is dropped (and counted in [`AsyncClient::dropped_replies`]). What it cannot know
//!   is which of several outstanding requests to the same service a reply answers: use it when
//!   the replies of one service are interchangeable (load, idempotent status queries), or use
//!   `ByTag`, or the synchronous [`crate::Client`].
//!
//!   One failure mode it does rule out: a late reply shifting every later match by one. When a
//!   request times out, its reply may still come, and would then be taken for the reply of a
//!   younger request, whose own reply would be taken for the next one, and so on for as long as
//!   requests keep flowing. So on a timeout the client retires its socket: new requests go out on
//!   a new socket (a new identity at the broker), the retired socket only collects replies for
//!   the requests it already carried, and it is closed as soon as none of them is outstanding, so
//!   the broker drops whatever still comes for it. A late reply can thus only be confused with a
//!   request that was in flight together with the one that timed out.
//!
//! * [`Matching::ByTag`] (exact; needs the worker's cooperation): the client puts an 8-byte
//!   request id (big-endian) as the first body frame, and a reply must start with that same frame,
//!   which the client removes before handing the body over. Any worker that echoes the request's
//!   first frame back first qualifies, e.g. the `echo` service. Each reply then finds its own
//!   request, and late, duplicate and unknown replies are all dropped.
//!
//! Timeouts are reported oldest first: every request has the same timeout, so the oldest
//! outstanding request is always the next to expire.
//!
//! # Resending
//!
//! By default a request is sent once: when its timeout passes it ends as [`Outcome::TimedOut`],
//! so that a load generator sees exactly what was lost. With [`AsyncClientConfig::retries`] above
//! 1 the client keeps a copy of each request's body and, when a try times out, sends the request
//! again (on the current socket, a new one after a timeout with `ByService`) with a fresh
//! timeout, up to that many tries in all, as the synchronous client does. Each try is a request
//! of its own on the wire (its own tag with `ByTag`), so a late reply to an abandoned try is
//! dropped like any other late reply: a request still ends as exactly one [`Outcome`], whose
//! `tries` says how many times it was sent. The latency of a reply counts from the first try.
//! Resending is for idempotent services: an abandoned try may still have run.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use log::{debug, info, log_enabled, warn, Level};
use mdp::{client::Reply, dump, Frames, ServiceName, CLIENT_HEADER};

use crate::{millis_until, open_socket, recv_rest, Error};

/// How replies are matched to requests; see the [module docs](self).
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
    /// [`crate::ClientConfig::retries`] counts them; see [Resending](self#resending).
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

/// Names one request sent by [`AsyncClient::send`]; ids increase in sending order.
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
    },
}

/// An asynchronous MDP client. See the [module docs](self).
pub struct AsyncClient {
    context: zmq::Context,
    endpoint: String,
    config: AsyncClientConfig,
    /// The socket new requests go out on.
    current: Connection,
    /// Sockets retired after a timeout (see the module docs): they only collect replies for the
    /// requests they carried, and are closed when none of those is outstanding.
    retired: Vec<Connection>,
    /// The next [`RequestId`].
    next_id: u64,
    /// The next try's number: it names the try's slot, and is its tag on the wire with `ByTag`.
    /// Equal to `next_id` until a request is resent.
    next_try: u64,
    outstanding: usize,
    dropped_replies: u64,
    resends: u64,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("endpoint", &self.endpoint)
            .field("config", &self.config)
            .field("retired_connections", &self.retired.len())
            .field("outstanding", &self.outstanding)
            .field("dropped_replies", &self.dropped_replies)
            .field("resends", &self.resends)
            .finish_non_exhaustive()
    }
}

/// Which of the client's sockets: the current one or a retired one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Current,
    Retired(usize),
}

/// One DEALER socket and the requests sent on it, oldest first.
struct Connection {
    socket: zmq::Socket,
    /// Requests in sending order. An answered request in the middle stays as a slot with
    /// `pending: None` until it reaches the front, so the front is always the oldest
    /// outstanding request and the ids stay sorted for binary search.
    in_flight: VecDeque<Slot>,
    outstanding: usize,
}

/// One try of a request.
struct Slot {
    /// The try's number (see `AsyncClient::next_try`); increasing along `in_flight`.
    id: u64,
    pending: Option<Pending>,
}

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
    fn open(context: &zmq::Context, endpoint: &str) -> Result<Connection, Error> {
        let socket = open_socket(context, zmq::DEALER, endpoint)?;
        // The caller bounds what is in flight (its window) and the timeout bounds how long it
        // stays, so ZeroMQ's own limits of 1000 queued messages would only get in the way: a
        // full send queue would block `send`, and a full receive queue makes the broker's ROUTER
        // drop replies.
        socket.set_sndhwm(0).map_err(Error::zmq("set SNDHWM"))?;
        socket.set_rcvhwm(0).map_err(Error::zmq("set RCVHWM"))?;
        Ok(Connection {
            socket,
            in_flight: VecDeque::new(),
            outstanding: 0,
        })
    }

    /// Takes the request in slot `index` off the books.
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

    /// Receives one whole message if one is waiting, without blocking.
    fn try_recv(&self) -> Result<Option<Frames>, Error> {
        match self.socket.recv_msg(zmq::DONTWAIT) {
            Ok(first) => recv_rest(&self.socket, first).map(Some),
            Err(zmq::Error::EAGAIN) => Ok(None),
            Err(source) => Err(Error::Zmq {
                action: "receive",
                source,
            }),
        }
    }
}

impl AsyncClient {
    /// Connects to the broker at `endpoint`. Returns at once; ZeroMQ connects in the background.
    pub fn connect(endpoint: &str, config: AsyncClientConfig) -> Result<AsyncClient, Error> {
        AsyncClient::with_context(&zmq::Context::new(), endpoint, config)
    }

    /// The same, with sockets made by the caller's ZeroMQ context.
    pub fn with_context(
        context: &zmq::Context,
        endpoint: &str,
        config: AsyncClientConfig,
    ) -> Result<AsyncClient, Error> {
        Ok(AsyncClient {
            current: Connection::open(context, endpoint)?,
            retired: Vec::new(),
            context: context.clone(),
            endpoint: endpoint.to_owned(),
            config,
            next_id: 0,
            next_try: 0,
            outstanding: 0,
            dropped_replies: 0,
            resends: 0,
        })
    }

    /// Sends a request without waiting for its reply. The body frames are sent as they are,
    /// without copying (with `retries` above 1, a copy is kept for resending); an empty body is
    /// sent as one empty frame (spec 7 wants at least one).
    pub fn send(&mut self, service: &ServiceName, body: Frames) -> Result<RequestId, Error> {
        let request = RequestId(self.next_id);
        let now = Instant::now();
        let pending = Pending {
            request,
            service: service.clone(),
            sent_at: now,
            first_sent_at: now,
            tries: 1,
            resend: (self.config.retries > 1).then(|| copy_frames(&body)),
        };
        self.transmit(pending, body)?;
        self.outstanding += 1;
        self.next_id += 1;
        Ok(request)
    }

    /// Sends one try of a request on the current socket and books it.
    fn transmit(&mut self, pending: Pending, body: Frames) -> Result<(), Error> {
        let try_number = self.next_try;
        let connection = &mut self.current;
        let service = &pending.service;
        let tag = match self.config.matching {
            Matching::ByTag => Some(zmq::Message::from(&try_number.to_be_bytes()[..])),
            Matching::ByService => None,
        };
        if log_enabled!(Level::Debug) {
            let mut shown: Vec<&[u8]> = vec![b"", CLIENT_HEADER, service.as_bytes()];
            shown.extend(tag.iter().map(|frame| &frame[..]));
            shown.extend(body.iter().map(|frame| &frame[..]));
            debug!("client -> broker: {}", dump::Message(&shown));
        }
        let socket = &connection.socket;
        let failed = Error::zmq("send the request");
        socket
            .send(zmq::Message::new(), zmq::SNDMORE)
            .map_err(failed)?;
        socket.send(CLIENT_HEADER, zmq::SNDMORE).map_err(failed)?;
        socket
            .send(service.as_bytes(), zmq::SNDMORE)
            .map_err(failed)?;
        let mut frames = tag.into_iter().chain(body).peekable();
        if frames.peek().is_none() {
            socket.send(zmq::Message::new(), 0).map_err(failed)?;
        }
        while let Some(frame) = frames.next() {
            let flags = if frames.peek().is_some() {
                zmq::SNDMORE
            } else {
                0
            };
            socket.send(frame, flags).map_err(failed)?;
        }
        connection.in_flight.push_back(Slot {
            id: try_number,
            pending: Some(pending),
        });
        connection.outstanding += 1;
        self.next_try += 1;
        Ok(())
    }

    /// Waits for the next outcome: a reply, or the oldest request timing out.
    /// [`Error::NothingOutstanding`] if no request is outstanding.
    pub fn recv(&mut self) -> Result<Outcome, Error> {
        if self.outstanding == 0 {
            return Err(Error::NothingOutstanding);
        }
        // With a request outstanding there is always a deadline, so this returns an outcome.
        self.next_outcome(None)?.ok_or(Error::NothingOutstanding)
    }

    /// Like [`AsyncClient::recv`], but gives up after `wait` and returns `None`; with nothing
    /// outstanding it just waits (late replies that arrive meanwhile are dropped).
    pub fn recv_timeout(&mut self, wait: Duration) -> Result<Option<Outcome>, Error> {
        self.next_outcome(Instant::now().checked_add(wait))
    }

    /// How many requests are waiting for their outcome.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// How many replies were dropped because no request was waiting for them (late, duplicate,
    /// or with an unknown tag) or because they were malformed.
    pub fn dropped_replies(&self) -> u64 {
        self.dropped_replies
    }

    /// How many times a request was sent again after a try timed out (see
    /// [Resending](self#resending)), over the client's life.
    pub fn resends(&self) -> u64 {
        self.resends
    }

    /// How many sockets are open: 1, plus retired ones still collecting replies (see the
    /// [module docs](self)).
    pub fn open_connections(&self) -> usize {
        1 + self.retired.len()
    }

    fn connection(&mut self, which: Which) -> &mut Connection {
        match which {
            Which::Current => &mut self.current,
            Which::Retired(index) => &mut self.retired[index],
        }
    }

    /// Every open socket with its name, the current one first.
    fn connections(&self) -> impl Iterator<Item = (Which, &Connection)> {
        std::iter::once((Which::Current, &self.current)).chain(
            self.retired
                .iter()
                .enumerate()
                .map(|(index, connection)| (Which::Retired(index), connection)),
        )
    }

    fn next_outcome(&mut self, give_up_at: Option<Instant>) -> Result<Option<Outcome>, Error> {
        loop {
            let now = Instant::now();
            if let Some(outcome) = self.expire_oldest(now)? {
                return Ok(Some(outcome));
            }
            // Drain before polling: with many requests in flight, replies are usually waiting
            // already, and a non-blocking receive is much cheaper than a poll.
            let mut received = None;
            for (which, connection) in self.connections() {
                if let Some(frames) = connection.try_recv()? {
                    received = Some((which, frames));
                    break;
                }
            }
            if let Some((which, frames)) = received {
                match self.match_reply(which, frames) {
                    Some(outcome) => return Ok(Some(outcome)),
                    None => continue,
                }
            }
            let next_expiry = self.next_expiry();
            let wake_at = match (next_expiry, give_up_at) {
                (Some(expiry), Some(give_up)) => Some(expiry.min(give_up)),
                (expiry, give_up) => expiry.or(give_up),
            };
            if give_up_at.is_some_and(|give_up| now >= give_up) {
                return Ok(None);
            }
            let timeout = wake_at.map_or(-1, |wake_at| millis_until(wake_at, now));
            let mut items: Vec<zmq::PollItem> = self
                .connections()
                .map(|(_, connection)| connection.socket.as_poll_item(zmq::POLLIN))
                .collect();
            match zmq::poll(&mut items, timeout) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(source) => {
                    return Err(Error::Zmq {
                        action: "poll",
                        source,
                    })
                }
            }
        }
    }

    /// When the oldest outstanding request times out, if any is outstanding.
    fn next_expiry(&self) -> Option<Instant> {
        self.connections()
            .filter_map(|(_, connection)| connection.oldest())
            .map(|pending| pending.sent_at + self.config.timeout)
            .min()
    }

    /// Handles the oldest outstanding tries whose time is up: resends each request that has
    /// tries left, and gives up the first one that has none.
    fn expire_oldest(&mut self, now: Instant) -> Result<Option<Outcome>, Error> {
        let timeout = self.config.timeout;
        loop {
            let oldest = self
                .connections()
                .filter_map(|(which, connection)| Some((which, connection.oldest()?.sent_at)))
                .min_by_key(|&(_, sent_at)| sent_at);
            let Some((which, sent_at)) = oldest else {
                return Ok(None);
            };
            if now < sent_at + timeout {
                return Ok(None);
            }
            let Some(mut pending) = self.connection(which).resolve(0) else {
                return Ok(None);
            };
            if which == Which::Current && self.config.matching == Matching::ByService {
                info!(
                    "request {} to {} timed out; later requests go on a new socket, so its late reply cannot be taken for theirs",
                    pending.request, pending.service
                );
                let fresh = Connection::open(&self.context, &self.endpoint)?;
                let retired = std::mem::replace(&mut self.current, fresh);
                if retired.outstanding > 0 {
                    self.retired.push(retired);
                }
                // else: dropped here, closing the socket, so the late reply dies at the broker.
            } else {
                self.close_if_drained(which);
            }
            let retries = self.config.retries.max(1);
            if pending.tries < retries {
                if let Some(body) = pending.resend.take() {
                    pending.tries += 1;
                    info!(
                        "no reply to request {} from {} within {timeout:?}, resending it (try {} of {retries})",
                        pending.request, pending.service, pending.tries
                    );
                    if pending.tries < retries {
                        pending.resend = Some(copy_frames(&body));
                    }
                    pending.sent_at = Instant::now();
                    self.transmit(pending, body)?;
                    self.resends += 1;
                    continue;
                }
            }
            self.outstanding -= 1;
            return Ok(Some(Outcome::TimedOut {
                id: pending.request,
                service: pending.service,
                tries: pending.tries,
            }));
        }
    }

    /// Finds the request a reply received on connection `index` answers, or drops the reply.
    fn match_reply(&mut self, which: Which, frames: Frames) -> Option<Outcome> {
        if log_enabled!(Level::Debug) {
            debug!("broker -> client: {}", dump::Message(&frames));
        }
        let mut reply = match Reply::parse(frames) {
            Ok(reply) => reply,
            Err(error) => {
                warn!("dropped a malformed reply from the broker: {error}");
                self.dropped_replies += 1;
                return None;
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
            Matching::ByTag => tag_of(&reply.body).and_then(|id| {
                let index = connection
                    .in_flight
                    .binary_search_by_key(&id, |slot| slot.id)
                    .ok()?;
                let pending = connection.in_flight[index].pending.as_ref()?;
                (pending.service == reply.service).then_some(index)
            }),
        };
        let Some(pending) = slot.and_then(|slot| connection.resolve(slot)) else {
            debug!(
                "dropped a reply from {} that no request is waiting for (late, duplicate or untagged)",
                reply.service
            );
            self.dropped_replies += 1;
            return None;
        };
        self.outstanding -= 1;
        if self.config.matching == Matching::ByTag {
            reply.body.remove(0);
        }
        let latency = pending.first_sent_at.elapsed();
        self.close_if_drained(which);
        Some(Outcome::Reply {
            id: pending.request,
            service: reply.service,
            body: reply.body,
            latency,
            tries: pending.tries,
        })
    }

    /// Closes connection `index` if it is retired and nothing it carried is outstanding: a late
    /// reply for it then dies at the broker's ROUTER.
    fn close_if_drained(&mut self, which: Which) {
        if let Which::Retired(index) = which {
            if self.retired[index].outstanding == 0 {
                self.retired.remove(index);
            }
        }
    }
}

/// A copy of each frame, for a later resend (sending consumes a message).
fn copy_frames(frames: &Frames) -> Frames {
    frames
        .iter()
        .map(|frame| zmq::Message::from(&frame[..]))
        .collect()
}

/// The try number in a tagged reply's first frame.
fn tag_of(body: &Frames) -> Option<u64> {
    let bytes: [u8; 8] = body.first()?[..].try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}
