//! The broker's socket loop: one ROUTER socket for clients and workers alike, a blocking receive
//! that sleeps until either a message arrives or the core's next deadline, and nothing else.
//!
//! The loop waits in `recv` itself, with `ZMQ_RCVTIMEO` set to the time left until the core's
//! next deadline, rather than in `zmq_poll`. Both sleep in the kernel until libzmq's I/O thread
//! signals a message, but `zmq_poll` also asks every socket in its set for `ZMQ_EVENTS` before
//! and after sleeping, and each ask is a `poll` system call of its own: measured with
//! `strace -c`, a poll-based loop over the ROUTER and a stop socket made 10.6 `poll` calls per
//! request where this loop makes about 4. A message that is already waiting is returned by
//! `recv` at once, so a burst is drained message by message without sleeping, and the clock is
//! read after each one so the timers still run under a flood.
//!
//! Frames are received into [`zmq::Message`]s and handed to the core as they are, and the core
//! hands the same messages back to be sent, so a request body is never copied on its way from a
//! client to a worker.
//!
//! The ROUTER is set to `ZMQ_ROUTER_MANDATORY`: a message to a peer that has gone fails with
//! `EHOSTUNREACH` instead of vanishing, and sends use `ZMQ_DONTWAIT`, so a peer that stopped
//! reading (its queue is at the high-water mark) costs a log line and a dropped message, never a
//! blocked broker.
//!
//! Stopping: a [`Stopper`] raises a shared flag, then wakes the loop by sending one empty message
//! to the ROUTER itself over an `inproc://` endpoint. The loop checks the flag after every
//! receive, so the wake-up message is never mistaken for MDP traffic, and no second socket has
//! to be watched on every pass.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, log_enabled, warn, Level};
use mdp::{dump, Frames};

use crate::core::{Broker, Config, Outgoing, Stats};

/// The endpoint the ROUTER also binds so that a [`Stopper`] can wake it; `inproc://` names are
/// private to the server's own context.
const STOP_ENDPOINT: &str = "inproc://broker-stop";

/// What can go wrong running the broker's sockets.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {endpoint}")]
    Bind {
        endpoint: String,
        source: zmq::Error,
    },
    #[error("no endpoint to bind")]
    NoEndpoint,
    #[error("cannot start the connection monitor")]
    Monitor(#[from] crate::monitor::MonitorError),
    #[error("socket error while {action}")]
    Socket {
        action: &'static str,
        source: zmq::Error,
    },
}

fn socket_error(action: &'static str) -> impl FnOnce(zmq::Error) -> ServerError {
    move |source| ServerError::Socket { action, source }
}

/// Socket settings beyond the broker core's [`Config`].
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// Largest message a peer may send, in bytes (`ZMQ_MAXMSGSIZE`); a peer that sends a larger
    /// one is disconnected by libzmq. `None` for no limit.
    pub max_message_size: Option<i64>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            max_message_size: Some(16 * 1024 * 1024),
        }
    }
}

/// A bound broker, ready to [`run`](Server::run).
pub struct Server {
    // Field order is drop order: sockets close before the context they belong to.
    socket: zmq::Socket,
    /// Logs the ROUTER's connections; declared after `socket`, whose closing is what stops it.
    _monitor: crate::monitor::Monitor,
    context: zmq::Context,
    /// Raised by a [`Stopper`]; checked after every receive.
    stop_requested: Arc<AtomicBool>,
    endpoints: Vec<String>,
    ipc_files: Vec<PathBuf>,
    core: Broker,
    /// The most requests + services held since memory was last handed back to the system.
    held_since_trim: usize,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A handle that stops a running [`Server`] from another thread (or a signal handler).
///
/// It holds no socket until it is used: a socket connected to the server's ROUTER over
/// `inproc://` would have to take part in closing the ROUTER, which only happens when its owner
/// calls into libzmq, so a handle kept beside a server that is being dropped would stall it.
pub struct Stopper {
    stop_requested: Arc<AtomicBool>,
    context: zmq::Context,
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stopper")
    }
}

impl Stopper {
    /// Asks the server to stop: it sends DISCONNECT to its workers and returns from `run`.
    pub fn stop(&self) {
        // The flag first: the loop must see it when the wake-up message arrives.
        self.stop_requested.store(true, Ordering::SeqCst);
        if let Err(error) = self.wake() {
            warn!("could not signal the broker to stop: {error}");
        }
    }

    /// Sends one empty message to the server's ROUTER from a DEALER made for the purpose.
    fn wake(&self) -> Result<(), zmq::Error> {
        let socket = self.context.socket(zmq::DEALER)?;
        // Closing the DEALER must not discard the message before the server has read it, and
        // must not hold up the end of the process if the server is already gone.
        socket.set_linger(WAKE_LINGER_MS)?;
        socket.connect(STOP_ENDPOINT)?;
        socket.send(zmq::Message::new(), zmq::DONTWAIT)
    }
}

