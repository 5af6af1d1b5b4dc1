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
//! # Threads
//! Heartbeats must flow while the caller is busy with a request: a handler that runs longer
//! than `heartbeat_interval x liveness` would otherwise be purged by the broker mid-request. So
//! each worker has a small heartbeat thread. The DEALER socket sits behind a mutex (a ZeroMQ
//! socket may move between threads given a full memory barrier, which a mutex provides; it must
//! never be used by two at once, which the mutex prevents). The caller's thread holds it while
//! it waits for a request in [`Worker::recv`] and sends heartbeats itself from there; while the
//! caller is busy the heartbeat thread takes the idle socket every quarter interval and sends a
//! HEARTBEAT when one is due. The request path is one uncontended lock and no thread hand-off,
//! which keeps the worker cheap per request.
//!
//! # Stopping
//! [`Worker::stop_handle`] gives a [`StopHandle`] that another thread (a signal handler, say) can
//! use to make a blocked [`Worker::recv`] return [`Error::Stopped`]. Dropping the worker sends the
//! broker a DISCONNECT so it forgets the worker at once rather than after its heartbeat timeout.

pub mod core;
pub mod exec;
mod link;

use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::warn;
pub use mdp::{Frames, ServiceName};

use link::{Link, Received};

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
    #[error("cannot connect to {endpoint:?}")]
    Connect {
        endpoint: String,
        #[source]
        source: zmq::Error,
    },
    /// A ZeroMQ call failed for a reason other than the broker's absence (which is never an
    /// error: messages wait in the socket until the broker is back).
    #[error("ZeroMQ failed to {action}")]
    Zmq {
        action: &'static str,
        #[source]
        source: zmq::Error,
    },
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

impl Error {
    /// A `map_err` adapter for ZeroMQ calls: `socket.send(..).map_err(Error::zmq("send"))`.
    fn zmq(action: &'static str) -> impl Fn(zmq::Error) -> Error + Copy {
        move |source| Error::Zmq { action, source }
    }
}

/// Where a reply goes: the client address of the REQUEST it answers, and the conversation with
/// the broker that request came in.
pub struct ReplyTo {
    client: zmq::Message,
    conversation: u64,
}

impl ReplyTo {
    /// The client address frame as the broker sent it: opaque bytes, usually a ROUTER identity.
    pub fn client_address(&self) -> &[u8] {
        &self.client
    }
}

impl std::fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplyTo({})", mdp::dump::Identity(&self.client))
    }
}

/// One request from a client, as [`Worker::recv`] returns it. Destructure it: the body is yours to
/// read or to send back, and `reply_to` goes to [`Worker::reply`].
#[derive(Debug)]
pub struct Request {
    pub reply_to: ReplyTo,
    /// The request body, one frame or more, as the client sent it.
    pub body: Frames,
}

/// Makes a blocked [`Worker::recv`] return [`Error::Stopped`], from any thread.
#[derive(Debug, Clone)]
pub struct StopHandle {
    requested: Arc<AtomicBool>,
    /// One end of a socket pair whose other end sits in the worker's poll set: writing a byte
    /// wakes the poll, which a flag alone could not do.
    wake: Arc<UnixStream>,
}

impl StopHandle {
    /// Asks the worker to stop. Safe to call from a signal-handling thread and more than once.
    pub fn stop(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // Non-blocking: if the pair's buffer is full, the worker is already being woken.
        let _ = (&*self.wake).write(&[1]);
    }

    fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// An MDP worker connected to one broker for one service. See the [crate docs](crate).
pub struct Worker {
    link: Arc<Mutex<Link>>,
    heartbeats: Option<HeartbeatThread>,
    stop: StopHandle,
    /// The read end of the stop signal; never read, only polled.
    stop_signal: UnixStream,
    /// The conversation of the request handed out and not answered yet, if any.
    awaiting_reply: Option<u64>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("awaiting_reply", &self.awaiting_reply)
            .finish_non_exhaustive()
    }
}

struct HeartbeatThread {
    /// Dropping this sender ends the thread.
    quit: crossbeam_channel::Sender<()>,
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
        let mut link = Link::new(context.clone(), endpoint.to_owned(), service, config);
        link.connect()?;
        let link = Arc::new(Mutex::new(link));

