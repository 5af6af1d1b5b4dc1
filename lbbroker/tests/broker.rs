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
        match self.events.recv().unwrap() {
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
