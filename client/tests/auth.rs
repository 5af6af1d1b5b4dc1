//! The client's credentials against a broker with `--auth` (issue 11 item 3), over real sockets:
//! an in-process `broker::Server` with the rules of an auth file, an in-process echo worker that
//! logs in, and the `client` program (or library) with `--user`/`--password-file` (PLAIN) or
//! `--curve-key-file`/`--curve-server-key` (CURVE).
//!
//! A refused handshake must fail the run with a message that names authentication, within the
//! client's timeout: each such test gives the client a timeout of 20 s and 3 tries, so a client
//! that waited for its timeouts would take a minute, and checks it was done before the first
//! timeout passed (a bound on a failure, not a measurement).
//!
//! The tests marked `#[ignore]` need a libzmq with CURVE: `scripts/curve-test.sh` runs them in
//! the build of `build/curve.toml` (with `--include-ignored`); the default build lists them as
//! ignored.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use broker::testing::auth::{key_file, principal, secret_file};
use broker::{Config, Stats};
use client::{AsyncClient, AsyncClientConfig, Credentials, Matching, Outcome};
use zsocket::curve::{KeyPair, PublicKey};

/// The timeout the refused clients get: a client that waited for it would be far too slow.
const LONG_TIMEOUT_MS: &str = "20000";
const LONG_TIMEOUT: Duration = Duration::from_secs(20);

/// alice may serve and call echo (and mmi.*); with a key, the CURVE principal `billing` may call
/// echo; `password` is alice's password at this broker.
fn auth_file(password: &str, billing: Option<&PublicKey>) -> String {
    let mut file = principal("alice", password, &["echo"], &["echo", "mmi.*"]);
    if let Some(key) = billing {
        file.push_str(&format!(
            "\n[[principal]]\nname = \"billing\"\ncurve_public_key = \"{key}\"\n\
             call = [\"echo\", \"mmi.*\"]\n"
        ));
    }
    file
}

/// A broker with `--auth` on a free port, PLAIN (or CURVE with `keys`), and an echo worker
/// logged in as alice (by `worker_credentials`).
struct AuthBroker {
    broker: broker::testing::auth::AuthBroker,
    endpoint: String,
    worker: Option<(zsocket::StopHandle, JoinHandle<()>)>,
}

impl AuthBroker {
    fn plain(password: &str) -> AuthBroker {
        let broker = AuthBroker::start(&auth_file(password, None), None);
        let alice = Credentials::plain("alice", password).unwrap();
        broker.with_worker(alice)
    }

    fn start(file: &str, keys: Option<KeyPair>) -> AuthBroker {
        let config = Config {
            heartbeat_interval: Duration::from_millis(100),
            ..Config::default()
        };
        let broker = match keys {
            Some(keys) => broker::testing::auth::AuthBroker::curve(file, keys, config),
            None => broker::testing::auth::AuthBroker::plain(file, config),
        };
        AuthBroker {
            endpoint: broker.endpoint.clone(),
            broker,
            worker: None,
        }
    }

    fn with_worker(mut self, credentials: Credentials) -> AuthBroker {
        let mut worker = worker::Worker::builder("echo".parse().unwrap())
            .endpoint(self.endpoint.clone())
            .credentials(credentials)
            .build()
            .unwrap();
        let stop = worker.stop_handle();
        let thread = std::thread::spawn(move || worker.serve(|body| body).unwrap());
        self.worker = Some((stop, thread));
        self
    }

    fn stop(mut self) -> Stats {
        if let Some((stop, thread)) = self.worker.take() {
            stop.stop();
            thread.join().unwrap();
        }
        self.broker.stop()
    }
}

