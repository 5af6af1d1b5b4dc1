//! The synchronous client: one request at a time on a REQ socket, with spec 7's recommended
//! recovery: wait for the reply only up to a timeout instead of blocking, and on a timeout close
//! the socket, open a new one and resend; after the last try, report failure.
//!
//! [`Client`] is a thin driver: the rules (timeout, tries, when to take a new socket, what counts
//! as the reply) are those of the sans-IO [`crate::core::SyncCore`], and this module only sends,
//! receives, reopens the REQ socket and reads the clock.
//!
//! A REQ socket adds the empty delimiter frame to what we send and strips it from what we
//! receive, so the frames handled here start at the protocol header:
//!
//! ```text
//! REQUEST  ["MDPC01"] [service] [body...]      REPLY  ["MDPC01"] [service] [body...]
//! ```
//!
//! Closing the socket after a timeout is not only about a lost broker: a REQ socket that sent a
//! request and got no answer refuses to send again, and a new socket is a new identity at the
//! broker, so a late reply to the abandoned try is dropped by the broker's ROUTER instead of
//! arriving as the answer to the next request.
//!
//! Each socket is opened with a socket monitor (`zsocket::monitor`), read when a try times out,
//! so that a request to a broker that was never reached fails with [`Error::NoConnection`]
//! rather than [`Error::NoReply`], and waited on beside the socket until a handshake has been
//! seen, so that a broker that refuses our credentials ([`Client::with_credentials`]) fails the
//! request at once with [`Error::AuthRefused`]; once the link is up the client waits on its
//! socket alone, the cheaper wait. Silence is not evidence: when a try
//! times out before the monitor has said anything (a timeout shorter than the handshake, on a
//! loaded machine or a long path), the client waits up to [`LINK_GRACE`] for the monitor to say
//! "connected" or "refused" before it judges (a refused connect is reported at once, so only an
//! endpoint that drops packets pays the wait), and a socket the client replaced keeps what was
//! known of its broker (see [`crate::core::SyncCore`]). A tcp host name is looked up before
//! connecting ([`crate::check_host`]): one that does not resolve is [`Error::UnknownHost`] at
//! once. With several brokers ([`Client::connect_all`]) the client keeps using the broker that
//! last answered and moves to the next one when a try times out (see [`crate::core::SyncCore`]).

use std::time::{Duration, Instant};

use log::{debug, log_enabled, Level};
use mdp::{dump, mmi, Frames, ServiceName};
use zsocket::credentials::{Credentials, Refusal};
use zsocket::monitor::{EventKind, Events, Monitored};
use zsocket::ResultExt;

pub use crate::core::sync_core::ClientConfig;
use crate::core::{Link, SyncAction, SyncCore};
use crate::Error;

/// How long a try that timed out with its connection not yet reported waits for the socket
/// monitor before the client says "no connection": a ZMTP handshake is a few round trips, and a
/// refused connect is reported at once (see the [module docs](self)).
pub const LINK_GRACE: Duration = Duration::from_millis(250);

/// The monitor events the client reads: the handshake, a drop, and a connect that failed (libzmq
/// retries it after its reconnect interval; one such event per interval while nothing listens,
/// read at each timeout, dropped with the socket).
fn events() -> Events {
    Link::events().with(EventKind::ConnectRetried)
}

/// What an event means for the link: a failed connect is the broker's absence, as a drop is.
fn link_of(kind: EventKind) -> Option<Link> {
    match kind {
        EventKind::ConnectRetried => Some(Link::Down),
        other => Link::of(other),
    }
}

