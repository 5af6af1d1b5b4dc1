//! The asynchronous client: many requests in flight, replies as they come, and a timeout per
//! request so that a reply that never comes is reported instead of waited for.
//!
//! [`AsyncClient`] is a thin driver: its rules (the bookkeeping of what is in flight, matching,
//! timeouts, resends, which socket a request goes on) are those of the sans-IO
//! [`crate::core::AsyncCore`], and this module only opens, reads, writes and closes the DEALER
//! sockets the core asks for, and reads the clock. What the rules promise is explained here.
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
//! # Several brokers
//!
//! [`AsyncClient::connect_all`] opens one DEALER per broker. A request goes to the live broker
//! with the fewest requests outstanding; a broker whose try times out, or whose connection drops
//! (its socket monitor says so), is marked down: the tries it held are resent through the others
//! (within `retries`), and it gets no new request until it answers an `mmi.service` probe for
//! the service last asked of it with `200`. [`Outcome::Reply`] says which broker answered. With
//! one broker none of this runs: the monitors are read only when a deadline passes, and until
//! the first handshake is seen.
//!
//! # Credentials
//!
//! [`AsyncClient::with_credentials`] logs in to brokers with `--auth` (PLAIN or CURVE). A
//! handshake a broker refuses closes that socket at once and ends the requests it carried, as
//! [`Outcome::TimedOut`] with `refused` set (with several brokers, those with tries left go to
//! another broker); the broker gets a new socket only after a backoff (see
//! [`AsyncCore::refused`]).
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

use std::time::{Duration, Instant};

use log::{debug, log_enabled, Level};
use mdp::{dump, Frames, ServiceName};
use zsocket::credentials::{Credentials, Refusal};
use zsocket::monitor::Monitored;
use zsocket::ResultExt;

pub use crate::core::async_core::{AsyncClientConfig, Matching, Outcome, RequestId};
use crate::core::{AsyncAction, AsyncCore, ConnId, Link};
use crate::Error;

