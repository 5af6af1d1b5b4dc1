//! The `broker` program's security flags: `keygen`, `--curve-secret-file`, the mechanism of each
//! `--bind`, and SIGHUP with and without `--auth`.
//!
//! The tests marked `#[ignore]` need a libzmq with CURVE: `scripts/curve-test.sh` runs them in the
//! build of `build/curve.toml` (with `--include-ignored`); the others run in both builds.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use cli::testing::Program;
use common::active_endpoint;
use zsocket::curve::{KeyPair, PublicKey};

const PATIENCE: Duration = Duration::from_secs(10);

fn broker_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_broker"))
}

/// Asks `mmi.service` about echo over `socket` and returns the answer.
fn mmi_echo(socket: &zmq::Socket) -> Vec<u8> {
    socket
        .send_multipart([&b""[..], b"MDPC01", b"mmi.service", b"echo"], 0)
        .unwrap();
    socket.set_rcvtimeo(PATIENCE.as_millis() as i32).unwrap();
    let reply = socket.recv_multipart(0).expect("an mmi.service answer");
    reply[3].clone()
}

fn dealer(context: &zmq::Context) -> zmq::Socket {
    let socket = context.socket(zmq::DEALER).unwrap();
    socket.set_linger(0).unwrap();
    socket
}

#[test]
fn sighup_without_auth_is_logged_and_the_broker_goes_on() {
    let mut broker = Program::start(
        env!("CARGO_BIN_EXE_broker"),
        &["--bind", "tcp://127.0.0.1:*"],
    );
    let endpoint = active_endpoint(&mut broker);
    // Before this, SIGHUP's default action ended the broker: its log ended here.
    broker.signal("HUP");
    let line = broker.next_with("SIGHUP");
    assert!(line.contains("nothing to reload"), "{line}");
    let context = zmq::Context::new();
    let client = dealer(&context);
    client.connect(&endpoint).unwrap();
    assert_eq!(mmi_echo(&client), b"404", "the broker still serves");
    assert_eq!(broker.terminate().code(), Some(0));
}

#[test]
fn a_mechanism_without_what_it_needs_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    std::fs::write(&auth, "").unwrap();
    let auth = auth.to_str().unwrap();
    let key = dir.path().join("broker.key");
    let key = key.to_str().unwrap();
    for (args, says) in [
        (&["--bind", "curve+tcp://127.0.0.1:*"][..], "needs --auth"),
        (&["--bind", "plain+tcp://127.0.0.1:*"], "needs --auth"),
        (
            &["--auth", auth, "--bind", "curve+tcp://127.0.0.1:*"],
            "--curve-secret-file",
        ),
        (
            &[
                "--auth",
                auth,
                "--curve-secret-file",
                key,
                "--bind",
                "tcp://127.0.0.1:*",
            ],
            "no --bind is one",
        ),
    ] {
        let output = broker_command().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let help = broker_command().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for text in ["curve+tcp://", "--curve-secret-file", "keygen"] {
        assert!(help.contains(text), "--help does not mention {text}");
    }
}

#[test]
fn without_curve_in_the_build_keygen_and_a_curve_endpoint_say_how_to_get_it() {
    if zsocket::curve::available().is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("broker.key");
    let output = broker_command()
        .args(["keygen", "--out", key.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("build/curve.toml"), "{stderr}");
    assert!(!key.exists());

    let auth = dir.path().join("auth.toml");
    std::fs::write(&auth, "").unwrap();
    std::fs::write(&key, "").unwrap();
    let output = broker_command()
        .args(["--auth", auth.to_str().unwrap()])
        .args(["--curve-secret-file", key.to_str().unwrap()])
        .args(["--bind", "curve+tcp://127.0.0.1:*"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("build/curve.toml"), "{stderr}");
}

#[test]
#[ignore = "needs a libzmq with CURVE: scripts/curve-test.sh"]
fn keygen_keys_serve_a_curve_endpoint_beside_a_plain_one() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = |path: &std::path::Path| {
        let output = broker_command()
            .args(["keygen", "--out", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
        )
    };
    let broker_key = dir.path().join("broker.key");
    let (status, printed) = keygen(&broker_key);
    assert_eq!(status, Some(0));
    let mode = std::fs::metadata(&broker_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the secret key is its owner's only");
    let server_key: PublicKey = printed.trim().parse().expect("the public key on stdout");
    let public_file = dir.path().join("broker.key.pub");
    assert_eq!(
        zsocket::curve::read_public_key(&public_file).unwrap(),
        server_key
    );
    // A second keygen would lose the key in use: refused.
    assert_eq!(keygen(&broker_key).0, Some(1));

    let client_key = dir.path().join("billing.key");
    let (_, billing_public) = keygen(&client_key);
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[principal]]\nname = \"billing\"\ncurve_public_key = \"{}\"\ncall = [\"mmi.*\"]\n",
            billing_public.trim()
        ),
    )
    .unwrap();
    let mut broker = Program::start(
        env!("CARGO_BIN_EXE_broker"),
        &[
            "--auth",
            auth.to_str().unwrap(),
            "--curve-secret-file",
            broker_key.to_str().unwrap(),
            "--bind",
            "curve+tcp://127.0.0.1:*",
            "--bind",
            "tcp://127.0.0.1:*",
        ],
    );
    let lines = [
        broker.next_with("is active at "),
        broker.next_with("is active at "),
    ];
    assert!(lines[0].contains("(CURVE) is active at"), "{}", lines[0]);
    assert!(lines[1].contains("(PLAIN) is active at"), "{}", lines[1]);
    let curve = lines[0].split_once("is active at ").unwrap().1;
    let context = zmq::Context::new();
    let client = dealer(&context);
    let keys = KeyPair::read(&client_key).unwrap();
    zsocket::curve::set_client(&client, &keys, &server_key).unwrap();
    client.connect(curve).unwrap();
    assert_eq!(mmi_echo(&client), b"404");
    // SIGHUP with --auth reads the file again, and the broker goes on.
    broker.signal("HUP");
    broker.next_with("reloaded");
    assert_eq!(mmi_echo(&client), b"404");
    assert_eq!(broker.terminate().code(), Some(0));
}
