//! Our worker against a broker played by this test with a raw ROUTER socket and frames written
//! from spec 7, so the worker is checked against the protocol, not only against our broker. The
//! timing rules themselves (exactly when a heartbeat is due, when the broker counts as dead, the
//! backoff) are tested in virtual time next to the core (`src/core/tests.rs`); here each rule is
//! checked once over real sockets and threads.
//!
//! What a ROUTER receives from the worker's DEALER is `[identity] [""] ["MDPW01"] [command] ...`.

#![allow(clippy::unwrap_used)]

use std::thread;
use std::time::{Duration, Instant};

use worker::{Error, Worker, WorkerConfig};
use zsocket::testing::RawRouter;

const READY: &[u8] = b"\x01";
const REQUEST: &[u8] = b"\x02";
const REPLY: &[u8] = b"\x03";
const HEARTBEAT: &[u8] = b"\x04";
const DISCONNECT: &[u8] = b"\x05";

/// A broker played by hand: the shared raw ROUTER, and the spec's framing checks on top.
struct RawBroker {
    router: RawRouter,
    endpoint: String,
}

impl RawBroker {
    fn bind() -> RawBroker {
        let router = RawRouter::bind();
        let endpoint = router.endpoint().to_owned();
        RawBroker { router, endpoint }
    }

    /// The next message, or `None` once `wait` has passed.
    fn recv(&self, wait: Duration) -> Option<Vec<Vec<u8>>> {
        self.router.recv(wait)
    }

    /// The next worker command other than HEARTBEAT (checking each has the spec's header).
    fn recv_command(&self, wait: Duration) -> Option<Vec<Vec<u8>>> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frames = self.recv(left)?;
            assert_eq!(frames[1], b"", "delimiter in {frames:?}");
            assert_eq!(frames[2], b"MDPW01", "header in {frames:?}");
            if frames[3] != HEARTBEAT {
                return Some(frames);
            }
            assert_eq!(frames.len(), 4, "HEARTBEAT has exactly 3 frames");
        }
    }

    fn send(&self, frames: &[&[u8]]) {
        self.router.send(frames);
    }

    fn send_command(&self, worker: &[u8], command: &[u8], rest: &[&[u8]]) {
        let mut frames: Vec<&[u8]> = vec![b"", b"MDPW01", command];
        frames.extend_from_slice(rest);
        self.router.send_to(worker, &frames);
    }

    /// Waits for READY and returns the worker's identity.
    fn expect_ready(&self, service: &[u8]) -> Vec<u8> {
        let frames = self
            .recv_command(Duration::from_secs(5))
            .expect("READY within 5 s");
        assert_eq!(frames[3], READY, "READY first: {frames:?}");
        assert_eq!(frames[4], service);
        assert_eq!(frames.len(), 5, "READY has exactly 4 frames");
        frames[0].clone()
    }
}

/// Heartbeats as often as the tests' raw broker can check them, and a liveness so long the
/// worker never gives up on a raw broker that does not heartbeat, unless a test wants it to.
fn patient_config() -> WorkerConfig {
    WorkerConfig {
        heartbeat_interval: Duration::from_millis(50),
        liveness: 1000,
        ..WorkerConfig::default()
    }
}

fn service(name: &str) -> worker::ServiceName {
    name.parse().unwrap()
}

/// Runs an echo worker in a thread; stop it with the returned handle.
fn spawn_echo_worker(
    endpoint: &str,
    config: WorkerConfig,
) -> (worker::StopHandle, thread::JoinHandle<Result<(), Error>>) {
    let mut worker = Worker::connect(endpoint, service("echo"), config).unwrap();
    let stop = worker.stop_handle();
    let thread = thread::spawn(move || worker.serve(|body| body));
    (stop, thread)
}

