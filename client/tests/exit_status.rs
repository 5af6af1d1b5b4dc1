//! The exit-status contract of the workspace (`cli::exit`) for every status the `client` program
//! can give (issue #16, item 11), and what its `--help` says about them: 0 every request
//! answered, 1 any failed (no reply, or a reply that is a failure report, `mdp::failure`), 2 a
//! usage error, 130 interrupted by SIGINT or SIGTERM, 141 stdout closed by its reader.
//!
//! These run the real `broker` and `worker` programs beside the client (sibling binaries in
//! `target/<profile>/`: `cargo build -p broker -p worker` first).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod common;
use common::{binary, server, text, wait_for_service, Server};

/// How long a program that should end at once may take before the test gives up on it.
const PATIENCE: Duration = Duration::from_secs(10);

fn client(args: &[&str]) -> Command {
    let mut command = Command::new(binary("client"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// Runs `command` to its end, or fails the test after [`PATIENCE`].
fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = finish_within(&mut child, PATIENCE).expect("the client ends in time");
    let mut output = child.wait_with_output().unwrap();
    output.status = status;
    output
}

/// The status, or `None` (and the program killed) after `limit`.
fn finish_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A broker on an ipc endpoint in `dir` and a worker for `service` (`worker_args` added), once
/// the broker says the service has a worker.
fn start(dir: &Path, service: &str, worker_args: &[&str]) -> (Vec<Server>, String) {
    let endpoint = format!("ipc://{}/broker.ipc", dir.display());
    let broker = server("broker", &["--bind", &endpoint]);
    let mut args = vec!["--connect", &endpoint, "--service", service];
    args.extend_from_slice(worker_args);
    let worker = server("worker", &args);
    wait_for_service(&endpoint, service, PATIENCE);
    (vec![broker, worker], endpoint)
}

#[test]
fn help_states_the_exit_statuses() {
    let help = run(&mut client(&["--help"]));
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    for status in [
        "0 when every request got its reply",
        "1 when any failed",
        "2 for usage errors",
        "130 when interrupted",
    ] {
        assert!(help.contains(status), "{status:?} in {help}");
    }
}

#[test]
fn help_states_the_stdout_closed_status() {
    let help = text(&run(&mut client(&["--help"])).stdout);
    assert!(help.contains("141"), "{help}");
}

#[test]
fn done_is_0_when_every_request_is_answered_and_for_merged_figures() {
    let dir = TempDir::new().unwrap();
    let (_servers, endpoint) = start(dir.path(), "echo", &[]);
    let echoed = run(&mut client(&["-c", &endpoint, "hello"]));
    assert_eq!(echoed.status.code(), Some(0), "{}", text(&echoed.stderr));
    assert_eq!(text(&echoed.stdout), "hello\n");

    let load = run(&mut client(&[
        "-c",
        &endpoint,
        "-n",
        "20",
        "-w",
        "4",
        "--stats=json",
        "--size",
        "8",
    ]));
    assert_eq!(load.status.code(), Some(0), "{}", text(&load.stderr));
    let figures = dir.path().join("figures.json");
    std::fs::write(&figures, &load.stdout).unwrap();
    let merged = run(&mut client(&["--merge-stats", figures.to_str().unwrap()]));
    assert_eq!(merged.status.code(), Some(0), "{}", text(&merged.stderr));
}

#[test]
fn failed_is_1_without_a_broker_and_for_figures_that_cannot_be_read() {
    let dir = TempDir::new().unwrap();
    let nobody = format!("ipc://{}/nobody.ipc", dir.path().display());
    for args in [
        &["-c", &nobody, "-t", "100", "-r", "1", "hi"][..],
        &["-c", &nobody, "-t", "100", "-w", "2", "-n", "3", "hi"],
    ] {
        let unanswered = run(&mut client(args));
        assert_eq!(unanswered.status.code(), Some(1), "{args:?}");
        assert!(text(&unanswered.stderr).contains("failed"), "{args:?}");
    }

    let missing = dir.path().join("missing.json");
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "not json\n").unwrap();
    for file in [missing, garbage] {
        let merged = run(&mut client(&["--merge-stats", file.to_str().unwrap()]));
        assert_eq!(merged.status.code(), Some(1), "{}", file.display());
    }
}

#[test]
fn failed_is_1_for_a_failure_report_with_its_stdout_on_stdout() {
    let dir = TempDir::new().unwrap();
    let command = "echo partial; echo oops >&2; exit 3";
    let (_servers, endpoint) = start(dir.path(), "fails", &["--exec", command]);
    let failed = run(&mut client(&["-c", &endpoint, "-s", "fails", "x"]));
    let stderr = text(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert_eq!(text(&failed.stdout), "partial\n");
    assert!(stderr.contains("exit status 3"), "{stderr}");
    assert!(stderr.contains("oops"), "{stderr}");
}

#[test]
fn usage_is_2_for_bad_flags_values_and_endpoints() {
    for args in [
        &["--no-such-flag"][..],
        &["--count", "0", "x"],
        &["--timeout", "x", "x"],
        &["--tag", "x"],
        &["--stats=yaml", "x"],
        &["-s", "", "x"],
        &["-c", "tcpx://nowhere:1", "x"],
    ] {
        let run = run(&mut client(args));
        assert_eq!(
            run.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&run.stderr)
        );
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
}

/// A client sending many requests, once its first reply is out (so its handlers are in place),
/// with its stdout still open for reading the rest.
fn busy_client(endpoint: &str) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = client(&["-c", endpoint, "-n", "1000000", "x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "x\n");
    (child, stdout)
}

#[test]
fn interrupted_is_130_for_sigint_and_sigterm() {
    let dir = TempDir::new().unwrap();
    let (_servers, endpoint) = start(dir.path(), "echo", &[]);
    for signal in ["INT", "TERM"] {
        let (mut child, stdout) = busy_client(&endpoint);
        // Keep reading, so that the client is never stopped by a full pipe.
        let reader = thread::spawn(move || std::io::copy(&mut { stdout }, &mut std::io::sink()));
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = finish_within(&mut child, PATIENCE).expect("stops when interrupted");
        let _ = reader.join();
        let stderr = text(&child.wait_with_output().unwrap().stderr);
        assert_eq!(status.code(), Some(130), "SIG{signal}: {stderr}");
        assert!(stderr.contains("interrupted"), "SIG{signal}: {stderr}");
    }
}

#[test]
fn stdout_closed_is_141_and_ends_the_run_at_once() {
    let dir = TempDir::new().unwrap();
    let (_servers, endpoint) = start(dir.path(), "echo", &[]);
    let (mut child, stdout) = busy_client(&endpoint);
    drop(stdout);
    let status = finish_within(&mut child, PATIENCE);
    assert_eq!(status.and_then(|status| status.code()), Some(141));
    let stderr = text(&child.wait_with_output().unwrap().stderr);
    assert!(stderr.is_empty(), "quietly: {stderr}");
}
