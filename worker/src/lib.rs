//! An MDP/0.1 worker (rfc.zeromq.org spec 7, the MDP/Worker sub-protocol) as a library.
//!
//! A worker serves one service for a broker. It connects a DEALER socket to the broker, says
//! READY with its service name, and then answers REQUESTs one at a time with REPLYs. Both sides
//! send HEARTBEATs, so each can tell when the other has gone: when the broker sends DISCONNECT or
//! is silent for `heartbeat_interval x liveness`, the worker closes its socket, waits a backoff
//! delay that doubles on each failed attempt (up to a cap), and registers again on a new socket.
//! The caller sees none of that beyond a log line: [`Worker::recv`] just returns the next
//! request when there is one.
//!
//! An echo worker, with a broker and a client around it (the broker on a free port of its own,
//! the client a bare REQ socket speaking MDP/Client through the `mdp` crate's frames):
//!
//! ```
//! use std::thread;
//! use worker::{Worker, WorkerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut broker = broker::Server::bind(
//!     &["tcp://127.0.0.1:*".to_owned()],
//!     broker::Config::default(),
//!     &Default::default(),
//! )?;
//! let endpoint = broker.endpoints()[0].clone(); // tcp://127.0.0.1:<the port it got>
//! let stop_broker = broker.stop_handle();
//! let broker_thread = thread::spawn(move || broker.run());
//!
//! // Returns at once: READY goes out when the connection is up.
//! let mut worker = Worker::connect(&endpoint, "echo".parse()?, WorkerConfig::default())?;
//! let stop_worker = worker.stop_handle();
//! // An echo service: the reply is the request body, sent on as the same zmq::Messages.
//! let worker_thread = thread::spawn(move || worker.serve(|body| body));
//!
//! // The request waits in the broker until the worker has registered.
//! let context = zmq::Context::new();
//! let client = context.socket(zmq::REQ)?;
//! client.set_rcvtimeo(10_000)?; // fail, rather than hang, if no reply comes
//! client.connect(&endpoint)?;
//! let echo = "echo".parse()?;
//! zsocket::send(&client, mdp::client::Request::encode(&echo, vec!["hello".into()]), 0)?;
//! let frames = zsocket::recv(&client, 0)?.ok_or("no reply within 10 s")?;
//! let reply = mdp::client::Reply::parse(frames)?;
//! assert_eq!(&reply.body[0][..], b"hello");
//!
//! stop_worker.stop(); // serve returns Ok(()), and the dropped worker says DISCONNECT
//! worker_thread.join().expect("the worker thread")?;
//! stop_broker.stop();
//! let stats = broker_thread.join().expect("the broker thread")?;
//! assert_eq!(stats.replies_forwarded, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Several brokers, several slots
//! Spec 7 identifies a worker by its socket, so one program may be several MDP workers: `slots`
//! sockets to each broker, and several brokers ([`Worker::builder`]). Each conversation keeps its
//! own READY, heartbeats, liveness and backoff; one poll serves them all. Requests from every
//! slot are handed out in arrival order, and up to one per slot may be in hand at once:
//! [`Worker::serve_concurrent`] runs a handler on that many threads (or fewer), and
//! [`Worker::recv`] may be called again before the previous reply, up to the number of slots.
//!
//! (`no_run`: it needs two brokers at `broker-a` and `broker-b`.)
//!
//! ```no_run
//! use worker::{Mode, Worker};
//!
//! # fn main() -> Result<(), worker::Error> {
//! let mut worker = Worker::builder("echo".parse().expect("a valid service name"))
//!     .endpoint("tcp://broker-a:5555")
//!     .endpoint("tcp://broker-b:5555")
//!     .slots(4)
//!     .mode(Mode::All)
//!     .build()?;
//! // 2 brokers x 4 slots: up to 8 requests at once, each on a thread of its own.
//! worker.serve_concurrent(8, |body| body)?;
//! # Ok(())
//! # }
//! ```
//!
//! What the choices cost:
//! * **Slots are a prefetch window.** A broker sends each slot a request as soon as it is
//!   ready, so with more slots than running handlers (`serve_concurrent` with a smaller
//!   concurrency) requests wait inside the worker: a long request strands the ones queued behind
//!   it while other workers may sit idle, and a worker that dies loses every request it holds,
//!   up to one per slot (the clients retry; a broker's `--redeliver` sends them on once).
//! * **All mode** ([`Mode::All`]) registers with every broker at once: the loss of one never
//!   interrupts the others, and a broker that only the clients can still reach keeps its
//!   workers. A handler may then run one request per slot per broker at the same moment.
//! * **Failover mode** ([`Mode::Failover`]) registers with one broker at a time: the first that
//!   answers, the next when it fails (silent for interval x liveness, or its connection
//!   refused), and no going back while it serves. It cannot see a broker that the clients have
//!   lost but the worker has not: the worker stays there, serving nobody. All mode covers that
//!   case, since the worker is registered wherever the clients may go.
//!
//! # Layers
//! The protocol lives in [`core::WorkerCore`], a state machine with no sockets and no clock: it
//! is given each message and the time, and says what to send, when to reopen a socket and which
//! request to hand out. This file is its driver: one DEALER socket per link of the core, each
//! with a socket monitor ([`zsocket::monitor`]) that tells a real connection from a refused one,
//! opened, read, written and waited on through `zsocket`.
//!
//! # Threads
//! Heartbeats must flow while the caller is busy with a request: a handler that runs longer
//! than `heartbeat_interval x liveness` would otherwise be purged by the broker mid-request. So
//! each worker has a small heartbeat thread. The core and the sockets sit behind a mutex (a
//! ZeroMQ socket may move between threads given a full memory barrier, which a mutex provides;
//! it must never be used by two at once, which the mutex prevents). Whoever holds it does the
//! I/O: the caller's thread holds it while it waits for a request in [`Worker::recv`] and
//! heartbeats from there; while the caller is busy (or between calls) the heartbeat thread takes
//! the free driver every quarter interval, reads what the broker sent, and sends the HEARTBEATs
//! that are due. The request path is one uncontended lock and no thread hand-off, which keeps
//! the worker cheap per request.
//!
//! With several handler threads ([`Worker::serve_concurrent`]) one of them holds the driver
//! while it waits in the poll, and the others wait for it. A reply from a thread that finds the
//! driver held is queued, and a byte on a wake-up socket in the poll set makes the poller send
//! it; whoever lets go of the driver looks at the queue again afterwards (and a replier that
//! queued tries the lock once more), so no reply is ever left behind.
//!
//! # Logs
//! Per broker, at `info`: "connected to broker at X" when the socket monitor sees the connection
//! made (not when a socket is merely opened), "registered with broker at X for S" once the
//! broker has spoken on the new socket, "lost the connection" when it drops. A broker that
//! cannot be reached is reported once at `warn`; the retries that follow are `debug`.
//!
//! # Credentials
//! For a broker with `--auth`, [`WorkerBuilder::credentials`] (one for every broker) or
//! [`WorkerBuilder::broker_credentials`] (one per endpoint, e.g. each broker's own CURVE key)
//! set PLAIN or CURVE ([`Credentials`]) on every socket before it connects; the `worker` program
//! loads them from its flags ([`CredentialFlags`]). A handshake the broker refuses (its socket
//! monitor says `HANDSHAKE_FAILED_*`) closes that socket, which libzmq would otherwise retry every
//! 100 ms, and the link reopens after its backoff, with a `warn` line that names authentication
//! (at most one a second per broker). A DISCONNECT right after READY, before the broker said
//! anything else, is taken for a registration refused by the broker's rules: a `warn` line says
//! the principal may not serve the service, and the link retries with backoff (see
//! [`core`]). Sends never block: a DEALER whose handshake failed has no pipe, and a blocking
//! send on it would wait for ever, so a message it will not take is dropped.
//!
//! # Stopping
//! [`Worker::stop_handle`] gives a [`StopHandle`] that another thread (a signal handler, say) can
//! use to make a blocked [`Worker::recv`] return [`Error::Stopped`]. Dropping the worker sends the
//! broker a DISCONNECT so it forgets the worker at once rather than after its heartbeat timeout.

