//! The roles in terminals of their own, as the README's walk-through runs them: one broker,
//! processors stopped with Ctrl-C and started again, clients that come and go.
#![allow(clippy::unwrap_used)]

mod common;

use std::thread;
use std::time::Duration;

use common::{run_within, start_broker, Background, PATIENCE};
use tempfile::TempDir;

fn replies(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|line| line.contains(": REP OK from PROCESSOR-"))
        .count()
}

/// Issue #16, item 2, step by step: broker, processors, one client, Ctrl-C the processors, then
/// two clients. The stopped processors are still in the broker's ready queue: the requests sent
/// to them are refused, and must wait for the processors started next instead of being dropped.
#[test]
fn clients_after_the_processors_were_stopped_are_served_once_processors_return() {
    let dir = TempDir::new().unwrap();
    let broker = start_broker(dir.path());
    let processors = Background::start(dir.path(), &["processor", "--unit-ms", "1"]);
    let first = run_within(dir.path(), &["client", "--clients", "1"], PATIENCE);
    assert_eq!(replies(&first.stdout), 1, "{first:?}");

    processors.signal("INT");
    let stopped = processors.finish_within(PATIENCE).unwrap();
    assert_eq!(stopped.code(), Some(0), "{stopped:?}");

    let waiting = Background::start(dir.path(), &["client", "--clients", "2", "--first-id", "1"]);
    // Let their requests reach the broker while no processor is there.
    thread::sleep(Duration::from_millis(300));
    let _restarted = Background::start(dir.path(), &["processor", "--unit-ms", "1"]);
    let served = waiting
        .finish_within(PATIENCE)
        .expect("the clients got no reply: their requests were lost");
    assert_eq!(served.code(), Some(0), "{served:?}");
    assert_eq!(replies(&served.stdout), 2, "{served:?}");

    // And no stale entry is left in the queue to lose the next requests.
    let more = run_within(
        dir.path(),
        &["client", "--clients", "6", "--first-id", "3"],
        PATIENCE,
    );
    assert_eq!(replies(&more.stdout), 6, "{more:?}");
    drop(broker);
}

/// A client at a terminal is never stuck: with no processor to answer, `--timeout` ends it with
/// exit 1 and a message naming the wait and the broker.
#[test]
fn a_client_with_no_reply_in_time_exits_1_naming_the_timeout() {
    let dir = TempDir::new().unwrap();
    let broker = start_broker(dir.path());
    let started = std::time::Instant::now();
    let client = run_within(
        dir.path(),
        &["client", "--clients", "1", "--timeout", "300"],
        PATIENCE,
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(client.code(), Some(1), "{client:?}");
    assert_eq!(
        client.stderr,
        "lbbroker: CLIENT-0 stopped: no reply within 300 ms (--timeout) from the broker at \
         ipc://frontend.ipc\n"
    );
    assert!(client.stdout.is_empty(), "{client:?}");
    drop(broker);
}

/// `lbbroker processor | head -1`: once the reader has gone, the processors stop at the next
/// line they print, quietly, with 141.
#[test]
fn a_closed_stdout_ends_the_processors_quietly_with_141() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new().unwrap();
    let broker = start_broker(dir.path());
    let mut processors = Background::start(dir.path(), &["processor", "--unit-ms", "1"]);
    let first = run_within(dir.path(), &["client", "--clients", "1"], PATIENCE);
    assert_eq!(first.code(), Some(0), "{first:?}");
    let mut stdout = BufReader::new(processors.take_stdout());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains(": REQ "), "{line:?}");
    drop(stdout);
    // The next request makes a processor print a line to the closed pipe.
    let clients = Background::start(
        dir.path(),
        &[
            "client",
            "--clients",
            "3",
            "--first-id",
            "1",
            "--timeout",
            "5000",
        ],
    );
    let ended = processors.finish_within(PATIENCE).unwrap();
    assert_eq!(ended.code(), Some(141), "{ended:?}");
    assert_eq!(ended.stderr, "");
    drop(clients);
    drop(broker);
}
