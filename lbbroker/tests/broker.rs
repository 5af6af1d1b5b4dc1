//! The broker loop over real ipc sockets, with the test playing the clients and processors by
//! hand (raw REQ sockets), so each frame and each routing decision can be checked.
#![allow(clippy::unwrap_used)]

use std::thread::{self, JoinHandle};

use crossbeam_channel::Receiver;
use lbbroker::{stop_pair, Broker, BrokerStats, Endpoints, Error, Event, StopHandle};
use tempfile::TempDir;

/// How long a test waits for something that should happen at once, before failing.
const PATIENCE_MS: i64 = 10_000;

struct RunningBroker {
    endpoints: Endpoints,
    events: Receiver<Event>,
    stop: StopHandle,
    thread: Option<JoinHandle<Result<BrokerStats, Error>>>,
    context: zmq::Context,
    /// Holds the ipc files; deleted after the test.
    dir: TempDir,
}

impl RunningBroker {
    fn start() -> RunningBroker {
        let dir = TempDir::new().unwrap();
        let endpoints = Endpoints::in_dir(dir.path());
        let context = zmq::Context::new();
        let (events_sender, events) = crossbeam_channel::unbounded();
        let broker = Broker::bind(&context, &endpoints)
            .unwrap()
            .report_to(events_sender);
        let (stop, signal) = stop_pair().unwrap();
        let thread = thread::spawn(move || broker.run(&signal));
        RunningBroker {
            endpoints,
            events,
            stop,
            thread: Some(thread),
            context,
            dir,
        }
    }

    fn peer(&self, identity: &str, endpoint: &str) -> zmq::Socket {
        let socket = self.context.socket(zmq::REQ).unwrap();
        socket.set_linger(0).unwrap();
        socket.set_identity(identity.as_bytes()).unwrap();
        socket.connect(endpoint).unwrap();
        socket
    }

    fn client(&self, identity: &str) -> zmq::Socket {
        self.peer(identity, &self.endpoints.frontend)
    }

    /// A processor that has said READY, returned once the broker has queued it.
    fn ready_processor(&self, identity: &str) -> zmq::Socket {
        let socket = self.peer(identity, &self.endpoints.backend);
        socket.send("READY", 0).unwrap();
        let patience = std::time::Duration::from_millis(PATIENCE_MS as u64);
        let joined = self.events.recv_timeout(patience);
        match joined.unwrap_or_else(|_| panic!("the broker never saw {identity}'s READY")) {
            Event::ProcessorJoined { processor } => assert_eq!(processor, identity),
            other => panic!("expected {identity} to join, got {other:?}"),
        }
        socket
    }