#![warn(missing_docs)]

pub mod core;
pub mod exec;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, log_enabled, warn, Level};
use mdp::dump;
use zsocket::limit::LogLimit;
use zsocket::monitor::{EventKind, Events, Monitored};
use zsocket::{ResultExt, StopSignal};

pub use crate::core::{Mode, ReplyTo, Request, Topology};
pub use mdp::{Frames, ServiceName};
pub use zsocket::credentials::Credentials;
pub use zsocket::StopHandle;

use crate::core::{Action, LinkId, WorkerCore};

/// How long a closing socket may keep trying to deliver our final DISCONNECT. Short, because a
/// broker that cannot take it within this time is gone anyway and will purge us by heartbeat.
const DISCONNECT_LINGER_MS: i32 = 100;

/// Heartbeat and reconnection settings. Heartbeat interval and liveness must match the broker's
/// (spec 7: "at regular and agreed-upon intervals"), or one side will think the other dead.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How often the worker tells the broker it is alive. Default 2500 ms, as in the guide.
    pub heartbeat_interval: Duration,
    /// How many intervals of silence make the broker dead. Default 3.
    pub liveness: u32,
    /// The first wait before reconnecting. Default 100 ms.
    pub reconnect_initial: Duration,
    /// The longest wait before reconnecting. Default 5 s.
    pub reconnect_max: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            heartbeat_interval: Duration::from_millis(mdp::DEFAULT_HEARTBEAT_INTERVAL_MS),
            liveness: mdp::DEFAULT_HEARTBEAT_LIVENESS,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

/// The heartbeat flags of every program that is an MDP worker (`worker`, `titanic`), flattened
/// into its command line with `#[command(flatten)]`, so that they read and behave the same in
/// each.
#[derive(Debug, Clone, clap::Args)]
pub struct HeartbeatFlags {
    /// Heartbeat interval in milliseconds; must match the broker's.
    #[arg(long, value_name = "MS", default_value_t = mdp::DEFAULT_HEARTBEAT_INTERVAL_MS,
          value_parser = cli::at_least_one_u64)]
    pub heartbeat_ms: u64,
    /// Missed heartbeats after which the broker counts as gone; must match the broker's.
    #[arg(long, value_name = "N", default_value_t = mdp::DEFAULT_HEARTBEAT_LIVENESS,
          value_parser = cli::at_least_one_u32)]
    pub liveness: u32,
}

impl HeartbeatFlags {
    /// The worker settings these flags give, the rest at their defaults.
    pub fn config(&self) -> WorkerConfig {
        WorkerConfig {
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms),
            liveness: self.liveness,
            ..WorkerConfig::default()
        }
    }
}

/// The credential flags of a program that is an MDP worker (`worker`, `titanic`): the ones
/// every program that logs in to brokers shares, [`cli::CredentialFlags`].
pub use cli::CredentialFlags;

