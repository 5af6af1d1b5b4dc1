//! The exit-status contract of the workspace (`cli::exit`), for every status lbbroker can give
//! (issue #16, item 11): 0 done, 1 failed, 2 usage or configuration error, 130 interrupted, 141
//! stdout closed (the last in `cli.rs`, beside the other pipe tests). And `--help` says them.
#![allow(clippy::unwrap_used)]

mod common;

use std::thread;
use std::time::Duration;

use common::{run_within, start_broker, wait_for_file, Background, PATIENCE};
use tempfile::TempDir;

#[test]
fn help_states_the_exit_statuses() {
    let dir = TempDir::new().unwrap();
    let help = run_within(dir.path(), &["--help"], PATIENCE);
    assert_eq!(help.code(), Some(0));
    assert!(
        help.stdout.contains(cli::EXIT_STATUS_HELP),
        "{}",
        help.stdout
    );
    assert!(
        help.stdout.contains("130 if interrupted"),
        "{}",
        help.stdout
    );
}

#[test]
fn done_is_0_for_the_demo_and_for_servers_stopped_by_a_signal() {
    let dir = TempDir::new().unwrap();
    let demo = run_within(dir.path(), &["--unit-ms", "1"], PATIENCE);
    assert_eq!(demo.code(), Some(0), "{demo:?}");

    let broker = start_broker(dir.path());
    let processors = Background::start(dir.path(), &["processor", "--unit-ms", "1"]);
    let clients = run_within(dir.path(), &["client", "--clients", "3"], PATIENCE);
    assert_eq!(clients.code(), Some(0), "{clients:?}");
    for (server, signal) in [(processors, "TERM"), (broker, "INT")] {
        server.signal(signal);
        let ended = server.finish_within(PATIENCE).unwrap();
        assert_eq!(ended.code(), Some(0), "{ended:?}");
    }
}

#[test]
fn failed_is_1_for_a_path_in_use_and_for_a_client_timeout() {
    let dir = TempDir::new().unwrap();
    let broker = start_broker(dir.path());
    let second = run_within(dir.path(), &["broker"], PATIENCE);
    assert_eq!(second.code(), Some(1), "{second:?}");
    let client = run_within(dir.path(), &["client", "--timeout", "100"], PATIENCE);
    assert_eq!(client.code(), Some(1), "{client:?}");
    drop(broker);
}

#[test]
fn usage_is_2_for_bad_flags_settings_and_endpoints() {
    let dir = TempDir::new().unwrap();
    for args in [
        &["--no-such-flag"][..],
        &["--clients", "0"],
        &["client", "--timeout", "0"],
        // Valid for clap, refused by the run: no room for 2 identities after this number.
        &[
            "processor",
            "--processors",
            "2",
            "--first-id",
            &usize::MAX.to_string(),
        ],
        // An endpoint ZeroMQ cannot parse, to connect or to bind.
        &[
            "client",
            "--frontend",
            "tcpx://nowhere:1",
            "--timeout",
            "5000",
        ],
        &["broker", "--frontend", "tcpx://nowhere:1"],
        &["--backend", "tcp://no-such-interface-here:5555", "broker"],
    ] {
        let run = run_within(dir.path(), args, PATIENCE);
        assert_eq!(run.code(), Some(2), "{args:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn interrupted_is_130_for_the_demo_and_for_clients() {
    let dir = TempDir::new().unwrap();
    // Units so long that nothing is done before the interrupt.
    let demo = Background::start(dir.path(), &["--unit-ms", "60000"]);
    wait_for_file(&dir.path().join("backend.ipc"));
    thread::sleep(Duration::from_millis(100));
    demo.signal("INT");
    let demo = demo.finish_within(PATIENCE).unwrap();
    assert_eq!(demo.code(), Some(130), "{demo:?}");
    assert!(demo.stderr.contains("interrupted"), "{demo:?}");

    let mut clients = Background::start(dir.path(), &["client", "-v", "--clients", "2"]);
    // Logged once the signal handler is in place.
    clients.wait_for_stderr("client loads drawn with seed");
    clients.signal("TERM");
    let clients = clients.finish_within(PATIENCE).unwrap();
    assert_eq!(clients.code(), Some(130), "{clients:?}");
}
