//! The `broker` program itself: binding, errors on the command line, and a clean stop.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

fn broker_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_broker"))
}

#[test]
fn sigterm_disconnects_workers_exits_zero_and_removes_the_ipc_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("broker.ipc");
    let endpoint = format!("ipc://{}", socket_path.display());
    let mut broker = broker_command()
        .args(["--bind", &endpoint, "--bind", "tcp://127.0.0.1:*"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The broker logs one "active at" line per endpoint once it is bound.
    let mut log = BufReader::new(broker.stderr.take().unwrap()).lines();
    let mut active = Vec::new();
    while active.len() < 2 {
        let line = log.next().expect("broker exited early").unwrap();
        if let Some((_, endpoint)) = line.split_once("is active at ") {
            active.push(endpoint.to_string());
        }
    }
    assert_eq!(active[0], endpoint);
    assert!(active[1].starts_with("tcp://127.0.0.1:"));
    assert!(socket_path.exists());

    // A worker on each endpoint, registered (each holds a request).
    let client = Peer::connect(&active[1], "C1");
    let workers = [
        ready_worker(&active[0], "IPC-W", "echo"),
        ready_worker(&active[1], "TCP-W", "echo"),
    ];
    request(&client, "echo", b"a");
    request(&client, "echo", b"b");
    for worker in &workers {
        assert_eq!(worker.recv_skipping_heartbeats()[2], b"\x02");
    }

    let status = Command::new("kill")
        .args(["-TERM", &broker.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for worker in &workers {
        assert_eq!(worker.recv_skipping_heartbeats(), disconnect());
    }
    assert!(broker.wait().unwrap().success());
    assert!(!socket_path.exists(), "ipc file left behind");
    // Drain the rest of the log so the pipe does not hold the process.
    for _ in log {}
}

#[test]
fn a_bind_that_fails_is_an_error_not_a_deaf_broker() {
    let taken = zmq::Context::new().socket(zmq::ROUTER).unwrap();
    taken.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = taken.get_last_endpoint().unwrap().unwrap();
    let output = broker_command()
        .args(["--bind", &endpoint])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot bind {endpoint}")),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("Address already in use"),
        "stderr: {stderr}"
    );
}

#[test]
fn a_second_broker_on_the_same_ipc_path_is_refused_and_the_first_stays_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("b.ipc");
    let endpoint = format!("ipc://{}", socket_path.display());
    let mut first = broker_command()
        .args(["--bind", &endpoint])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(first.stderr.take().unwrap()).lines();
    while !log
        .next()
        .expect("broker exited early")
        .unwrap()
        .contains("is active at")
    {}
    let second = broker_command()
        .args(["--bind", &endpoint])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!("cannot bind {endpoint}"))
            && stderr.contains("another program is bound to it"),
        "stderr: {stderr}"
    );
    // The refused broker removed nothing: the first still answers on the path.
    let client = Peer::connect(&endpoint, "C1");
    wait_for_mmi(&client, "echo", b"404");
    first.kill().unwrap();
    first.wait().unwrap();
    for _ in log {}
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["--liveness", "0"][..],
        &["--heartbeat-ms", "soon"],
        &["--no-such-flag"],
        &["--max-message-size", "9223372036854775808"],
    ] {
        let output = broker_command().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
    let help = broker_command().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--bind",
        "--heartbeat-ms",
        "--liveness",
        "--max-queue",
        "--request-ttl-ms",
        "--redeliver",
    ] {
        assert!(text.contains(flag), "--help does not mention {flag}");
    }
    assert!(
        text.contains(cli::EXIT_STATUS_HELP),
        "--help states the exit statuses"
    );
}

#[test]
fn binding_a_host_name_fails_with_a_hint_to_use_an_interface_address() {
    let output = broker_command()
        .args(["--bind", "tcp://localhost:5999"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot bind tcp://localhost:5999: No such device; to bind, name an interface address such as 127.0.0.1, or * for every interface"),
        "stderr: {stderr}"
    );
}