/// What can go wrong for a worker. Nothing the broker sends is an error here: malformed
/// messages are logged and dropped, and a lost broker is reconnected to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Spec 8 reserves `mmi.*` for the broker, which disconnects any worker that registers one.
    #[error("service {0} is in the mmi. namespace, which only the broker may serve (spec 8)")]
    ReservedService(ServiceName),
    /// The endpoint is not one ZeroMQ can connect to (a typo, an unknown transport).
    #[error(transparent)]
    Connect(zsocket::Error),
    /// No endpoint, or no slot: a worker with nothing to connect; or credentials given for
    /// another number of brokers than there are endpoints.
    #[error("{0}")]
    Topology(&'static str),
    /// Credentials that cannot be used: CURVE in a build without it (the message says how to
    /// get a build with it), a key libzmq refuses.
    #[error(transparent)]
    Credentials(#[from] zsocket::credentials::Error),
    /// A ZeroMQ call failed for a reason other than the broker's absence (which is never an
    /// error: messages wait in the socket until the broker is back).
    #[error(transparent)]
    Socket(#[from] zsocket::Error),
    /// The operating system refused something the worker needs (its thread, its stop signal).
    #[error("cannot {action}")]
    Setup {
        /// What the worker could not do, as "cannot {action}" reads: "start the heartbeat
        /// thread", "create the stop signal", "create the wake-up socket", "start a handler
        /// thread".
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// [`StopHandle::stop`] was called.
    #[error("the worker was asked to stop")]
    Stopped,
    /// `recv` was called while every slot held an unanswered request. The broker sends each slot
    /// one request at a time and waits for its REPLY, so there would be nothing to receive.
    #[error("recv() called before reply() answered the previous request")]
    ReplyPending,
}

/// The settings of a worker with several brokers or slots; see [`Worker::builder`].
#[derive(Clone)]
pub struct WorkerBuilder {
    service: ServiceName,
    endpoints: Vec<String>,
    slots: usize,
    mode: Mode,
    config: WorkerConfig,
    context: Option<zmq::Context>,
    /// Empty: none for any broker; one: the same for every broker; else one per endpoint.
    credentials: Vec<Credentials>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("service", &self.service)
            .field("endpoints", &self.endpoints)
            .field("slots", &self.slots)
            .field("mode", &self.mode)
            .field("config", &self.config)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Adds a broker. The order matters in failover mode: the first is tried first.
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// Adds brokers, in order.
    #[must_use]
    pub fn endpoints<I: IntoIterator<Item = S>, S: Into<String>>(mut self, endpoints: I) -> Self {
        self.endpoints.extend(endpoints.into_iter().map(Into::into));
        self
    }

    /// How many MDP workers (sockets) to each broker. Default 1.
    #[must_use]
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots;
        self
    }

    /// All brokers at once, or one at a time. Default [`Mode::All`].
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Heartbeat and reconnection settings.
    #[must_use]
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// What the worker proves to every broker (PLAIN or CURVE, for a broker with `--auth`).
    /// Default [`Credentials::None`].
    #[must_use]
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = vec![credentials];
        self
    }

    /// Credentials per broker, in the order of the endpoints (each broker may have its own
    /// CURVE key, say); [`WorkerBuilder::build`] refuses a list of another length than the
    /// endpoints' (but one, which is for all).
    #[must_use]
    pub fn broker_credentials(mut self, credentials: Vec<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Sockets made by the caller's ZeroMQ context rather than a new one.
    #[must_use]
    pub fn context(mut self, context: &zmq::Context) -> Self {
        self.context = Some(context.clone());
        self
    }

    /// Checks every endpoint, opens the links the mode wants open and starts the heartbeat
    /// thread. Returns at once: ZeroMQ connects in the background.
    pub fn build(self) -> Result<Worker, Error> {
        if self.service.is_mmi() {
            return Err(Error::ReservedService(self.service));
        }
        if self.endpoints.is_empty() {
            return Err(Error::Topology(
                "a worker needs at least one broker endpoint",
            ));
        }
        if self.slots == 0 {
            return Err(Error::Topology(
                "a worker needs at least one slot per broker",
            ));
        }
        let credentials = match self.credentials.len() {
            0 => vec![Credentials::None; self.endpoints.len()],
            1 => vec![self.credentials[0].clone(); self.endpoints.len()],
            n if n == self.endpoints.len() => self.credentials,
            _ => {
                return Err(Error::Topology(
                    "broker_credentials needs one Credentials per endpoint, in their order",
                ))
            }
        };
        let context = self.context.unwrap_or_default();
        // A typo in the last broker of a failover list must fail now, not when it is needed.
        // The checking socket carries the broker's credentials, so that a broker with --auth
        // does not see (and log) a peer with the wrong mechanism at every start; it is closed
        // at once, mostly before its handshake.
        for (endpoint, credentials) in self.endpoints.iter().zip(&credentials) {
            let socket = context.socket(zmq::DEALER).doing("create a socket")?;
            socket.set_linger(0).doing("set ZMQ_LINGER")?;
            credentials.apply(&socket)?;
            socket
                .connect(endpoint)
                .map_err(|source| zsocket::Error::new(format!("connect to {endpoint}"), source))
                .map_err(connect_error)?;
        }
        let topology = Topology {
            brokers: self.endpoints.len(),
            slots: self.slots,
            mode: self.mode,
        };
        let heartbeat_interval = self.config.heartbeat_interval;
        let setup = |action| move |source| Error::Setup { action, source };
        let inbox = Inbox::new().map_err(setup("create the wake-up socket"))?;
        let mut driver = Driver::new(
            context,
            self.endpoints.into_iter().zip(credentials).collect(),
            self.service,
            self.config,
            topology,
        );
        driver.start()?;
        let shared = Arc::new(Shared {
            driver: Mutex::new(driver),
            inbox,
        });
        let (stop, stop_signal) = zsocket::stop_pair().map_err(setup("create the stop signal"))?;
        let heartbeats = spawn_heartbeat_thread(Arc::clone(&shared), heartbeat_interval)
            .map_err(setup("start the heartbeat thread"))?;
        Ok(Worker {
            shared,
            links: topology.links(),
            heartbeats: Some(heartbeats),
            stop,
            stop_signal,
            outstanding: 0,
        })
    }
}

/// An MDP worker connected to one broker or more for one service. See the [crate docs](crate).
pub struct Worker {
    shared: Arc<Shared>,
    /// How many links (brokers x slots): the most requests that can be in hand at once.
    links: usize,
    heartbeats: Option<HeartbeatThread>,
    stop: StopHandle,
    stop_signal: StopSignal,
    /// Requests handed out by `recv` and not answered yet.
    outstanding: usize,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("links", &self.links)
            .field("outstanding", &self.outstanding)
            .finish_non_exhaustive()
    }
}

struct HeartbeatThread {
    /// Raising this ends the thread.
    quit: StopHandle,
    handle: JoinHandle<()>,
}

impl Worker {
    /// Connects to the broker at `endpoint` (e.g. `tcp://localhost:5555`) and registers for
    /// `service`. Returns at once: ZeroMQ connects in the background and READY goes out when the
    /// connection is up, so a worker may start before its broker.
    pub fn connect(
        endpoint: &str,
        service: ServiceName,
        config: WorkerConfig,
    ) -> Result<Worker, Error> {
        Worker::builder(service)
            .endpoint(endpoint)
            .config(config)
            .build()
    }

    /// The same, with sockets made by the caller's ZeroMQ context (one context per process is
    /// the usual way; each context runs its own I/O thread).
    pub fn with_context(
        context: &zmq::Context,
        endpoint: &str,
        service: ServiceName,
        config: WorkerConfig,
    ) -> Result<Worker, Error> {
        Worker::builder(service)
            .endpoint(endpoint)
            .config(config)
            .context(context)
            .build()
    }

    /// A worker for several brokers or slots: add endpoints, then [`WorkerBuilder::build`].
    pub fn builder(service: ServiceName) -> WorkerBuilder {
        WorkerBuilder {
            service,
            endpoints: Vec::new(),
            slots: 1,
            mode: Mode::All,
            config: WorkerConfig::default(),
            context: None,
            credentials: Vec::new(),
        }
    }

    /// A handle that makes `recv` return [`Error::Stopped`].
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// How many links (brokers x slots) the worker has: the most requests it can hold at once.
    pub fn link_count(&self) -> usize {
        self.links
    }

    /// How many links are registered now: the broker has spoken on their current socket. It
    /// takes the driver, so it waits while another thread of this worker polls; for status and
    /// tests, between calls that serve.
    pub fn registered_links(&self) -> usize {
        let driver = lock(&self.shared.driver);
        (0..self.links)
            .filter(|&index| driver.core.is_registered(LinkId(index)))
            .count()
    }

    /// Waits for the next request, sending heartbeats and reconnecting as needed meanwhile.
    ///
    /// With one slot every request must be answered with [`Worker::reply`] before the next
    /// `recv`: the broker gives a worker one request at a time. With several links, up to one
    /// request per link may be in hand.
    pub fn recv(&mut self) -> Result<Request, Error> {
        if self.outstanding >= self.links {
            return Err(Error::ReplyPending);
        }
        let request = self.shared.next_request(&self.stop_signal)?;
        self.outstanding += 1;
        Ok(request)
    }

    /// Sends the reply to a request. The body frames are sent as they are, without copying; an
    /// empty body is sent as one empty frame, since spec 7 requires at least one.
    ///
    /// If the conversation the request came in has ended meanwhile, the reply is dropped with a
    /// log line: the broker no longer knows this worker and the client will retry.
    pub fn reply(&mut self, reply_to: ReplyTo, body: Frames) -> Result<(), Error> {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.shared.reply(reply_to, body)
    }

    /// Serves requests with `handler` (request body in, reply body out) until stopped, which
    /// returns `Ok(())`. One request at a time, on the caller's thread.
    pub fn serve(&mut self, mut handler: impl FnMut(Frames) -> Frames) -> Result<(), Error> {
        loop {
            let request = match self.recv() {
                Ok(request) => request,
                Err(Error::Stopped) => return Ok(()),
                Err(error) => return Err(error),
            };
            let reply = handler(request.body);
            self.reply(request.reply_to, reply)?;
        }
    }

    /// Serves requests with `handler` on up to `concurrency` threads at once (at most one per
    /// link: more would have nothing to do), until stopped, which returns `Ok(())`. Requests are
    /// handed out in the order they arrived, from every slot of every broker; a handler's reply
    /// goes out from its own thread. With a concurrency of 1 this is [`Worker::serve`], on the
    /// caller's thread.
    ///
    /// With fewer threads than links, requests wait inside the worker for a free thread (see
    /// the [crate docs](crate) on the prefetch window). A socket error on any thread stops the
    /// others, and is returned.
    pub fn serve_concurrent(
        &mut self,
        concurrency: usize,
        handler: impl Fn(Frames) -> Frames + Sync,
    ) -> Result<(), Error> {
        let threads = concurrency.clamp(1, self.links.max(1));
        if threads == 1 {
            return self.serve(handler);
        }
        let shared = &*self.shared;
        shared.inbox.concurrent.store(true, Ordering::SeqCst);
        let stop = &self.stop;
        let stop_signal = &self.stop_signal;
        let handler = &handler;
        let result = std::thread::scope(|scope| {
            let mut spawned = Vec::with_capacity(threads);
            for index in 0..threads {
                let thread = std::thread::Builder::new()
                    .name(format!("mdp-worker-{index}"))
                    .spawn_scoped(scope, move || {
                        let _guard = StopOnPanic(stop);
                        serve_thread(shared, stop_signal, handler)
                    });
                match thread {
                    Ok(thread) => spawned.push(thread),
                    Err(source) => {
                        stop.stop();
                        return Err(Error::Setup {
                            action: "start a handler thread",
                            source,
                        });
                    }
                }
            }
            let mut result = Ok(());
            for thread in spawned {
                match thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        stop.stop();
                        if result.is_ok() {
                            result = Err(error);
                        }
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            result
        });
        shared.inbox.concurrent.store(false, Ordering::SeqCst);
        result
    }
}

/// One handler thread of [`Worker::serve_concurrent`].
fn serve_thread(
    shared: &Shared,
    stop: &StopSignal,
    handler: &(impl Fn(Frames) -> Frames + Sync),
) -> Result<(), Error> {
    loop {
        let request = match shared.next_request(stop) {
            Ok(request) => request,
            Err(Error::Stopped) => return Ok(()),
            Err(error) => return Err(error),
        };
        let reply = handler(request.body);
        shared.reply(request.reply_to, reply)?;
    }
}

/// Stops every handler thread when one panics, so that the scope can end and the panic reach
/// the caller.
struct StopOnPanic<'a>(&'a StopHandle);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(heartbeats) = self.heartbeats.take() {
            heartbeats.quit.stop();
            if heartbeats.handle.join().is_err() {
                warn!("the heartbeat thread panicked");
            }
        }
        let mut driver = lock(&self.shared.driver);
        driver.flush(&self.shared.inbox);
        driver.shut_down();
    }
}

