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
//! reading (its queue is at the high-water mark) never blocks the broker: a client's messages
//! then wait in the [`crate::backlog`], in order and within `--max-queued-bytes`, and go out as
//! its pipe drains; past that limit, or for a worker, the message is dropped with a log line.
//!
//! Stopping: a [`StopHandle`] from [`zsocket::stop_router`] raises a shared flag, then wakes the
//! loop by sending one empty message to the ROUTER itself over a private `inproc://` endpoint. The
//! loop checks the flag after every receive, so the wake-up message is never mistaken for MDP
//! traffic, and no second socket has to be watched on every pass.
//!
//! With `--auth` ([`Auth`]), the ZAP handler ([`crate::zap`]) is started before anything is
//! bound, every endpoint is bound as a PLAIN server, or a CURVE one when it is written
//! `curve+tcp://...` ([`Mechanism`], [`parse_bind`]), and each message goes to the core with the
//! principal libzmq puts on it (the `User-Id` property). One ROUTER serves both kinds: libzmq
//! copies a socket's options into each listener when `bind` is called, so the mechanism options
//! are set anew before each bind (`broker/tests/mechanisms.rs` checks this over real sockets),
//! and clients and workers of every endpoint share one set of queues and one LRU order. A [`ReloadHandle`] (SIGHUP, in the
//! program) asks the loop to read the auth file again; the loop does it when it next wakes (a
//! message, or at the latest the next heartbeat), and swaps the ZAP handler's credentials and the
//! core's rules together. A file that does not parse is logged and the rules in force stay.
//!
//! Receiving, sending, waiting and stopping are [`zsocket`]'s, shared with every other program of
//! the workspace; what is the broker's own here is the order of things: tick when due, wait until
//! the next deadline, hand each message to the core, send what it says, hand a refused message
//! back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, log_enabled, warn, Level};
use mdp::{dump, Frames};
use zsocket::limit::LogLimit;
use zsocket::{ResultExt, SendError, StopHandle, StopSignal};

use crate::auth::AuthConfig;
use crate::core::{Broker, Config, Outgoing, Stats};
use crate::zap::{Credentials, Zap};
use zsocket::curve::KeyPair;

/// The ZAP domain the broker's sockets ask about (spec 27 lets a handler tell sockets apart).
pub const ZAP_DOMAIN: &str = "majordomo";

/// `--auth`: the rules and credentials to start with, and the file to read again on reload.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The rules and credentials.
    pub config: AuthConfig,
    /// Read again by [`ReloadHandle::reload`]; `None` if the rules came from elsewhere.
    pub file: Option<PathBuf>,
    /// The broker's own CURVE key pair (`--curve-secret-file`), which `curve+` endpoints need.
    pub curve: Option<KeyPair>,
}

/// The security mechanism of one bound endpoint (libzmq fixes it per endpoint, at bind time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// No authentication: the broker without `--auth`.
    Null,
    /// ZeroMQ PLAIN (spec 24): a name and a password, in clear; the default with `--auth`.
    Plain,
    /// ZeroMQ CURVE (spec 26): key pairs, and every frame encrypted.
    Curve,
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mechanism::Null => "NULL",
            Mechanism::Plain => "PLAIN",
            Mechanism::Curve => "CURVE",
        })
    }
}

/// Splits a `--bind` value into the mechanism it asks for and the ZeroMQ endpoint:
/// `curve+tcp://*:5556` is CURVE, `plain+tcp://*:5555` PLAIN, and a bare endpoint says nothing
/// (PLAIN with `--auth`, NULL without).
pub fn parse_bind(text: &str) -> (Option<Mechanism>, &str) {
    if let Some(endpoint) = text.strip_prefix("curve+") {
        (Some(Mechanism::Curve), endpoint)
    } else if let Some(endpoint) = text.strip_prefix("plain+") {
        (Some(Mechanism::Plain), endpoint)
    } else {
        (None, text)
    }
}

