//! `--http`: the real binary serving `/status` and `/metrics` over a real socket while a worker
//! answers a client, and the ways the flag can be wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};

use common::*;

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[test]
fn the_broker_serves_status_and_metrics_that_agree_with_what_it_did() {
    let (_broker, endpoint, addr) = start_with_http(&[]);
    let worker = ready_worker(&endpoint, "W1", "echo");
    let client = Peer::connect(&endpoint, "C1");
    let ready = wait_for_status(addr, "the worker idle", |status| {
        status["services"]
            .as_array()
            .is_some_and(|services| services.iter().any(|s| s["workers_idle"] == 1))
    });
    assert_eq!(ready["program"], "broker");
    assert_eq!(ready["services"][0]["name"], "echo");
    assert_eq!(ready["services"][0]["idle_workers"][0], "W1");

    for body in [&b"one"[..], b"two", b"three"] {
        request(&client, "echo", body);
        let got = worker.recv_skipping_heartbeats();
        assert_eq!(got[2], b"\x02");
        worker.send(&[b"", b"MDPW01", b"\x03", &got[3], b"", body]);
        let reply = client.recv();
        assert_eq!(reply[3], body);
    }
    let status = wait_for_status(addr, "three answers", |status| {
        status["services"][0]["counters"]["answered"] == 3
    });
    let echo = &status["services"][0];
    assert_eq!(echo["counters"]["received"], 3);
    assert_eq!(echo["counters"]["dispatched"], 3);
    assert_eq!(echo["latency"]["count"], 3, "each answer was timed");
    assert_eq!(echo["workers_idle"], 1);
    assert_eq!(echo["workers_busy"], 0);
    assert_eq!(echo["requests_waiting"], 0);
    assert_eq!(status["counters"]["workers_registered"], 1);
    // In: READY, three requests, three replies (and maybe heartbeats: none were sent by the
    // worker). Out: three requests, three replies, and any heartbeats to the worker.
    let messages_in = status["counters"]["messages_in"].as_u64().unwrap();
    assert_eq!(messages_in, 7);
    assert!(status["counters"]["messages_out"].as_u64().unwrap() >= 6);
    // The worker and the client, as the monitor thread counted them (it may lag a publish).
    let status = wait_for_status(addr, "two connections", |status| {
        status["counters"]["connections"] == 2
    });
    assert_eq!(status["counters"]["connections"], 2);
    drop(client);
    wait_for_status(addr, "the client's connection closed", |status| {
        status["counters"]["connections"] == 1
    });

    let (code, metrics) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    let series =
        |name: &str| metric(&metrics, name).unwrap_or_else(|| panic!("{name} in {metrics}"));
    assert_eq!(
        series("broker_service_requests_answered_total{service=\"echo\"}"),
        3.0
    );
    assert_eq!(
        series("broker_service_requests_received_total{service=\"echo\"}"),
        3.0
    );
    assert_eq!(
        series("broker_service_workers{service=\"echo\",state=\"idle\"}"),
        1.0
    );
    assert_eq!(series("broker_connections"), 1.0);
}

#[test]
fn an_address_in_use_exits_1_and_one_that_does_not_parse_exits_2() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap().to_string();
    let run = |addr: &str| {
        Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["--bind", "tcp://127.0.0.1:*", "--http", addr])
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let busy = run(&in_use);
    assert_eq!(busy.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert_eq!(run("not-an-address").status.code(), Some(2));
}