/// The driver's mutex guards the core and the sockets, which a panic elsewhere while holding it
/// leaves in no half-changed state that matters: take the lock back rather than propagate it.
fn lock(driver: &Mutex<Driver>) -> MutexGuard<'_, Driver> {
    driver.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the threads of one worker share: the driver, and the replies waiting for it.
struct Shared {
    driver: Mutex<Driver>,
    inbox: Inbox,
}

impl Shared {
    /// Takes the driver and waits in it for a request; afterwards, sends what other threads
    /// queued meanwhile.
    fn next_request(&self, stop: &StopSignal) -> Result<Request, Error> {
        let result = lock(&self.driver).next_request(stop, &self.inbox);
        self.after_unlock();
        result
    }

    /// Sends a reply: at once if the driver is free (the usual case, and the only one with a
    /// single thread, where it costs one uncontended lock), else through the inbox, waking the
    /// thread that holds the driver.
    fn reply(&self, reply_to: ReplyTo, body: Frames) -> Result<(), Error> {
        let result = match self.driver.try_lock() {
            Ok(mut driver) => driver.reply(reply_to, body),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().reply(reply_to, body),
            // Held: by the heartbeat thread for a moment, or by a thread waiting in the poll,
            // which only a wake-up ends.
            Err(TryLockError::WouldBlock) => {
                self.inbox.push(reply_to, body);
                Ok(())
            }
        };
        self.after_unlock();
        result
    }

