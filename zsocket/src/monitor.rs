//! Socket monitors: what libzmq knows about a socket's connections, for any program.
//!
//! ZeroMQ hides connections: a connecting socket retries in the background for ever, and nothing
//! on the socket itself says whether a peer was ever reached. The one place this shows is the
//! socket monitor (`zmq_socket_monitor`): libzmq sends one message for each thing that happens to
//! a connection (a `u16` event number and a `u32` value in the first frame, the endpoint in the
//! second, version 1 format) on an `inproc://` PAIR socket that it binds. This module connects
//! the other end and parses what comes:
//!
//! * [`SocketMonitor::start`]: monitor a socket, for the events the caller chooses ([`Events`]).
//! * [`SocketMonitor::try_recv`], [`SocketMonitor::pending`]: read what has arrived, without
//!   blocking (an iterator of [`Event`]s: kind, value, endpoint); [`SocketMonitor::recv`] blocks,
//!   for a thread of its own (the broker's connection log).
//! * [`Monitored`]: a socket and its monitor together, opened and connected in the right order
//!   and closed safely; what a client or a worker wants ([`Monitored::connect`]).
//!
//! # Two dangers, and what this module does about them
//!
//! libzmq sends each event with a **blocking** send, from its I/O thread (or the socket's own).
//! So:
//!
//! 1. **A queue that fills blocks libzmq.** If nobody reads, the queue between the two PAIR
//!    sockets fills at its high-water mark and libzmq's I/O thread, which every socket of the
//!    context shares, stops. This module sets the receiving end's `ZMQ_RCVHWM` to 0 before it
//!    connects: for `inproc://` a pipe is unbounded when either end's limit is 0, so the send
//!    never waits and unread events only cost memory (about 100 bytes each). A reader that does
//!    not keep reading should still subscribe only to rare events: [`Events::CONNECTION`] (a
//!    few per connection) is rare; `CONNECT_DELAYED` and `CONNECT_RETRIED` come every reconnect
//!    interval (100 ms by default) while the peer is away, so read those regularly or leave them
//!    out.
//! 2. **A reader that leaves first blocks libzmq.** Once the receiving PAIR is closed, libzmq's
//!    PAIR has no peer, and its next event blocks the I/O thread until the context ends (a socket
//!    closing emits `DISCONNECTED` or `CLOSED` during its teardown, which runs after `zmq_close`
//!    returns). Either keep reading until [`EventKind::MonitorStopped`] (subscribe to it: libzmq
//!    sends it when the monitored socket is gone, then closes its end; the broker's log thread
//!    does this), or call [`detach`] on the monitored socket before closing the reader: it
//!    points the socket's monitor at a fresh endpoint with no events, so nothing is ever sent
//!    again. [`Monitored`] does the latter when dropped, so dropping it never blocks anyone.
//!
//! Start the monitor **before** connecting the socket (as [`Monitored::connect`] does): libzmq
//! emits events only while a monitor is set, and the first connection attempt happens at once.
//!
//! What the values mean, in libzmq 4.3.4: `CONNECTED`, `ACCEPTED`, `DISCONNECTED`, `CLOSED`
//! carry the connection's file descriptor (reused by later connections); `CONNECT_RETRIED` the
//! reconnect interval in milliseconds; `CONNECT_DELAYED` an errno (`EINPROGRESS`);
//! `ACCEPT_FAILED`, `BIND_FAILED`, `CLOSE_FAILED` and `HANDSHAKE_FAILED_NO_DETAIL` an errno
//! ([`errno_text`]); `HANDSHAKE_FAILED_PROTOCOL` a `ZMQ_PROTOCOL_ERROR_*` code
//! ([`protocol_error_text`]); `HANDSHAKE_FAILED_AUTH` the ZAP status code. A refused tcp
//! connection shows as `CLOSED` then `CONNECT_RETRIED`, with no errno: libzmq does not say why.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result, ResultExt};

/// Numbers the `inproc://` endpoints, so that monitors in one context never share one.
static NEXT_MONITOR: AtomicU64 = AtomicU64::new(0);

/// A fresh `inproc://` endpoint for a monitor.
fn next_endpoint() -> String {
    format!(
        "inproc://zsocket-monitor-{}",
        NEXT_MONITOR.fetch_add(1, Ordering::Relaxed)
    )
}

/// Which events a monitor asks for: a bit set of `ZMQ_EVENT_*`, built from [`EventKind`]s or
/// with the constants here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Events(u16);

