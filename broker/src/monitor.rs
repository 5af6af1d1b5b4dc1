//! Connection events of the broker's ROUTER socket, read from a ZeroMQ socket monitor and logged.
//!
//! A ROUTER socket never tells its owner about connections: peers appear when their first message
//! arrives and vanish without a word. That hides one refusal completely: when a peer sends a frame
//! larger than `ZMQ_MAXMSGSIZE` (the broker's `--max-message-size`), libzmq closes the connection
//! and the broker's code sees nothing at all. The one place it shows is the socket monitor: libzmq
//! sends an event for each thing that happens to a connection (two frames: a `u16` event number
//! and a `u32` value, then an endpoint) to an `inproc://` PAIR socket. [`spawn`] starts a thread
//! that reads those events and logs one line for each.
//!
//! What the events can and cannot say, in libzmq 4.3.4 (the version the `zmq` crate builds):
//! * A frame over the limit: the decoder fails with `EMSGSIZE` (`src/v2_decoder.cpp`,
//!   `size_ready`), the engine tears the connection down as a protocol error
//!   (`src/stream_engine_base.cpp`, `in_event_internal` calls `error (protocol_error)`), and
//!   `error` emits `ZMQ_EVENT_DISCONNECTED`, whose value is the socket's file descriptor. A peer
//!   that simply closes its socket goes through the same `error` function and produces the same
//!   event. No event carries the `EMSGSIZE`, so the log line names both causes, and that is the
//!   most any v1 monitor can say.
//! * The limit applies to each frame, not to the whole multipart message: a message of many frames
//!   each under the limit passes, however large in total.
//! * The endpoint of an event on a bound socket is the broker's own (`tcp://0.0.0.0:5555`), not the
//!   peer's. The peer's address is read with `getpeername` on the descriptor that
//!   `ZMQ_EVENT_ACCEPTED` carries, and kept until the `ZMQ_EVENT_DISCONNECTED` with the same
//!   descriptor. Events arrive after the fact, so this is best effort: a connection that libzmq
//!   closes within moments of accepting it (a peer that sends an oversize frame straight away,
//!   over loopback) is often gone before the monitor asks, and its lines name only the endpoint.
//! * A failed ZMTP handshake has its own event just before the closing, and the closing is
//!   reported with its reason: refused (the peer broke ZMTP, or asked for another security
//!   mechanism) or cut short (the peer left, or went quiet, before the handshake was done).
//!
//! The thread ends when the ROUTER socket is closed: once libzmq has finished with it (after its
//! linger), it sends `ZMQ_EVENT_MONITOR_STOPPED` and closes its end of the pair. The thread must
//! keep reading until then, because libzmq sends each event with a blocking send: a monitor that
//! stopped reading early would, once the queue between them was full, block libzmq's I/O thread.
//! And its socket holds a reference to the context, so until it ends the context is not
//! terminated, and terminating the context is what waits for the last messages (the broker's
//! final DISCONNECTs) to leave. So dropping a [`Monitor`] waits for the thread, and must happen
//! after the ROUTER socket is closed (declare the field after the socket's: fields drop in
//! order). If the thread does not end within [`STOP_PATIENCE`], it is left to finish on its own,
//! with a warning.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, log, warn, Level};
use zsocket::limit::LogLimit;
use zsocket::monitor::{errno_text, protocol_error_text, Event, EventKind, Events, SocketMonitor};

/// How long dropping a [`Monitor`] waits for its thread to end.
pub const STOP_PATIENCE: Duration = Duration::from_secs(2);

/// The events the monitor asks for. Not `ALL`: each event is a blocking send inside libzmq, so
/// the ones nobody reads (such as `HANDSHAKE_SUCCEEDED`, one per connection) are left out.
fn events() -> Events {
    Events::of(&[
        EventKind::Accepted,
        EventKind::AcceptFailed,
        EventKind::Disconnected,
        EventKind::HandshakeFailedNoDetail,
        EventKind::HandshakeFailedProtocol,
        EventKind::HandshakeFailedAuth,
        EventKind::MonitorStopped,
    ])
}

/// What can go wrong starting a monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The monitor socket could not be set up.
    #[error(transparent)]
    Socket(#[from] zsocket::Error),
    /// The thread could not be started.
    #[error("cannot start the monitor thread")]
    Thread(#[source] std::io::Error),
}

/// One connection to the monitored socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The monitored socket's endpoint that the connection came in on.
    pub endpoint: String,
    /// The peer's address, for tcp; `None` for ipc, or when the connection had already gone by
    /// the time the monitor asked.
    pub peer: Option<SocketAddr>,
}

