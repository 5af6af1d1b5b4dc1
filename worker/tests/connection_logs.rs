//! What the `worker` program says about its brokers (issue #16 item 3), read from its stderr
//! while it runs: "connected" only on a real connection, "registered" once the broker has
//! spoken, and a broker that cannot be reached reported once, then retried quietly. Every wait
//! here waits for a line, with a guard against a hang; none measures time.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use broker::{Config, Server};

/// The worker program with `args`, its stderr read line by line on a thread.
struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until `count` of them contain `text`; the guard turns a hang into a failure.
    fn wait_for(&mut self, text: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count(text) < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "{count} x {text:?} never came; stderr so far:\n{}",
                    self.log()
                ),
            }
        }
    }

    fn count(&self, text: &str) -> usize {
        self.seen.iter().filter(|line| line.contains(text)).count()
    }

    fn log(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tcp endpoint where nothing listens: a port bound, then freed.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://{}", listener.local_addr().unwrap())
}

#[test]
fn a_broker_that_cannot_be_reached_is_reported_once_then_retried_quietly() {
    let endpoint = dead_endpoint();
    let mut worker = Running::start(&[
        "-c",
        &endpoint,
        "-v",
        "--heartbeat-ms",
        "20",
        "--liveness",
        "2",
    ]);
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

    let mut worker = Running::start(&[
        "-c",
        &endpoint,
        "--slots",
        "3",
        "--heartbeat-ms",
        "20",
        "--liveness",
        "50",
    ]);
    worker.wait_for("connected to broker at", 1);
    worker.wait_for("registered with broker at", 1);
    let registered = worker
        .seen
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
        if let Ok(line) = worker.lines.recv_timeout(Duration::from_millis(20)) {
            worker.seen.push(line);
        }
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