impl Events {
    /// No events.
    pub const NONE: Events = Events(0);
    /// What a connecting socket needs to tell "never reached the peer" from "connected": the TCP
    /// connection made, the ZMTP handshake done or failed, a connection lost, and the monitor's
    /// end. A few events per connection; not the retries (see the [module docs](self)).
    pub const CONNECTION: Events = Events(
        zmq::SocketEvent::CONNECTED as u16
            | zmq::SocketEvent::DISCONNECTED as u16
            | zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16
            | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as u16
            | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as u16
            | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as u16
            | zmq::SocketEvent::MONITOR_STOPPED as u16,
    );

    /// These kinds.
    pub fn of(kinds: &[EventKind]) -> Events {
        Events(kinds.iter().fold(0, |bits, kind| bits | kind.to_raw()))
    }

    /// These events and `kind`.
    #[must_use]
    pub fn with(self, kind: EventKind) -> Events {
        Events(self.0 | kind.to_raw())
    }

    /// True if `kind` is among these.
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.to_raw() != 0
    }

    /// The bit set, as `zmq_socket_monitor` takes it.
    pub fn bits(self) -> i32 {
        i32::from(self.0)
    }
}

/// What happened: the `ZMQ_EVENT_*` of libzmq 4.3.4, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A connecting socket's TCP (or ipc) connection was made.
    Connected,
    /// A connect did not complete at once and is in progress.
    ConnectDelayed,
    /// A connect failed, or a connection was lost, and is retried after the value (ms).
    ConnectRetried,
    /// A bound socket listens.
    Listening,
    /// A bind failed.
    BindFailed,
    /// A bound socket accepted a connection.
    Accepted,
    /// A bound socket could not accept a connection.
    AcceptFailed,
    /// A connection's descriptor was closed (also after a refused connect).
    Closed,
    /// Closing a descriptor failed.
    CloseFailed,
    /// A connection ended (the peer left, or libzmq dropped it).
    Disconnected,
    /// The monitor ends: the last event.
    MonitorStopped,
    /// The ZMTP handshake failed for a system error (the value is the errno).
    HandshakeFailedNoDetail,
    /// The ZMTP handshake (and security mechanism) succeeded: the peer speaks ZMTP.
    HandshakeSucceeded,
    /// The ZMTP handshake failed: the peer broke the protocol.
    HandshakeFailedProtocol,
    /// The ZMTP handshake failed: authentication refused.
    HandshakeFailedAuth,
    /// An event number this code does not know (a newer libzmq).
    Other(u16),
}

impl EventKind {
    const KNOWN: [(zmq::SocketEvent, EventKind); 15] = [
        (zmq::SocketEvent::CONNECTED, EventKind::Connected),
        (zmq::SocketEvent::CONNECT_DELAYED, EventKind::ConnectDelayed),
        (zmq::SocketEvent::CONNECT_RETRIED, EventKind::ConnectRetried),
        (zmq::SocketEvent::LISTENING, EventKind::Listening),
        (zmq::SocketEvent::BIND_FAILED, EventKind::BindFailed),
        (zmq::SocketEvent::ACCEPTED, EventKind::Accepted),
        (zmq::SocketEvent::ACCEPT_FAILED, EventKind::AcceptFailed),
        (zmq::SocketEvent::CLOSED, EventKind::Closed),
        (zmq::SocketEvent::CLOSE_FAILED, EventKind::CloseFailed),
        (zmq::SocketEvent::DISCONNECTED, EventKind::Disconnected),
        (zmq::SocketEvent::MONITOR_STOPPED, EventKind::MonitorStopped),
        (
            zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL,
            EventKind::HandshakeFailedNoDetail,
        ),
        (
            zmq::SocketEvent::HANDSHAKE_SUCCEEDED,
            EventKind::HandshakeSucceeded,
        ),
        (
            zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL,
            EventKind::HandshakeFailedProtocol,
        ),
        (
            zmq::SocketEvent::HANDSHAKE_FAILED_AUTH,
            EventKind::HandshakeFailedAuth,
        ),
    ];

    /// The kind of event number `raw`. (Not `zmq::SocketEvent::from_raw`, which panics on a
    /// number it does not know.)
    pub fn from_raw(raw: u16) -> EventKind {
        EventKind::KNOWN
            .iter()
            .find(|(event, _)| *event as u16 == raw)
            .map_or(EventKind::Other(raw), |(_, kind)| *kind)
    }

