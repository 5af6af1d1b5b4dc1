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
//! ```no_run
//! use worker::{Worker, WorkerConfig};
//!
//! # fn main() -> Result<(), worker::Error> {
//! let service = "echo".parse().expect("a valid service name");
//! let mut worker = Worker::connect("tcp://localhost:5555", service, WorkerConfig::default())?;
//! loop {
//!     let request = worker.recv()?;
//!     // An echo service: the reply is the request body, sent on as the same zmq::Messages.
//!     worker.reply(request.reply_to, request.body)?;
//! }
//! # }
//! ```
//!
//! # Layers
//! The protocol lives in [`core::WorkerCore`], a state machine with no sockets and no clock: it
//! is given each message and the time, and says what to send, when to reopen a socket and which
//! request to hand out. This file is its driver: one DEALER socket per link of the core (one
//! link today), opened, read, written and waited on through `zsocket`.
//!
//! # Threads
//! Heartbeats must flow while the caller is busy with a request: a handler that runs longer
//! than `heartbeat_interval x liveness` would otherwise be purged by the broker mid-request. So
//! each worker has a small heartbeat thread. The core and the sockets sit behind a mutex (a
//! ZeroMQ socket may move between threads given a full memory barrier, which a mutex provides;
//! it must never be used by two at once, which the mutex prevents). The caller's thread holds it
//! while it waits for a request in [`Worker::recv`] and heartbeats from there; while the caller
//! is busy (or between calls) the heartbeat thread takes the free driver every quarter interval,
//! reads what the broker sent, and sends the HEARTBEATs that are due. The request path is one
//! uncontended lock and no thread hand-off, which keeps the worker cheap per request.
//!
//! # Stopping
//! [`Worker::stop_handle`] gives a [`StopHandle`] that another thread (a signal handler, say) can
//! use to make a blocked [`Worker::recv`] return [`Error::Stopped`]. Dropping the worker sends the
//! broker a DISCONNECT so it forgets the worker at once rather than after its heartbeat timeout.

pub mod core;
pub mod exec;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, log_enabled, warn, Level};
use mdp::dump;
use zsocket::{StopSignal, Woken};

pub use crate::core::{ReplyTo, Request};
pub use mdp::{Frames, ServiceName};
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
    /// A ZeroMQ call failed for a reason other than the broker's absence (which is never an
    /// error: messages wait in the socket until the broker is back).
    #[error(transparent)]
    Socket(#[from] zsocket::Error),
    /// The operating system refused something the worker needs (its thread, its stop signal).
    #[error("cannot {action}")]
    Setup {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// [`StopHandle::stop`] was called.
    #[error("the worker was asked to stop")]
    Stopped,
    /// `recv` was called while the previous request was still unanswered. The broker sends a
    /// worker one request at a time and waits for its REPLY, so there would be nothing to receive.
    #[error("recv() called before reply() answered the previous request")]
    ReplyPending,
}

/// An MDP worker connected to one broker for one service. See the [crate docs](crate).
pub struct Worker {
    driver: Arc<Mutex<Driver>>,
    heartbeats: Option<HeartbeatThread>,
    stop: StopHandle,
    stop_signal: StopSignal,
    /// A request was handed out and not answered yet.
    awaiting_reply: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("awaiting_reply", &self.awaiting_reply)
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
        Worker::with_context(&zmq::Context::new(), endpoint, service, config)
    }

    /// The same, with sockets made by the caller's ZeroMQ context (one context per process is
    /// the usual way; each context runs its own I/O thread).
    pub fn with_context(
        context: &zmq::Context,
        endpoint: &str,
        service: ServiceName,
        config: WorkerConfig,
    ) -> Result<Worker, Error> {
        if service.is_mmi() {
            return Err(Error::ReservedService(service));
        }
        let heartbeat_interval = config.heartbeat_interval;
        let mut driver = Driver::new(context.clone(), endpoint, service, config);
        driver.start()?;
        let driver = Arc::new(Mutex::new(driver));

        let setup = |action| move |source| Error::Setup { action, source };
        let (stop, stop_signal) = zsocket::stop_pair().map_err(setup("create the stop signal"))?;
        let heartbeats = spawn_heartbeat_thread(Arc::clone(&driver), heartbeat_interval)
            .map_err(setup("start the heartbeat thread"))?;
        Ok(Worker {
            driver,
            heartbeats: Some(heartbeats),
            stop,
            stop_signal,
            awaiting_reply: false,
        })
    }

    /// A handle that makes `recv` return [`Error::Stopped`].
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Waits for the next request, sending heartbeats and reconnecting as needed meanwhile.
    ///
    /// Every request must be answered with [`Worker::reply`] before the next `recv`: the broker
    /// gives a worker one request at a time.
    pub fn recv(&mut self) -> Result<Request, Error> {
        if self.awaiting_reply {
            return Err(Error::ReplyPending);
        }
        let request = lock(&self.driver).next_request(&self.stop_signal)?;
        self.awaiting_reply = true;
        Ok(request)
    }

    /// Sends the reply to a request. The body frames are sent as they are, without copying; an
    /// empty body is sent as one empty frame, since spec 7 requires at least one.
    ///
    /// If the conversation the request came in has ended meanwhile, the reply is dropped with a
    /// log line: the broker no longer knows this worker and the client will retry.
    pub fn reply(&mut self, reply_to: ReplyTo, body: Frames) -> Result<(), Error> {
        self.awaiting_reply = false;
        lock(&self.driver).reply(reply_to, body)
    }

    /// Serves requests with `handler` (request body in, reply body out) until stopped, which
    /// returns `Ok(())`.
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
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(heartbeats) = self.heartbeats.take() {
            heartbeats.quit.stop();
            if heartbeats.handle.join().is_err() {
                warn!("the heartbeat thread panicked");
            }
        }
        lock(&self.driver).shut_down();
    }
}

