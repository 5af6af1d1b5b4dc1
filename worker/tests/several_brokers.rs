//! Slots and several brokers over real sockets, against the real broker (`broker::Server`, run
//! in-process on tcp port 0): the broker sees N workers in one program and serves them
//! concurrently, all mode survives the loss of one broker, failover moves to the next, and a
//! burst of READYs from 16 slots leaves the other workers' turn alone. The timing rules are
//! tested in virtual time beside the core (`src/core/tests.rs`); the waits here are only
//! guards that turn a hang into a failure.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use broker::testing::TestBroker;
use broker::Config;
use worker::{Mode, Worker, WorkerConfig};

/// Fast heartbeats, so that a stopped broker is noticed within a test's patience; both sides
/// use the same settings, as they must.
const HEARTBEAT: Duration = Duration::from_millis(50);
const LIVENESS: u32 = 20;

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        heartbeat_interval: HEARTBEAT,
        liveness: LIVENESS,
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
    }
}

/// A broker on its own thread at `endpoint` (a wildcard port is resolved in its `endpoint`),
/// with this file's heartbeats; stopped when dropped.
fn broker_at(endpoint: &str) -> TestBroker {
    let config = Config {
        heartbeat_interval: HEARTBEAT,
        liveness: LIVENESS,
        ..Config::default()
    };
    TestBroker::bind(endpoint, config, None)
}

fn broker_on_free_port() -> TestBroker {
    broker_at("tcp://127.0.0.1:*")
}

/// Stops `broker` (DISCONNECT to its workers), waits until its socket is closed (so the port is
/// free again), and returns where it was.
fn stop(broker: TestBroker) -> String {
    let endpoint = broker.endpoint.clone();
    broker.stop();
    endpoint
}

/// An MDP client request over a REQ socket: the reply body, or `None` after `patience`.
fn request(context: &zmq::Context, endpoint: &str, service: &str, body: &str) -> Option<String> {
    request_within(context, endpoint, service, body, Duration::from_secs(10))
}

fn request_within(
    context: &zmq::Context,
    endpoint: &str,
    service: &str,
    body: &str,
    patience: Duration,
) -> Option<String> {
    let socket = context.socket(zmq::REQ).unwrap();
    socket.set_linger(0).unwrap();
    socket.connect(endpoint).unwrap();
    socket
        .send_multipart([&b"MDPC01"[..], service.as_bytes(), body.as_bytes()], 0)
        .unwrap();
    let ms = i64::try_from(patience.as_millis()).unwrap();
    if socket.poll(zmq::POLLIN, ms).unwrap() == 0 {
        return None;
    }
    let frames = socket.recv_multipart(0).unwrap();
    assert_eq!(frames[0], b"MDPC01", "{frames:?}");
    assert_eq!(frames[1], service.as_bytes(), "{frames:?}");
    Some(String::from_utf8(frames[2..].concat()).unwrap())
}

/// Whether `endpoint`'s broker has a worker for `service` now (spec 8's `mmi.service`).
fn has_worker(context: &zmq::Context, endpoint: &str, service: &str) -> bool {
    request(context, endpoint, "mmi.service", service).as_deref() == Some("200")
}

/// Waits (up to a guard) until `condition` holds.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A worker serving `handler` on its own thread, with the handle that stops it.
struct Serving {
    stop: worker::StopHandle,
    thread: Option<JoinHandle<Result<(), worker::Error>>>,
}

impl Serving {
    fn start(
        worker: Worker,
        concurrency: usize,
        handler: impl Fn(worker::Frames) -> worker::Frames + Send + Sync + 'static,
    ) -> Serving {
        let stop = worker.stop_handle();
        let mut worker = worker;
        let thread = thread::spawn(move || worker.serve_concurrent(concurrency, handler));
        Serving {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let result = thread.join().expect("the serving thread");
            if !thread::panicking() {
                result.expect("served until stopped");
            }
        }
    }
}

fn text(body: &worker::Frames) -> String {
    body.iter()
        .map(|frame| String::from_utf8_lossy(frame).into_owned())
        .collect()
}

fn reply_text(reply: String) -> worker::Frames {
    vec![zmq::Message::from(reply.as_bytes())]
}