    /// The event number.
    pub fn to_raw(self) -> u16 {
        match self {
            EventKind::Other(raw) => raw,
            known => EventKind::KNOWN
                .iter()
                .find(|(_, kind)| *kind == known)
                .map_or(0, |(event, _)| *event as u16),
        }
    }
}

/// One event, as libzmq sent it.
#[derive(Debug)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The event's value; what it means depends on the kind (see the [module docs](self)).
    pub value: u32,
    /// The endpoint's frame, kept as received (no copy).
    endpoint: Option<zmq::Message>,
}

impl Event {
    /// The endpoint the event is about: for a connecting socket the address it connects to, for
    /// a bound one its own (not the peer's); empty for `MONITOR_STOPPED`.
    pub fn endpoint(&self) -> &str {
        self.endpoint
            .as_ref()
            .and_then(|frame| std::str::from_utf8(frame).ok())
            .unwrap_or("")
    }

    /// An event made by hand, for tests of code that reads events.
    pub fn new(kind: EventKind, value: u32, endpoint: &str) -> Event {
        Event {
            kind,
            value,
            endpoint: Some(zmq::Message::from(endpoint.as_bytes())),
        }
    }
}

/// The reading end of a socket's monitor. See the [module docs](self) for the rules.
pub struct SocketMonitor {
    events: zmq::Socket,
}

impl std::fmt::Debug for SocketMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketMonitor").finish_non_exhaustive()
    }
}

impl SocketMonitor {
    /// Starts monitoring `monitored` for `events` and connects the reading end, so that libzmq's
    /// PAIR has its peer before the first event (with none, its send would block). Call it before
    /// `monitored` connects or binds, to see the first attempt.
    pub fn start(
        context: &zmq::Context,
        monitored: &zmq::Socket,
        events: Events,
    ) -> Result<SocketMonitor> {
        let endpoint = next_endpoint();
        monitored
            .monitor(&endpoint, events.bits())
            .doing("start a socket monitor")?;
        let reader = context.socket(zmq::PAIR).doing("create a monitor socket")?;
        reader.set_linger(0).doing("set ZMQ_LINGER")?;
        // Unbounded, so libzmq's blocking send never waits (see the module docs).
        reader.set_rcvhwm(0).doing("set ZMQ_RCVHWM")?;
        reader
            .connect(&endpoint)
            .map_err(|source| Error::new(format!("connect to {endpoint}"), source))?;
        Ok(SocketMonitor { events: reader })
    }

    /// The next event, waiting for it; for a thread that reads until
    /// [`EventKind::MonitorStopped`]. `ETERM` when the context ends.
    pub fn recv(&self) -> Result<Event> {
        loop {
            match read(&self.events, 0) {
                Ok(Some(event)) => return Ok(event),
                // EINTR: a signal; wait again.
                Ok(None) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// The next event if one has arrived, without waiting.
    pub fn try_recv(&self) -> Result<Option<Event>> {
        read(&self.events, zmq::DONTWAIT)
    }

    /// The events that have arrived, without waiting: an iterator that ends when none is left.
    /// An error (the context ending) also ends it, after a debug line.
    pub fn pending(&self) -> Pending<'_> {
        Pending { monitor: self }
    }

    /// The reading socket, to wait on with [`crate::wait`] alongside others.
    pub fn socket(&self) -> &zmq::Socket {
        &self.events
    }
}

/// The events waiting on a monitor; see [`SocketMonitor::pending`].
#[derive(Debug)]
pub struct Pending<'a> {
    monitor: &'a SocketMonitor,
}

impl Iterator for Pending<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        match self.monitor.try_recv() {
            Ok(event) => event,
            Err(error) => {
                log::debug!("socket monitor: {error}; no more events");
                None
            }
        }
    }
}

/// Stops the monitor of `monitored` so that libzmq sends it nothing more, whoever reads: its
/// monitor is pointed at a fresh `inproc://` endpoint with no events (libzmq 4.3.4 stops the old
/// one first, sending `MONITOR_STOPPED` to the old reader if it asked for it). Call it before
/// closing a reader that has not seen `MONITOR_STOPPED`; see the [module docs](self).
pub fn detach(monitored: &zmq::Socket) -> Result<()> {
    monitored
        .monitor(&next_endpoint(), Events::NONE.bits())
        .doing("stop a socket monitor")
}

/// A socket with its monitor. Dropping it detaches the monitor, closes the socket, then the
/// reader, so it never blocks libzmq (see the [module docs](self)).
pub struct Monitored {
    // Field order is drop order: the socket before the monitor's reader.
    socket: zmq::Socket,
    monitor: SocketMonitor,
}