    /// After letting go of the driver (or failing to get it): if replies are queued and the
    /// driver is free, send them. If it is held, its holder does this when it lets go, and a
    /// holder in the poll is woken by the queued reply's byte, so nothing is left behind.
    fn after_unlock(&self) {
        while self.inbox.pending.load(Ordering::SeqCst) > 0 {
            match self.driver.try_lock() {
                Ok(mut driver) => driver.flush(&self.inbox),
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().flush(&self.inbox),
                Err(TryLockError::WouldBlock) => return,
            }
        }
    }
}

/// Replies waiting for whoever holds the driver, and the wake-up socket that tells it.
struct Inbox {
    replies: Mutex<VecDeque<(ReplyTo, Frames)>>,
    /// How many replies are queued, to look at without the lock.
    pending: AtomicUsize,
    /// True while handler threads run ([`Worker::serve_concurrent`]): only then can a reply
    /// come while a thread waits in the poll, so only then is the wake-up socket polled.
    concurrent: AtomicBool,
    wake_writer: UnixStream,
    wake_reader: UnixStream,
}

impl Inbox {
    fn new() -> std::io::Result<Inbox> {
        let (wake_writer, wake_reader) = UnixStream::pair()?;
        wake_writer.set_nonblocking(true)?;
        wake_reader.set_nonblocking(true)?;
        Ok(Inbox {
            replies: Mutex::new(VecDeque::new()),
            pending: AtomicUsize::new(0),
            concurrent: AtomicBool::new(false),
            wake_writer,
            wake_reader,
        })
    }

    /// Queues a reply and wakes the thread in the poll.
    fn push(&self, reply_to: ReplyTo, body: Frames) {
        self.replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back((reply_to, body));
        self.pending.fetch_add(1, Ordering::SeqCst);
        // A full buffer means the poller has bytes enough to wake on.
        let _ = (&self.wake_writer).write(&[1]);
    }

    /// The queued replies, oldest first; reads the wake-up bytes first, so that a reply queued
    /// after this leaves a byte that wakes the next poll.
    fn take(&self) -> VecDeque<(ReplyTo, Frames)> {
        let mut buffer = [0u8; 64];
        while matches!((&self.wake_reader).read(&mut buffer), Ok(n) if n > 0) {}
        let mut replies = self.replies.lock().unwrap_or_else(PoisonError::into_inner);
        self.pending.fetch_sub(replies.len(), Ordering::SeqCst);
        std::mem::take(&mut *replies)
    }
}

/// One link's socket, as the driver holds it.
struct LinkSocket {
    /// `None` between conversations: after a DISCONNECT or a silent broker, until the core
    /// opens the link again.
    socket: Option<Monitored>,
    /// The monitor has seen this socket's connection made (and not lost since).
    connected: bool,
    /// The monitor has seen this socket's ZMTP handshake (and security mechanism) succeed.
    handshaken: bool,
    /// The monitor has seen a connection attempt of this socket fail.
    failed: bool,
    /// The broker has spoken on this socket.
    registered: bool,
}

/// What the driver knows of one broker, for the log lines.
#[derive(Default)]
struct BrokerState {
    endpoint: String,
    /// What the worker proves to it.
    credentials: Credentials,
    /// At most one line a second about its refused handshakes.
    refusal_log: LogLimit,
    /// Its last handshake was refused and none has succeeded since.
    refused: bool,
    /// "connected" was logged, and no loss since: a socket reopened by the worker itself (after
    /// a DISCONNECT or a refused handshake) connecting again is not news.
    announced: bool,
    /// Links with a connection up, and links registered.
    connected: usize,
    registered: usize,
    /// A failed connection has been reported; the repeats are quiet until one succeeds.
    unreachable_reported: bool,
    /// Sockets opened to it, to tell the first from a reopening.
    opened: u64,
}

/// What a poll woke up for.
#[derive(Debug, Clone, Copy)]
enum Source {
    Link(usize),
    Monitor(usize),
    Wake,
}

