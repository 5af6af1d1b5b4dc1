//! The 1,500 x 1 MiB flood against the `broker` program: its memory stays under
//! `--max-queued-bytes` plus 32 MB. A test binary of its own, so that `cargo test` runs it alone:
//! what it measures is how fast the broker drains its sockets, which other tests' load changes.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Starts the program on a free loopback port; returns it and its endpoint.
fn start_broker() -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--bind", "tcp://127.0.0.1:*"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let endpoint = loop {
        let line = lines.next().expect("broker exited early").unwrap();
        if let Some((_, endpoint)) = line.split_once("is active at ") {
            break endpoint.to_string();
        }
    };
    // Keep reading its log so that a full pipe never holds it.
    std::thread::spawn(move || for _ in lines {});
    (child, endpoint)
}

/// One of the broker's memory figures (`VmRSS`, `VmHWM`), in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_1500_one_mib_requests_holds_the_broker_under_its_byte_limit_plus_32_mb() {
    // Before the byte limit this took the broker from 5 MB to 1.5 GB.
    const MIB: usize = 1024 * 1024;
    let limit_kib = (broker::Config::default().max_queued_bytes / 1024) as u64;
    let budget_kib = limit_kib + 32_000_000 / 1024;
    for connections in [1usize, 10] {
        let (mut child, endpoint) = start_broker();
        let senders: Vec<_> = (0..connections)
            .map(|index| {
                let endpoint = endpoint.clone();
                std::thread::spawn(move || {
                    let client = Peer::connect(&endpoint, &format!("FLOOD-{index}"));
                    let body = vec![b'x'; MIB];
                    for _ in 0..1500 / connections {
                        request(&client, "nobody", &body);
                    }
                    // Answered once every request before it on this connection was read; moving
                    // 1.5 GB takes a while in a debug build, so wait for it longer than usual.
                    request(&client, "mmi.service", b"nobody");
                    let reply = client.recv_within(Duration::from_secs(300));
                    assert_eq!(reply.unwrap()[3], b"404");
                })
            })
            .collect();
        for sender in senders {
            sender.join().unwrap();
        }
        // What the broker holds once it has read the whole flood: the queued bodies, bounded
        // by the limit, and its own few MB.
        let held = memory_kib(child.id(), "VmRSS");
        // The peak also counts the messages libzmq had read and the broker not yet (up to
        // ZMQ_RCVHWM per connection): how many depends on how fast the broker drains them, so
        // on the machine's load. It is checked against a looser bound.
        let peak = memory_kib(child.id(), "VmHWM");
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!("{connections} connection(s): RSS {held} KiB, peak {peak} KiB");
        assert!(
            held < budget_kib,
            "{connections} connection(s): RSS {held} KiB, over {budget_kib} KiB"
        );
        assert!(
            peak < budget_kib + 64 * 1024,
            "{connections} connection(s): peak RSS {peak} KiB, over {budget_kib} KiB + 64 MiB"
        );
    }
}