impl std::fmt::Debug for Monitored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitored").finish_non_exhaustive()
    }
}

impl Monitored {
    /// Opens a socket of `kind` with linger 0 (as [`crate::connect`]), starts its monitor for
    /// `events`, then connects it to `endpoint`, so the monitor sees the first attempt.
    pub fn connect(
        context: &zmq::Context,
        kind: zmq::SocketType,
        endpoint: &str,
        events: Events,
    ) -> Result<Monitored> {
        let socket = context.socket(kind).doing("create a socket")?;
        socket.set_linger(0).doing("set ZMQ_LINGER")?;
        Monitored::connect_socket(context, socket, endpoint, events)
    }

    /// The same, for a socket the caller made and set up (options that must precede the
    /// connect, such as `ZMQ_IDENTITY` or high-water marks).
    pub fn connect_socket(
        context: &zmq::Context,
        socket: zmq::Socket,
        endpoint: &str,
        events: Events,
    ) -> Result<Monitored> {
        let monitor = SocketMonitor::start(context, &socket, events)?;
        let monitored = Monitored { socket, monitor };
        monitored
            .socket
            .connect(endpoint)
            .map_err(|source| Error::new(format!("connect to {endpoint}"), source))?;
        Ok(monitored)
    }

    /// The socket.
    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// Its monitor.
    pub fn monitor(&self) -> &SocketMonitor {
        &self.monitor
    }

    /// The events that have arrived, without waiting.
    pub fn pending(&self) -> Pending<'_> {
        self.monitor.pending()
    }
}

impl Drop for Monitored {
    fn drop(&mut self) {
        if let Err(error) = detach(&self.socket) {
            // Only when the context is ending, which unblocks libzmq anyway.
            log::debug!("{error}");
        }
    }
}

/// Reads one event; `None` when nothing is waiting (with `DONTWAIT`) or a signal interrupted.
fn read(socket: &zmq::Socket, flags: i32) -> Result<Option<Event>> {
    let mut header = zmq::Message::new();
    match socket.recv(&mut header, flags) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => return Ok(None),
        Err(source) => return Err(Error::new("receive a monitor event", source)),
    }
    // A message arrives whole: once the first frame is in, the endpoint frame is too.
    let endpoint = if header.get_more() {
        let mut frame = zmq::Message::new();
        socket
            .recv(&mut frame, 0)
            .doing("receive a monitor event")?;
        Some(frame)
    } else {
        None
    };
    Ok(Some(parse(&header, endpoint)))
}

/// The event in a version 1 header frame: the event number (`u16`) and value (`u32`), in the
/// machine's byte order.
fn parse(header: &[u8], endpoint: Option<zmq::Message>) -> Event {
    match header.get(..6) {
        Some(bytes) => Event {
            kind: EventKind::from_raw(u16::from_ne_bytes([bytes[0], bytes[1]])),
            value: u32::from_ne_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]),
            endpoint,
        },
        // Not the version 1 format: nothing this code knows how to read.
        None => Event {
            kind: EventKind::Other(0),
            value: 0,
            endpoint,
        },
    }
}

/// The system's text for an errno value carried by an event.
pub fn errno_text(errno: u32) -> String {
    match i32::try_from(errno) {
        Ok(errno) => std::io::Error::from_raw_os_error(errno).to_string(),
        Err(_) => format!("error {errno}"),
    }
}