/// Runs the client program with `args`; its output, and how long it ran.
fn client(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (output, started.elapsed())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The client logged in as alice (her password in `password_file`) at `endpoint`, with `args`.
fn as_alice(endpoint: &str, password_file: &Path, args: &[&str]) -> (Output, Duration) {
    let mut all = vec![
        "-c",
        endpoint,
        "--user",
        "alice",
        "--password-file",
        password_file.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    client(&all)
}

/// The client with alice's `password` at `endpoint`, asking echo for `hello`, once it is there.
fn alice_asks(endpoint: &str, password_file: &Path, extra: &[&str]) -> (Output, Duration) {
    as_alice(endpoint, password_file, &[extra, &["hello"]].concat())
}

/// Waits until the broker's echo has a worker: alice asks mmi.service.
fn wait_for_echo(endpoint: &str, password_file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (output, _) = as_alice(
            endpoint,
            password_file,
            &["-s", "mmi.service", "-t", "500", "-r", "1", "echo"],
        );
        if text(&output.stdout) == "200\n" {
            return;
        }
        assert!(Instant::now() < deadline, "echo never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks a run that a broker refused: exit 1, a message naming authentication at `endpoint`
/// with `mechanism`, before the first timeout.
fn assert_refused(output: &Output, elapsed: Duration, endpoint: &str, mechanism: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let says = format!("authentication refused by the broker at {endpoint} ({mechanism})");
    assert!(stderr.contains(&says), "{stderr}");
    assert!(!stderr.contains("no reply"), "{stderr}");
    assert!(
        elapsed < LONG_TIMEOUT,
        "took {elapsed:?}: it waited for the timeout"
    );
}

#[test]
fn the_right_password_gets_a_reply_from_the_sync_and_the_windowed_client() {
    let broker = AuthBroker::plain("alice-pw");
    let dir = tempfile::tempdir().unwrap();
    let good = secret_file(dir.path(), "good", "alice-pw\n");
    wait_for_echo(&broker.endpoint, &good);
    for extra in [&[][..], &["-w", "4", "-n", "8"]] {
        let (output, _) = alice_asks(&broker.endpoint, &good, extra);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        let lines = text(&output.stdout);
        assert!(lines.lines().all(|line| line == "hello"), "{lines}");
    }
    let stats = broker.stop();
    assert_eq!(stats.replies_forwarded, 9, "{stats}");
}

#[test]
fn a_wrong_password_an_unknown_user_and_no_credentials_fail_at_once_naming_authentication() {
    let broker = AuthBroker::plain("alice-pw");
    let dir = tempfile::tempdir().unwrap();
    let wrong = secret_file(dir.path(), "wrong", "not-alice-pw\n");
    let timeout = ["-t", LONG_TIMEOUT_MS, "-r", "3"];
    let endpoint = broker.endpoint.clone();

    let (output, elapsed) = alice_asks(&endpoint, &wrong, &timeout);
    assert_refused(&output, elapsed, &endpoint, "PLAIN");
    assert!(text(&output.stderr).contains("--password-file"));

    let (output, elapsed) = alice_asks(
        &endpoint,
        &wrong,
        &[&timeout[..], &["-w", "5", "-n", "50"]].concat(),
    );
    assert_refused(&output, elapsed, &endpoint, "PLAIN");

    let password = wrong.to_str().unwrap();
    let mut unknown = vec![
        "-c",
        &endpoint,
        "--user",
        "mallory",
        "--password-file",
        password,
    ];
    unknown.extend_from_slice(&timeout);
    unknown.push("x");
    let (output, elapsed) = client(&unknown);
    assert_refused(&output, elapsed, &endpoint, "PLAIN");

    let mut anonymous = vec!["-c", &endpoint];
    anonymous.extend_from_slice(&timeout);
    anonymous.push("x");
    let (output, elapsed) = client(&anonymous);
    assert_refused(&output, elapsed, &endpoint, "NULL");
    assert!(text(&output.stderr).contains("may require credentials"));

    let stats = broker.stop();
    assert_eq!(stats.requests_received, 0, "{stats}");
}

#[test]
fn the_async_library_ends_the_requests_of_a_refused_connection_with_the_refusal() {
    let broker = AuthBroker::plain("alice-pw");
    let config = AsyncClientConfig {
        timeout: LONG_TIMEOUT,
        matching: Matching::ByService,
        retries: 3,
    };
    let mut client = AsyncClient::with_credentials(
        &zmq::Context::new(),
        &[broker.endpoint.as_str()],
        config,
        vec![Credentials::plain("alice", "nope").unwrap()],
    )
    .unwrap();
    let echo = "echo".parse().unwrap();
    for _ in 0..3 {
        client.send(&echo, vec![zmq::Message::from("x")]).unwrap();
    }
    let started = Instant::now();
    for _ in 0..3 {
        match client.recv().unwrap() {
            Outcome::TimedOut {
                refused: Some(refusal),
                ..
            } => {
                assert_eq!(refusal.endpoint, broker.endpoint);
                assert_eq!(refusal.mechanism, "PLAIN");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(started.elapsed() < LONG_TIMEOUT);
    broker.stop();
}

#[test]
fn with_two_brokers_one_that_refuses_counts_as_down_and_the_other_answers() {
    // alice's password is another at the first broker.
    let refusing = AuthBroker::start(&auth_file("other-pw", None), None);
    let serving = AuthBroker::plain("alice-pw");
    let dir = tempfile::tempdir().unwrap();
    let good = secret_file(dir.path(), "good", "alice-pw\n");
    wait_for_echo(&serving.endpoint, &good);
    let (output, elapsed) = alice_asks(
        &refusing.endpoint,
        &good,
        &["-c", &serving.endpoint, "-t", LONG_TIMEOUT_MS, "-r", "2"],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&output.stdout), "hello\n");
    assert!(
        stderr.contains(&format!(
            "broker {} refused the handshake",
            refusing.endpoint
        )),
        "{stderr}"
    );
    assert!(elapsed < LONG_TIMEOUT, "{elapsed:?}");
    assert_eq!(serving.stop().replies_forwarded, 1);
    assert_eq!(refusing.stop().requests_received, 0);
}

#[test]
fn credential_flags_that_do_not_fit_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::write(&open, "pw\n").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = open.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["--user", "alice", "x"], "--password-file"),
        (
            &["--user", "alice", "--password-file", open, "x"],
            "others may read",
        ),
        (
            &[
                "--user",
                "alice",
                "--password-file",
                open,
                "--curve-server-key",
                "k",
                "x",
            ],
            "do not mix",
        ),
    ];
    for (args, says) in cases {
        let (output, _) = client(args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    if zsocket::curve::available().is_err() {
        let (output, _) = client(&["--curve-key-file", "k", "--curve-server-key", "s", "x"]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("build/curve.toml"), "{stderr}");
    }
}

#[test]
#[ignore = "needs a libzmq with CURVE: scripts/curve-test.sh"]
fn curve_with_the_right_keys_gets_a_reply_and_a_wrong_server_key_fails_naming_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let server_keys = KeyPair::generate().unwrap();
    let (billing_path, billing) = key_file(dir.path(), "billing.key");
    // The echo worker logs in by a key of its own, as principal echo-worker.
    let (_, worker_keys) = key_file(dir.path(), "worker.key");
    let file = format!(
        "{}\n[[principal]]\nname = \"echo-worker\"\ncurve_public_key = \"{}\"\nserve = [\"echo\"]\n",
        auth_file("alice-pw", Some(billing.public())),
        worker_keys.public()
    );
    let broker = AuthBroker::start(&file, Some(server_keys.clone()))
        .with_worker(Credentials::curve(worker_keys, *server_keys.public()).unwrap());
    let server_key = server_keys.public().to_z85();
    let key_file = billing_path.to_str().unwrap();
    let curve_args = |server: &str| -> Vec<String> {
        [
            "-c",
            &broker.endpoint,
            "--curve-key-file",
            key_file,
            "--curve-server-key",
            server,
            "-t",
            LONG_TIMEOUT_MS,
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut args = curve_args(&server_key);
        args.extend(["-s", "mmi.service", "echo"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if text(&client(&args).0.stdout) == "200\n" {
            break;
        }
        assert!(Instant::now() < deadline, "echo never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut args = curve_args(&server_key);
    args.push("sealed".to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (output, _) = client(&args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "sealed\n");

    let impostor = KeyPair::generate().unwrap().public().to_z85();
    let mut args = curve_args(&impostor);
    args.push("x".to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (output, elapsed) = client(&args);
    assert_refused(&output, elapsed, &broker.endpoint, "CURVE");
    assert!(text(&output.stderr).contains("--curve-server-key"));
    let stats = broker.stop();
    assert_eq!(stats.replies_forwarded, 1, "{stats}");
}
