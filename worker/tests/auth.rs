//! The worker's credentials against a broker with `--auth` (issue 11 item 3), over real sockets:
//! an in-process `broker::Server` with the rules of an auth file, the `worker` library or
//! program with `--user`/`--password-file` (PLAIN) or `--curve-key-file`/`--curve-server-key`
//! (CURVE), and a client made of a bare DEALER with its own credentials.
//!
//! The tests marked `#[ignore]` need a libzmq with CURVE: `scripts/curve-test.sh` runs them in
//! the build of `build/curve.toml` (with `--include-ignored`); the default build lists them as
//! ignored. Every wait here waits for a line or a message, with a guard against a hang.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use broker::testing::auth::{key_file, principal, secret_file, AuthBroker};
use broker::Config;
use cli::testing::Program;
use worker::{Credentials, Worker};
use zsocket::curve::{KeyPair, PublicKey};

/// How long a test waits for what must come; a failure, not a timing rule.
const PATIENCE: Duration = Duration::from_secs(20);

/// alice may serve echo and call echo and mmi.*; a CURVE principal `billing` (when given) may
/// serve echo too.
fn auth_file(billing: Option<&PublicKey>) -> String {
    let mut file = principal("alice", "alice-pw", &["echo"], &["echo", "mmi.*"]);
    if let Some(key) = billing {
        file.push_str(&format!(
            "\n[[principal]]\nname = \"billing\"\ncurve_public_key = \"{key}\"\n\
             serve = [\"echo\"]\ncall = [\"echo\", \"mmi.*\"]\n"
        ));
    }
    file
}

/// The brokers' settings here: heartbeats every 100 ms.
fn config() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(100),
        ..Config::default()
    }
}

/// A broker with `--auth` on a free port, PLAIN, with [`auth_file`].
fn plain_broker() -> AuthBroker {
    AuthBroker::plain(&auth_file(None), config())
}

/// A client: a DEALER with `credentials`, speaking MDP/Client by hand.
struct TestClient {
    _context: zmq::Context,
    socket: zmq::Socket,
}

impl TestClient {
    fn connect(endpoint: &str, credentials: &Credentials) -> TestClient {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        credentials.apply(&socket).unwrap();
        socket.connect(endpoint).unwrap();
        TestClient {
            _context: context,
            socket,
        }
    }

    /// Sends a request and returns the reply's body, or `None` after `wait`.
    fn request(&self, service: &str, body: &[u8], wait: Duration) -> Option<Vec<Vec<u8>>> {
        self.socket
            .send_multipart([&b""[..], b"MDPC01", service.as_bytes(), body], 0)
            .unwrap();
        if self
            .socket
            .poll(zmq::POLLIN, wait.as_millis() as i64)
            .unwrap()
            == 0
        {
            return None;
        }
        let mut reply = self.socket.recv_multipart(0).unwrap();
        assert_eq!(reply[1], b"MDPC01");
        Some(reply.split_off(3))
    }