/// An asynchronous MDP client. See the [module docs](self).
pub struct AsyncClient {
    context: zmq::Context,
    /// The brokers' endpoints; the core names them by index.
    endpoints: Vec<String>,
    /// What the client proves to each broker, by index.
    credentials: Vec<Credentials>,
    core: AsyncCore,
    /// The open sockets, each with the connection the core knows it by and its monitor, oldest
    /// first (so the current connection, the one opened last, is at the end).
    sockets: Vec<(ConnId, Monitored)>,
    /// The core's actions, executed and emptied after each call into the core; kept so that its
    /// buffer is allocated once, not once per request.
    actions: Vec<AsyncAction>,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("endpoints", &self.endpoints)
            .field("config", self.core.config())
            .field("open_connections", &self.sockets.len())
            .field("outstanding", &self.core.outstanding())
            .field("dropped_replies", &self.core.dropped_replies())
            .field("resends", &self.core.resends())
            .finish_non_exhaustive()
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
        AsyncClient::with_brokers(context, &[endpoint], config)
    }

    /// Connects to several brokers and spreads requests over those that are live (see
    /// [`crate::core::AsyncCore`] for the rules). Every tcp host is looked up first.
    pub fn connect_all<E: AsRef<str>>(
        endpoints: &[E],
        config: AsyncClientConfig,
    ) -> Result<AsyncClient, Error> {
        AsyncClient::with_brokers(&zmq::Context::new(), endpoints, config)
    }

    /// The same, with sockets made by the caller's ZeroMQ context. An empty list is an
    /// [`Error::NoBroker`].
    pub fn with_brokers<E: AsRef<str>>(
        context: &zmq::Context,
        endpoints: &[E],
        config: AsyncClientConfig,
    ) -> Result<AsyncClient, Error> {
        AsyncClient::with_credentials(context, endpoints, config, Vec::new())
    }

    /// [`AsyncClient::with_brokers`], for brokers with `--auth`: `credentials` holds none (no
    /// credentials), one (the same for every broker) or one per endpoint, in their order. A
    /// handshake a broker refuses ends the requests it carried at once, as
    /// [`Outcome::TimedOut`] with `refused` set (or resends them through another broker); see
    /// [`AsyncCore::refused`] for the backoff.
    pub fn with_credentials<E: AsRef<str>>(
        context: &zmq::Context,
        endpoints: &[E],
        config: AsyncClientConfig,
        credentials: Vec<Credentials>,
    ) -> Result<AsyncClient, Error> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|endpoint| endpoint.as_ref().to_owned())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::NoBroker);
        }
        for endpoint in &endpoints {
            crate::check_host(endpoint)?;
        }
        let credentials = crate::per_broker(credentials, endpoints.len())?;
        let mut client = AsyncClient {
            context: context.clone(),
            core: AsyncCore::with_brokers(config, endpoints.len()),
            endpoints,
            credentials,
            sockets: Vec::with_capacity(2),
            actions: Vec::new(),
        };
        client.core.start(&mut client.actions);
        client.execute()?;
        Ok(client)
    }

    /// Sends a request without waiting for its reply. The body frames are sent as they are,
    /// without copying (with `retries` above 1, a copy is kept for resending); an empty body is
    /// sent as one empty frame (spec 7 wants at least one).
    pub fn send(&mut self, service: &ServiceName, body: Frames) -> Result<RequestId, Error> {
        let request = self
            .core
            .send(Instant::now(), service, body, &mut self.actions);
        self.execute()?;
        Ok(request)
    }

    /// Waits for the next outcome: a reply, or the oldest request timing out.
    /// [`Error::NothingOutstanding`] if no request is outstanding.
    pub fn recv(&mut self) -> Result<Outcome, Error> {
        if self.core.outstanding() == 0 {
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
        self.core.outstanding()
    }

    /// How many replies were dropped because no request was waiting for them (late, duplicate,
    /// or with an unknown tag) or because they were malformed.
    pub fn dropped_replies(&self) -> u64 {
        self.core.dropped_replies()
    }

    /// With [`Matching::ByTag`], how many dropped replies carried no tag this client sent: the
    /// service does not echo the tag (see [`AsyncCore::untagged_replies`]).
    pub fn untagged_replies(&self) -> u64 {
        self.core.untagged_replies()
    }

    /// How many times a request was sent again after a try timed out (see
    /// [Resending](self#resending)), over the client's life.
    pub fn resends(&self) -> u64 {
        self.core.resends()
    }

    /// How many sockets are open: 1, plus retired ones still collecting replies (see the
    /// [module docs](self)).
    pub fn open_connections(&self) -> usize {
        self.core.open_connections()
    }

    fn next_outcome(&mut self, give_up_at: Option<Instant>) -> Result<Option<Outcome>, Error> {
        loop {
            if let Some(outcome) = self.core.pop_outcome() {
                return Ok(Some(outcome));
            }
            let now = Instant::now();
            let several = self.endpoints.len() > 1;
            // With one broker the monitors are read only when a deadline passed, or until the
            // handshake is seen (a refused one ends the requests at once): whether a connection
            // was ever up matters only to a try that timed out, and the fast path stays as it
            // was. With several, a connection that drops marks its broker down.
            let watch = several || self.core.awaiting_handshake();
            if watch
                || self
                    .core
                    .next_deadline()
                    .is_some_and(|deadline| now >= deadline)
            {
                self.read_links(now);
            }
            self.core.tick(now, &mut self.actions);
            self.execute()?;
            if let Some(outcome) = self.core.pop_outcome() {
                return Ok(Some(outcome));
            }
            // Drain before polling: with many requests in flight, replies are usually waiting
            // already, and a non-blocking receive is much cheaper than a poll.
            if self.receive_waiting()? {
                continue;
            }
            if give_up_at.is_some_and(|give_up| now >= give_up) {
                return Ok(None);
            }
            let wake_at = match (self.core.next_deadline(), give_up_at) {
                (Some(expiry), Some(give_up)) => Some(expiry.min(give_up)),
                (expiry, give_up) => expiry.or(give_up),
            };
            // One socket is the rule (more only while retired ones drain): no list to build then.
            // With several brokers the monitors are waited on too, so that a connection that
            // drops marks its broker down at once.
            match &self.sockets[..] {
                [(_, only)] if !watch => zsocket::wait(&[only.socket()], None, wake_at, now)?,
                sockets => {
                    let mut waited: Vec<&zmq::Socket> =
                        sockets.iter().map(|(_, socket)| socket.socket()).collect();
                    if watch {
                        waited.extend(sockets.iter().map(|(_, socket)| socket.monitor().socket()));
                    }
                    zsocket::wait(&waited, None, wake_at, now)?
                }
            };
        }
    }

    /// The endpoint of the broker connection `conn` goes to.
    fn endpoint_of(&self, conn: ConnId) -> &str {
        self.core
            .broker_of(conn)
            .and_then(|broker| self.endpoints.get(broker))
            .map_or("", String::as_str)
    }

    /// The brokers' endpoints, in the order given; [`Outcome::Reply`]'s `broker` indexes it.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Hands what the sockets' monitors said to the core: links up and down, and refused
    /// handshakes (the core then closes that socket).
    fn read_links(&mut self, now: Instant) {
        let mut refusals: Vec<(ConnId, Refusal)> = Vec::new();
        for (conn, socket) in &self.sockets {
            let broker = self.core.broker_of(*conn).unwrap_or(0);
            for event in socket.pending() {
                let refusal = self.credentials.get(broker).and_then(|credentials| {
                    credentials.refusal(self.endpoints.get(broker)?, &event)
                });
                if let Some(refusal) = refusal {
                    refusals.push((*conn, refusal));
                    break;
                }
                if let Some(link) = Link::of(event.kind) {
                    self.core.link(now, *conn, link, &mut self.actions);
                }
            }
        }
        for (conn, refusal) in refusals {
            debug!("{refusal}: closing that socket");
            self.core.refused(now, conn, refusal, &mut self.actions);
        }
    }

    /// Receives one message if one is waiting on any socket, the current one first, and hands it
    /// to the core. True if there was one.
    fn receive_waiting(&mut self) -> Result<bool, Error> {
        let mut received = None;
        for (conn, socket) in self.sockets.iter().rev() {
            if let Some(frames) = zsocket::recv(socket.socket(), zmq::DONTWAIT)? {
                received = Some((*conn, frames));
                break;
            }
        }
        let Some((conn, frames)) = received else {
            return Ok(false);
        };
        if log_enabled!(Level::Debug) {
            debug!(
                "broker {} -> client: {}",
                self.endpoint_of(conn),
                dump::Message(&frames)
            );
        }
        // Read after the receive, for the latency of the reply.
        self.core
            .handle(Instant::now(), conn, frames, &mut self.actions);
        self.execute()?;
        Ok(true)
    }

    /// Does what the core asked, in order.
    fn execute(&mut self) -> Result<(), Error> {
        let mut actions = std::mem::take(&mut self.actions);
        let result = self.execute_these(&mut actions);
        // Kept, so that its buffer is allocated once.
        actions.clear();
        self.actions = actions;
        result
    }

    fn execute_these(&mut self, actions: &mut Vec<AsyncAction>) -> Result<(), Error> {
        for action in actions.drain(..) {
            match action {
                AsyncAction::Open(conn) => {
                    let socket = self.context.socket(zmq::DEALER).doing("create a socket")?;
                    socket.set_linger(0).doing("set ZMQ_LINGER")?;
                    // The caller bounds what is in flight (its window) and the timeout bounds how
                    // long it stays, so ZeroMQ's own limits of 1000 queued messages would only
                    // get in the way: a full send queue would block `send`, and a full receive
                    // queue makes the broker's ROUTER drop replies.
                    socket.set_sndhwm(0).doing("set ZMQ_SNDHWM")?;
                    socket.set_rcvhwm(0).doing("set ZMQ_RCVHWM")?;
                    let broker = self.core.broker_of(conn).unwrap_or(0);
                    if let Some(credentials) = self.credentials.get(broker) {
                        // Before connecting: libzmq fixes the mechanism when it connects.
                        credentials.apply(&socket)?;
                    }
                    let endpoint = self.endpoint_of(conn).to_owned();
                    let socket = Monitored::connect_socket(
                        &self.context,
                        socket,
                        &endpoint,
                        Link::events(),
                    )?;
                    self.sockets.push((conn, socket));
                }
                AsyncAction::Send { conn, frames } => {
                    if log_enabled!(Level::Debug) {
                        debug!(
                            "client -> broker {}: {}",
                            self.endpoint_of(conn),
                            dump::Message(&frames)
                        );
                    }
                    if let Some((_, socket)) = self.sockets.iter().find(|(id, _)| *id == conn) {
                        // Never blocking: a DEALER whose handshake failed has no pipe, and would
                        // wait for ever. A try it refuses waits out its timeout (or its
                        // broker's refusal, which the monitor reports).
                        match zsocket::send(socket.socket(), frames, zmq::DONTWAIT) {
                            Ok(()) => {}
                            Err(zsocket::SendError::Refused(refused))
                                if refused.error == zmq::Error::EAGAIN =>
                            {
                                debug!("connection {conn:?} took no request: it is refused");
                            }
                            Err(error) => return Err(zsocket::Error::from(error).into()),
                        }
                    }
                }
                AsyncAction::Close(conn) => {
                    // Dropping the socket closes it (linger 0).
                    self.sockets.retain(|(id, _)| *id != conn);
                }
            }
        }
        Ok(())
    }
}