/// The thin driver: the core, one socket per link, and the actions between them. Whoever holds
/// its mutex does the I/O.
struct Driver {
    context: zmq::Context,
    service: ServiceName,
    core: WorkerCore,
    /// Indexed by [`LinkId`].
    links: Vec<LinkSocket>,
    /// Indexed by the broker's position in the list of endpoints.
    brokers: Vec<BrokerState>,
    /// What the core said to do, executed in order and emptied; kept to reuse its allocation.
    actions: Vec<Action>,
    /// Requests received and not handed out yet, in arrival order: the heartbeat thread may
    /// receive some while every thread is busy, and one poll may bring several. At most one per
    /// link, since the driver does not read a link that holds a request.
    delivered: VecDeque<Request>,
    /// What each poll item stands for; kept to reuse its allocation.
    sources: Vec<Source>,
    /// The broker of the latest socket opened, to tell a failover from a reopening.
    last_opened: Option<usize>,
    /// The linger a closed socket gets: 0, except when the worker shuts down and the DISCONNECT
    /// just sent should have a moment to leave.
    close_linger_ms: i32,
}

/// The events the worker's sockets are monitored for: the connection's life, and failed attempts
/// (which come every reconnect interval while a broker is away; the driver reads them on every
/// pass, and polls a monitor only until its socket's first failure).
fn monitor_events() -> Events {
    Events::CONNECTION
        .with(EventKind::ConnectRetried)
        .with(EventKind::Closed)
}

fn connect_error(error: zsocket::Error) -> Error {
    if error.is_bad_endpoint() {
        Error::Connect(error)
    } else {
        Error::Socket(error)
    }
}

impl Driver {
    fn new(
        context: zmq::Context,
        endpoints: Vec<(String, Credentials)>,
        service: ServiceName,
        config: WorkerConfig,
        topology: Topology,
    ) -> Driver {
        Driver {
            context,
            core: WorkerCore::with_topology(service.clone(), config, topology, Instant::now()),
            service,
            links: (0..topology.links())
                .map(|_| LinkSocket {
                    socket: None,
                    connected: false,
                    handshaken: false,
                    failed: false,
                    registered: false,
                })
                .collect(),
            brokers: endpoints
                .into_iter()
                .map(|(endpoint, credentials)| BrokerState {
                    endpoint,
                    credentials,
                    ..BrokerState::default()
                })
                .collect(),
            actions: Vec::new(),
            delivered: VecDeque::new(),
            sources: Vec::new(),
            last_opened: None,
            close_linger_ms: 0,
        }
    }

    /// Opens every link the mode wants open and says READY on it.
    fn start(&mut self) -> Result<(), Error> {
        self.core.start(Instant::now(), &mut self.actions);
        self.execute()
    }

    /// Receive, heartbeat, reconnect, send other threads' replies, until a request arrives or
    /// the worker is stopped.
    fn next_request(&mut self, stop: &StopSignal, inbox: &Inbox) -> Result<Request, Error> {
        // The broker sends a worker its next request only after our reply has reached it, so
        // right after a reply nothing is waiting yet: wait first, then drain what the wait says
        // is there. (A receive that finds nothing is not free: libzmq checks its command pipe
        // with a system call.)
        loop {
            if stop.is_raised() {
                return Err(Error::Stopped);
            }
            if let Some(request) = self.delivered.pop_front() {
                return Ok(request);
            }
            if inbox.pending.load(Ordering::SeqCst) > 0 {
                self.flush(inbox);
            }
            let now = Instant::now();
            if now >= self.core.next_deadline() {
                self.read_monitors();
                self.core.tick(now, &mut self.actions);
                self.execute()?;
            }
            let woken = self.wait(stop, inbox, now)?;
            if stop.is_raised() {
                return Err(Error::Stopped);
            }
            for source in woken {
                match source {
                    Source::Link(link) => self.drain(LinkId(link))?,
                    Source::Monitor(link) => self.read_monitor(LinkId(link))?,
                    Source::Wake => self.flush(inbox),
                }
            }
        }
    }

    /// Sleeps until a link that is ready for a request has a message, a monitor that is watched
    /// has an event, another thread queued a reply, the core's next deadline passes, or the stop
    /// signal is raised. Returns what is readable.
    fn wait(
        &mut self,
        stop: &StopSignal,
        inbox: &Inbox,
        now: Instant,
    ) -> Result<Vec<Source>, Error> {
        let deadline = self.core.next_deadline();
        let mut sources = std::mem::take(&mut self.sources);
        sources.clear();
        let mut items: Vec<zmq::PollItem<'_>> = Vec::with_capacity(self.links.len() + 3);
        for (index, link) in self.links.iter().enumerate() {
            let Some(monitored) = link.socket.as_ref() else {
                continue;
            };
            if !self.core.holds_request(LinkId(index)) {
                items.push(monitored.socket().as_poll_item(zmq::POLLIN));
                sources.push(Source::Link(index));
            }
            // Until the handshake is done, or the first failure to connect: the moments worth
            // a log line (and, in failover mode, a move) without delay, a refused handshake
            // among them. After a failure to connect the retries come every reconnect interval,
            // read on each pass instead of waking the poll.
            if !link.handshaken && !link.failed {
                items.push(monitored.monitor().socket().as_poll_item(zmq::POLLIN));
                sources.push(Source::Monitor(index));
            }
        }
        if inbox.concurrent.load(Ordering::SeqCst) {
            items.push(zmq::PollItem::from_fd(
                inbox.wake_reader.as_raw_fd(),
                zmq::POLLIN,
            ));
            sources.push(Source::Wake);
        }
        if let Some(item) = stop.poll_item() {
            items.push(item);
        }
        let mut woken = Vec::new();
        match zmq::poll(&mut items, zsocket::millis_until(Some(deadline), now)) {
            Ok(_) | Err(zmq::Error::EINTR) => {
                woken.extend(
                    sources
                        .iter()
                        .zip(&items)
                        .filter(|(_, item)| item.is_readable())
                        .map(|(source, _)| *source),
                );
            }
            Err(source) => return Err(zsocket::Error::new("poll", source).into()),
        }
        drop(items);
        self.sources = sources;
        Ok(woken)
    }