    /// Asks mmi.service until `service` has a worker (the broker says 200).
    fn wait_for_worker(&self, service: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = self.request("mmi.service", service.as_bytes(), PATIENCE);
            if answer.as_deref() == Some(&[b"200".to_vec()][..]) {
                return;
            }
            assert!(Instant::now() < deadline, "{service} never registered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn alice() -> Credentials {
    Credentials::plain("alice", "alice-pw").unwrap()
}

/// The worker program at `endpoint` logged in as alice (her password in `password_file`), with
/// `extra` flags.
fn worker_as_alice(endpoint: &str, password_file: &Path, extra: &[&str]) -> Program {
    let password_file = password_file.to_str().unwrap();
    let mut args = vec![
        "-c",
        endpoint,
        "--user",
        "alice",
        "--password-file",
        password_file,
    ];
    args.extend_from_slice(extra);
    Program::start(env!("CARGO_BIN_EXE_worker"), &args)
}

/// The worker program at `endpoint` logged in by CURVE with the key pair in `key_file`, taking
/// the broker's key to be `server_key` (Z85 or a .pub file).
fn curve_worker(endpoint: &str, key_file: &Path, server_key: &str) -> Program {
    let key_file = key_file.to_str().unwrap();
    Program::start(
        env!("CARGO_BIN_EXE_worker"),
        &[
            "-c",
            endpoint,
            "--curve-key-file",
            key_file,
            "--curve-server-key",
            server_key,
        ],
    )
}

/// Serves echo with `worker` on a thread until the returned handle stops it.
fn serve(mut worker: Worker) -> (zsocket::StopHandle, JoinHandle<()>) {
    let stop = worker.stop_handle();
    let thread = std::thread::spawn(move || worker.serve(|body| body).unwrap());
    (stop, thread)
}

#[test]
fn a_worker_with_the_right_password_serves() {
    let broker = plain_broker();
    let worker = Worker::builder("echo".parse().unwrap())
        .endpoint(broker.endpoint.clone())
        .credentials(alice())
        .build()
        .unwrap();
    let (stop, thread) = serve(worker);
    let client = TestClient::connect(&broker.endpoint, &alice());
    client.wait_for_worker("echo");
    assert_eq!(
        client.request("echo", b"hello", PATIENCE),
        Some(vec![b"hello".to_vec()])
    );
    stop.stop();
    thread.join().unwrap();
    let stats = broker.stop();
    assert_eq!(stats.replies_forwarded, 1, "{stats}");
    assert_eq!(stats.workers_refused_unauthorized, 0, "{stats}");
}

#[test]
fn a_worker_with_a_wrong_password_says_authentication_backs_off_and_gets_no_request() {
    let broker = plain_broker();
    // alice's client logs in first: the broker's limit of failed logins per address, which the
    // worker below soon passes, would refuse it from this address too.
    let client = TestClient::connect(&broker.endpoint, &alice());
    assert_eq!(
        client.request("mmi.service", b"echo", PATIENCE),
        Some(vec![b"404".to_vec()])
    );
    let dir = tempfile::tempdir().unwrap();
    let wrong = secret_file(dir.path(), "wrong", "not-alice-pw\n");
    let mut worker = worker_as_alice(&broker.endpoint, &wrong, &[]);
    let refused = format!(
        "authentication refused by the broker at {}",
        broker.endpoint
    );
    worker.wait_for(&refused, 2);
    let lines = worker.lines_with(&refused);
    assert!(lines[0].contains("(PLAIN)"), "{}", lines[0]);
    assert!(lines[0].contains("--password-file"), "{}", lines[0]);
    // Closed and retried after a backoff that doubles, not libzmq's 100 ms for ever: the line
    // a second later waits longer than the first, and counts the refusals it held back.
    assert!(lines[0].contains("trying again in 100ms"), "{}", lines[0]);
    assert!(!lines[1].contains("trying again in 100ms"), "{}", lines[1]);
    // alice's client still finds no echo worker, and its request waits unanswered.
    assert_eq!(
        client.request("mmi.service", b"echo", PATIENCE),
        Some(vec![b"404".to_vec()])
    );
    assert_eq!(
        client.request("echo", b"x", Duration::from_millis(300)),
        None
    );
    drop(worker);
    let stats = broker.stop();
    assert_eq!(stats.workers_registered, 0, "{stats}");
    assert_eq!(stats.requests_dispatched, 0, "{stats}");
}

#[test]
fn a_worker_refused_the_service_it_registers_for_says_so_and_retries() {
    let broker = plain_broker();
    let dir = tempfile::tempdir().unwrap();
    let password = secret_file(dir.path(), "pw", "alice-pw\n");
    // alice may serve echo only.
    let mut worker = worker_as_alice(&broker.endpoint, &password, &["-s", "db"]);
    let line = "may not allow this worker's principal to serve db";
    worker.wait_for(line, 2);
    assert!(
        worker.lines_with("authentication refused").is_empty(),
        "the handshake succeeded: {:?}",
        worker.seen()
    );
    drop(worker);
    let stats = broker.stop();
    assert!(stats.workers_refused_unauthorized >= 2, "{stats}");
    assert_eq!(stats.workers_registered, 0, "{stats}");
}

#[test]
fn credential_flags_that_do_not_fit_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::write(&open, "pw\n").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cases: [(&[&str], &str); 2] = [
        (&["--user", "alice"], "--password-file"),
        (
            &["--user", "alice", "--password-file", open.to_str().unwrap()],
            "others may read",
        ),
    ];
    for (args, says) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_worker"))
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // Without CURVE in this build, a CURVE flag says how to get a build with it.
    if zsocket::curve::available().is_err() {
        let output = Command::new(env!("CARGO_BIN_EXE_worker"))
            .args(["--curve-key-file", "k", "--curve-server-key", "x"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("build/curve.toml"), "{stderr}");
    }
}

#[test]
#[ignore = "needs a libzmq with CURVE: scripts/curve-test.sh"]
fn a_curve_worker_with_the_right_keys_serves_and_with_a_wrong_server_key_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server_keys = KeyPair::generate().unwrap();
    let (billing_path, billing) = key_file(dir.path(), "billing.key");
    let broker = AuthBroker::curve(
        &auth_file(Some(billing.public())),
        server_keys.clone(),
        config(),
    );
    let server_key = server_keys.public().to_z85();

    // The server key as a .pub file, and the right one: it serves.
    let server_pub = dir.path().join("broker.key");
    server_keys.write(&server_pub).unwrap();
    let server_pub = zsocket::curve::public_key_path(&server_pub);
    let mut good = curve_worker(
        &broker.endpoint,
        &billing_path,
        server_pub.to_str().unwrap(),
    );
    good.wait_for("registered with broker", 1);
    let client = TestClient::connect(
        &broker.endpoint,
        &Credentials::curve(billing.clone(), *server_keys.public()).unwrap(),
    );
    client.wait_for_worker("echo");
    assert_eq!(
        client.request("echo", b"sealed", PATIENCE),
        Some(vec![b"sealed".to_vec()])
    );
    drop(good);

    // Another broker's key: the handshake fails, and the worker says it is authentication.
    let impostor = KeyPair::generate().unwrap().public().to_z85();
    assert_ne!(impostor, server_key);
    let mut wrong = curve_worker(&broker.endpoint, &billing_path, &impostor);
    let refused = format!(
        "authentication refused by the broker at {}",
        broker.endpoint
    );
    wrong.wait_for(&refused, 1);
    assert!(wrong.lines_with(&refused)[0].contains("(CURVE)"));
    drop(wrong);
    let stats = broker.stop();
    assert_eq!(stats.replies_forwarded, 1, "{stats}");
}

#[test]
fn each_broker_gets_its_own_credentials_and_a_list_of_another_length_is_refused() {
    // alice has another password at each broker.
    let second_file = principal("alice", "second-pw", &["echo"], &["echo", "mmi.*"]);
    let first = plain_broker();
    let second = AuthBroker::plain(&second_file, config());
    let at_second = Credentials::plain("alice", "second-pw").unwrap();
    let builder = Worker::builder("echo".parse().unwrap())
        .endpoint(first.endpoint.clone())
        .endpoint(second.endpoint.clone());
    let error = builder
        .clone()
        .broker_credentials(vec![alice(), at_second.clone(), alice()])
        .build()
        .expect_err("three credentials for two brokers");
    assert!(
        error.to_string().contains("one Credentials per endpoint"),
        "{error}"
    );
    let worker = builder
        .broker_credentials(vec![alice(), at_second.clone()])
        .build()
        .unwrap();
    let (stop, thread) = serve(worker);
    for (broker, credentials) in [(&first, alice()), (&second, at_second)] {
        let client = TestClient::connect(&broker.endpoint, &credentials);
        client.wait_for_worker("echo");
        assert_eq!(
            client.request("echo", b"both", PATIENCE),
            Some(vec![b"both".to_vec()])
        );
    }
    stop.stop();
    thread.join().unwrap();
    assert_eq!(first.stop().replies_forwarded, 1);
    assert_eq!(second.stop().replies_forwarded, 1);
}