/// What a `ZMQ_PROTOCOL_ERROR_*` code of `zmq.h` (the value of `HANDSHAKE_FAILED_PROTOCOL`)
/// means, for the codes a peer without CURVE can meet.
pub fn protocol_error_text(code: u32) -> String {
    let what = match code {
        0x1000_0000 => "unspecified ZMTP error",
        0x1000_0001 => "unexpected command",
        0x1000_0002 => "invalid sequence",
        0x1000_0011..=0x1000_0017 => "malformed command",
        0x1000_0018 => "invalid metadata",
        0x1100_0002 => "security mechanism mismatch",
        _ => "protocol error",
    };
    format!("{what}, code {code:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Reads events until one of `kind` comes, or fails after 5 s.
    fn wait_for(monitor: &SocketMonitor, kind: EventKind) -> Vec<Event> {
        let give_up = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        while Instant::now() < give_up {
            crate::wait(
                &[monitor.socket()],
                None,
                Some(Instant::now() + Duration::from_millis(100)),
                Instant::now(),
            )
            .expect("wait");
            for event in monitor.pending() {
                let found = event.kind == kind;
                seen.push(event);
                if found {
                    return seen;
                }
            }
        }
        panic!("no {kind:?} within 5 s; saw {seen:?}");
    }

    #[test]
    fn every_known_kind_round_trips_and_an_unknown_one_is_kept() {
        for (event, kind) in EventKind::KNOWN {
            assert_eq!(EventKind::from_raw(event as u16), kind);
            assert_eq!(kind.to_raw(), event as u16);
        }
        assert_eq!(EventKind::from_raw(0x8000), EventKind::Other(0x8000));
        assert_eq!(EventKind::Other(0x8000).to_raw(), 0x8000);
        let events = Events::of(&[EventKind::Connected]).with(EventKind::Closed);
        assert!(events.contains(EventKind::Connected) && events.contains(EventKind::Closed));
        assert!(!events.contains(EventKind::Disconnected));
    }

    #[test]
    fn a_short_header_is_not_read_past() {
        let event = parse(&[1, 0], None);
        assert_eq!(event.kind, EventKind::Other(0));
        assert_eq!(event.endpoint(), "");
    }

    #[test]
    fn a_connection_and_its_loss_are_seen_with_the_endpoint() {
        let context = zmq::Context::new();
        let router = context.socket(zmq::ROUTER).expect("router");
        router.set_linger(0).expect("linger");
        let endpoint = crate::bind(&router, "tcp://127.0.0.1:*")
            .expect("bind")
            .endpoint()
            .to_owned();
        let dealer = Monitored::connect(&context, zmq::DEALER, &endpoint, Events::CONNECTION)
            .expect("connect");
        let seen = wait_for(dealer.monitor(), EventKind::HandshakeSucceeded);
        assert!(seen.iter().any(|event| event.kind == EventKind::Connected));
        assert!(seen.iter().all(|event| event.endpoint() == endpoint));
        drop(router);
        wait_for(dealer.monitor(), EventKind::Disconnected);
    }

    #[test]
    fn nothing_listening_shows_as_retries_and_never_as_connected() {
        // A port that was free a moment ago: bound, then closed, so nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let endpoint = format!("tcp://127.0.0.1:{port}");
        let context = zmq::Context::new();
        let events = Events::CONNECTION
            .with(EventKind::ConnectRetried)
            .with(EventKind::Closed);
        let dealer = Monitored::connect(&context, zmq::DEALER, &endpoint, events).expect("connect");
        let seen = wait_for(dealer.monitor(), EventKind::ConnectRetried);
        assert!(
            seen.iter().all(|event| event.kind != EventKind::Connected),
            "{seen:?}"
        );
    }

    #[test]
    fn detach_ends_the_monitor_with_monitor_stopped() {
        let context = zmq::Context::new();
        let router = context.socket(zmq::ROUTER).expect("router");
        router.set_linger(0).expect("linger");
        let endpoint = crate::bind(&router, "tcp://127.0.0.1:*")
            .expect("bind")
            .endpoint()
            .to_owned();
        let dealer = Monitored::connect(&context, zmq::DEALER, &endpoint, Events::CONNECTION)
            .expect("connect");
        wait_for(dealer.monitor(), EventKind::HandshakeSucceeded);
        detach(dealer.socket()).expect("detach");
        // libzmq stopped the old monitor, saying so to the reader: nothing is sent to it again,
        // so it may be closed before the socket.
        wait_for(dealer.monitor(), EventKind::MonitorStopped);
    }

    #[test]
    fn many_monitored_sockets_open_and_close_on_one_context() {
        // Each drop detaches before the reader closes; a teardown event sent to a reader already
        // gone would block libzmq's one I/O thread, and a later connection would never be made.
        let context = zmq::Context::new();
        let router = context.socket(zmq::ROUTER).expect("router");
        router.set_linger(0).expect("linger");
        let endpoint = crate::bind(&router, "tcp://127.0.0.1:*")
            .expect("bind")
            .endpoint()
            .to_owned();
        for _ in 0..20 {
            let dealer = Monitored::connect(&context, zmq::DEALER, &endpoint, Events::CONNECTION)
                .expect("connect");
            wait_for(dealer.monitor(), EventKind::HandshakeSucceeded);
        }
        let last = Monitored::connect(&context, zmq::DEALER, &endpoint, Events::CONNECTION)
            .expect("connect");
        wait_for(last.monitor(), EventKind::HandshakeSucceeded);
    }
}