        let setup = |action| move |source| Error::Setup { action, source };
        let (wake, stop_signal) = UnixStream::pair().map_err(setup("create the stop signal"))?;
        wake.set_nonblocking(true)
            .map_err(setup("create the stop signal"))?;
        let stop = StopHandle {
            requested: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(wake),
        };
        let heartbeats = spawn_heartbeat_thread(Arc::clone(&link), heartbeat_interval)
            .map_err(setup("start the heartbeat thread"))?;
        Ok(Worker {
            link,
            heartbeats: Some(heartbeats),
            stop,
            stop_signal,
            awaiting_reply: None,
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
        if self.awaiting_reply.is_some() {
            return Err(Error::ReplyPending);
        }
        let mut link = lock(&self.link);
        let (client, body) = wait_for_request(&mut link, &self.stop, &self.stop_signal)?;
        let conversation = link.conversation();
        drop(link);
        self.awaiting_reply = Some(conversation);
        Ok(Request {
            reply_to: ReplyTo {
                client,
                conversation,
            },
            body,
        })
    }

    /// Sends the reply to a request. The body frames are sent as they are, without copying; an
    /// empty body is sent as one empty frame, since spec 7 requires at least one.
    ///
    /// If the conversation the request came in has ended meanwhile, the reply is dropped with a
    /// log line: the broker no longer knows this worker and the client will retry.
    pub fn reply(&mut self, reply_to: ReplyTo, body: Frames) -> Result<(), Error> {
        self.awaiting_reply = None;
        let mut link = lock(&self.link);
        link.send_reply(reply_to.conversation, reply_to.client, body, Instant::now())
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
            drop(heartbeats.quit);
            if heartbeats.handle.join().is_err() {
                warn!("the heartbeat thread panicked");
            }
        }
        lock(&self.link).disconnect();
    }
}

/// The link's mutex guards plain data, so a panic elsewhere while holding it leaves nothing
/// half-changed that matters: take the lock back rather than propagate the panic.
fn lock(link: &Mutex<Link>) -> MutexGuard<'_, Link> {
    link.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The caller's side of the link: receive, heartbeat, reconnect, until a REQUEST arrives.
fn wait_for_request(
    link: &mut Link,
    stop: &StopHandle,
    stop_signal: &UnixStream,
) -> Result<(zmq::Message, Frames), Error> {
    // A reply was just sent, or the worker was idle without listening: either way the broker's
    // silence up to now proves nothing.
    link.restart_broker_countdown(Instant::now());
    // The broker sends a worker its next request only after our reply has reached it, so right
    // after a reply nothing is waiting yet: poll first, then drain what poll says is there. (A
    // receive that finds nothing is not free: libzmq checks its command pipe with a system call.)
    let mut may_have_message = false;
    loop {
        if stop.is_requested() {
            return Err(Error::Stopped);
        }
        if !link.is_connected() {
            let delay = link.take_reconnect_delay();
            if wait_for_stop(stop_signal, delay)? {
                return Err(Error::Stopped);
            }
            link.connect()?;
            may_have_message = false;
        }
        if may_have_message {
            match link.try_recv()? {
                Some(frames) => match link.handle(frames, Instant::now()) {
                    Received::Request { client, body } => return Ok((client, body)),
                    Received::Nothing => continue,
                },
                None => may_have_message = false,
            }
        }
        let now = Instant::now();
        if link.broker_is_silent(now) {
            warn!("no heartbeat from the broker for heartbeat interval x liveness; reconnecting");
            link.close();
            continue;
        }
        link.heartbeat_if_due(now)?;
        let timeout = millis_until(link.next_deadline(), now);
        let Some(socket) = link.socket() else {
            continue;
        };
        let mut items = [
            socket.as_poll_item(zmq::POLLIN),
            zmq::PollItem::from_fd(stop_signal.as_raw_fd(), zmq::POLLIN),
        ];
        match zmq::poll(&mut items, timeout) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(source) => {
                return Err(Error::Zmq {
                    action: "poll",
                    source,
                })
            }
        }
        may_have_message = items[0].is_readable();
    }
}

/// Sleeps for `delay` unless stopped first; true if stopped.
fn wait_for_stop(stop_signal: &UnixStream, delay: Duration) -> Result<bool, Error> {
    let deadline = Instant::now() + delay;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let mut items = [zmq::PollItem::from_fd(stop_signal.as_raw_fd(), zmq::POLLIN)];
        match zmq::poll(&mut items, millis_until(deadline, now)) {
            Ok(_) if items[0].is_readable() => return Ok(true),
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

/// Milliseconds from `now` to `deadline` for `zmq::poll`, rounded up so that a poll never
/// returns just before the deadline and spins.
fn millis_until(deadline: Instant, now: Instant) -> i64 {
    let wait = deadline.saturating_duration_since(now);
    i64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}

/// Starts the thread that heartbeats while the caller is busy: it wakes every quarter interval,
/// and if the link is free (the caller is not in `recv` or `reply`) sends a HEARTBEAT when due.
fn spawn_heartbeat_thread(
    link: Arc<Mutex<Link>>,
    interval: Duration,
) -> std::io::Result<HeartbeatThread> {
    let (quit, quit_signal) = crossbeam_channel::bounded::<()>(0);
    let tick = (interval / 4).max(Duration::from_millis(1));
    let handle = std::thread::Builder::new()
        .name("mdp-worker-heartbeat".into())
        .spawn(move || loop {
            match quit_signal.recv_timeout(tick) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                // The worker dropped its sender: time to go.
                _ => return,
            }
            let mut link = match link.try_lock() {
                Ok(link) => link,
                // The caller holds the link, so it is in recv (which heartbeats) or reply.
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            };
            if let Err(error) = link.heartbeat_if_due(Instant::now()) {
                warn!("could not send a heartbeat: {error}");
            }
        })?;
    Ok(HeartbeatThread { quit, handle })
}