impl std::fmt::Display for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(peer) => write!(f, "from {peer} to {}", self.endpoint),
            None => write!(f, "to {}", self.endpoint),
        }
    }
}

/// Why a connection closed, as far as libzmq says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// libzmq does not say: the peer closed it, or libzmq dropped it after the handshake for a
    /// frame over `ZMQ_MAXMSGSIZE` (or any other ZMTP framing error). Both give the same event.
    Unknown,
    /// libzmq refused the ZMTP handshake, for this reason: the peer broke the protocol or asked
    /// for another security mechanism.
    HandshakeRefused(String),
    /// The connection ended before the handshake was done: the peer left or went quiet. The
    /// reason is the system's error text.
    HandshakeCut(String),
}

/// Something that happened to a connection of the monitored socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A peer connected.
    Accepted(Connection),
    /// A connection ended.
    Closed(Connection, CloseReason),
    /// libzmq could not accept a connection; `error` is the `errno` text (for example "Too many
    /// open files" when the process is out of descriptors).
    AcceptFailed {
        /// The endpoint it was accepting on.
        endpoint: String,
        /// The `errno` text.
        error: String,
    },
    /// The monitored socket was closed: this is the last event.
    Stopped,
}

/// A running monitor thread. Dropping it waits (at most [`STOP_PATIENCE`]) for the thread to end,
/// which it does once the monitored socket has been closed.
#[derive(Debug)]
pub struct Monitor {
    thread: Option<JoinHandle<()>>,
    /// Disconnects when the thread ends: a join that can give up.
    ended: mpsc::Receiver<()>,
}

impl Monitor {
    /// Waits up to `patience` for the thread to end (the monitored socket must be closed first).
    /// True if it ended; otherwise it is left to end on its own.
    pub fn wait(mut self, patience: Duration) -> bool {
        self.stop_waiting(patience)
    }