/// Opens a REQ socket to `endpoint` with the routing identity the core gives it
/// ([`SyncCore::next_socket_identity`]: a broker can tell a resend from it, see [`mdp::tries`]).
/// The socket gets `credentials` before it connects (libzmq fixes a connection's mechanism when
/// it is made).
fn open(
    context: &zmq::Context,
    endpoint: &str,
    credentials: &Credentials,
    core: &mut SyncCore,
) -> Result<Monitored, Error> {
    let socket = context.socket(zmq::REQ).doing("create a socket")?;
    socket.set_linger(0).doing("set ZMQ_LINGER")?;
    credentials.apply(&socket)?;
    socket
        .set_identity(&core.next_socket_identity())
        .doing("set ZMQ_ROUTING_ID")?;
    Ok(Monitored::connect_socket(
        context,
        socket,
        endpoint,
        events(),
    )?)
}

/// A synchronous MDP client: [`Client::send`] returns the reply or an error. See the
/// [crate docs](crate) and the [module docs](self).
pub struct Client {
    context: zmq::Context,
    /// The brokers' endpoints, in the order they are tried; the core names them by index.
    endpoints: Vec<String>,
    /// What the client proves to each broker, by index.
    credentials: Vec<Credentials>,
    /// `None` after a broker refused its handshake, until the next try needs a socket.
    socket: Option<Monitored>,
    core: SyncCore,
    /// The core's actions, executed and emptied after each call into the core.
    actions: Vec<SyncAction>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .field("config", self.core.config())
            .field("resends", &self.core.resends())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the broker at `endpoint` (e.g. `tcp://localhost:5555`). Returns at once:
    /// ZeroMQ connects in the background, and a request sent before the broker is up waits in
    /// the socket until it is (or until the timeout).
    pub fn connect(endpoint: &str, config: ClientConfig) -> Result<Client, Error> {
        Client::with_context(&zmq::Context::new(), endpoint, config)
    }

    /// The same, with sockets made by the caller's ZeroMQ context.
    pub fn with_context(
        context: &zmq::Context,
        endpoint: &str,
        config: ClientConfig,
    ) -> Result<Client, Error> {
        Client::with_brokers(context, &[endpoint], config)
    }

    /// Connects to the first of several brokers; a try that times out moves the client to the
    /// next (see the [module docs](self)). Every tcp host is looked up first.
    pub fn connect_all<E: AsRef<str>>(
        endpoints: &[E],
        config: ClientConfig,
    ) -> Result<Client, Error> {
        Client::with_brokers(&zmq::Context::new(), endpoints, config)
    }

    /// The same, with sockets made by the caller's ZeroMQ context. An empty list is an
    /// [`Error::NoBroker`].
    pub fn with_brokers<E: AsRef<str>>(
        context: &zmq::Context,
        endpoints: &[E],
        config: ClientConfig,
    ) -> Result<Client, Error> {
        Client::with_credentials(context, endpoints, config, Vec::new())
    }