    /// Receives and handles what is waiting on `link`, until nothing is, or until a request is
    /// delivered: the link then holds it and is not read until the reply.
    fn drain(&mut self, link: LinkId) -> Result<(), Error> {
        while !self.core.holds_request(link) {
            let Some(monitored) = self.links[link.0].socket.as_ref() else {
                return Ok(());
            };
            let Some(frames) = zsocket::recv(monitored.socket(), zmq::DONTWAIT)? else {
                return Ok(());
            };
            if log_enabled!(Level::Debug) {
                debug!("broker -> worker: {}", dump::Message(&frames));
            }
            let registered = self
                .core
                .handle(Instant::now(), link, frames, &mut self.actions);
            if registered {
                self.registered(link);
            }
            self.execute()?;
        }
        Ok(())
    }

    /// The broker spoke first on `link`'s socket: one line per broker, when its first slot
    /// registers.
    fn registered(&mut self, link: LinkId) {
        let broker = self.core.broker_of(link);
        self.links[link.0].registered = true;
        let state = &mut self.brokers[broker];
        state.registered += 1;
        let slots = self.core.topology().slots;
        if state.registered == 1 {
            if slots > 1 {
                info!(
                    "registered with broker at {} for {} ({slots} slots)",
                    state.endpoint, self.service
                );
            } else {
                info!(
                    "registered with broker at {} for {}",
                    state.endpoint, self.service
                );
            }
        } else {
            debug!(
                "registered with broker at {} on slot {}",
                state.endpoint,
                self.core.slot_of(link)
            );
        }
    }

    /// Reads the events of every open link's monitor.
    fn read_monitors(&mut self) {
        for index in 0..self.links.len() {
            if let Err(error) = self.read_monitor(LinkId(index)) {
                debug!("{error}");
            }
        }
    }

    /// Reads what `link`'s monitor has seen, logs what is news for its broker, and tells the
    /// core about failed connections.
    fn read_monitor(&mut self, link: LinkId) -> Result<(), Error> {
        let broker = self.core.broker_of(link);
        loop {
            let Some(monitored) = self.links[link.0].socket.as_ref() else {
                return Ok(());
            };
            let Some(event) = monitored.monitor().try_recv()? else {
                return Ok(());
            };
            let socket = &mut self.links[link.0];
            let state = &mut self.brokers[broker];
            match event.kind {
                EventKind::Connected => {
                    if !socket.connected {
                        socket.connected = true;
                        socket.failed = false;
                        state.connected += 1;
                        state.unreachable_reported = false;
                        if state.connected == 1 && !state.announced {
                            state.announced = true;
                            info!("connected to broker at {}", state.endpoint);
                        } else if state.connected == 1 {
                            debug!("connected to broker at {} again", state.endpoint);
                        }
                    }
                }
                EventKind::HandshakeSucceeded => {
                    socket.handshaken = true;
                    if std::mem::take(&mut state.refused) {
                        info!("broker at {} accepted the handshake", state.endpoint);
                    }
                }
                EventKind::HandshakeFailedAuth
                | EventKind::HandshakeFailedProtocol
                | EventKind::HandshakeFailedNoDetail => {
                    let refusal = state.credentials.refusal(&state.endpoint, &event);
                    if refusal.is_none() {
                        // A handshake cut off (not under CURVE): the network or the broker
                        // going away; libzmq reconnects, and that is what we want.
                        debug!(
                            "handshake with broker at {} cut off: {}",
                            state.endpoint,
                            zsocket::monitor::errno_text(event.value)
                        );
                        continue;
                    }
                    state.refused = true;
                    let delay = self
                        .core
                        .handshake_failed(Instant::now(), link, &mut self.actions);
                    let state = &mut self.brokers[broker];
                    if let (Some(refusal), Some(delay)) = (refusal, delay) {
                        let retry = format!("closed that socket; trying again in {delay:?}");
                        match state.refusal_log.allow(Instant::now()) {
                            Some(0) => warn!("{refusal}; {retry}"),
                            Some(held_back) => warn!(
                                "{refusal}; {retry} ({held_back} more refusals since the last line)"
                            ),
                            None => debug!("{refusal}; {retry}"),
                        }
                    }
                    // The core closes the socket: what else its monitor says is of no interest.
                    self.execute()?;
                }
                EventKind::Disconnected => {
                    if socket.connected {
                        socket.connected = false;
                        state.connected = state.connected.saturating_sub(1);
                        if state.connected == 0 {
                            state.announced = false;
                            info!("lost the connection to broker at {}", state.endpoint);
                        }
                    }
                }
                EventKind::ConnectRetried | EventKind::Closed if !socket.connected => {
                    // libzmq retries every reconnect interval: one line per socket at most.
                    let first_on_socket = !std::mem::replace(&mut socket.failed, true);
                    if state.unreachable_reported {
                        if first_on_socket {
                            debug!("still no connection to broker at {}", state.endpoint);
                        }
                    } else {
                        state.unreachable_reported = true;
                        warn!(
                            "cannot connect to broker at {} (refused, or nothing listens \
                             there); retrying quietly",
                            state.endpoint
                        );
                    }
                    self.core
                        .unreachable(Instant::now(), broker, &mut self.actions);
                    self.execute()?;
                }
                kind => debug!("broker at {}: {kind:?}", state.endpoint),
            }
        }
    }

    /// The heartbeat thread's turn, while the caller is busy or between `recv`s: send replies
    /// other threads queued, read what the links that are ready for a request have received (so
    /// that the broker's heartbeats count and its DISCONNECT is heard) and what the monitors
    /// saw, then the core's timed work.
    fn background_pass(&mut self, inbox: &Inbox) -> Result<(), Error> {
        self.flush(inbox);
        for index in 0..self.links.len() {
            self.drain(LinkId(index))?;
        }
        self.read_monitors();
        self.core.tick(Instant::now(), &mut self.actions);
        self.execute()
    }

    fn reply(&mut self, reply_to: ReplyTo, body: Frames) -> Result<(), Error> {
        self.core
            .reply(Instant::now(), reply_to, body, &mut self.actions);
        self.execute()
    }

    /// Sends the replies other threads queued. A failure is logged: the thread that queued the
    /// reply has moved on, and the client will retry.
    fn flush(&mut self, inbox: &Inbox) {
        for (reply_to, body) in inbox.take() {
            if let Err(error) = self.reply(reply_to, body) {
                warn!("could not send a reply: {error}");
            }
        }
    }