    fn stop(mut self) -> BrokerStats {
        self.stop.stop();
        self.thread.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for RunningBroker {
    /// A test that fails half-way still stops its broker.
    fn drop(&mut self) {
        self.stop.stop();
    }
}

/// The next message on `socket`, each frame as text; fails the test if none comes in time.
fn receive(socket: &zmq::Socket) -> Vec<String> {
    assert_eq!(
        socket.poll(zmq::POLLIN, PATIENCE_MS).unwrap(),
        1,
        "nothing arrived"
    );
    socket
        .recv_multipart(0)
        .unwrap()
        .into_iter()
        .map(|frame| String::from_utf8(frame).unwrap())
        .collect()
}

fn has_nothing_waiting(socket: &zmq::Socket) -> bool {
    socket.poll(zmq::POLLIN, 0).unwrap() == 0
}

#[test]
fn each_request_goes_to_the_processor_that_has_been_ready_longest() {
    let broker = RunningBroker::start();
    let first = broker.ready_processor("PROCESSOR-A");
    let second = broker.ready_processor("PROCESSOR-B");

    let client_0 = broker.client("CLIENT-0");
    client_0.send("1", 0).unwrap();
    // PROCESSOR-A said READY first, so it gets the request, with the client's envelope in front.
    assert_eq!(receive(&first), ["CLIENT-0", "", "1"]);
    assert!(has_nothing_waiting(&second));

    // A answers and so is ready again, but B has waited longer: the next request is B's.
    first
        .send_multipart(["CLIENT-0", "", "OK from PROCESSOR-A"], 0)
        .unwrap();
    assert_eq!(receive(&client_0), ["OK from PROCESSOR-A"]);

    let client_1 = broker.client("CLIENT-1");
    client_1.send("2", 0).unwrap();
    assert_eq!(receive(&second), ["CLIENT-1", "", "2"]);
    assert!(has_nothing_waiting(&first));
    second
        .send_multipart(["CLIENT-1", "", "OK from PROCESSOR-B"], 0)
        .unwrap();
    assert_eq!(receive(&client_1), ["OK from PROCESSOR-B"]);

    let stats = broker.stop();
    assert_eq!(stats.requests_forwarded, 2);
    assert_eq!(stats.replies_forwarded, 2);
    assert_eq!(stats.dropped, 0);
}

#[test]
fn a_request_sent_before_any_processor_is_ready_waits_for_one() {
    let broker = RunningBroker::start();
    let client = broker.client("CLIENT-0");
    client.send("3", 0).unwrap();

    // The request waits in the frontend socket; the first processor to arrive gets it.
    let processor = broker.ready_processor("PROCESSOR-0");
    assert_eq!(receive(&processor), ["CLIENT-0", "", "3"]);
    processor
        .send_multipart(["CLIENT-0", "", "OK from PROCESSOR-0"], 0)
        .unwrap();
    assert_eq!(receive(&client), ["OK from PROCESSOR-0"]);
    assert_eq!(broker.stop().requests_forwarded, 1);
}

#[test]
fn a_request_of_several_frames_reaches_the_processor_whole() {
    let broker = RunningBroker::start();
    let processor = broker.ready_processor("PROCESSOR-0");
    let client = broker.client("CLIENT-0");
    client.send_multipart(["part 1", "part 2"], 0).unwrap();
    assert_eq!(receive(&processor), ["CLIENT-0", "", "part 1", "part 2"]);
    broker.stop();
}

#[test]
fn stopping_the_broker_removes_its_ipc_files() {
    let mut broker = RunningBroker::start();
    let dir = broker.dir.path().to_owned();
    assert!(dir.join("frontend.ipc").exists());
    assert!(dir.join("backend.ipc").exists());
    broker.stop.stop();
    broker.thread.take().unwrap().join().unwrap().unwrap();
    // The directory is still there (`broker` holds it); only the socket files are gone.
    assert!(dir.exists());
    assert!(!dir.join("frontend.ipc").exists());
    assert!(!dir.join("backend.ipc").exists());
}

#[test]
fn binding_where_no_directory_exists_is_a_bind_error() {
    let dir = TempDir::new().unwrap();
    let endpoints = Endpoints {
        frontend: format!("ipc://{}/missing/frontend.ipc", dir.path().display()),
        backend: format!("ipc://{}/backend.ipc", dir.path().display()),
    };
    let error = Broker::bind(&zmq::Context::new(), &endpoints).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("cannot bind the frontend ROUTER to {}", endpoints.frontend)
    );
    assert!(std::error::Error::source(&error).is_some());
}

// Issue #16, item 2: processors that leave, and peers that come back with an identity in use.

/// Gives libzmq's I/O thread time to see a closed connection: a ROUTER learns that a peer is
/// gone in the background, and nothing the test could wait on says when it has.
fn let_the_broker_see_it_closed() {
    thread::sleep(std::time::Duration::from_millis(200));
}

/// The run: a processor stopped while it waited for work is still in the queue; the
/// request sent to it is refused and must go to the next ready processor, not into the void.
#[test]
fn a_request_for_a_processor_that_left_goes_to_the_next_ready_one() {
    let broker = RunningBroker::start();
    let leaving = broker.ready_processor("PROCESSOR-0");
    let staying = broker.ready_processor("PROCESSOR-1");
    drop(leaving);
    let_the_broker_see_it_closed();

    let client = broker.client("CLIENT-0");
    client.send("1", 0).unwrap();
    assert_eq!(receive(&staying), ["CLIENT-0", "", "1"]);
    staying
        .send_multipart(["CLIENT-0", "", "OK from PROCESSOR-1"], 0)
        .unwrap();
    assert_eq!(receive(&client), ["OK from PROCESSOR-1"]);

    // The next request goes to PROCESSOR-1 again: PROCESSOR-0 has left the queue for good.
    let client_1 = broker.client("CLIENT-1");
    client_1.send("2", 0).unwrap();
    assert_eq!(receive(&staying), ["CLIENT-1", "", "2"]);

    let stats = broker.stop();
    assert_eq!(stats.requests_forwarded, 2);
    assert_eq!(stats.dropped, 0);
}

#[test]
fn a_request_whose_processor_left_waits_for_the_next_processor_to_arrive() {
    let broker = RunningBroker::start();
    drop(broker.ready_processor("PROCESSOR-0"));
    let_the_broker_see_it_closed();

    let client = broker.client("CLIENT-0");
    client.send("3", 0).unwrap();
    // The broker reads it (PROCESSOR-0 is still in its queue) and finds PROCESSOR-0 gone.
    let_the_broker_see_it_closed();
    let next = broker.ready_processor("PROCESSOR-1");
    assert_eq!(receive(&next), ["CLIENT-0", "", "3"]);
    next.send_multipart(["CLIENT-0", "", "OK from PROCESSOR-1"], 0)
        .unwrap();
    assert_eq!(receive(&client), ["OK from PROCESSOR-1"]);
    assert_eq!(broker.stop().dropped, 0);
}

/// A processor stopped while working, then started again: the broker learns from its READY that
/// the request it had is lost, and sends that request again.
#[test]
fn the_request_of_a_processor_that_restarted_while_working_is_sent_again() {
    let broker = RunningBroker::start();
    let working = broker.ready_processor("PROCESSOR-0");
    let client = broker.client("CLIENT-0");
    client.send("2", 0).unwrap();
    assert_eq!(receive(&working), ["CLIENT-0", "", "2"]);
    drop(working);
    let_the_broker_see_it_closed();

    let restarted = broker.ready_processor("PROCESSOR-0");
    assert_eq!(receive(&restarted), ["CLIENT-0", "", "2"]);
    restarted
        .send_multipart(["CLIENT-0", "", "OK from PROCESSOR-0"], 0)
        .unwrap();
    assert_eq!(receive(&client), ["OK from PROCESSOR-0"]);
    broker.stop();
}

/// A second processor with an identity in use: it takes the identity over (ZMQ_ROUTER_HANDOVER)
/// and gets the work, instead of being parked by the ROUTER where nothing can reach it.
#[test]
fn a_second_processor_with_the_same_identity_takes_it_over() {
    let broker = RunningBroker::start();
    let first = broker.ready_processor("PROCESSOR-0");
    let second = broker.ready_processor("PROCESSOR-0");

    let client = broker.client("CLIENT-0");
    client.send("1", 0).unwrap();
    assert_eq!(receive(&second), ["CLIENT-0", "", "1"]);
    assert!(has_nothing_waiting(&first));
    second
        .send_multipart(["CLIENT-0", "", "OK from PROCESSOR-0"], 0)
        .unwrap();
    assert_eq!(receive(&client), ["OK from PROCESSOR-0"]);
    broker.stop();
}

/// A second client with an identity in use takes it over: its request is served, and the reply
/// to the first client's request is not handed to it as its own.
#[test]
fn a_second_client_with_the_same_identity_takes_it_over_and_gets_its_own_reply() {
    let broker = RunningBroker::start();
    let processor_0 = broker.ready_processor("PROCESSOR-0");
    let processor_1 = broker.ready_processor("PROCESSOR-1");

    let first = broker.client("CLIENT-0");
    first.send("old", 0).unwrap();
    assert_eq!(receive(&processor_0), ["CLIENT-0", "", "old"]);

    let second = broker.client("CLIENT-0");
    second.send("new", 0).unwrap();
    assert_eq!(receive(&processor_1), ["CLIENT-0", "", "new"]);

    processor_0
        .send_multipart(["CLIENT-0", "", "OK old"], 0)
        .unwrap();
    processor_1
        .send_multipart(["CLIENT-0", "", "OK new"], 0)
        .unwrap();
    assert_eq!(receive(&second), ["OK new"]);

    let stats = broker.stop();
    assert_eq!(stats.replies_forwarded, 1);
    assert_eq!(stats.dropped, 1, "the stale reply");
}