    /// [`Client::with_brokers`], for brokers with `--auth`: `credentials` holds none (no
    /// credentials), one (the same for every broker) or one per endpoint, in their order (each
    /// broker may have its own CURVE key). A handshake a broker refuses ends the request with
    /// [`Error::AuthRefused`] as soon as the socket monitor says so (or moves it to another
    /// broker), not after the timeout; see [`SyncCore::refused`] for the backoff.
    pub fn with_credentials<E: AsRef<str>>(
        context: &zmq::Context,
        endpoints: &[E],
        config: ClientConfig,
        credentials: Vec<Credentials>,
    ) -> Result<Client, Error> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|endpoint| endpoint.as_ref().to_owned())
            .collect();
        let Some(first) = endpoints.first() else {
            return Err(Error::NoBroker);
        };
        for endpoint in &endpoints {
            crate::check_host(endpoint)?;
        }
        let credentials = crate::per_broker(credentials, endpoints.len())?;
        let mut core = SyncCore::with_brokers(config, endpoints.clone());
        let socket = open(context, first, &credentials[0], &mut core)?;
        Ok(Client {
            context: context.clone(),
            core,
            endpoints,
            credentials,
            socket: Some(socket),
            actions: Vec::with_capacity(4),
        })
    }

    /// The endpoint of the broker the client uses now: the one that answered the last request,
    /// or the next after one that did not.
    pub fn broker(&self) -> &str {
        self.endpoints
            .get(self.core.broker())
            .map_or("", String::as_str)
    }

    /// The index (in the list given at connect) of the broker the client uses now.
    pub fn broker_index(&self) -> usize {
        self.core.broker()
    }

    /// Sends a request to `service` and returns the reply body. `body` is one frame or more;
    /// an empty slice is sent as one empty frame, since spec 7 requires at least one.
    ///
    /// Errors: [`Error::NoReply`] after the last try timed out; [`Error::InvalidReply`] or
    /// [`Error::WrongService`] if the broker answered something that is not the reply.
    pub fn send<B: AsRef<[u8]>>(
        &mut self,
        service: &ServiceName,
        body: &[B],
    ) -> Result<Frames, Error> {
        let body: Frames = body
            .iter()
            .map(|frame| zmq::Message::from(frame.as_ref()))
            .collect();
        self.core
            .start(Instant::now(), service, body, &mut self.actions);
        loop {
            if let Some(result) = self.execute()? {
                return result;
            }
            self.open_socket()?;
            let deadline = self.core.next_deadline();
            let Some(socket) = self.socket.as_ref() else {
                continue;
            };
            let received = if self.core.link_up() {
                zsocket::recv_until(socket.socket(), deadline, Instant::now())?
            } else {
                // Until a handshake is seen, the monitor is waited on too, so that a refused one
                // ends the wait at once instead of the timeout.
                let watched = [socket.socket(), socket.monitor().socket()];
                zsocket::wait(&watched, None, deadline, Instant::now())?;
                if self.read_monitor(Instant::now()) {
                    continue;
                }
                match self.socket.as_ref() {
                    Some(socket) => zsocket::recv(socket.socket(), zmq::DONTWAIT)?,
                    None => continue,
                }
            };
            // Read after the wait: it is what the core compares with the deadline.
            let now = Instant::now();
            match received {
                Some(frames) => {
                    if log_enabled!(Level::Debug) {
                        debug!(
                            "broker {} -> client: {}",
                            self.broker(),
                            dump::Message(&frames)
                        );
                    }
                    self.core.handle(now, frames, &mut self.actions);
                }
                // The timeout, or a signal that cut the wait short (then the core waits on).
                None => {
                    // Only now is the monitor read: whether the socket was ever connected
                    // matters only to a try that timed out.
                    if self.read_monitor(now) {
                        continue;
                    }
                    let timed_out = self
                        .core
                        .next_deadline()
                        .is_some_and(|deadline| now >= deadline);
                    let now = if timed_out && !self.core.link_known() {
                        self.await_link(now)?
                    } else {
                        now
                    };
                    self.core.tick(now, &mut self.actions);
                }
            }
        }
    }

    /// Opens the socket if a refusal closed it.
    fn open_socket(&mut self) -> Result<(), Error> {
        if self.socket.is_none() {
            let broker = self.core.broker();
            let endpoint = &self.endpoints[broker.min(self.endpoints.len() - 1)];
            let credentials = &self.credentials[broker.min(self.credentials.len() - 1)];
            self.socket = Some(open(&self.context, endpoint, credentials, &mut self.core)?);
        }
        Ok(())
    }

    /// Hands what the monitor has said since it was last read to the core. A refused handshake
    /// closes the socket (libzmq would retry it every 100 ms) and is handed over too; true then,
    /// and the core's actions say what comes next.
    fn read_monitor(&mut self, now: Instant) -> bool {
        let Some(socket) = self.socket.as_ref() else {
            return false;
        };
        let broker = self.core.broker();
        let mut refusal: Option<Refusal> = None;
        for event in socket.pending() {
            if let Some(found) = self
                .credentials
                .get(broker)
                .and_then(|credentials| credentials.refusal(self.endpoints.get(broker)?, &event))
            {
                refusal = Some(found);
                break;
            }
            if let Some(link) = link_of(event.kind) {
                self.core.link(now, link);
            }
        }
        let Some(refusal) = refusal else {
            return false;
        };
        debug!("{refusal}: closing the socket");
        self.socket = None;
        self.core.refused(now, refusal, &mut self.actions);
        true
    }

    /// A try timed out before the monitor said anything: waits up to [`LINK_GRACE`] for it to
    /// say "connected" or "refused", so that "no connection" is said only on evidence or after
    /// the grace. Returns the time after the wait, for the core.
    fn await_link(&mut self, now: Instant) -> Result<Instant, Error> {
        let until = now.checked_add(LINK_GRACE);
        let mut now = now;
        while !self.core.link_known() && until.is_none_or(|until| now < until) {
            let Some(socket) = self.socket.as_ref() else {
                break;
            };
            zsocket::wait(&[socket.monitor().socket()], None, until, now)?;
            now = Instant::now();
            if self.read_monitor(now) {
                break;
            }
        }
        Ok(now)
    }

    /// How many times a request was sent again after a try timed out, over the client's life;
    /// compare it before and after [`Client::send`] to know whether that request was resent.
    pub fn resends(&self) -> u64 {
        self.core.resends()
    }

    /// Asks the broker's `mmi.service` (spec 8) whether `service` has a worker: true for `200`,
    /// false for `404`.
    pub fn has_service(&mut self, service: &ServiceName) -> Result<bool, Error> {
        // A constant, valid name: this cannot fail.
        let mmi_service = ServiceName::new(mmi::SERVICE)?;
        let reply = self.send(&mmi_service, &[service.as_bytes()])?;
        match reply.first().map(|frame| &frame[..]) {
            Some(status) if status == mmi::Status::Found.as_bytes() => Ok(true),
            Some(status) if status == mmi::Status::NotFound.as_bytes() => Ok(false),
            other => Err(Error::UnexpectedMmiReply(mdp::dump::Printable::truncated(
                other.unwrap_or_default(),
            ))),
        }
    }

    /// Does what the core asked, in order; the request's result once the core says it is done.
    fn execute(&mut self) -> Result<Option<Result<Frames, Error>>, Error> {
        let mut done = None;
        let mut actions = std::mem::take(&mut self.actions);
        for action in actions.drain(..) {
            match action {
                SyncAction::Send(frames) => {
                    if log_enabled!(Level::Debug) {
                        debug!(
                            "client -> broker {}: {}",
                            self.broker(),
                            dump::Message(&frames)
                        );
                    }
                    // Never blocking: a REQ whose handshake failed has no pipe to queue into.
                    // Refused, the request waits out its try; the monitor says why.
                    self.open_socket()?;
                    let Some(socket) = self.socket.as_ref() else {
                        continue;
                    };
                    match zsocket::send(socket.socket(), frames, zmq::DONTWAIT) {
                        Ok(()) => {}
                        Err(zsocket::SendError::Refused(refused))
                            if refused.error == zmq::Error::EAGAIN =>
                        {
                            debug!("the socket took no request: its connection is refused");
                        }
                        Err(error) => return Err(zsocket::Error::from(error).into()),
                    }
                }
                // The old socket is dropped, and so closed (linger 0), as it is replaced.
                SyncAction::Reopen => {
                    let endpoint = self
                        .endpoints
                        .get(self.core.broker())
                        .unwrap_or(&self.endpoints[0]);
                    let broker = self.core.broker();
                    let credentials = &self.credentials[broker.min(self.credentials.len() - 1)];
                    self.socket = None;
                    self.socket = Some(open(&self.context, endpoint, credentials, &mut self.core)?);
                }
                SyncAction::Done(result) => done = Some(result),
            }
        }
        // Kept, so that its buffer is allocated once.
        self.actions = actions;
        Ok(done)
    }
}