    /// DISCONNECT on every open link, with a moment for it to leave before the sockets close.
    fn shut_down(&mut self) {
        self.close_linger_ms = DISCONNECT_LINGER_MS;
        self.core.shutdown(&mut self.actions);
        if let Err(error) = self.execute() {
            debug!("could not send DISCONNECT: {error}");
        }
    }

    /// Does what the core said, in order. After a failure the remaining actions are dropped:
    /// the error goes to the caller, which has nothing left to do with this worker.
    fn execute(&mut self) -> Result<(), Error> {
        let mut actions = std::mem::take(&mut self.actions);
        let mut result = Ok(());
        for action in actions.drain(..) {
            if result.is_ok() {
                result = self.execute_one(action);
            }
        }
        // Put the emptied list back, keeping its allocation for the next turn.
        self.actions = actions;
        result
    }

    fn execute_one(&mut self, action: Action) -> Result<(), Error> {
        match action {
            Action::Open { link } => self.open(link),
            Action::Send { link, frames } => {
                let Some(monitored) = self.links[link.0].socket.as_ref() else {
                    debug!("nothing sent on {link}: it has no socket");
                    return Ok(());
                };
                if log_enabled!(Level::Debug) {
                    debug!("worker -> broker: {}", dump::Message(&frames));
                }
                // Never a blocking send: a DEALER whose handshake failed has no pipe to queue
                // into and would block for ever (its monitor's report closes it soon after).
                // A message refused here is dropped: a heartbeat is sent again, and the client
                // of a lost reply resends.
                match zsocket::send(monitored.socket(), frames, zmq::DONTWAIT) {
                    Ok(()) => Ok(()),
                    Err(zsocket::SendError::Refused(refused))
                        if refused.error == zmq::Error::EAGAIN =>
                    {
                        debug!("dropped a message on {link}: its socket takes nothing now");
                        Ok(())
                    }
                    Err(error) => Err(zsocket::Error::from(error).into()),
                }
            }
            Action::Close { link } => {
                self.close(link);
                Ok(())
            }
            Action::Deliver(request) => {
                self.delivered.push_back(request);
                Ok(())
            }
        }
    }

    /// Drops `link`'s socket (and its monitor, detached first so libzmq never waits on it).
    fn close(&mut self, link: LinkId) {
        let broker = self.core.broker_of(link);
        let socket = &mut self.links[link.0];
        let Some(monitored) = socket.socket.take() else {
            return;
        };
        if self.close_linger_ms > 0 {
            // Best effort: if it fails, the socket closes at once, as any other.
            let _ = monitored.socket().set_linger(self.close_linger_ms);
        }
        drop(monitored);
        let state = &mut self.brokers[broker];
        if std::mem::take(&mut socket.connected) {
            state.connected = state.connected.saturating_sub(1);
        }
        if std::mem::take(&mut socket.registered) {
            state.registered = state.registered.saturating_sub(1);
        }
        socket.failed = false;
        socket.handshaken = false;
    }

    /// A new DEALER for `link`, in place of the old one, connected to its broker with a monitor.
    /// ZeroMQ connects in the background, so this does not wait: the READY that follows is
    /// queued and goes out as soon as the TCP (or ipc) connection is up.
    fn open(&mut self, link: LinkId) -> Result<(), Error> {
        self.close(link);
        let broker = self.core.broker_of(link);
        let state = &mut self.brokers[broker];
        let socket = self.context.socket(zmq::DEALER).doing("create a socket")?;
        socket.set_linger(0).doing("set ZMQ_LINGER")?;
        // Before connecting: libzmq fixes a connection's mechanism when it is made.
        state.credentials.apply(&socket)?;
        let monitored =
            Monitored::connect_socket(&self.context, socket, &state.endpoint, monitor_events())
                .map_err(connect_error)?;
        self.links[link.0].socket = Some(monitored);
        state.opened += 1;
        let slot = self.core.slot_of(link);
        let slots = self.core.topology().slots;
        let moved = self.core.active_broker().is_some() && self.last_opened != Some(broker);
        if slot == 0 && (state.opened == 1 || moved) {
            let verb = if moved && self.last_opened.is_some() {
                "failing over to"
            } else {
                "connecting to"
            };
            let slots = if slots > 1 {
                format!(" ({slots} slots)")
            } else {
                String::new()
            };
            info!(
                "worker for service {} {verb} broker at {}{slots}",
                self.service, state.endpoint
            );
        } else {
            debug!(
                "opening a new socket to broker at {} (slot {slot}), READY again",
                state.endpoint
            );
        }
        self.last_opened = Some(broker);
        Ok(())
    }
}

/// Starts the thread that keeps the links alive while the caller is busy: it wakes every
/// quarter interval, and if the driver is free (the caller is not in `recv` or `reply`, which do
/// this work themselves) reads what has arrived, sends the HEARTBEATs that are due and reconnects
/// links whose broker has gone.
fn spawn_heartbeat_thread(
    shared: Arc<Shared>,
    interval: Duration,
) -> std::io::Result<HeartbeatThread> {
    let (quit, quit_signal) = zsocket::stop_pair()?;
    let tick = (interval / 4).max(Duration::from_millis(1));
    let handle = std::thread::Builder::new()
        .name("mdp-worker-heartbeat".into())
        .spawn(move || loop {
            match quit_signal.sleep(tick) {
                Ok(false) => {}
                // The worker is being dropped.
                Ok(true) => return,
                Err(error) => {
                    warn!("the heartbeat thread cannot wait, and stops: {error}");
                    return;
                }
            }
            let mut driver = match shared.driver.try_lock() {
                Ok(driver) => driver,
                // Someone holds the driver, so it is in recv (which heartbeats) or reply.
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            };
            if let Err(error) = driver.background_pass(&shared.inbox) {
                warn!("the heartbeat thread could not keep the links alive: {error}");
            }
            drop(driver);
            shared.after_unlock();
        })?;
    Ok(HeartbeatThread { quit, handle })
}