    fn stop_waiting(&mut self, patience: Duration) -> bool {
        let Some(thread) = self.thread.take() else {
            return true;
        };
        match self.ended.recv_timeout(patience) {
            Err(mpsc::RecvTimeoutError::Disconnected) | Ok(()) => {
                if thread.join().is_err() {
                    warn!("the connection monitor thread panicked");
                }
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if !self.stop_waiting(STOP_PATIENCE) {
            warn!(
                "the connection monitor did not stop within {STOP_PATIENCE:?}: \
                 was it dropped before its socket?"
            );
        }
    }
}

/// Starts a thread that logs the connection events of `socket`: connections accepted and closed
/// (debug, a close naming `max_message_size` as a possible cause), refused at the handshake or at
/// accept (warn, at most one line a second with a count of the rest).
pub fn spawn(
    context: &zmq::Context,
    socket: &zmq::Socket,
    max_message_size: Option<i64>,
) -> Result<Monitor, MonitorError> {
    spawn_with(context, socket, max_message_size, |_| {})
}

/// Like [`spawn`], and also hands each event to `on_event` (on the monitor thread), after
/// logging it.
pub fn spawn_with(
    context: &zmq::Context,
    socket: &zmq::Socket,
    max_message_size: Option<i64>,
    mut on_event: impl FnMut(&ConnectionEvent) + Send + 'static,
) -> Result<Monitor, MonitorError> {
    // Connected here, before returning, so that libzmq's PAIR has its peer before the first
    // event: with none, its blocking send would wait.
    let events = SocketMonitor::start(context, socket, events())?;
    let (ended_sender, ended) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("broker-monitor".into())
        .spawn(move || {
            // Dropped when the thread ends, which is what `Monitor::wait` waits for.
            let _ended = ended_sender;
            let mut reader = EventReader::new(events);
            // Refusals repeat per peer: at most one line a second each, with a count.
            let mut refusals = LogLimit::default();
            loop {
                let event = match reader.next() {
                    Ok(event) => event,
                    Err(error) if error.zmq_error() == zmq::Error::ETERM => return,
                    // A signal (the stop, at shutdown) cut the wait short: nothing was lost.
                    Err(error) if error.zmq_error() == zmq::Error::EINTR => continue,
                    Err(error) => {
                        warn!("connection monitor: {error}; no more connection events");
                        return;
                    }
                };
                let level = level(&event);
                if level == Level::Warn {
                    match refusals.allow(std::time::Instant::now()) {
                        Some(0) => warn!("{}", describe(&event, max_message_size)),
                        Some(held) => warn!(
                            "{} ({held} more refused in the last second)",
                            describe(&event, max_message_size)
                        ),
                        None => debug!("{}", describe(&event, max_message_size)),
                    }
                } else {
                    log!(level, "{}", describe(&event, max_message_size));
                }
                on_event(&event);
                if event == ConnectionEvent::Stopped {
                    return;
                }
            }
        })
        .map_err(MonitorError::Thread)?;
    Ok(Monitor {
        thread: Some(thread),
        ended,
    })
}

/// The level the monitor logs an event at.
fn level(event: &ConnectionEvent) -> Level {
    match event {
        // Ordinary comings and goings: a broker in normal use logs nothing per connection at the
        // default level. `-v` shows them (and so the peer cut off for an oversize frame).
        ConnectionEvent::Accepted(_)
        | ConnectionEvent::Stopped
        | ConnectionEvent::Closed(_, CloseReason::Unknown | CloseReason::HandshakeCut(_)) => {
            Level::Debug
        }
        ConnectionEvent::Closed(_, CloseReason::HandshakeRefused(_))
        | ConnectionEvent::AcceptFailed { .. } => Level::Warn,
    }
}

/// The line the monitor logs for `event`, given the socket's `ZMQ_MAXMSGSIZE`.
pub fn describe(event: &ConnectionEvent, max_message_size: Option<i64>) -> String {
    match event {
        ConnectionEvent::Accepted(connection) => format!("connection {connection} accepted"),
        ConnectionEvent::Closed(connection, CloseReason::Unknown) => match max_message_size {
            Some(limit) => format!(
                "connection {connection} closed: the peer left, or it sent a frame larger than \
                 --max-message-size ({limit} bytes) and libzmq dropped it (libzmq reports both \
                 the same way)"
            ),
            None => format!("connection {connection} closed: the peer left"),
        },
        ConnectionEvent::Closed(connection, CloseReason::HandshakeRefused(reason)) => {
            format!("connection {connection} refused: ZMTP handshake failed ({reason})")
        }
        ConnectionEvent::Closed(connection, CloseReason::HandshakeCut(reason)) => {
            format!("connection {connection} closed during the ZMTP handshake ({reason})")
        }
        ConnectionEvent::AcceptFailed { endpoint, error } => {
            format!("could not accept a connection on {endpoint}: {error}")
        }
        ConnectionEvent::Stopped => "connection monitor stopped".to_string(),
    }
}

/// Turns the raw events into [`ConnectionEvent`]s, remembering each open connection's peer.
struct EventReader {
    monitor: SocketMonitor,
    /// Events read ahead (see `accepted`), to be handled before reading more.
    backlog: VecDeque<Event>,
    /// Open connections by file descriptor.
    open: HashMap<u32, Connection>,
    /// A handshake failure, waiting for the DISCONNECTED that libzmq sends right after it (in
    /// the same call, on the one I/O thread, so nothing comes between).
    handshake_failure: Option<CloseReason>,
}

impl EventReader {
    fn new(monitor: SocketMonitor) -> EventReader {
        EventReader {
            monitor,
            backlog: VecDeque::new(),
            open: HashMap::new(),
            handshake_failure: None,
        }
    }

    /// The next event worth reporting; blocks until there is one.
    fn next(&mut self) -> Result<ConnectionEvent, zsocket::Error> {
        loop {
            let raw = match self.backlog.pop_front() {
                Some(event) => event,
                None => self.monitor.recv()?,
            };
            let endpoint = raw.endpoint().to_owned();
            let event = match raw.kind {
                EventKind::Accepted => self.accepted(raw.value, endpoint)?,
                EventKind::Disconnected => {
                    let connection = self.open.remove(&raw.value).unwrap_or(Connection {
                        endpoint,
                        peer: None,
                    });
                    let reason = self.handshake_failure.take();
                    ConnectionEvent::Closed(connection, reason.unwrap_or(CloseReason::Unknown))
                }
                EventKind::AcceptFailed => ConnectionEvent::AcceptFailed {
                    endpoint,
                    error: errno_text(raw.value),
                },
                EventKind::HandshakeFailedNoDetail => {
                    // The value is the errno of the read or write that failed, or of the timeout.
                    self.handshake_failure = Some(CloseReason::HandshakeCut(errno_text(raw.value)));
                    continue;
                }
                EventKind::HandshakeFailedProtocol => {
                    self.handshake_failure = Some(CloseReason::HandshakeRefused(
                        protocol_error_text(raw.value),
                    ));
                    continue;
                }
                EventKind::HandshakeFailedAuth => {
                    self.handshake_failure = Some(CloseReason::HandshakeRefused(format!(
                        "authentication refused, ZAP status {}",
                        raw.value
                    )));
                    continue;
                }
                EventKind::MonitorStopped => ConnectionEvent::Stopped,
                other => {
                    debug!("connection monitor: ignoring event {other:?}");
                    continue;
                }
            };
            return Ok(event);
        }
    }

    /// A connection was accepted on descriptor `fd`: find out who the peer is.
    fn accepted(&mut self, fd: u32, endpoint: String) -> Result<ConnectionEvent, zsocket::Error> {
        let peer = peer_address(fd);
        // libzmq sent the event while the descriptor was open, but it may have been closed since
        // and even reused for a newer connection, whose peer `getpeername` would then name. In
        // that case the DISCONNECTED that libzmq sends before closing a descriptor is already
        // waiting: read what is waiting, and trust the address only if it is not among it.
        while let Some(event) = self.monitor.try_recv()? {
            self.backlog.push_back(event);
        }
        let closed_since = self
            .backlog
            .iter()
            .any(|event| event.kind == EventKind::Disconnected && event.value == fd);
        let connection = Connection {
            endpoint,
            peer: if closed_since { None } else { peer },
        };
        self.open.insert(fd, connection.clone());
        Ok(ConnectionEvent::Accepted(connection))
    }
}

/// The address of the tcp peer on descriptor `fd`, if it is still connected.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn peer_address(fd: u32) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    let fd = libc::c_int::try_from(fd).ok()?;
    // SAFETY: sockaddr_storage is plain data, for which all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut length =
        libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>()).ok()?;
    // SAFETY: getpeername writes at most `length` bytes into the buffer it is given, which is a
    // whole sockaddr_storage; on a descriptor that is closed or not a socket it fails and writes
    // nothing. It takes no ownership of the descriptor.
    let status = unsafe {
        libc::getpeername(
            fd,
            std::ptr::addr_of_mut!(storage).cast::<libc::sockaddr>(),
            &mut length,
        )
    };
    if status != 0 {
        return None;
    }
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let address: libc::sockaddr_in =
                unsafe { *std::ptr::addr_of!(storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr)),
                u16::from_be(address.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let address: libc::sockaddr_in6 =
                unsafe { *std::ptr::addr_of!(storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(address.sin6_addr.s6_addr),
                u16::from_be(address.sin6_port),
                address.sin6_flowinfo,
                address.sin6_scope_id,
            )))
        }
        // ipc (AF_UNIX) peers have no address worth printing.
        _ => None,
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn peer_address(_fd: u32) -> Option<SocketAddr> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connection_names_the_size_limit_when_there_is_one() {
        let connection = Connection {
            endpoint: "tcp://0.0.0.0:5555".to_string(),
            peer: Some("10.0.0.2:41234".parse().unwrap()),
        };
        let closed = ConnectionEvent::Closed(connection, CloseReason::Unknown);
        assert_eq!(
            describe(&closed, Some(1024)),
            "connection from 10.0.0.2:41234 to tcp://0.0.0.0:5555 closed: the peer left, or it \
             sent a frame larger than --max-message-size (1024 bytes) and libzmq dropped it \
             (libzmq reports both the same way)"
        );
        assert_eq!(
            describe(&closed, None),
            "connection from 10.0.0.2:41234 to tcp://0.0.0.0:5555 closed: the peer left"
        );
        assert_eq!(level(&closed), Level::Debug);
    }

    #[test]
    fn an_unknown_peer_is_left_out_and_a_refused_handshake_is_a_warning() {
        let connection = Connection {
            endpoint: "ipc:///tmp/broker.ipc".to_string(),
            peer: None,
        };
        let refused = ConnectionEvent::Closed(
            connection,
            CloseReason::HandshakeRefused(protocol_error_text(0x1100_0002)),
        );
        assert_eq!(
            describe(&refused, Some(1024)),
            "connection to ipc:///tmp/broker.ipc refused: ZMTP handshake failed \
             (security mechanism mismatch, code 0x11000002)"
        );
        assert_eq!(level(&refused), Level::Warn);
        let cut = ConnectionEvent::Closed(
            Connection {
                endpoint: "tcp://0.0.0.0:5555".to_string(),
                peer: None,
            },
            CloseReason::HandshakeCut(errno_text(32)),
        );
        assert_eq!(
            describe(&cut, None),
            "connection to tcp://0.0.0.0:5555 closed during the ZMTP handshake \
             (Broken pipe (os error 32))"
        );
        assert_eq!(level(&cut), Level::Debug);
    }
}