/// The driver's mutex guards the core and the sockets, which a panic elsewhere while holding it
/// leaves in no half-changed state that matters: take the lock back rather than propagate it.
fn lock(driver: &Mutex<Driver>) -> MutexGuard<'_, Driver> {
    driver.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One link's socket, as the driver holds it.
struct LinkSocket {
    endpoint: String,
    /// `None` between conversations: after a DISCONNECT or a silent broker, until the core
    /// opens the link again.
    socket: Option<zmq::Socket>,
    /// How many sockets this link has opened, to tell a first connection from a reconnection in
    /// the log.
    sockets_opened: u64,
}

/// The thin driver: the core, one socket per link, and the actions between them. The caller's
/// thread and the heartbeat thread take turns holding it behind a mutex.
struct Driver {
    context: zmq::Context,
    service: ServiceName,
    core: WorkerCore,
    /// Indexed by [`LinkId`].
    links: Vec<LinkSocket>,
    /// What the core said to do, executed in order and emptied; kept to reuse its allocation.
    actions: Vec<Action>,
    /// Requests received and not handed to the caller yet: the heartbeat thread may receive one
    /// while the caller is between `recv`s. At most one per link, since the driver does not read
    /// a link that holds a request.
    delivered: VecDeque<Request>,
    /// The linger a closed socket gets: 0, except when the worker shuts down and the DISCONNECT
    /// just sent should have a moment to leave.
    close_linger_ms: i32,
}

impl Driver {
    fn new(
        context: zmq::Context,
        endpoint: &str,
        service: ServiceName,
        config: WorkerConfig,
    ) -> Driver {
        let links = 1;
        Driver {
            context,
            core: WorkerCore::new(service.clone(), config, links, Instant::now()),
            service,
            links: (0..links)
                .map(|_| LinkSocket {
                    endpoint: endpoint.to_owned(),
                    socket: None,
                    sockets_opened: 0,
                })
                .collect(),
            actions: Vec::new(),
            delivered: VecDeque::new(),
            close_linger_ms: 0,
        }
    }

    /// Opens every link and says READY on it.
    fn start(&mut self) -> Result<(), Error> {
        self.core.start(Instant::now(), &mut self.actions);
        self.execute()
    }