#[test]
fn registers_with_ready_and_replies_with_the_clients_envelope() {
    let broker = RawBroker::bind();
    let (stop, thread) = spawn_echo_worker(&broker.endpoint, patient_config());
    let worker = broker.expect_ready(b"echo");

    broker.send_command(&worker, REQUEST, &[b"CLIENT-1", b"", b"hello", b"world"]);
    let reply = broker.recv_command(Duration::from_secs(5)).expect("REPLY");
    let expected: Vec<&[u8]> = vec![
        &worker,
        b"",
        b"MDPW01",
        REPLY,
        b"CLIENT-1",
        b"",
        b"hello",
        b"world",
    ];
    assert_eq!(reply, expected);

    stop.stop();
    thread.join().unwrap().unwrap();
    let goodbye = broker
        .recv_command(Duration::from_secs(5))
        .expect("DISCONNECT");
    assert_eq!(
        goodbye,
        vec![
            worker,
            b"".to_vec(),
            b"MDPW01".to_vec(),
            DISCONNECT.to_vec()
        ]
    );
}

#[test]
fn heartbeats_while_idle_and_while_a_long_request_runs() {
    let broker = RawBroker::bind();
    let mut worker = Worker::connect(&broker.endpoint, service("slow"), patient_config()).unwrap();
    // A handler that takes 12 heartbeat intervals: the heartbeat thread must speak for it.
    let thread = thread::spawn(move || {
        let request = worker.recv().unwrap();
        thread::sleep(Duration::from_millis(600));
        worker.reply(request.reply_to, request.body).unwrap();
    });
    let identity = broker.expect_ready(b"slow");

    let count_heartbeats_until = |until: &dyn Fn(&[Vec<u8>]) -> bool| {
        let mut heartbeats = 0;
        loop {
            let frames = broker.recv(Duration::from_secs(5)).expect("a message");
            assert_eq!(frames[0], identity, "the worker kept its socket");
            if frames[3] == HEARTBEAT {
                heartbeats += 1;
            }
            if until(&frames) {
                return heartbeats;
            }
        }
    };
    let idle_heartbeats = {
        let started = Instant::now();
        count_heartbeats_until(&move |_| started.elapsed() > Duration::from_millis(300))
    };
    assert!(
        idle_heartbeats >= 3,
        "{idle_heartbeats} heartbeats in 300 ms idle at 50 ms"
    );

    broker.send_command(&identity, REQUEST, &[b"C", b"", b"work"]);
    let busy_heartbeats = count_heartbeats_until(&|frames| frames[3] == REPLY);
    assert!(
        busy_heartbeats >= 5,
        "{busy_heartbeats} heartbeats during a 600 ms request at 50 ms"
    );
    thread.join().unwrap();
}

#[test]
fn a_worker_not_in_recv_still_hears_the_broker_and_keeps_its_request() {
    let broker = RawBroker::bind();
    // Liveness 3 at 50 ms: a worker that stopped reading would give up on this broker after
    // 150 ms of unread heartbeats.
    let config = WorkerConfig {
        heartbeat_interval: Duration::from_millis(50),
        liveness: 3,
        ..WorkerConfig::default()
    };
    let mut worker = Worker::connect(&broker.endpoint, service("echo"), config).unwrap();
    let identity = broker.expect_ready(b"echo");
    // The application is slow to call recv: 400 ms, while the broker heartbeats and then
    // sends a request.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(400) {
        broker.send_command(&identity, HEARTBEAT, &[]);
        if let Some(frames) = broker.recv(Duration::from_millis(20)) {
            assert_eq!(
                frames[0], identity,
                "the worker kept its socket: {frames:?}"
            );
        }
    }
    broker.send_command(&identity, REQUEST, &[b"C", b"", b"early"]);
    thread::sleep(Duration::from_millis(100));
    let request = worker.recv().unwrap();
    assert_eq!(request.body[0].to_vec(), b"early");
    worker.reply(request.reply_to, request.body).unwrap();
    let reply = broker.recv_command(Duration::from_secs(5)).expect("REPLY");
    assert_eq!(reply[0], identity, "still the first socket");
    assert_eq!(reply[3], REPLY);
}

