//! The connection monitor against real sockets: what libzmq reports when it refuses a frame over
//! `ZMQ_MAXMSGSIZE`, what it lets through, and that the monitor thread ends with its socket.
#![allow(clippy::unwrap_used)]

use std::sync::mpsc;
use std::time::Duration;

use broker::monitor::{self, CloseReason, ConnectionEvent, Monitor};

/// How long a test waits for an event that should come.
const PATIENCE: Duration = Duration::from_secs(5);

const LIMIT: usize = 1024;

/// A ROUTER on a free loopback port with `ZMQ_MAXMSGSIZE` = [`LIMIT`], its monitor, and the
/// channel the monitor's events arrive on.
struct Monitored {
    router: zmq::Socket,
    monitor: Monitor,
    events: mpsc::Receiver<ConnectionEvent>,
    endpoint: String,
    context: zmq::Context,
}

impl Monitored {
    fn start() -> Monitored {
        let context = zmq::Context::new();
        let router = context.socket(zmq::ROUTER).unwrap();
        router.set_linger(0).unwrap();
        router.set_maxmsgsize(LIMIT as i64).unwrap();
        router.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = router.get_last_endpoint().unwrap().unwrap();
        let (sender, events) = mpsc::channel();
        let monitor = monitor::spawn_with(&context, &router, Some(LIMIT as i64), move |event| {
            let _ = sender.send(event.clone());
        })
        .unwrap();
        Monitored {
            router,
            monitor,
            events,
            endpoint,
            context,
        }
    }

    fn dealer(&self) -> zmq::Socket {
        let dealer = self.context.socket(zmq::DEALER).unwrap();
        dealer.set_linger(0).unwrap();
        // One connection only: a refused connection must not come back by itself.
        dealer.set_reconnect_ivl(-1).unwrap();
        dealer.connect(&self.endpoint).unwrap();
        dealer
    }

    fn next_event(&self) -> ConnectionEvent {
        self.events
            .recv_timeout(PATIENCE)
            .expect("no connection event within the test's patience")
    }

    /// Closes the ROUTER and checks that the monitor says so and its thread ends.
    fn stop(self) {
        let Monitored {
            router,
            monitor,
            events,
            ..
        } = self;
        drop(router);
        loop {
            let event = events
                .recv_timeout(PATIENCE)
                .expect("no MONITOR_STOPPED within the test's patience");
            if event == ConnectionEvent::Stopped {
                break;
            }
        }
        assert!(monitor.wait(PATIENCE), "the monitor thread did not end");
    }
}

/// The port of a tcp endpoint such as `tcp://127.0.0.1:41234`.
fn port(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_frame_over_the_limit_closes_the_connection_and_the_monitor_names_the_peer() {
    let monitored = Monitored::start();
    let dealer = monitored.dealer();
    dealer.send(vec![b'x'; LIMIT + 1], 0).unwrap();

    let ConnectionEvent::Accepted(accepted) = monitored.next_event() else {
        panic!("expected the connection to be accepted first");
    };
    assert_eq!(accepted.endpoint, monitored.endpoint);
    // The address is read after the fact, and this connection may be gone by then: libzmq closes
    // it within moments of accepting it.
    if let Some(peer) = accepted.peer {
        assert!(peer.ip().is_loopback());
    }

    // libzmq reports the refusal as a plain disconnection: the same event a peer that leaves
    // causes, with nothing that says why.
    let closed = monitored.next_event();
    assert_eq!(
        closed,
        ConnectionEvent::Closed(accepted.clone(), CloseReason::Unknown)
    );
    let line = monitor::describe(&closed, Some(LIMIT as i64));
    assert!(
        line.contains(&format!("{accepted} closed"))
            && line.contains("larger than --max-message-size (1024 bytes)"),
        "{line}"
    );
    // The frame never reached the ROUTER: the connection went before it was whole.
    assert_eq!(
        monitored.router.recv_msg(zmq::DONTWAIT).unwrap_err(),
        zmq::Error::EAGAIN
    );
    monitored.stop();
}

#[test]
fn the_limit_is_per_frame_so_a_message_of_small_frames_passes_whatever_its_total() {
    let monitored = Monitored::start();
    let dealer = monitored.dealer();
    let frame = vec![b'y'; LIMIT];
    // Four frames of exactly the limit: 4 KiB in all, four times the "message size" limit.
    dealer
        .send_multipart([&frame[..], &frame, &frame, &frame], 0)
        .unwrap();
    let ConnectionEvent::Accepted(accepted) = monitored.next_event() else {
        panic!("expected the connection to be accepted first");
    };
    // The connection is still open when the monitor reads its peer's address: the dealer closes
    // it only once the test has seen this event.
    let peer = accepted.peer.expect("the peer's address");
    assert!(peer.ip().is_loopback());
    assert_ne!(peer.port(), port(&monitored.endpoint));
    assert!(monitored
        .router
        .poll(zmq::POLLIN, PATIENCE.as_millis() as i64)
        .is_ok_and(|ready| ready > 0));
    let message = monitored.router.recv_multipart(0).unwrap();
    // The ROUTER put the peer's identity in front.
    assert_eq!(message.len(), 5);
    assert!(message[1..].iter().all(|received| *received == frame));

    // Only when the peer leaves does the connection close.
    drop(dealer);
    assert_eq!(
        monitored.next_event(),
        ConnectionEvent::Closed(accepted, CloseReason::Unknown)
    );
    monitored.stop();
}

#[test]
fn a_peer_with_another_security_mechanism_is_reported_with_the_handshake_failure() {
    use std::io::Write;

    let monitored = Monitored::start();
    let address = monitored.endpoint.trim_start_matches("tcp://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    // A ZMTP 3.0 greeting (64 bytes: signature, version, mechanism, as-server, filler) asking
    // for PLAIN, where the ROUTER speaks NULL: what a peer configured for security sends.
    let mut greeting = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0];
    greeting.extend_from_slice(b"PLAIN");
    greeting.resize(64, 0);
    stream.write_all(&greeting).unwrap();
    let ConnectionEvent::Accepted(accepted) = monitored.next_event() else {
        panic!("expected the connection to be accepted first");
    };
    if let Some(peer) = accepted.peer {
        assert_eq!(peer, stream.local_addr().unwrap());
    }
    let closed = monitored.next_event();
    assert_eq!(
        closed,
        ConnectionEvent::Closed(
            accepted,
            CloseReason::HandshakeRefused(
                "security mechanism mismatch, code 0x11000002".to_string()
            )
        )
    );
    assert!(monitor::describe(&closed, Some(LIMIT as i64)).ends_with(
        "refused: ZMTP handshake failed (security mechanism mismatch, code 0x11000002)"
    ));
    monitored.stop();
}

#[test]
fn the_monitor_thread_ends_when_its_socket_closes_even_with_peers_connected() {
    let monitored = Monitored::start();
    let dealer = monitored.dealer();
    dealer.send("hello", 0).unwrap();
    assert!(matches!(
        monitored.next_event(),
        ConnectionEvent::Accepted(_)
    ));
    // The dealer is still connected: the ROUTER closes anyway, and so does the monitor.
    monitored.stop();
}
