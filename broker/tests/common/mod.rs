//! Test support: a broker running in a thread on a free loopback port, and raw ZeroMQ peers
//! that speak MDP frame by frame, written from spec 7 rather than with our client and worker.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use broker::Config;
use cli::testing::Program;

/// How long a test waits for a message that should come.
pub const PATIENCE: Duration = Duration::from_secs(5);

// Not every test binary starts one.
#[allow(unused_imports)]
pub use broker::testing::TestBroker;

/// A raw DEALER peer with a readable identity.
pub struct Peer {
    _context: zmq::Context,
    socket: zmq::Socket,
    /// The socket monitor's events, for peers made by [`Peer::connect_plain`].
    monitor: Option<zmq::Socket>,
}

impl Peer {
    pub fn connect(endpoint: &str, identity: &str) -> Peer {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        socket.set_identity(identity.as_bytes()).unwrap();
        socket.connect(endpoint).unwrap();
        Peer {
            _context: context,
            socket,
            monitor: None,
        }
    }

    /// A peer that logs in with PLAIN as `user` (no credentials at all when `user` is None),
    /// with its handshake events watched ([`Peer::handshake`]).
    pub fn connect_plain(
        endpoint: &str,
        identity: &str,
        credentials: Option<(&str, &str)>,
    ) -> Peer {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let context = zmq::Context::new();
        let socket = context.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        socket.set_identity(identity.as_bytes()).unwrap();
        if let Some((user, password)) = credentials {
            socket.set_plain_username(Some(user)).unwrap();
            socket.set_plain_password(Some(password)).unwrap();
        }
        let monitor_endpoint = format!(
            "inproc://test-monitor-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        socket
            .monitor(&monitor_endpoint, zmq::SocketEvent::ALL as i32)
            .unwrap();
        let monitor = context.socket(zmq::PAIR).unwrap();
        monitor.connect(&monitor_endpoint).unwrap();
        socket.connect(endpoint).unwrap();
        Peer {
            _context: context,
            socket,
            monitor: Some(monitor),
        }
    }

    /// Waits for the first handshake to end: true if it succeeded, false if the broker refused
    /// it (or cut the connection before it succeeded).
    pub fn handshake(&self) -> bool {
        const SUCCEEDED: u16 = 0x1000;
        const FAILED: [u16; 4] = [0x0800, 0x2000, 0x4000, 0x0200];
        let monitor = self.monitor.as_ref().expect("a peer from connect_plain");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                monitor.poll(zmq::POLLIN, left.as_millis() as i64).unwrap() > 0,
                "no handshake outcome within the test's patience"
            );
            let event = monitor.recv_multipart(0).unwrap();
            let code = u16::from_ne_bytes([event[0][0], event[0][1]]);
            if code == SUCCEEDED {
                return true;
            }
            if FAILED.contains(&code) {
                return false;
            }
        }
    }

    /// Sends without waiting, and says whether the message was queued. A peer whose handshake
    /// has already failed has no pipe left (libzmq ends a connecting session on a protocol or
    /// authentication error), and a blocking send on a DEALER with no pipe waits for ever.
    pub fn try_send(&self, frames: &[&[u8]]) -> bool {
        match self
            .socket
            .send_multipart(frames.iter().copied(), zmq::DONTWAIT)
        {
            Ok(()) => true,
            Err(zmq::Error::EAGAIN) => false,
            Err(error) => panic!("send failed: {error}"),
        }
    }

    pub fn send(&self, frames: &[&[u8]]) {
        self.socket
            .send_multipart(frames.iter().copied(), 0)
            .unwrap();
    }

    /// The next message, or None if none comes within `wait`.
    pub fn recv_within(&self, wait: Duration) -> Option<Vec<Vec<u8>>> {
        let ready = self
            .socket
            .poll(zmq::POLLIN, wait.as_millis() as i64)
            .unwrap();
        (ready > 0).then(|| self.socket.recv_multipart(0).unwrap())
    }

    /// The next message; fails the test if none comes in time.
    pub fn recv(&self) -> Vec<Vec<u8>> {
        self.recv_within(PATIENCE)
            .expect("no message arrived within the test's patience")
    }

    /// The next message that is not a HEARTBEAT (workers get those at any time).
    pub fn recv_skipping_heartbeats(&self) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self
                .recv_within(left)
                .expect("no message arrived within the test's patience");
            if message != heartbeat() {
                return message;
            }
        }
    }
}

pub fn frames(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|part| part.to_vec()).collect()
}

pub fn heartbeat() -> Vec<Vec<u8>> {
    frames(&[b"", b"MDPW01", b"\x04"])
}

pub fn disconnect() -> Vec<Vec<u8>> {
    frames(&[b"", b"MDPW01", b"\x05"])
}

/// A worker that has sent READY for `service`.
pub fn ready_worker(endpoint: &str, identity: &str, service: &str) -> Peer {
    let worker = Peer::connect(endpoint, identity);
    worker.send(&[b"", b"MDPW01", b"\x01", service.as_bytes()]);
    worker
}

/// Sends a request as a DEALER client would: with the empty delimiter first.
pub fn request(client: &Peer, service: &str, body: &[u8]) {
    client.send(&[b"", b"MDPC01", service.as_bytes(), body]);
}

/// Asks `mmi.service` about `service` until the answer is `want` (registration is asynchronous:
/// a READY may still be on its way) or the test's patience runs out.
pub fn wait_for_mmi(client: &Peer, service: &str, want: &[u8]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        request(client, "mmi.service", service.as_bytes());
        let reply = client.recv();
        assert_eq!(reply[..3], frames(&[b"", b"MDPC01", b"mmi.service"]));
        if reply[3] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "mmi.service {service} still answers {:?}",
            String::from_utf8_lossy(&reply[3])
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn fast_heartbeats(interval_ms: u64) -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(interval_ms),
        ..Config::default()
    }
}

/// The endpoint of the next "is active at" line of the `broker` program's log.
pub fn active_endpoint(broker: &mut Program) -> String {
    let line = broker.next_with("is active at ");
    line.split_once("is active at ").unwrap().1.to_string()
}

/// The `broker` program on a free port with `--http 127.0.0.1:0` and `extra` flags: the program,
/// its MDP endpoint and the dashboard's address, both read from its log (which is read on, so
/// the pipe never fills).
pub fn start_with_http(extra: &[&str]) -> (Program, String, std::net::SocketAddr) {
    let mut args = vec!["--bind", "tcp://127.0.0.1:*", "--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut broker = Program::start(env!("CARGO_BIN_EXE_broker"), &args);
    // Either line may come first.
    broker.wait_for("is active at ", 1);
    broker.wait_for("dashboard at http://", 1);
    let after = |broker: &Program, text: &str| {
        let line = broker.lines_with(text)[0];
        line.split_once(text).unwrap().1.to_owned()
    };
    let endpoint = after(&broker, "is active at ").trim().to_owned();
    let addr = after(&broker, "dashboard at http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (broker, endpoint, addr)
}

/// Reads `/status` until `done` holds for it (the loop publishes at most every 100 ms).
pub fn wait_for_status(
    addr: std::net::SocketAddr,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = dashboard::testing::status(addr);
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "waiting for {what}: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