#[test]
fn registers_again_on_a_new_socket_after_disconnect() {
    let broker = RawBroker::bind();
    let (stop, thread) = spawn_echo_worker(&broker.endpoint, patient_config());
    let first = broker.expect_ready(b"echo");
    broker.send_command(&first, DISCONNECT, &[]);
    let second = broker.expect_ready(b"echo");
    assert_ne!(first, second, "spec 7: reconnect on a new socket");

    // The new conversation works.
    broker.send_command(&second, REQUEST, &[b"C", b"", b"again"]);
    let reply = broker.recv_command(Duration::from_secs(5)).expect("REPLY");
    assert_eq!(reply[0], second);
    assert_eq!(reply[3], REPLY);
    stop.stop();
    thread.join().unwrap().unwrap();
}

#[test]
fn registers_again_when_the_broker_falls_silent() {
    let broker = RawBroker::bind();
    let config = WorkerConfig {
        heartbeat_interval: Duration::from_millis(50),
        liveness: 3,
        ..WorkerConfig::default()
    };
    let started = Instant::now();
    let (stop, thread) = spawn_echo_worker(&broker.endpoint, config);
    let first = broker.expect_ready(b"echo");
    // This broker never heartbeats: after 3 x 50 ms of silence, plus the backoff, a new READY.
    let second = broker.expect_ready(b"echo");
    assert_ne!(first, second);
    assert!(started.elapsed() >= Duration::from_millis(150));
    stop.stop();
    thread.join().unwrap().unwrap();
}

#[test]
fn malformed_messages_from_the_broker_are_dropped_and_the_worker_goes_on() {
    let broker = RawBroker::bind();
    let (stop, thread) = spawn_echo_worker(&broker.endpoint, patient_config());
    let worker = broker.expect_ready(b"echo");

    let garbage: Vec<Vec<&[u8]>> = vec![
        vec![b"no delimiter"],
        vec![b"", b"MDPC01", b"echo", b"x"],
        vec![b"", b"MDPW01"],
        vec![b"", b"MDPW01", b"\x09"],
        vec![b"", b"MDPW01", REQUEST],
        vec![b"", b"MDPW01", REQUEST, b"C"],
        vec![b"", b"MDPW01", REQUEST, b"C", b"not empty", b"x"],
        vec![b"", b"MDPW01", REQUEST, b"C", b""],
        vec![b"", b"MDPW01", HEARTBEAT, b"extra"],
        vec![b"", b"MDPW01", READY, b"echo"],
    ];
    for message in &garbage {
        let mut frames: Vec<&[u8]> = vec![&worker];
        frames.extend_from_slice(message);
        broker.send(&frames);
    }
    broker.send_command(&worker, REQUEST, &[b"C", b"", b"still here"]);
    let reply = broker.recv_command(Duration::from_secs(5)).expect("REPLY");
    assert_eq!(reply[0], worker, "no reconnection over garbage");
    assert_eq!(reply[3], REPLY);
    assert_eq!(reply[6], b"still here");
    stop.stop();
    thread.join().unwrap().unwrap();
}

#[test]
fn recv_before_reply_is_a_typed_error() {
    let broker = RawBroker::bind();
    let mut worker = Worker::connect(&broker.endpoint, service("echo"), patient_config()).unwrap();
    let identity = broker.expect_ready(b"echo");
    broker.send_command(&identity, REQUEST, &[b"C", b"", b"x"]);
    let request = worker.recv().unwrap();
    assert!(matches!(worker.recv(), Err(Error::ReplyPending)));
    // An empty reply body still goes out as one (empty) frame.
    worker.reply(request.reply_to, Vec::new()).unwrap();
    let reply = broker.recv_command(Duration::from_secs(5)).expect("REPLY");
    assert_eq!(reply[4..], [b"C".to_vec(), b"".to_vec(), b"".to_vec()]);
}

#[test]
fn refuses_mmi_services_and_bad_endpoints() {
    let config = WorkerConfig::default;
    assert!(matches!(
        Worker::connect("tcp://127.0.0.1:1", service("mmi.service"), config()),
        Err(Error::ReservedService(_))
    ));
    assert!(matches!(
        Worker::connect("nonsense://x", service("echo"), config()),
        Err(Error::Connect { .. })
    ));
}
