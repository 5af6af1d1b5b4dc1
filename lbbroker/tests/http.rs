//! `--http`: the real binary serving its dashboard over a real socket while it forwards, and
//! the ways the flag can be wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;

use common::{
    entries, http_get, run_within, start_broker_with_dashboard, wait_for_status, Background,
    PATIENCE,
};
use serde_json::Value;
use tempfile::TempDir;

/// The value of the line `name` in Prometheus text, for a series without labels or with them.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[test]
fn the_broker_serves_metrics_and_status_of_its_queue_while_it_forwards() {
    let dir = TempDir::new().unwrap();
    let (broker, addr) = start_broker_with_dashboard(dir.path());
    eprintln!("dashboard of the broker under test: http://{addr}/");
    let _processors = Background::start(
        dir.path(),
        &["processor", "--processors", "2", "--unit-ms", "1"],
    );
    let ready = wait_for_status(addr, "two processors ready", |status| {
        status["services"][0]["workers_idle"] == 2
    });
    let queue = &ready["services"][0];
    assert_eq!(ready["program"], "lbbroker");
    assert_eq!(queue["name"], "processors");
    let mut idle: Vec<&str> = queue["idle_workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap())
        .collect();
    idle.sort_unstable();
    assert_eq!(idle, ["PROCESSOR-0", "PROCESSOR-1"]);
    assert_eq!(queue["counters"]["answered"], 0);

    let clients = run_within(dir.path(), &["client", "--clients", "5"], PATIENCE);
    assert_eq!(clients.code(), Some(0), "{}", clients.stderr);

    let status = wait_for_status(addr, "five answers", |status| {
        status["services"][0]["counters"]["answered"] == 5
    });
    let queue = &status["services"][0];
    assert_eq!(queue["counters"]["received"], 5);
    assert_eq!(queue["counters"]["dispatched"], 5);
    assert_eq!(queue["latency"]["count"], 5, "each answer was timed");
    assert_eq!(queue["workers_idle"], 2, "both processors are free again");
    assert_eq!(queue["workers_busy"], 0);
    assert_eq!(status["counters"]["workers_registered"], 2);
    // Two READYs and five replies in; five requests in from clients; ten out.
    assert_eq!(status["counters"]["messages_in"], 12);
    assert_eq!(status["counters"]["messages_out"], 10);
    assert_eq!(status["counters"]["connections"], Value::Null);

    let (code, metrics) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    let series =
        |name: &str| metric(&metrics, name).unwrap_or_else(|| panic!("{name} in {metrics}"));
    assert_eq!(
        series("lbbroker_service_requests_answered_total{service=\"processors\"}"),
        5.0
    );
    assert_eq!(
        series("lbbroker_service_requests_received_total{service=\"processors\"}"),
        5.0
    );
    assert_eq!(
        series("lbbroker_service_workers{service=\"processors\",state=\"idle\"}"),
        2.0
    );
    assert_eq!(
        series("lbbroker_service_latency_seconds_count{service=\"processors\"}"),
        5.0
    );
    assert_eq!(series("lbbroker_workers_registered_total"), 2.0);
    assert_eq!(series("lbbroker_messages_in_total"), 12.0);

    broker.signal("INT");
    let finished = broker.finish_within(PATIENCE).unwrap();
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
}

#[test]
fn an_http_address_in_use_exits_1_and_says_so() {
    let dir = TempDir::new().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let finished = run_within(dir.path(), &["broker", "--http", &addr], PATIENCE);
    assert_eq!(finished.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished.stderr.contains(&format!(
            "cannot serve the dashboard on {addr}: Address already in use"
        )),
        "{}",
        finished.stderr
    );
    assert!(entries(dir.path()).is_empty(), "the ipc files went again");
}

#[test]
fn an_http_address_that_is_not_one_is_a_usage_error() {
    let dir = TempDir::new().unwrap();
    let finished = run_within(dir.path(), &["broker", "--http", "localhost"], PATIENCE);
    assert_eq!(finished.code(), Some(2), "{}", finished.stderr);
    assert!(finished.stderr.contains("--http"), "{}", finished.stderr);
}

#[test]
fn the_demo_serves_a_dashboard_too_and_says_where() {
    let dir = TempDir::new().unwrap();
    let finished = run_within(
        dir.path(),
        &["--http", "127.0.0.1:0", "--unit-ms", "1", "--clients", "3"],
        PATIENCE,
    );
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("dashboard at http://127.0.0.1:"),
        "{}",
        finished.stderr
    );
    assert_eq!(
        finished.stdout.lines().count(),
        6,
        "the gist's lines, as ever"
    );
}

#[test]
fn without_http_there_is_no_dashboard() {
    let dir = TempDir::new().unwrap();
    let finished = run_within(dir.path(), &["--unit-ms", "1", "--clients", "2"], PATIENCE);
    assert_eq!(finished.code(), Some(0));
    assert_eq!(finished.stderr, "", "nothing on stderr, no dashboard line");
}