/// How long a [`Stopper`]'s wake-up message may wait to be read once its socket is closed.
const WAKE_LINGER_MS: i32 = 100;

impl Server {
    /// Binds a ROUTER socket to every endpoint. An endpoint such as `tcp://127.0.0.1:*` gets a
    /// free port; [`Server::endpoints`] tells which.
    pub fn bind(
        endpoints: &[String],
        config: Config,
        options: &SocketOptions,
    ) -> Result<Server, ServerError> {
        if endpoints.is_empty() {
            return Err(ServerError::NoEndpoint);
        }
        let context = zmq::Context::new();
        let socket = context
            .socket(zmq::ROUTER)
            .map_err(socket_error("creating the ROUTER socket"))?;
        socket
            .set_router_mandatory(true)
            .map_err(socket_error("setting ZMQ_ROUTER_MANDATORY"))?;
        socket
            .set_linger(0)
            .map_err(socket_error("setting ZMQ_LINGER"))?;
        if let Some(size) = options.max_message_size {
            socket
                .set_maxmsgsize(size)
                .map_err(socket_error("setting ZMQ_MAXMSGSIZE"))?;
        }
        let mut bound = Vec::new();
        let mut ipc_files = Vec::new();
        for endpoint in endpoints {
            socket.bind(endpoint).map_err(|source| ServerError::Bind {
                endpoint: endpoint.clone(),
                source,
            })?;
            let actual = match socket.get_last_endpoint() {
                Ok(Ok(actual)) => actual,
                _ => endpoint.clone(),
            };
            if let Some(path) = actual.strip_prefix("ipc://") {
                ipc_files.push(PathBuf::from(path));
            }
            info!("MDP broker/0.1 is active at {actual}");
            bound.push(actual);
        }
        socket
            .bind(STOP_ENDPOINT)
            .map_err(socket_error("binding the stop endpoint"))?;
        // Last, after every step that can fail: a monitor must not outlive an open socket.
        let monitor = crate::monitor::spawn(&context, &socket, options.max_message_size)?;
        Ok(Server {
            socket,
            _monitor: monitor,
            context,
            stop_requested: Arc::new(AtomicBool::new(false)),
            endpoints: bound,
            ipc_files,
            core: Broker::new(config, Instant::now()),
            held_since_trim: 0,
        })
    }

    /// The endpoints the broker listens on, with wildcards resolved (`tcp://127.0.0.1:41235`).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The broker's state, for inspection.
    pub fn core(&self) -> &Broker {
        &self.core
    }

    /// A handle to stop [`Server::run`] from elsewhere.
    pub fn stopper(&self) -> Result<Stopper, ServerError> {
        Ok(Stopper {
            stop_requested: Arc::clone(&self.stop_requested),
            context: self.context.clone(),
        })
    }

    /// Serves until a [`Stopper`] fires, then sends DISCONNECT to every worker and returns the
    /// counters of what was done.
    pub fn run(&mut self) -> Result<Stats, ServerError> {
        let mut out = Vec::new();
        let mut now = Instant::now();
        loop {
            if now >= self.core.next_deadline() {
                self.core.tick(now, &mut out);
                self.send_all(&mut out);
                self.hand_back_memory();
            }
            let wait = self.core.next_deadline().saturating_duration_since(now);
            // Round up, so the loop does not wake a millisecond early and spin.
            let timeout_ms = i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
            self.socket
                .set_rcvtimeo(timeout_ms)
                .map_err(socket_error("setting ZMQ_RCVTIMEO"))?;
            let received = self.receive()?;
            if self.stop_requested.load(Ordering::SeqCst) {
                break;
            }
            now = Instant::now();
            if let Some((sender, frames)) = received {
                self.core.handle(now, &sender, frames, &mut out);
                self.send_all(&mut out);
            }
        }
        info!(
            "stopping: sending DISCONNECT to {} worker(s)",
            self.core.worker_count()
        );
        self.core.shutdown(&mut out);
        // Give the DISCONNECTs a moment to leave before the socket closes.
        let _ = self.socket.set_linger(500);
        self.send_all(&mut out);
        let stats = self.core.stats().clone();
        info!("served: {stats}");
        Ok(stats)
    }

    /// After a burst of queued requests has drained or expired, asks the allocator to return the
    /// freed pages. glibc's malloc keeps freed memory in the middle of its heap for reuse, so
    /// without this the broker's RSS would stay at its peak after, say, 100,000 requests for
    /// absent services expired.
    fn hand_back_memory(&mut self) {
        let held = self.core.queued_requests() + self.core.service_count();
        self.held_since_trim = self.held_since_trim.max(held);
        if self.held_since_trim - held >= TRIM_AFTER_RELEASING {
            debug!(
                "{} requests/services released: trimming the heap",
                self.held_since_trim - held
            );
            release_free_memory();
            self.held_since_trim = held;
        }
    }