#[test]
fn four_slots_are_four_workers_to_the_broker_and_serve_at_the_same_time() {
    let broker = broker_on_free_port();
    let context = zmq::Context::new();
    let worker = Worker::builder("together".parse().unwrap())
        .endpoint(&broker.endpoint)
        .slots(4)
        .config(worker_config())
        .build()
        .unwrap();
    assert_eq!(worker.link_count(), 4);
    eventually("4 slots registered", || worker.registered_links() == 4);

    // Each handler waits until all four are running at once: only four workers of the broker,
    // each handed a request, and four threads of ours can get there.
    let running = Arc::new((Mutex::new(0usize), Condvar::new()));
    let in_handler = Arc::clone(&running);
    let _serving = Serving::start(worker, 4, move |body| {
        let (count, changed) = &*in_handler;
        let mut count = count.lock().unwrap();
        *count += 1;
        changed.notify_all();
        let (count, timeout) = changed
            .wait_timeout_while(count, Duration::from_secs(10), |count| *count < 4)
            .unwrap();
        let how = if timeout.timed_out() {
            format!("alone ({} at once)", *count)
        } else {
            "together".to_owned()
        };
        reply_text(format!("{} {how}", text(&body)))
    });
    let clients: Vec<JoinHandle<Option<String>>> = (0..4)
        .map(|index| {
            let context = context.clone();
            let endpoint = broker.endpoint.clone();
            thread::spawn(move || request(&context, &endpoint, "together", &format!("r{index}")))
        })
        .collect();
    let mut replies: Vec<String> = clients
        .into_iter()
        .map(|client| client.join().unwrap().expect("a reply"))
        .collect();
    replies.sort();
    assert_eq!(
        replies,
        ["r0 together", "r1 together", "r2 together", "r3 together"]
    );
}

#[test]
fn in_all_mode_a_stopped_broker_does_not_interrupt_the_other() {
    let a = broker_on_free_port();
    let b = broker_on_free_port();
    let context = zmq::Context::new();
    let worker = Worker::builder("echo".parse().unwrap())
        .endpoints([&a.endpoint, &b.endpoint])
        .mode(Mode::All)
        .config(worker_config())
        .build()
        .unwrap();
    assert_eq!(worker.link_count(), 2);
    eventually("registered with both", || worker.registered_links() == 2);
    let _serving = Serving::start(worker, 2, |body| body);
    assert_eq!(
        request(&context, &a.endpoint, "echo", "to a").as_deref(),
        Some("to a")
    );
    assert_eq!(
        request(&context, &b.endpoint, "echo", "to b").as_deref(),
        Some("to b")
    );

    let b_endpoint = b.endpoint.clone();
    let stopped = stop(a);
    // Through and after the loss of A, B's requests are answered one after another, each well
    // within the worker's patience for a broker (1 s): B's worker never had to register again.
    for index in 0..50 {
        let body = format!("b{index}");
        let reply = request_within(
            &context,
            &b_endpoint,
            "echo",
            &body,
            Duration::from_millis(900),
        );
        assert_eq!(
            reply.as_deref(),
            Some(body.as_str()),
            "request {index} to B"
        );
    }
    assert!(has_worker(&context, &b_endpoint, "echo"));
    // A comes back at the same endpoint: the worker's A link registers there again by itself.
    let a = broker_at(&stopped);
    eventually("registered with A again", || {
        has_worker(&context, &a.endpoint, "echo")
    });
    assert_eq!(
        request(&context, &a.endpoint, "echo", "again").as_deref(),
        Some("again")
    );
}

#[test]
fn failover_moves_to_the_second_broker_when_the_first_stops_and_stays_there() {
    let a = broker_on_free_port();
    let b = broker_on_free_port();
    let context = zmq::Context::new();
    let worker = Worker::builder("echo".parse().unwrap())
        .endpoints([&a.endpoint, &b.endpoint])
        .mode(Mode::Failover)
        .config(worker_config())
        .build()
        .unwrap();
    eventually("registered with A", || worker.registered_links() == 1);
    let _serving = Serving::start(worker, 1, |body| body);
    assert_eq!(
        request(&context, &a.endpoint, "echo", "to a").as_deref(),
        Some("to a")
    );
    assert!(
        !has_worker(&context, &b.endpoint, "echo"),
        "one broker at a time"
    );

    // A stops: its DISCONNECT, then a refused connection, move the worker to B. A request sent
    // to B at once waits there for the worker and is answered.
    let stopped = stop(a);
    assert_eq!(
        request(&context, &b.endpoint, "echo", "to b").as_deref(),
        Some("to b")
    );

    // A returns; the worker stays with B, which still serves it.
    let a = broker_at(&stopped);
    for _ in 0..3 {
        assert_eq!(
            request(&context, &b.endpoint, "echo", "still b").as_deref(),
            Some("still b")
        );
        thread::sleep(HEARTBEAT * LIVENESS / 3);
    }
    assert!(
        !has_worker(&context, &a.endpoint, "echo"),
        "no flapping back to A"
    );
}

