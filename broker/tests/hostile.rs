//! The `broker` program against peers it cannot trust: its auth file, SIGHUP, the warning for an
//! open port, and how little a misbehaving peer can write to its log.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use broker::auth::weak_hash_for_tests;
use cli::testing::Program;
use common::*;

fn broker_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_broker"))
}

fn principal(name: &str, password: &str, call: &str) -> String {
    format!(
        "[[principal]]\nname = \"{name}\"\npassword_hash = \"{}\"\ncall = [{call}]\n\n",
        weak_hash_for_tests(password.as_bytes())
    )
}

#[test]
fn hash_password_prints_a_hash_that_verifies_and_refuses_an_empty_password() {
    let mut child = broker_command()
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(broker::auth::verify_password(hash.trim_end(), b"s3cret"));
    assert!(!broker::auth::verify_password(hash.trim_end(), b"s3cret\n"));

    let empty = broker_command()
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no password"));
}

#[test]
fn a_malformed_auth_file_stops_the_start_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.toml");
    // Line 4: a pattern of a shape the rules do not have.
    let text = principal("alice", "pw", "\"echo\"")
        .replace("call = [\"echo\"]", "serve = [\"ok\"]\ncall = [\"*.echo\"]");
    std::fs::write(&file, text).unwrap();
    for (args, wanted) in [
        (vec!["--auth", file.to_str().unwrap()], "line 5"),
        (vec!["--auth", "/nonexistent/auth.toml"], "cannot read"),
    ] {
        let mut args = args;
        args.extend(["--bind", "tcp://127.0.0.1:*"]);
        let output = broker_command().args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(wanted), "stderr: {stderr}");
        assert!(
            !stderr.contains("is active at"),
            "it bound anyway: {stderr}"
        );
    }
    // An unknown field is refused too, with its line.
    std::fs::write(&file, "[[principal]]\nname = \"x\"\npasword_hash = \"y\"\n").unwrap();
    let output = broker_command()
        .args(["--auth", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("pasword_hash"),
        "stderr: {stderr}"
    );
}

#[test]
fn sighup_reloads_a_changed_file_and_keeps_the_rules_when_the_new_one_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.toml");
    std::fs::write(&file, principal("alice", "alice-pw", "\"mmi.*\"")).unwrap();
    let mut broker = Program::start(
        env!("CARGO_BIN_EXE_broker"),
        &[
            "--auth",
            file.to_str().unwrap(),
            "--bind",
            "tcp://127.0.0.1:*",
            "--heartbeat-ms",
            "50",
        ],
    );
    let endpoint = active_endpoint(&mut broker);
    let carol = Peer::connect_plain(&endpoint, "CAROL", Some(("carol", "carol-pw")));
    assert!(!carol.handshake(), "carol is not in the file yet");

    let both = format!(
        "{}{}",
        principal("alice", "alice-pw", "\"mmi.*\""),
        principal("carol", "carol-pw", "\"mmi.*\"")
    );
    std::fs::write(&file, both).unwrap();
    broker.signal("HUP");
    broker.next_with("reloaded");
    let carol = Peer::connect_plain(&endpoint, "CAROL2", Some(("carol", "carol-pw")));
    assert!(carol.handshake(), "carol cannot log in after the reload");
    wait_for_mmi(&carol, "echo", b"404");

    std::fs::write(
        &file,
        "[[principal]]\nname = \"carol\"\nserve = [\"a*b\"]\n",
    )
    .unwrap();
    broker.signal("HUP");
    let refused = broker.next_with("not reloading");
    assert!(refused.contains("line"), "{refused}");
    let carol = Peer::connect_plain(&endpoint, "CAROL3", Some(("carol", "carol-pw")));
    assert!(carol.handshake(), "a broken file took carol's login away");
    wait_for_mmi(&carol, "echo", b"404");
    // SIGHUP did not stop it; SIGTERM still does, cleanly.
    broker.signal("TERM");
    assert!(broker.wait().success());
}

#[test]
fn a_worker_registering_mmi_in_a_tight_loop_writes_a_handful_of_lines() {
    // The guide's C worker, reconnecting with no delay, made 7,884 READY/DISCONNECT cycles in
    // 3 s and 15,772 log lines. Each READY for mmi.* earns a DISCONNECT; the log gets at most a
    // line a second of it.
    let mut broker = Program::start(
        env!("CARGO_BIN_EXE_broker"),
        &["--bind", "tcp://127.0.0.1:*"],
    );
    let endpoint = active_endpoint(&mut broker);
    let worker = Peer::connect(&endpoint, "LOOPY");
    let cycles = 2_000;
    for _ in 0..cycles {
        worker.send(&[b"", b"MDPW01", b"\x01", b"mmi.foo"]);
        assert_eq!(worker.recv(), disconnect());
    }
    // And as many malformed messages, a line-maker of another kind.
    for _ in 0..cycles {
        worker.send(&[b"", b"MDPC01"]);
    }
    let client = Peer::connect(&endpoint, "C1");
    wait_for_mmi(&client, "echo", b"404");
    broker.signal("TERM");
    assert!(broker.wait().success());
    // The pipe is closed once the program has gone: every line it wrote is in.
    std::thread::sleep(Duration::from_millis(50));
    let lines = broker.drain().to_vec();
    let about_it = lines
        .iter()
        .filter(|line| line.contains("mmi.foo") || line.contains("malformed"))
        .count();
    assert!(
        (2..=20).contains(&about_it),
        "{about_it} lines for {cycles} cycles: {lines:#?}"
    );
    assert!(lines.len() < 40, "{} lines in all: {lines:#?}", lines.len());
}

#[test]
fn an_open_port_without_auth_is_warned_about_once_and_loopback_is_not() {
    let mut open = Program::start(
        env!("CARGO_BIN_EXE_broker"),
        &["--bind", "tcp://0.0.0.0:*", "--bind", "tcp://0.0.0.0:*"],
    );
    let warning = open.next_with("without --auth");
    assert!(warning.contains("anyone who can reach it"), "{warning}");
    open.signal("TERM");
    assert!(open.wait().success());
    std::thread::sleep(Duration::from_millis(50));
    let warnings = open
        .drain()
        .iter()
        .filter(|line| line.contains("without --auth"))
        .count();
    assert_eq!(warnings, 1);

    let mut local = Program::start(
        env!("CARGO_BIN_EXE_broker"),
        &["--bind", "tcp://127.0.0.1:*"],
    );
    let endpoint = active_endpoint(&mut local);
    let client = Peer::connect(&endpoint, "C1");
    wait_for_mmi(&client, "echo", b"404");
    local.signal("TERM");
    assert!(local.wait().success());
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !local
            .drain()
            .iter()
            .any(|line| line.contains("without --auth")),
        "{:#?}",
        local.seen()
    );
}
