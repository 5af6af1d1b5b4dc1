//! What the `worker` program says about its brokers (issue #16 item 3), read from its stderr
//! while it runs: "connected" only on a real connection, "registered" once the broker has
//! spoken, and a broker that cannot be reached reported once, then retried quietly. Every wait
//! here waits for a line, with a guard against a hang; none measures time.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use broker::{Config, Server};
use cli::testing::Program;

/// A tcp endpoint where nothing listens: a port bound, then freed.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://{}", listener.local_addr().unwrap())
}

#[test]
fn a_broker_that_cannot_be_reached_is_reported_once_then_retried_quietly() {
    let endpoint = dead_endpoint();
    let mut worker = Program::start(
        env!("CARGO_BIN_EXE_worker"),
        &[
            "-c",
            &endpoint,
            "-v",
            "--heartbeat-ms",
            "20",
            "--liveness",
            "2",
        ],
    );
    // Five sockets opened and given up on in turn, each retrying its connection.
    worker.wait_for("opening a new socket", 5);
    worker.wait_for("still no connection", 4);
    assert_eq!(
        worker.count("cannot connect to broker at"),
        1,
        "{}",
        worker.log()
    );
    assert_eq!(
        worker.count("] no answer from the broker"),
        1,
        "{}",
        worker.log()
    );
    for never in ["connected to broker", "registered with", "reconnected"] {
        assert_eq!(worker.count(never), 0, "{never:?} in:\n{}", worker.log());
    }
}

#[test]
fn connected_and_registered_are_said_once_each_when_they_are_true() {
    // A patient broker (and worker): a test machine busy with builds must not cost the
    // registration, which would rightly be said again.
    let config = Config {
        heartbeat_interval: Duration::from_millis(20),
        liveness: 50,
        ..Config::default()
    };
    let mut server = Server::bind(
        &["tcp://127.0.0.1:*".to_owned()],
        config,
        &Default::default(),
    )
    .unwrap();
    let endpoint = server.endpoints()[0].clone();
    let stop = server.stop_handle();
    let broker = std::thread::spawn(move || server.run().map(|_| ()).map_err(|e| e.to_string()));

    let mut worker = Program::start(
        env!("CARGO_BIN_EXE_worker"),
        &[
            "-c",
            &endpoint,
            "--slots",
            "3",
            "--heartbeat-ms",
            "20",
            "--liveness",
            "50",
        ],
    );
    worker.wait_for("connected to broker at", 1);
    worker.wait_for("registered with broker at", 1);
    let registered = worker
        .seen()
        .iter()
        .find(|line| line.contains("registered with"))
        .unwrap()
        .clone();
    assert!(
        registered.contains(&format!(
            "registered with broker at {endpoint} for echo (3 slots)"
        )),
        "{registered}"
    );
    // The broker heartbeats all three slots for a while: nothing more is said.
    let mut heard = 0;
    while heard < 20 {
        worker.next_line_within(Duration::from_millis(20));
        heard += 1;
    }
    assert_eq!(
        worker.count("connected to broker at"),
        1,
        "{}",
        worker.log()
    );
    assert_eq!(worker.count("registered with"), 1, "{}", worker.log());
    assert_eq!(worker.count("WARN"), 0, "{}", worker.log());

    // The broker stops, with a DISCONNECT to each slot: the new sockets find nobody, which is
    // said once.
    stop.stop();
    broker.join().unwrap().unwrap();
    worker.wait_for("cannot connect to broker at", 1);
}