#[test]
fn failover_starts_on_the_first_broker_that_answers() {
    // Nothing listens at the first endpoint: a port that was bound, then freed.
    let gone = stop(broker_on_free_port());
    let b = broker_on_free_port();
    let context = zmq::Context::new();
    let worker = Worker::builder("echo".parse().unwrap())
        .endpoints([&gone, &b.endpoint])
        .mode(Mode::Failover)
        .config(worker_config())
        .build()
        .unwrap();
    let _serving = Serving::start(worker, 1, |body| body);
    assert_eq!(
        request(&context, &b.endpoint, "echo", "hi").as_deref(),
        Some("hi")
    );
}

/// A worker played by hand on a DEALER: READY, then it answers each REQUEST with its name and
/// each HEARTBEAT with one. Returns once the broker has heartbeated it (it is registered).
fn raw_worker(
    context: &zmq::Context,
    endpoint: &str,
    service: &str,
    name: &'static str,
) -> JoinHandle<()> {
    let socket = context.socket(zmq::DEALER).unwrap();
    socket.set_linger(0).unwrap();
    socket.connect(endpoint).unwrap();
    socket
        .send_multipart([&b""[..], b"MDPW01", b"\x01", service.as_bytes()], 0)
        .unwrap();
    // The broker heartbeats only the workers it knows.
    assert!(
        socket.poll(zmq::POLLIN, 10_000).unwrap() > 0,
        "{name} heartbeated"
    );
    let (registered, done) = std::sync::mpsc::channel();
    let thread = thread::spawn(move || {
        let mut first = true;
        loop {
            let frames = match socket.recv_multipart(0) {
                Ok(frames) => frames,
                Err(_) => return,
            };
            match frames.get(2).map(Vec::as_slice) {
                Some(b"\x04") => {
                    let _ = socket.send_multipart([&b""[..], b"MDPW01", b"\x04"], 0);
                }
                Some(b"\x02") => {
                    let client = frames[3].clone();
                    let _ = socket.send_multipart(
                        [&b""[..], b"MDPW01", b"\x03", &client, b"", name.as_bytes()],
                        0,
                    );
                }
                _ => return,
            }
            if first {
                first = false;
                let _ = registered.send(());
            }
        }
    });
    done.recv_timeout(Duration::from_secs(10))
        .expect("raw worker running");
    thread
}

#[test]
fn a_burst_of_sixteen_readys_leaves_the_other_workers_turn_alone() {
    // Issue 15 item 2: two workers wait, in this order, then one program registers 16 slots at
    // once. Spec 7's broker gives each request to the worker that has waited longest, so the
    // two come first, then the 16 slots, however their READYs interleave.
    let broker = broker_on_free_port();
    let context = zmq::Context::new();
    let _first = raw_worker(&context, &broker.endpoint, "lru", "first");
    let _second = raw_worker(&context, &broker.endpoint, "lru", "second");
    let worker = Worker::builder("lru".parse().unwrap())
        .endpoint(&broker.endpoint)
        .slots(16)
        .config(worker_config())
        .build()
        .unwrap();
    eventually("16 slots registered", || worker.registered_links() == 16);
    let _serving = Serving::start(worker, 16, |_| reply_text("slots".to_owned()));
    let served: Vec<String> = (0..19)
        .map(|_| request(&context, &broker.endpoint, "lru", "x").expect("a reply"))
        .collect();
    let mut expected = vec!["first".to_owned(), "second".to_owned()];
    expected.extend(std::iter::repeat_n("slots".to_owned(), 16));
    expected.push("first".to_owned());
    assert_eq!(served, expected);
}
