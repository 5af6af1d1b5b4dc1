//! The broker's live page in a real browser: headless Chromium loads `/` from a running
//! `broker --http 127.0.0.1:0` with a worker for `echo`, before and after a client's requests,
//! and the DOM its JavaScript built must show the service, its worker, and an answered count
//! that changed and agrees with `/status` read at the same moment. The screenshot goes to
//! `target/tmp/broker-dashboard.png`.
//!
//! The worker and the client are raw MDP peers (`common`), so the test decides when each
//! request is answered. The browser and the DOM reading are `dashboard::testing`'s, shared with
//! lbbroker's browser test: without a browser the test says so and passes, except under
//! `CI=true`, where a missing browser fails it.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::{ready_worker, request, start_with_http, wait_for_status, Peer};
use dashboard::testing::{
    chromium_or_skip, rendered_agreeing_with_status, rendered_dom, shown_count, shown_sequence,
    shows_worker, status,
};
use serde_json::Value;
use tempfile::TempDir;

/// How many requests the client sends.
const REQUESTS: usize = 5;

/// `echo`'s entry in `/status`.
fn echo(status: &Value) -> &Value {
    status["services"]
        .as_array()
        .and_then(|services| services.iter().find(|service| service["name"] == "echo"))
        .unwrap_or(&Value::Null)
}

fn answered_in_status(addr: SocketAddr) -> String {
    echo(&status(addr))["counters"]["answered"].to_string()
}

#[test]
fn the_live_page_shows_the_service_its_worker_and_the_same_count_as_status() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let profile = TempDir::new().unwrap();
    // Heartbeats every minute: the raw worker does not heartbeat, and must not be purged while
    // the browser runs.
    let (_broker, endpoint, addr) = start_with_http(&["--heartbeat-ms", "60000"]);
    let url = format!("http://{addr}/");
    let worker = ready_worker(&endpoint, "W-echo", "echo");
    let registered = wait_for_status(addr, "the worker registered", |status| {
        echo(status)["workers_idle"] == 1
    });
    assert_eq!(echo(&registered)["idle_workers"][0], "W-echo");

    let before = rendered_dom(&chromium, &url, profile.path(), None);
    assert!(
        before.contains("<span id=\"program\">broker</span>"),
        "{before}"
    );
    assert!(
        shows_worker(&before, "echo", "W-echo", "idle"),
        "W-echo idle in:\n{before}"
    );
    assert_eq!(shown_count(&before, "echo", "answered"), "0");
    assert_eq!(shown_count(&before, "echo", "workers_idle"), "1");

    let client = Peer::connect(&endpoint, "C-1");
    for index in 0..REQUESTS {
        let body = format!("hello {index}");
        request(&client, "echo", body.as_bytes());
        let got = worker.recv_skipping_heartbeats();
        assert_eq!(got[..3], common::frames(&[b"", b"MDPW01", b"\x02"]));
        // [3] client address, [4] "", [5] body: sent back as the REPLY.
        worker.send(&[b"", b"MDPW01", b"\x03", &got[3], b"", &got[5]]);
        let reply = client.recv();
        assert_eq!(reply[3], body.as_bytes());
    }
    // Every answer is out and published: from here on the state stays as it is.
    wait_for_status(addr, "every answer counted", |status| {
        echo(status)["counters"]["answered"] == REQUESTS
    });

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("broker-dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let (after, shown) = rendered_agreeing_with_status(
        &chromium,
        &url,
        profile.path(),
        Some(&screenshot),
        ("echo", "answered"),
        || answered_in_status(addr),
    );
    assert_ne!(
        shown,
        shown_count(&before, "echo", "answered"),
        "the count did not change with the client's requests"
    );
    assert_eq!(shown, REQUESTS.to_string());
    assert_eq!(
        shown_count(&after, "echo", "received"),
        REQUESTS.to_string()
    );
    assert!(
        shows_worker(&after, "echo", "W-echo", "idle"),
        "W-echo idle again in:\n{after}"
    );
    assert!(
        shown_sequence(&after) > shown_sequence(&before),
        "the page drew a later snapshot the second time"
    );

    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|file| file.len() > 0),
        "no screenshot at {}",
        screenshot.display()
    );
    eprintln!("screenshot of the live page: {}", screenshot.display());
}