/// The mechanism of every `--bind` value, checked against what the broker has: `curve+` and
/// `plain+` need `--auth`, and `curve+` the broker's key pair and a libzmq with CURVE.
pub fn mechanisms(
    endpoints: &[String],
    auth: Option<&Auth>,
) -> Result<Vec<Mechanism>, ServerError> {
    endpoints
        .iter()
        .map(|text| match (parse_bind(text).0, auth) {
            (None, None) => Ok(Mechanism::Null),
            (None | Some(Mechanism::Plain), Some(_)) => Ok(Mechanism::Plain),
            (Some(Mechanism::Curve), Some(auth)) => {
                zsocket::curve::available()?;
                match auth.curve {
                    Some(_) => Ok(Mechanism::Curve),
                    None => Err(ServerError::Mechanism(format!(
                        "{text}: a CURVE endpoint needs the broker's key pair \
                         (--curve-secret-file FILE; `broker keygen` writes one)"
                    ))),
                }
            }
            (Some(mechanism), None) => Err(ServerError::Mechanism(format!(
                "{text}: a {mechanism} endpoint needs --auth FILE (the principals it admits)"
            ))),
            (Some(Mechanism::Null), Some(_)) => Err(ServerError::Mechanism(format!(
                "{text}: no NULL endpoint with --auth"
            ))),
        })
        .collect()
}

/// Asks a running [`Server`] to read its auth file again. Cloneable and `Send`.
#[derive(Debug, Clone)]
pub struct ReloadHandle(Arc<AtomicBool>);

