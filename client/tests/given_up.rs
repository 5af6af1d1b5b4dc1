//! Issue 12 item 6, end to end with the real programs: `client -s late -t 500 "order #1"` gives
//! up (exit 1), then `worker -s late --exec 'cat >> late.log'` starts. Before the fix the worker
//! wrote `order #1` three times: every try had waited in the broker's queue. Now each try's REQ
//! socket has its own `req:` identity (`mdp::tries`): the broker drops the tries superseded by a
//! newer one, and the last one because its socket is closed. The sibling programs must be built
//! (`cargo build -p broker -p worker`).

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod common;

fn client(args: &[&str]) -> Output {
    Command::new(common::binary("client"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Waits until the broker at `endpoint` answers `mmi.service` (so the tries below reach it).
fn wait_for_broker(endpoint: &str) {
    let started = Instant::now();
    loop {
        let asked = client(&[
            "-c",
            endpoint,
            "-s",
            "mmi.service",
            "-t",
            "200",
            "-r",
            "1",
            "late",
        ]);
        if common::text(&asked.stdout) == "404\n" {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the broker never answered"
        );
    }
}

#[test]
fn a_request_the_client_gave_up_on_never_runs_later() {
    let dir = TempDir::new().unwrap();
    let endpoint = format!("ipc://{}", dir.path().join("broker.ipc").display());
    let log = dir.path().join("late.log");
    let _broker = common::server("broker", &["--bind", &endpoint]);
    wait_for_broker(&endpoint);

    let gave_up = client(&["-c", &endpoint, "-s", "late", "-t", "500", "order #1"]);
    assert_eq!(gave_up.status.code(), Some(1), "{gave_up:?}");
    assert!(
        common::text(&gave_up.stderr).contains("no reply"),
        "{}",
        common::text(&gave_up.stderr)
    );

    let exec = format!("cat >> '{}'", log.display());
    let _worker = common::server("worker", &["-c", &endpoint, "-s", "late", "--exec", &exec]);
    // Requests are dispatched in arrival order, so once this one is answered, every try of
    // order #1 that was still queued has reached the worker or been dropped.
    let answered = client(&["-c", &endpoint, "-s", "late", "-t", "10000", "order #2"]);
    assert_eq!(answered.status.code(), Some(0), "{answered:?}");

    let ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        ran.matches("order #1").count(),
        0,
        "the worker ran the request given up on: {ran:?}"
    );
    assert_eq!(ran.trim_end(), "order #2");
}