    /// The caller's side: receive, heartbeat, reconnect, until a request arrives or the worker
    /// is stopped.
    fn next_request(&mut self, stop: &StopSignal) -> Result<Request, Error> {
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
            let now = Instant::now();
            self.core.tick(now, &mut self.actions);
            self.execute()?;
            match self.wait(stop, now)? {
                Woken::Stopped => return Err(Error::Stopped),
                Woken::Timeout => {}
                Woken::Readable(links) => {
                    for link in links {
                        self.drain(LinkId(link))?;
                    }
                }
            }
        }
    }

    /// Sleeps until a link that is ready for a request has a message, the core's next deadline
    /// passes, or the stop signal is raised. Readable links come back as link indexes.
    fn wait(&self, stop: &StopSignal, now: Instant) -> Result<Woken, Error> {
        let deadline = Some(self.core.next_deadline());
        let mut listening = self.links.iter().enumerate().filter_map(|(index, link)| {
            let socket = link.socket.as_ref()?;
            (!self.core.holds_request(LinkId(index))).then_some((index, socket))
        });
        let woken = match (listening.next(), listening.next()) {
            (None, _) => zsocket::wait(&[], Some(stop), deadline, now)?,
            // One link, the usual case: no list of sockets to build.
            (Some((index, socket)), None) => {
                let woken =
                    zsocket::wait(std::slice::from_ref(&socket), Some(stop), deadline, now)?;
                readable_as_links(woken, |_| index)
            }
            (Some(first), Some(second)) => {
                let links: Vec<(usize, &zmq::Socket)> =
                    [first, second].into_iter().chain(listening).collect();
                let sockets: Vec<&zmq::Socket> = links.iter().map(|(_, socket)| *socket).collect();
                let woken = zsocket::wait(&sockets, Some(stop), deadline, now)?;
                readable_as_links(woken, |position| links[position].0)
            }
        };
        Ok(woken)
    }

    /// Receives and handles what is waiting on `link`, until nothing is, or until a request is
    /// delivered: the link then holds it and is not read until the reply.
    fn drain(&mut self, link: LinkId) -> Result<(), Error> {
        while !self.core.holds_request(link) {
            let Some(socket) = self.links[link.0].socket.as_ref() else {
                return Ok(());
            };
            let Some(frames) = zsocket::recv(socket, zmq::DONTWAIT)? else {
                return Ok(());
            };
            if log_enabled!(Level::Debug) {
                debug!("broker -> worker: {}", dump::Message(&frames));
            }
            self.core
                .handle(Instant::now(), link, frames, &mut self.actions);
            self.execute()?;
        }
        Ok(())
    }

    /// The heartbeat thread's turn, while the caller is busy or between `recv`s: read what the
    /// links that are ready for a request have received (so that the broker's heartbeats count
    /// and its DISCONNECT is heard), then the core's timed work.
    fn background_pass(&mut self) -> Result<(), Error> {
        for index in 0..self.links.len() {
            self.drain(LinkId(index))?;
        }
        self.core.tick(Instant::now(), &mut self.actions);
        self.execute()
    }

    fn reply(&mut self, reply_to: ReplyTo, body: Frames) -> Result<(), Error> {
        self.core
            .reply(Instant::now(), reply_to, body, &mut self.actions);
        self.execute()
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
                let Some(socket) = self.links[link.0].socket.as_ref() else {
                    debug!("nothing sent on {link}: it has no socket");
                    return Ok(());
                };
                if log_enabled!(Level::Debug) {
                    debug!("worker -> broker: {}", dump::Message(&frames));
                }
                zsocket::send(socket, frames, 0).map_err(zsocket::Error::from)?;
                Ok(())
            }
            Action::Close { link } => {
                if let Some(socket) = self.links[link.0].socket.take() {
                    if self.close_linger_ms > 0 {
                        // Best effort: if it fails, the socket closes at once, as any other.
                        let _ = socket.set_linger(self.close_linger_ms);
                    }
                }
                Ok(())
            }
            Action::Deliver(request) => {
                self.delivered.push_back(request);
                Ok(())
            }
        }
    }

    /// A new DEALER for `link`, in place of the old one, connected to the broker. ZeroMQ
    /// connects in the background, so this does not wait: the READY that follows is queued and
    /// goes out as soon as the TCP (or ipc) connection is up.
    fn open(&mut self, link: LinkId) -> Result<(), Error> {
        let link_socket = &mut self.links[link.0];
        link_socket.socket = None;
        let socket = zsocket::connect(&self.context, zmq::DEALER, &link_socket.endpoint).map_err(
            |error| {
                if error.is_bad_endpoint() {
                    Error::Connect(error)
                } else {
                    Error::Socket(error)
                }
            },
        )?;
        link_socket.socket = Some(socket);
        link_socket.sockets_opened += 1;
        if link_socket.sockets_opened == 1 {
            info!(
                "worker for service {} connecting to broker at {}",
                self.service, link_socket.endpoint
            );
        } else {
            info!(
                "reconnected to broker at {}, sending READY for {} again",
                link_socket.endpoint, self.service
            );
        }
        Ok(())
    }
}

/// Turns the positions of readable sockets in a wait's list into link indexes, in place.
fn readable_as_links(woken: Woken, link_at: impl Fn(usize) -> usize) -> Woken {
    match woken {
        Woken::Readable(mut positions) => {
            for position in &mut positions {
                *position = link_at(*position);
            }
            Woken::Readable(positions)
        }
        other => other,
    }
}

/// Starts the thread that keeps the links alive while the caller is busy: it wakes every
/// quarter interval, and if the driver is free (the caller is not in `recv` or `reply`, which do
/// this work themselves) reads what has arrived, sends the HEARTBEATs that are due and reconnects
/// links whose broker has gone.
fn spawn_heartbeat_thread(
    driver: Arc<Mutex<Driver>>,
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
            let mut driver = match driver.try_lock() {
                Ok(driver) => driver,
                // The caller holds the driver, so it is in recv (which heartbeats) or reply.
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            };
            if let Err(error) = driver.background_pass() {
                warn!("the heartbeat thread could not keep the link alive: {error}");
            }
        })?;
    Ok(HeartbeatThread { quit, handle })
}
