//! The dashboard's live page in a real browser: headless Chromium loads `/` from a running
//! `lbbroker broker --http` with two processors, before and after a client run, and the DOM its
//! JavaScript built must show the queue, the processors, and an answered count that changed and
//! agrees with `/status` read at the same moment. A screenshot is written where the test says.
//!
//! The browser and the DOM reading are `dashboard::testing`'s, shared with the Majordomo
//! broker's browser test: without a browser the test says so and passes, except under
//! `CI=true`, where a missing browser fails it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::{run_within, start_broker_with_dashboard, wait_for_status, Background, PATIENCE};
use dashboard::testing::{
    chromium_or_skip, rendered_agreeing_with_status, rendered_dom, shown_count, shown_sequence,
    shows_worker, status,
};
use tempfile::TempDir;

fn answered_in_status(addr: std::net::SocketAddr) -> String {
    status(addr)["services"][0]["counters"]["answered"].to_string()
}

#[test]
fn the_live_page_shows_the_queue_its_processors_and_the_same_count_as_status() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let dir = TempDir::new().unwrap();
    let profile = TempDir::new().unwrap();
    let (_broker, addr) = start_broker_with_dashboard(dir.path());
    let url = format!("http://{addr}/");
    let _processors = Background::start(
        dir.path(),
        &["processor", "--processors", "2", "--unit-ms", "5"],
    );
    wait_for_status(addr, "two processors ready", |status| {
        status["services"][0]["workers_idle"] == 2
    });

    let before = rendered_dom(&chromium, &url, profile.path(), None);
    assert!(
        before.contains("<span id=\"program\">lbbroker</span>"),
        "{before}"
    );
    for processor in ["PROCESSOR-0", "PROCESSOR-1"] {
        assert!(
            shows_worker(&before, "processors", processor, "idle"),
            "{processor} idle in:\n{before}"
        );
    }
    assert_eq!(shown_count(&before, "processors", "answered"), "0");

    let clients = run_within(dir.path(), &["client", "--clients", "8"], PATIENCE);
    assert_eq!(clients.code(), Some(0), "{}", clients.stderr);
    // Every answer is out and published: from here on the state stays as it is.
    wait_for_status(addr, "eight answers", |status| {
        status["services"][0]["counters"]["answered"] == 8
    });

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lbbroker-dashboard.png");
    let (after, shown) = rendered_agreeing_with_status(
        &chromium,
        &url,
        profile.path(),
        Some(&screenshot),
        ("processors", "answered"),
        || answered_in_status(addr),
    );
    assert_eq!(shown, "8", "the count changed from 0 with the clients' run");
    assert_eq!(shown_count(&after, "processors", "workers_idle"), "2");
    assert!(after.contains("data-worker=\"PROCESSOR-0\""), "{after}");
    assert!(
        shown_sequence(&after) > 1,
        "the page shows a published snapshot, not the empty first one"
    );

    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|file| file.len() > 0),
        "no screenshot at {}",
        screenshot.display()
    );
    println!("screenshot of the live page: {}", screenshot.display());
    eprintln!("screenshot of the live page: {}", screenshot.display());
}