impl ReloadHandle {
    /// The server reads the file when it next wakes: at once if a message comes, otherwise at
    /// its next heartbeat at the latest.
    pub fn reload(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// True if a resolved endpoint can be reached from this machine only: ipc, inproc, or tcp on a
/// loopback address.
pub fn is_local_endpoint(endpoint: &str) -> bool {
    let Some(address) = endpoint.strip_prefix("tcp://") else {
        return true;
    };
    // `host:port`, `[v6]:port`, or `interface;host:port` for a source address.
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What can go wrong running the broker's sockets.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No endpoint was given.
    #[error("no endpoint to bind")]
    NoEndpoint,
    /// The connection monitor could not start.
    #[error("cannot start the connection monitor")]
    Monitor(#[from] crate::monitor::MonitorError),
    /// The ZAP handler could not start.
    #[error("cannot start authentication")]
    Zap(#[from] crate::zap::ZapError),
    /// An endpoint asks for a mechanism the broker cannot give it.
    #[error("{0}")]
    Mechanism(String),
    /// CURVE is not in this build, or the broker's key cannot be set.
    #[error(transparent)]
    Curve(#[from] zsocket::curve::Error),
    /// A socket call failed (binding, most often).
    #[error(transparent)]
    Socket(#[from] zsocket::Error),
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
    // Field order is drop order. Each socket holds its context, whose last holder waits, when it
    // lets go, for what the sockets still have to send (the final DISCONNECTs, linger 500 ms).
    socket: zmq::Socket,
    /// Logs the ROUTER's connections; declared after `socket`, whose closing is what stops it.
    _monitor: crate::monitor::Monitor,
    /// Raised by a [`StopHandle`]; checked after every receive.
    stop: StopSignal,
    stop_handle: StopHandle,
    endpoints: Vec<String>,
    /// The mechanism of each of `endpoints`.
    mechanisms: Vec<Mechanism>,
    /// Declared after `socket`, so it closes before its ipc files are removed.
    _bindings: Vec<zsocket::Binding>,
    core: Broker,
    /// The most requests + services held since memory was last handed back to the system.
    held_since_trim: usize,
    /// With `--auth`: the ZAP handler, and where its rules come from.
    zap: Option<Zap>,
    auth_file: Option<PathBuf>,
    /// The broker's CURVE key pair in force, and the file to read it again from on reload
    /// ([`Server::reload_curve_key_from`]).
    curve_keys: Option<KeyPair>,
    curve_file: Option<PathBuf>,
    reload: Arc<AtomicBool>,
    /// Lines about messages that could not be sent (a peer causes them), at most one a second.
    unsent_lines: LogLimit,
    /// Messages for clients whose pipe was full, waiting to be sent in order.
    backlog: crate::backlog::Backlog,
    /// Connections open now, as the monitor thread counts them (accepted minus closed; one
    /// closed before the monitor started could take it below 0 for a moment, read as 0).
    connections: Arc<AtomicI64>,
    /// With `--http`: the dashboard's HTTP thread and what the loop publishes to it.
    live: Option<crate::live::Live>,
    /// The periodic one-line summary at info.
    summary: Summary,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds a ROUTER socket to every endpoint. An endpoint such as `tcp://127.0.0.1:*` gets a
    /// free port; [`Server::endpoints`] tells which.
    pub fn bind(
        endpoints: &[String],
        config: Config,
        options: &SocketOptions,
    ) -> Result<Server, ServerError> {
        Server::bind_with_auth(endpoints, config, options, None)
    }

    /// [`Server::bind`], with authentication and authorization when `auth` is given: every
    /// endpoint is a PLAIN server, or a CURVE one if written `curve+...` ([`parse_bind`]),
    /// checked by the ZAP handler, and the core applies the rules. Without it, a tcp endpoint
    /// that is not loopback earns a warning that anyone who can reach it may serve and call
    /// anything.
    pub fn bind_with_auth(
        endpoints: &[String],
        config: Config,
        options: &SocketOptions,
        auth: Option<Auth>,
    ) -> Result<Server, ServerError> {
        if endpoints.is_empty() {
            return Err(ServerError::NoEndpoint);
        }
        let mechanisms = mechanisms(endpoints, auth.as_ref())?;
        let context = zmq::Context::new();
        // The handler first: a PLAIN server with no handler to ask lets everyone in.
        let zap = match &auth {
            Some(auth) => Some(Zap::spawn(&context, Credentials::from(&auth.config))?),
            None => None,
        };
        let socket = context
            .socket(zmq::ROUTER)
            .doing("create the ROUTER socket")?;
        if zap.is_some() {
            socket
                .set_zap_domain(ZAP_DOMAIN)
                .doing("set ZMQ_ZAP_DOMAIN")?;
        }
        socket
            .set_router_mandatory(true)
            .doing("set ZMQ_ROUTER_MANDATORY")?;
        socket.set_linger(0).doing("set ZMQ_LINGER")?;
        if let Some(size) = options.max_message_size {
            socket.set_maxmsgsize(size).doing("set ZMQ_MAXMSGSIZE")?;
        }
        let mut bindings = Vec::new();
        for (text, &mechanism) in endpoints.iter().zip(&mechanisms) {
            // The listener bind creates takes a copy of the options as they are now.
            match (
                mechanism,
                auth.as_ref().and_then(|auth| auth.curve.as_ref()),
            ) {
                (Mechanism::Curve, Some(keys)) => zsocket::curve::set_server(&socket, keys)?,
                (Mechanism::Plain, _) => socket
                    .set_plain_server(true)
                    .doing("set ZMQ_PLAIN_SERVER")?,
                // NULL (and CURVE without keys, which `mechanisms` refused already).
                _ => socket
                    .set_plain_server(false)
                    .doing("set ZMQ_PLAIN_SERVER")?,
            }
            let binding = zsocket::bind(&socket, parse_bind(text).1)?;
            // The endpoint ends the line: scripts and tests read it from there.
            match mechanism {
                Mechanism::Null => info!("MDP broker/0.1 is active at {}", binding.endpoint()),
                _ => info!(
                    "MDP broker/0.1 ({mechanism}) is active at {}",
                    binding.endpoint()
                ),
            }
            bindings.push(binding);
        }
        if zap.is_none() {
            if let Some(open) = bindings.iter().find(|b| !is_local_endpoint(b.endpoint())) {
                warn!(
                    "listening on {} without --auth: anyone who can reach it may serve and call \
                     any service",
                    open.endpoint()
                );
            }
        }
        // The private wake-up endpoint is inproc, which has no handshake; bind it as NULL.
        socket
            .set_plain_server(false)
            .doing("set ZMQ_PLAIN_SERVER")?;
        let (stop_handle, stop) = zsocket::stop_router(&context, &socket)?;
        // Last, after every step that can fail: a monitor must not outlive an open socket.
        // The monitor thread is what sees connections come and go: it counts them for /status.
        let connections = Arc::new(AtomicI64::new(0));
        let counted = Arc::clone(&connections);
        let monitor = crate::monitor::spawn_with(
            &context,
            &socket,
            options.max_message_size,
            move |event| match event {
                crate::monitor::ConnectionEvent::Accepted(_) => {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                crate::monitor::ConnectionEvent::Closed(..) => {
                    counted.fetch_sub(1, Ordering::Relaxed);
                }
                _ => {}
            },
        )?;
        let config_bytes = config.max_queued_bytes;
        Ok(Server {
            socket,
            _monitor: monitor,
            stop,
            stop_handle,
            endpoints: bindings.iter().map(|b| b.endpoint().to_owned()).collect(),
            mechanisms,
            _bindings: bindings,
            core: match &auth {
                Some(auth) => {
                    Broker::with_access(config, auth.config.access.clone(), Instant::now())
                }
                None => Broker::new(config, Instant::now()),
            },
            held_since_trim: 0,
            backlog: crate::backlog::Backlog::new(config_bytes),
            connections,
            zap,
            curve_keys: auth.as_ref().and_then(|auth| auth.curve.clone()),
            auth_file: auth.and_then(|auth| auth.file),
            curve_file: None,
            reload: Arc::new(AtomicBool::new(false)),
            unsent_lines: LogLimit::default(),
            live: None,
            summary: Summary::new(Instant::now()),
        })
    }

    /// Serves the dashboard (`/metrics`, `/status`, the page at `/`) on `addr` from a thread of
    /// its own, fed by the loop at most every 100 ms; returns the address it listens on (the
    /// port the system picked, for port 0). Call it before [`Server::run`].
    pub fn serve_dashboard(
        &mut self,
        addr: std::net::SocketAddr,
    ) -> Result<std::net::SocketAddr, dashboard::ServeError> {
        let live = crate::live::Live::start(addr, Instant::now())?;
        let local = live.local_addr();
        info!("dashboard at http://{local}/ (/metrics, /status)");
        self.live = Some(live);
        Ok(local)
    }

    /// The endpoints the broker listens on, with wildcards resolved (`tcp://127.0.0.1:41235`),
    /// without the `curve+`/`plain+` of the `--bind` value ([`Server::mechanisms`] has it).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The mechanism of each of [`Server::endpoints`], in the same order.
    pub fn mechanisms(&self) -> &[Mechanism] {
        &self.mechanisms
    }

    /// The broker's state, for inspection.
    pub fn core(&self) -> &Broker {
        &self.core
    }

    /// A handle to stop [`Server::run`] from elsewhere: the server sends DISCONNECT to its
    /// workers and returns from `run`.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop_handle.clone()
    }

    /// A handle that makes the server read its auth file again ([`Auth::file`]).
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle(Arc::clone(&self.reload))
    }

    /// On each reload, read the broker's CURVE key pair from `file` as well (`--curve-secret-file`):
    /// if it holds another pair than the one in force, every CURVE endpoint is unbound and bound
    /// again with it (libzmq fixes an endpoint's key when it is bound). Later CURVE handshakes need
    /// the new public key; what becomes of connections made under the old one is libzmq's
    /// (`broker/tests/mechanisms.rs` shows it). A file that cannot be read keeps the key in force.
    pub fn reload_curve_key_from(&mut self, file: PathBuf) {
        self.curve_file = Some(file);
    }

    /// Reads the broker's key file again, and rebinds the CURVE endpoints if the key changed.
    fn reload_curve_key(&mut self) {
        let Some(file) = &self.curve_file else {
            return;
        };
        let keys = match KeyPair::read(file) {
            Ok(keys) => keys,
            Err(error) => {
                warn!("not reloading the CURVE key: {error}; the key in force stays");
                return;
            }
        };
        if self.curve_keys.as_ref() == Some(&keys) {
            return;
        }
        let curve_endpoints: Vec<String> = self
            .endpoints
            .iter()
            .zip(&self.mechanisms)
            .filter(|(_, &mechanism)| mechanism == Mechanism::Curve)
            .map(|(endpoint, _)| endpoint.clone())
            .collect();
        if let Err(error) = zsocket::curve::set_server(&self.socket, &keys) {
            warn!("not reloading the CURVE key: {error}; the key in force stays");
            return;
        }
        for endpoint in &curve_endpoints {
            // The resolved endpoint (a wildcard's port is known), so it binds the same port.
            let rebound = self
                .socket
                .unbind(endpoint)
                .and_then(|()| bind_again(&self.socket, endpoint));
            match rebound {
                Ok(()) => info!(
                    "CURVE endpoint {endpoint} now uses the key {} from {}",
                    keys.public(),
                    file.display()
                ),
                Err(error) => log::error!(
                    "cannot bind {endpoint} again with the new CURVE key: {error}; it is not \
                     listening now"
                ),
            }
        }
        // Back to NULL for anything bound later (nothing is, but the options stay tidy).
        let _ = self.socket.set_plain_server(false);
        self.curve_keys = Some(keys);
    }

    /// Reads the auth file again, if asked to; keeps the rules in force if it cannot.
    fn reload_if_asked(&mut self, out: &mut Vec<Outgoing>) {
        if !self.reload.swap(false, Ordering::Relaxed) {
            return;
        }
        self.reload_curve_key();
        let (Some(zap), Some(file)) = (&self.zap, &self.auth_file) else {
            warn!("asked to reload, but the broker runs without an auth file");
            return;
        };
        match AuthConfig::load(file) {
            Ok(config) => {
                zap.set(Credentials::from(&config));
                info!(
                    "reloaded {}: {} principal(s)",
                    file.display(),
                    config.access.len()
                );
                self.core.set_access(Some(config.access), out);
            }
            Err(error) => warn!("not reloading: {error}; the rules in force stay"),
        }
    }

    /// Serves until a [`StopHandle`] fires, then sends DISCONNECT to every worker and returns the
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
            self.flush_backlog();
            let received = self.receive(now)?;
            if self.stop.is_raised() {
                break;
            }
            now = Instant::now();
            self.reload_if_asked(&mut out);
            if let Some((sender, principal, frames)) = received {
                self.core
                    .handle_as(now, &sender, principal.as_deref(), frames, &mut out);
            }
            self.send_all(&mut out);
            if let Some(live) = &mut self.live {
                let connections = self.connections.load(Ordering::Relaxed).max(0) as u64;
                live.publish_if_due(now, &mut self.core, Some(connections));
            }
            if let Some(line) = self.summary.due(now, &self.core) {
                info!("{line}");
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

    /// Waits until the core's next deadline for one whole message: the sender's identity, the
    /// principal ZAP gave its connection (with `--auth`), and the frames after the identity.
    /// `None` when the time ran out or a signal interrupted the wait.
    #[allow(clippy::type_complexity)]
    fn receive(
        &mut self,
        now: Instant,
    ) -> Result<Option<(zmq::Message, Option<String>, Frames)>, ServerError> {
        let deadline = match self
            .live
            .as_ref()
            .and_then(crate::live::Live::next_deadline)
        {
            Some(publish_at) => publish_at.min(self.core.next_deadline()),
            None => self.core.next_deadline(),
        };
        // A ROUTER never says when a full pipe has room again: while messages wait, look again
        // soon.
        let deadline = if self.backlog.is_empty() {
            deadline
        } else {
            deadline.min(now + crate::backlog::RETRY)
        };
        let received = zsocket::recv_until(&self.socket, Some(deadline), now)?;
        let Some((identity, mut frames)) = received.and_then(zsocket::split_routed) else {
            return Ok(None);
        };
        // libzmq puts the connection's metadata on every frame it delivers; a connection ZAP did
        // not name has no User-Id.
        let principal = if self.zap.is_some() {
            frames
                .first_mut()
                .and_then(|frame| frame.gets("User-Id"))
                .filter(|user| !user.is_empty())
                .map(str::to_owned)
        } else {
            None
        };
        if log_enabled!(Level::Debug) {
            debug!(
                "from {}: {}",
                dump::Identity(&identity),
                dump::Message(&frames)
            );
        }
        Ok(Some((identity, principal, frames)))
    }

    /// Sends every message in `out`, emptying it; a message that cannot be routed is logged and
    /// reported to the core, which may answer with more messages (sent in the same call).
    ///
    /// What the core answers to a refusal goes out at once, before the rest of the batch: it may
    /// hand a dead worker's request to another worker, and that worker's own fate (a HEARTBEAT
    /// later in the batch that bounces) must not be learnt before the request is tried on it, or
    /// the request is forgotten with it (found by the simulation, seed 207). `out` is used as a
    /// stack, reversed, so this costs no allocation.
    fn send_all(&mut self, out: &mut Vec<Outgoing>) {
        out.reverse();
        while let Some(message) = out.pop() {
            if let Some(client) = &message.if_connected {
                if self.is_gone(client) {
                    let answered_from = out.len();
                    self.core.client_gone(message.frames, out);
                    out[answered_from..].reverse();
                    continue;
                }
            }
            if self.backlog.holds(message.recipient()) {
                self.hold(message.frames);
                continue;
            }
            match self.send(message.frames) {
                Ok(()) => {}
                // A client that reads slower than its replies come: they wait, in order.
                Err(SendError::Refused(refused))
                    if refused.error == zmq::Error::EAGAIN
                        && !refused
                            .frames
                            .first()
                            .is_some_and(|peer| self.core.has_worker(peer)) =>
                {
                    self.hold(refused.frames);
                }
                Err(error) => {
                    let answered_from = out.len();
                    self.report_unsent(error, out);
                    out[answered_from..].reverse();
                }
            }
        }
    }

    /// Holds a message for a peer whose pipe is full ([`crate::backlog`]); past the backlog's
    /// byte limit it is dropped with a (rate-limited) line.
    fn hold(&mut self, frames: Frames) {
        let Err(frames) = self.backlog.push(frames) else {
            return;
        };
        let why = format!(
            "peer is not reading, and {} bytes already wait for slow readers (--max-queued-bytes)",
            self.backlog.bytes()
        );
        self.log_dropped(dump::Identity(frames.first().map_or(&[], |f| &f[..])), &why);
    }

    /// Sends what waits in the backlog, as far as the peers' pipes take it.
    fn flush_backlog(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let socket = &self.socket;
        let flushed = self
            .backlog
            .flush(|frames| zsocket::send(socket, frames, zmq::DONTWAIT));
        for peer in &flushed.gone {
            debug!(
                "peer {} is gone: dropping the messages that waited for it",
                dump::Identity(peer)
            );
        }
    }

    /// Whether a one-request-at-a-time client's connection is gone ([`mdp::tries`]): the
    /// ROUTER refuses [`mdp::tries::probe`] for it with `EHOSTUNREACH`. A client that is only
    /// slow to read (`EAGAIN`) is still there.
    fn is_gone(&self, client: &[u8]) -> bool {
        matches!(
            zsocket::send(&self.socket, mdp::tries::probe(client), zmq::DONTWAIT),
            Err(SendError::Refused(zsocket::Refused {
                error: zmq::Error::EHOSTUNREACH,
                ..
            }))
        )
    }

    fn send(&self, frames: Frames) -> Result<(), SendError> {
        if log_enabled!(Level::Debug) {
            debug!(
                "to {}: {}",
                dump::Identity(frames.first().map_or(&[], |f| &f[..])),
                dump::Message(&frames[1.min(frames.len())..])
            );
        }
        // The ROUTER decides whether it can route the message when it gets the identity frame,
        // and refuses it there (peer gone, or its queue full) before taking anything, so a
        // refused message comes back whole for the core to take back.
        zsocket::send(&self.socket, frames, zmq::DONTWAIT)
    }

    fn report_unsent(&mut self, unsent: SendError, out: &mut Vec<Outgoing>) {
        let (recipient, error) = match unsent {
            // The core may take back what it sent: a request the worker never got.
            SendError::Refused(refused) => {
                let recipient = refused.frames.first().map(|f| zmq::Message::from(&f[..]));
                if self.core.refused(refused.frames, out) {
                    return;
                }
                (recipient.unwrap_or_else(zmq::Message::new), refused.error)
            }
            SendError::Failed { first_frame, error } => {
                self.core.undeliverable(&first_frame, out);
                (first_frame, error.zmq_error())
            }
        };
        let peer = dump::Identity(&recipient);
        let why = match error {
            zmq::Error::EHOSTUNREACH => "peer is gone".to_string(),
            zmq::Error::EAGAIN => "peer is not reading".to_string(),
            other => other.to_string(),
        };
        self.log_dropped(peer, &why);
    }

    /// One line for a dropped message, at most one a second (a peer causes them).
    fn log_dropped(&mut self, peer: dump::Identity<'_>, why: &str) {
        match self.unsent_lines.allow(Instant::now()) {
            Some(0) => warn!("dropping message for {peer}: {why}"),
            Some(held) => {
                warn!("dropping message for {peer}: {why} ({held} more dropped in the last second)")
            }
            None => debug!("dropping message for {peer}: {why}"),
        }
    }
}

/// How often the broker may log its one-line summary (only when something changed).
pub const SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The periodic summary: what the broker did since the last line, at most every
/// [`SUMMARY_EVERY`], and nothing when nothing but heartbeats happened.
#[derive(Debug)]
struct Summary {
    next_at: Instant,
    last: Stats,
}

impl Summary {
    fn new(now: Instant) -> Summary {
        Summary {
            next_at: now + SUMMARY_EVERY,
            last: Stats::default(),
        }
    }

    /// The line to log at `now`, if one is due and something changed since the last one.
    fn due(&mut self, now: Instant, core: &Broker) -> Option<String> {
        if now < self.next_at {
            return None;
        }
        self.next_at = now + SUMMARY_EVERY;
        // Heartbeats move only the message counts: they alone are no news.
        let quiet = |stats: &Stats| Stats {
            messages_in: 0,
            messages_out: 0,
            ..stats.clone()
        };
        let stats = core.stats();
        if quiet(stats) == quiet(&self.last) {
            return None;
        }
        let last = std::mem::replace(&mut self.last, stats.clone());
        let d = |now: u64, before: u64| now.saturating_sub(before);
        Some(format!(
            "in the last {}s: {} request(s) answered, {} refused, {} expired, {} lost with a \
             worker; {} worker(s) registered, {} purged, {} disconnected, {} malformed \
             message(s); now {} worker(s), {} service(s), {} request(s) waiting",
            SUMMARY_EVERY.as_secs(),
            d(stats.replies_forwarded, last.replies_forwarded),
            d(stats.requests_refused(), last.requests_refused()),
            d(stats.requests_expired, last.requests_expired),
            d(
                stats.requests_lost_with_worker,
                last.requests_lost_with_worker
            ),
            d(stats.workers_registered, last.workers_registered),
            d(stats.workers_purged, last.workers_purged),
            d(stats.workers_disconnected, last.workers_disconnected),
            d(stats.malformed_messages, last.malformed_messages),
            core.worker_count(),
            core.service_count(),
            core.queued_requests(),
        ))
    }
}

/// Binds `endpoint` right after it was unbound. libzmq closes an unbound listener in its I/O
/// thread, after `zmq_unbind` has returned, so the port may still be taken for a moment: without
/// retrying, the CURVE endpoint was lost in 5 test runs of 6 here. Tries for up to a second.
fn bind_again(socket: &zmq::Socket, endpoint: &str) -> Result<(), zmq::Error> {
    let mut tries = 0;
    loop {
        match socket.bind(endpoint) {
            Err(zmq::Error::EADDRINUSE) if tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
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

#[cfg(test)]
mod tests {
    use super::{is_local_endpoint, Summary, SUMMARY_EVERY};
    use crate::core::{Broker, Config};
    use std::time::{Duration, Instant};

    fn frames(parts: &[&[u8]]) -> mdp::Frames {
        parts.iter().map(|part| zmq::Message::from(*part)).collect()
    }

    #[test]
    fn the_summary_comes_once_a_minute_and_only_when_more_than_heartbeats_happened() {
        let start = Instant::now();
        let mut core = Broker::new(Config::default(), start);
        let mut summary = Summary::new(start);
        let mut out = Vec::new();
        assert_eq!(
            summary.due(start + SUMMARY_EVERY, &core),
            None,
            "nothing happened"
        );
        let at = start + SUMMARY_EVERY * 2;
        core.handle(
            at,
            b"W",
            frames(&[b"", b"MDPW01", b"\x01", b"echo"]),
            &mut out,
        );
        let line = summary.due(at, &core).expect("a registration is news");
        assert!(line.contains("1 worker(s) registered"), "{line}");
        assert!(line.contains("now 1 worker(s), 1 service(s)"), "{line}");
        core.handle(at, b"C", frames(&[b"", b"MDPC01", b"echo", b"x"]), &mut out);
        let soon = at + SUMMARY_EVERY - Duration::from_millis(1);
        assert_eq!(
            summary.due(soon, &core),
            None,
            "not a minute since the last line"
        );
        let at = at + SUMMARY_EVERY;
        let line = summary.due(at, &core).expect("a request is news");
        assert!(
            line.contains("0 worker(s) registered"),
            "only what is new: {line}"
        );
        // Heartbeats only: no line.
        core.handle(at, b"W", frames(&[b"", b"MDPW01", b"\x04"]), &mut out);
        assert_eq!(summary.due(at + SUMMARY_EVERY, &core), None);
    }

    #[test]
    fn only_loopback_tcp_ipc_and_inproc_count_as_local() {
        for local in [
            "tcp://127.0.0.1:5555",
            "tcp://127.0.0.2:1",
            "tcp://[::1]:5555",
            "tcp://localhost:5555",
            "ipc:///tmp/mdp.ipc",
            "inproc://x",
        ] {
            assert!(is_local_endpoint(local), "{local}");
        }
        for open in [
            "tcp://0.0.0.0:5555",
            "tcp://[::]:5555",
            "tcp://192.168.1.4:5555",
            "tcp://eth0:5555",
        ] {
            assert!(!is_local_endpoint(open), "{open}");
        }
    }
}
