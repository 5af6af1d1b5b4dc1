//! The log at the default level is one an operator can leave on: a broker in normal use (clients
//! that come and go, a worker that heartbeats) writes nothing per connection or per request.
//!
//! `QUIET_RUN_SECS=60 cargo nextest run -p broker --test quiet --no-capture` keeps 50 clients
//! coming and going for that long and prints the line count: a measurement, not part of the
//! default run (which does one round of 50).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn fifty_clients_coming_and_going_and_a_heartbeating_worker_write_no_line_at_the_default_level() {
    let run_for = std::env::var("QUIET_RUN_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let mut broker = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--bind", "tcp://127.0.0.1:*", "--heartbeat-ms", "500"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(broker.stderr.take().unwrap()).lines();
    let endpoint = loop {
        let line = log.next().expect("broker exited early").unwrap();
        if let Some((_, at)) = line.split_once("is active at ") {
            break at.trim().to_owned();
        }
    };
    let worker = ready_worker(&endpoint, "W", "echo");
    let started = Instant::now();
    let mut served = 0;
    loop {
        for n in 0..50 {
            let client = Peer::connect(&endpoint, &format!("C{n}"));
            request(&client, "echo", b"hi");
            let got = worker.recv_skipping_heartbeats();
            assert_eq!(got[2], b"\x02");
            // The worker heartbeats too, as a real one does between requests.
            worker.send(&[b"", b"MDPW01", b"\x04"]);
            worker.send(&[b"", b"MDPW01", b"\x03", &got[3], b"", b"hi"]);
            assert_eq!(client.recv()[3], b"hi");
            served += 1;
        }
        if started.elapsed() >= run_for {
            break;
        }
    }
    // A last client whose answer comes after every other client has gone: the broker has read
    // all that came before it.
    wait_for_mmi(&Peer::connect(&endpoint, "LAST"), "echo", b"200");
    let status = Command::new("kill")
        .args(["-TERM", &broker.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Read the log to its end (the broker's exit) before the worker goes: the broker's farewell
    // DISCONNECT to a worker that closed first is refused ("peer is gone"), a line about the
    // test's own order, not about normal use.
    let lines: Vec<String> = log
        .map(Result::unwrap)
        .filter(|line| !line.contains("stopping: sending DISCONNECT") && !line.contains("served: "))
        .collect();
    drop(worker);
    // The periodic summary (once a minute at most) is not per connection: count it apart.
    let (summaries, lines): (Vec<String>, Vec<String>) = lines
        .into_iter()
        .partition(|line| line.contains("in the last 60s: "));
    assert!(broker.wait().unwrap().success());
    eprintln!(
        "{} request(s) from 50 clients coming and going over {:?}: {} line(s) besides the \
         start and stop lines, and {} periodic summary line(s)",
        served,
        started.elapsed(),
        lines.len(),
        summaries.len()
    );
    assert!(lines.is_empty(), "lines at the default level: {lines:#?}");
}
