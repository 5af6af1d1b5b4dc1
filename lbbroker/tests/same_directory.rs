//! Two programs that want the same ipc paths, as a user gets them by running `lbbroker broker`
//! twice in one directory, or the demo beside a standalone broker: the second must fail, saying
//! which path and why, and the first must keep serving (issue #16, item 1).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{entries, run_within, start_broker, Background, PATIENCE};
use tempfile::TempDir;

/// A broker in `dir`, once it has bound both of its paths.
/// What a second program bound to the first one's frontend must say: which socket and endpoint,
/// which file and that another program is bound to it, each once.
fn assert_refused_because_in_use(dir: &Path, second: Option<common::Finished>) {
    let second = second.expect("the second program kept running: it took the first one's paths");
    assert_eq!(second.code(), Some(1), "{second:?}");
    let frontend = dir.canonicalize().unwrap().join("frontend.ipc");
    assert_eq!(
        second.stderr,
        format!(
            "lbbroker: cannot bind the frontend ROUTER to ipc://frontend.ipc: {} is in use: \
             another program is bound to it (it holds {}.lock)\n",
            frontend.display(),
            frontend.display()
        )
    );
    assert!(second.stdout.is_empty(), "{second:?}");
}

/// The first broker still answers: a processor and two clients get through it.
fn assert_still_serving(dir: &Path) {
    let processor = Background::start(dir, &["processor", "--processors", "1", "--unit-ms", "1"]);
    let clients = run_within(dir, &["client", "--clients", "2"], PATIENCE);
    assert_eq!(clients.code(), Some(0), "{clients:?}");
    assert_eq!(
        clients
            .stdout
            .lines()
            .filter(|line| line.contains(": REP OK from PROCESSOR-0"))
            .count(),
        2,
        "{clients:?}"
    );
    drop(processor);
}

/// Ctrl-C, as it were: the broker ends cleanly and takes its files (and locks) with it.
fn stop_broker(dir: &Path, broker: Background) {
    broker.signal("INT");
    let stopped = broker
        .finish_within(PATIENCE)
        .expect("the broker stops on SIGINT");
    assert_eq!(stopped.code(), Some(0), "{stopped:?}");
    assert_eq!(entries(dir), Vec::<String>::new());
}

#[test]
fn a_second_broker_in_the_same_directory_fails_and_the_first_keeps_serving() {
    let dir = TempDir::new().unwrap();
    let first = start_broker(dir.path());

    let second = Background::start(dir.path(), &["broker"]).finish_within(Duration::from_secs(3));
    assert_refused_because_in_use(dir.path(), second);

    assert_still_serving(dir.path());
    stop_broker(dir.path(), first);
}

#[test]
fn the_demo_beside_a_standalone_broker_fails_and_the_broker_keeps_serving() {
    let dir = TempDir::new().unwrap();
    let broker = start_broker(dir.path());

    let demo = Background::start(dir.path(), &["--unit-ms", "1"]).finish_within(PATIENCE);
    assert_refused_because_in_use(dir.path(), demo);

    assert_still_serving(dir.path());
    stop_broker(dir.path(), broker);
}