    /// Waits up to `ZMQ_RCVTIMEO` for one whole message: the sender's identity and the frames
    /// after it. `None` when the time ran out or a signal interrupted the wait.
    fn receive(&mut self) -> Result<Option<(zmq::Message, Frames)>, ServerError> {
        let mut identity = zmq::Message::new();
        match self.socket.recv(&mut identity, 0) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(None),
            Err(source) => {
                return Err(ServerError::Socket {
                    action: "receiving",
                    source,
                })
            }
        }
        let mut frames = Vec::with_capacity(6);
        let mut more = identity.get_more();
        while more {
            // The rest of a multipart message arrives with its first frame, so this never waits.
            let mut frame = zmq::Message::new();
            self.socket
                .recv(&mut frame, 0)
                .map_err(socket_error("receiving"))?;
            more = frame.get_more();
            frames.push(frame);
        }
        if log_enabled!(Level::Debug) {
            debug!(
                "from {}: {}",
                dump::Identity(&identity),
                dump::Message(&frames)
            );
        }
        Ok(Some((identity, frames)))
    }

    /// Sends every message in `out`, emptying it; a message that cannot be routed is logged and
    /// reported to the core, which may answer with more messages (sent in the same call).
    fn send_all(&mut self, out: &mut Vec<Outgoing>) {
        while !out.is_empty() {
            for message in std::mem::take(out) {
                if let Err(error) = self.send(message.frames) {
                    self.report_unsent(error, out);
                }
            }
        }
    }

    fn send(&self, frames: Frames) -> Result<(), Unsent> {
        if log_enabled!(Level::Debug) {
            debug!(
                "to {}: {}",
                dump::Identity(frames.first().map_or(&[], |f| &f[..])),
                dump::Message(&frames[1.min(frames.len())..])
            );
        }
        let Some(recipient) = frames.first() else {
            return Ok(());
        };
        let more = frames.len() - 1;
        // The ROUTER decides whether it can route the message when it gets the identity frame,
        // and refuses it there (peer gone, or its queue full) before taking anything: so the
        // identity goes out as a copy of its bytes (a few, copied into the message itself, no
        // allocation), and a refused message is still whole for the core to take back.
        let flags = if more > 0 {
            zmq::SNDMORE | zmq::DONTWAIT
        } else {
            zmq::DONTWAIT
        };
        if let Err(error) = self.socket.send(&recipient[..], flags) {
            return Err(Unsent::Refused { frames, error });
        }
        let mut frames = frames.into_iter();
        let Some(recipient) = frames.next() else {
            return Ok(());
        };
        for (index, frame) in frames.enumerate() {
            let flags = if index + 1 < more {
                zmq::SNDMORE | zmq::DONTWAIT
            } else {
                zmq::DONTWAIT
            };
            if let Err(error) = self.socket.send(frame, flags) {
                return Err(Unsent::Cut { recipient, error });
            }
        }
        Ok(())
    }

    fn report_unsent(&mut self, unsent: Unsent, out: &mut Vec<Outgoing>) {
        let (recipient, error) = match unsent {
            // The core may take back what it sent: a request the worker never got.
            Unsent::Refused { frames, error } => {
                let recipient = frames.first().map(|f| zmq::Message::from(&f[..]));
                if self.core.refused(frames, out) {
                    return;
                }
                (recipient.unwrap_or_else(zmq::Message::new), error)
            }
            Unsent::Cut { recipient, error } => {
                self.core.undeliverable(&recipient, out);
                (recipient, error)
            }
        };
        let peer = dump::Identity(&recipient);
        match error {
            zmq::Error::EHOSTUNREACH => warn!("dropping message for {peer}: peer is gone"),
            zmq::Error::EAGAIN => warn!("dropping message for {peer}: peer is not reading"),
            other => warn!("dropping message for {peer}: {other}"),
        }
    }
}

/// How many queued requests and services must have gone before the heap is trimmed.
const TRIM_AFTER_RELEASING: usize = 10_000;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: malloc_trim only walks and releases the allocator's free lists; it takes no
    // pointers from us and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// A message that could not be sent.
enum Unsent {
    /// The ROUTER refused it at the identity frame, before taking any of it: here it is, whole.
    Refused { frames: Frames, error: zmq::Error },
    /// The ROUTER took the first frames and failed on a later one (it should not happen: it
    /// refuses at the identity frame); only the recipient is left.
    Cut {
        recipient: zmq::Message,
        error: zmq::Error,
    },
}

impl Drop for Server {
    fn drop(&mut self) {
        for path in &self.ipc_files {
            match std::fs::remove_file(path) {
                Ok(()) => debug!("removed {}", path.display()),
                // libzmq may already have removed it when the socket closed.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => warn!("could not remove {}: {error}", path.display()),
            }
        }
    }
}
