//! The real programs end to end: `broker`, `worker` and `client` as separate processes talking
//! over an ipc endpoint in a temporary directory, as they would in three terminals.
//!
//! These need the `broker` and `worker` binaries next to this crate's: `cargo test --workspace`
//! builds them; after `cargo test -p client` alone, run `cargo build --workspace` first.
//!
//! No sleep stands in for synchronisation: each step waits for what it needs (a service known
//! to the broker via `mmi.service`, a file the worker's command creates, a process's exit) and
//! gives up at a deadline.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use client::{Client, ClientConfig, ServiceName};
use tempfile::TempDir;

/// Short heartbeats so that failures are detected in tenths of a second, not seconds.
const HEARTBEAT_MS: &str = "100";
const LIVENESS: &str = "3";

/// Generous: these tests share two cores with the rest of the suite.
const PATIENCE: Duration = Duration::from_secs(20);

/// A sibling binary of this test, in `target/<profile>/`.
fn binary(name: &str) -> PathBuf {
    if name == "client" {
        return PathBuf::from(env!("CARGO_BIN_EXE_client"));
    }
    // This test runs as target/<profile>/deps/end_to_end-<hash>.
    let test_exe = std::env::current_exe().unwrap();
    let profile_dir = test_exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test -p client` builds only the client; run `cargo build --workspace` \
         (or `cargo test --workspace`) so the broker and worker programs exist",
        path.display()
    );
    path
}

/// A program running in the background, in its own process group so that killing it also
/// kills any command it started (`worker --exec`). Killed when dropped.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(dir: &Path, name: &str, program: &str, args: &[&str]) -> Process {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(binary(program))
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        Process {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// What it has logged so far (stdout and stderr).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL to the whole process group, then reap.
    fn kill(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log());
        }
        self.kill();
    }
}

/// Runs a program to completion (or kills it at the deadline) and returns what it printed.
fn run(program: &str, args: &[&str]) -> Output {
    run_with_stdin(program, args, b"")
}

fn run_with_stdin(program: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(binary(program))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Small enough for the pipe's buffer, so writing cannot block on a child that waits.
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, input).unwrap();
    drop(stdin);
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program} {args:?} did not finish within {PATIENCE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls `condition` every 20 ms until it holds; panics with `what` at the deadline.
fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < deadline,
            "timed out waiting until {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// Asks the broker's `mmi.service` whether `service` has a worker: `Some(true)` for 200,
/// `Some(false)` for 404, `None` if the broker does not answer within a short timeout.
fn mmi_service(endpoint: &str, service: &str) -> Option<bool> {
    let config = ClientConfig {
        timeout: Duration::from_millis(500),
        retries: 1,
    };
    let service: ServiceName = service.parse().unwrap();
    Client::connect(endpoint, config)
        .and_then(|mut client| client.has_service(&service))
        .ok()
}

fn broker_knows(endpoint: &str, service: &str) -> bool {
    mmi_service(endpoint, service) == Some(true)
}

fn ipc_endpoint(dir: &TempDir) -> String {
    format!("ipc://{}/broker.ipc", dir.path().display())
}

fn start_broker(dir: &TempDir, name: &str, endpoint: &str) -> Process {
    let args = [
        "--bind",
        endpoint,
        "--heartbeat-ms",
        HEARTBEAT_MS,
        "--liveness",
        LIVENESS,
    ];
    Process::start(dir.path(), name, "broker", &args)
}

fn start_worker(dir: &TempDir, name: &str, endpoint: &str, extra: &[&str]) -> Process {
    let mut args = vec![
        "-c",
        endpoint,
        "--heartbeat-ms",
        HEARTBEAT_MS,
        "--liveness",
        LIVENESS,
    ];
    args.extend_from_slice(extra);
    Process::start(dir.path(), name, "worker", &args)
}

#[test]
fn three_terminal_flow() {
    let dir = TempDir::new().unwrap();
    let endpoint = ipc_endpoint(&dir);
    let _broker = start_broker(&dir, "broker", &endpoint);
    let _echo = start_worker(&dir, "echo-worker", &endpoint, &[]);
    let _upper = start_worker(
        &dir,
        "upper-worker",
        &endpoint,
        &["-s", "upper", "--exec", "tr a-z A-Z"],
    );
    let _failing = start_worker(
        &dir,
        "failing-worker",
        &endpoint,
        &["-s", "fails", "--exec", "echo broken >&2; exit 3"],
    );
    for service in ["echo", "upper", "fails"] {
        wait_until(&format!("{service} is registered"), PATIENCE, || {
            broker_knows(&endpoint, service)
        });
    }
    let c = endpoint.as_str();

    let echoed = run("client", &["-c", c, "hello", "world"]);
    assert!(echoed.status.success(), "{}", stderr(&echoed));
    assert_eq!(stdout(&echoed), "hello\nworld\n");

    let found = run("client", &["-c", c, "-s", "mmi.service", "echo"]);
    assert_eq!(stdout(&found), "200\n");
    let missing = run("client", &["-c", c, "-s", "mmi.service", "nosuch"]);
    assert_eq!(stdout(&missing), "404\n");

    let upper = run("client", &["-c", c, "-s", "upper", "hello", "world"]);
    assert_eq!(stdout(&upper), "HELLO\nWORLD\n");
    // Without FRAMEs, stdin is the body: through `tr` and back, text comes out as it went in.
    let piped = run_with_stdin("client", &["-c", c, "-s", "upper"], b"line one\nline two\n");
    assert_eq!(stdout(&piped), "LINE ONE\nLINE TWO\n");

    // --raw: exact bytes both ways (issue #16 item 6: the default strips one trailing newline of
    // stdin and adds one after each reply frame, so binary data did not round-trip).
    let bytes: Vec<u8> = (0..=255u8).chain(*b"\n\n").collect();
    let raw = run_with_stdin("client", &["-c", c, "--raw"], &bytes);
    assert!(raw.status.success(), "{}", stderr(&raw));
    assert_eq!(raw.stdout, bytes, "--raw returns the bytes exactly");

    // A failing command is a reply too: the four frames of mdp::failure (marker, reason, stdout,
    // stderr), which the client reports as a failure (issue #16 item 4): the command's stdout
    // (empty here) to stdout, the reason and its stderr to stderr, exit 1. The worker goes on.
    for _ in 0..2 {
        let failed = run("client", &["-c", c, "-s", "fails", "x"]);
        assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
        assert_eq!(stdout(&failed), "");
        assert!(
            stderr(&failed).contains(
                "request 1 failed: the service reported a failure: exit status 3\nbroken\n"
            ),
            "{}",
            stderr(&failed)
        );
    }

    let load = run(
        "client",
        &[
            "-c", c, "--count", "300", "--window", "30", "--stats", "--size", "16",
        ],
    );
    assert!(load.status.success(), "{}", stderr(&load));
    let line = stdout(&load);
    assert_eq!(line.lines().count(), 1, "exactly one line: {line:?}");
    assert!(
        line.starts_with("requests=300 replies=300 failed=0 retried=0 seconds="),
        "{line}"
    );
    let fields: Vec<&str> = line
        .split_whitespace()
        .map(|f| f.split('=').next().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "requests",
            "replies",
            "failed",
            "retried",
            "seconds",
            "req_per_s",
            "p50_us",
            "p99_us"
        ]
    );

    let tagged = run(
        "client",
        &[
            "-c", c, "--count", "300", "--window", "30", "--tag", "--stats", "x",
        ],
    );
    assert!(stdout(&tagged).starts_with("requests=300 replies=300 failed=0 "));
    let tagged_reply = run("client", &["-c", c, "--window", "1", "--tag", "untouched"]);
    assert_eq!(stdout(&tagged_reply), "untouched\n", "the tag is removed");

    let sequential = run("client", &["-c", c, "--count", "20", "--stats", "x"]);
    assert!(stdout(&sequential).starts_with("requests=20 replies=20 failed=0 "));

    // Nobody serves "nosuch": exit 1 with the reason on stderr.
    let unanswered = run(
        "client",
        &["-c", c, "-s", "nosuch", "-t", "200", "-r", "2", "x"],
    );
    assert_eq!(unanswered.status.code(), Some(1));
    assert!(stderr(&unanswered).contains("no reply from service nosuch after 2 tries"));

    let usage = run("client", &["--no-such-flag"]);
    assert_eq!(usage.status.code(), Some(2));
}

/// Issue #16 item 5: Ctrl-C in the middle of a long run used to print nothing and exit 130
/// (the signal's default); it must print the figures of what was done, then exit 130.
#[test]
fn ctrl_c_prints_the_figures_of_what_was_done_and_exits_130() {
    let dir = TempDir::new().unwrap();
    let endpoint = ipc_endpoint(&dir);
    let _broker = start_broker(&dir, "broker", &endpoint);
    let _echo = start_worker(&dir, "echo-worker", &endpoint, &[]);
    wait_until("echo is registered", PATIENCE, || {
        broker_knows(&endpoint, "echo")
    });
    let client = Command::new(binary("client"))
        .args([
            "-c",
            &endpoint,
            "--count",
            "100000000",
            "--window",
            "100",
            "--stats",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let some requests through; the test asks only that some were, not how many.
    thread::sleep(Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-INT", &client.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = client.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let line = stdout(&output);
    let replies: u64 = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("replies="))
        .unwrap_or_else(|| panic!("no stats line in {line:?}"))
        .parse()
        .unwrap();
    assert!(replies > 0, "{line}");
    assert!(
        stderr(&output).contains("interrupted"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_killed_workers_request_is_answered_by_another_worker_on_retry() {
    let dir = TempDir::new().unwrap();
    let endpoint = ipc_endpoint(&dir);
    let broker = start_broker(&dir, "broker", &endpoint);
    let marker = dir.path().join("doomed-worker-has-the-request");
    let hold = format!("touch '{}'; sleep 60", marker.display());
    let mut doomed = start_worker(
        &dir,
        "doomed-worker",
        &endpoint,
        &["-s", "slow", "--exec", &hold],
    );
    wait_until("the doomed worker is registered", PATIENCE, || {
        broker_knows(&endpoint, "slow")
    });

    // The client's first try goes to the only worker, which never answers.
    let client = thread::spawn({
        let endpoint = endpoint.clone();
        move || {
            run(
                "client",
                &[
                    "-c", &endpoint, "-s", "slow", "-t", "2000", "-r", "3", "job",
                ],
            )
        }
    });
    wait_until("the doomed worker holds the request", PATIENCE, || {
        marker.exists()
    });
    doomed.kill();

    // The broker notices the silence and purges the worker: mmi.service says 404.
    let purged_after = wait_until("the broker purges the killed worker", PATIENCE, || {
        mmi_service(&endpoint, "slow") == Some(false)
    });
    let interval_x_liveness = Duration::from_millis(300);
    eprintln!("killed worker purged after {purged_after:?} (interval x liveness = {interval_x_liveness:?})");
    assert!(
        purged_after < interval_x_liveness + Duration::from_secs(2),
        "purge took {purged_after:?}"
    );

    // A second worker for the same service answers the client's resend.
    let _rescuer = start_worker(&dir, "rescuer", &endpoint, &["-s", "slow"]);
    let output = client.join().unwrap();
    assert!(output.status.success(), "client: {}", stderr(&output));
    assert_eq!(stdout(&output), "job\n");
    assert!(
        stderr(&output).contains("resending (try 2 of 3)"),
        "the answer came on a resend: {}",
        stderr(&output)
    );
    drop(broker);
}

#[test]
fn the_windowed_client_resends_a_killed_workers_request_with_retries() {
    let dir = TempDir::new().unwrap();
    let endpoint = ipc_endpoint(&dir);
    let _broker = start_broker(&dir, "broker", &endpoint);
    let marker = dir.path().join("doomed-worker-has-the-request");
    let hold = format!("touch '{}'; sleep 60", marker.display());
    let mut doomed = start_worker(
        &dir,
        "doomed-worker",
        &endpoint,
        &["-s", "slow", "--exec", &hold],
    );
    wait_until("the doomed worker is registered", PATIENCE, || {
        broker_knows(&endpoint, "slow")
    });

    // The asynchronous client, with one resend allowed; its first try goes to the doomed worker.
    let client = thread::spawn({
        let endpoint = endpoint.clone();
        move || {
            run(
                "client",
                &[
                    "-c", &endpoint, "-s", "slow", "--count", "1", "--window", "1", "--tag", "-t",
                    "2000", "-r", "2", "--stats", "job",
                ],
            )
        }
    });
    wait_until("the doomed worker holds the request", PATIENCE, || {
        marker.exists()
    });
    doomed.kill();
    wait_until("the broker purges the killed worker", PATIENCE, || {
        mmi_service(&endpoint, "slow") == Some(false)
    });
    // The resend waits in the broker's queue if it comes before this worker registers.
    let _rescuer = start_worker(&dir, "rescuer", &endpoint, &["-s", "slow"]);
    let output = client.join().unwrap();
    assert!(output.status.success(), "client: {}", stderr(&output));
    assert!(
        stdout(&output).starts_with("requests=1 replies=1 failed=0 retried=1 "),
        "answered on the resend: {}",
        stdout(&output)
    );
}

#[test]
fn workers_register_again_by_themselves_after_the_broker_restarts() {
    let dir = TempDir::new().unwrap();
    let endpoint = ipc_endpoint(&dir);
    let mut broker = start_broker(&dir, "first-broker", &endpoint);
    // One service per worker, so that mmi.service can tell about each of them.
    let services = ["echo", "echo-2"];
    let workers = services.map(|service| {
        start_worker(
            &dir,
            &format!("{service}-worker"),
            &endpoint,
            &["-s", service],
        )
    });
    for service in services {
        wait_until(&format!("{service} is registered"), PATIENCE, || {
            broker_knows(&endpoint, service)
        });
    }

    // A crash, not a shutdown: the workers get no DISCONNECT.
    broker.kill();
    let restarted_at = Instant::now();
    let _restarted = start_broker(&dir, "second-broker", &endpoint);
    for service in services {
        wait_until(
            &format!("{service} registers with the new broker"),
            PATIENCE,
            || broker_knows(&endpoint, service),
        );
        eprintln!(
            "{service} registered {:?} after the restart",
            restarted_at.elapsed()
        );
    }
    for worker in &workers {
        // Once at the start, once more with the restarted broker: the worker logs "connected"
        // only when its socket monitor sees a real connection (issue #16 item 3).
        assert!(
            worker.log().matches("connected to broker at").count() >= 2,
            "{} says it connected again: {}",
            worker.name,
            worker.log()
        );
    }

    for service in services {
        let after = run("client", &["-c", &endpoint, "-s", service, "after"]);
        assert!(after.status.success(), "{}", stderr(&after));
        assert_eq!(stdout(&after), "after\n");
    }
}

/// Two brokers, each with an echo worker, in one temporary directory.
struct TwoBrokers {
    dir: TempDir,
    endpoints: [String; 2],
    brokers: Vec<Process>,
    _workers: Vec<Process>,
}

fn two_brokers() -> TwoBrokers {
    let dir = TempDir::new().unwrap();
    let endpoints =
        [0, 1].map(|index| format!("ipc://{}/broker-{index}.ipc", dir.path().display()));
    let brokers: Vec<Process> = endpoints
        .iter()
        .enumerate()
        .map(|(index, endpoint)| start_broker(&dir, &format!("broker-{index}"), endpoint))
        .collect();
    let workers: Vec<Process> = endpoints
        .iter()
        .enumerate()
        .map(|(index, endpoint)| start_worker(&dir, &format!("worker-{index}"), endpoint, &[]))
        .collect();
    for endpoint in &endpoints {
        wait_until("both brokers have an echo worker", PATIENCE, || {
            broker_knows(endpoint, "echo")
        });
    }
    TwoBrokers {
        dir,
        endpoints,
        brokers,
        _workers: workers,
    }
}

#[test]
fn the_sync_client_moves_to_the_other_broker_when_its_broker_dies_mid_run() {
    let mut setup = two_brokers();
    let config = ClientConfig {
        timeout: Duration::from_millis(500),
        retries: 2,
    };
    let mut client = Client::connect_all(&setup.endpoints, config).unwrap();
    let echo: ServiceName = "echo".parse().unwrap();
    for round in 0..5 {
        let reply = client.send(&echo, &[format!("before {round}")]).unwrap();
        assert_eq!(reply[0].to_vec(), format!("before {round}").into_bytes());
        assert_eq!(
            client.broker_index(),
            0,
            "it keeps the first broker while it answers"
        );
    }
    setup.brokers[0].kill();
    for round in 0..5 {
        let reply = client.send(&echo, &[format!("after {round}")]).unwrap();
        assert_eq!(reply[0].to_vec(), format!("after {round}").into_bytes());
        assert_eq!(client.broker_index(), 1);
    }
    assert_eq!(
        client.resends(),
        1,
        "the dead broker cost one timeout, once"
    );
    drop(setup.dir);
}

#[test]
fn the_windowed_client_spreads_over_two_brokers_and_survives_losing_one() {
    use client::{AsyncClient, AsyncClientConfig, Outcome};

    let mut setup = two_brokers();
    let config = AsyncClientConfig {
        timeout: Duration::from_millis(500),
        retries: 2,
        ..AsyncClientConfig::default()
    };
    let mut client = AsyncClient::connect_all(&setup.endpoints, config).unwrap();
    let echo: ServiceName = "echo".parse().unwrap();
    let run = |client: &mut AsyncClient, count: usize| {
        let mut per_broker = [0; 2];
        for round in 0..count {
            let body = vec![zmq::Message::from(format!("{round}").as_bytes())];
            client.send(&echo, body).unwrap();
        }
        for _ in 0..count {
            match client.recv().unwrap() {
                Outcome::Reply { broker, .. } => per_broker[broker] += 1,
                other => panic!("every request must be answered: {other:?}"),
            }
        }
        per_broker
    };
    let before = run(&mut client, 20);
    assert!(
        before[0] > 0 && before[1] > 0,
        "spread over both: {before:?}"
    );
    setup.brokers[0].kill();
    let after = run(&mut client, 20);
    assert_eq!(
        after,
        [0, 20],
        "only the live broker answers, and every request is answered"
    );
    drop(setup.dir);
}

#[test]
fn the_program_reports_replies_per_broker_with_several_brokers() {
    let mut setup = two_brokers();
    setup.brokers[0].kill();
    let [first, second] = &setup.endpoints;
    let output = run(
        "client",
        &[
            "-c", first, "-c", second, "-t", "500", "-r", "2", "-n", "4", "--stats",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let line = stdout(&output);
    assert!(
        line.starts_with("requests=4 replies=4 failed=0 retried=1 "),
        "{line}"
    );
    assert!(line.trim_end().ends_with(" per_broker=0,4"), "{line}");
}
