//! `client --titanic SERVICE FRAME...` end to end: the real `broker`, `worker` and `titanic`
//! programs (sibling binaries: `cargo build -p broker -p worker -p titanic` first), a database in
//! a temporary directory, and the `client` program: a reply printed as for a normal request, a
//! failure report counted as failed with its output on stdout, and Titanic's refusal (400) as a
//! failure.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

mod common;
use common::{server, text, wait_for_service, Server};

const PATIENCE: Duration = Duration::from_secs(30);

fn client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A broker, an echo worker, a worker whose command fails, and Titanic over them.
fn start(dir: &Path) -> (Vec<Server>, String) {
    let endpoint = format!("ipc://{}/broker.ipc", dir.display());
    let db = dir.join("titanic.db");
    let servers = vec![
        server("broker", &["--bind", &endpoint]),
        server("worker", &["-c", &endpoint, "-s", "echo"]),
        server(
            "worker",
            &[
                "-c",
                &endpoint,
                "-s",
                "fails",
                "--exec",
                "echo partial; echo oops >&2; exit 3",
            ],
        ),
        server("titanic", &["-c", &endpoint, "--db", db.to_str().unwrap()]),
    ];
    for service in [
        "echo",
        "fails",
        "titanic.request",
        "titanic.reply",
        "titanic.close",
    ] {
        wait_for_service(&endpoint, service, PATIENCE);
    }
    (servers, endpoint)
}

#[test]
fn titanic_requests_print_like_normal_ones_and_fail_the_same_way() {
    let dir = TempDir::new().unwrap();
    let (_servers, endpoint) = start(dir.path());

    let answered = client(&["-c", &endpoint, "--titanic", "echo", "hello", "world"]);
    assert_eq!(
        answered.status.code(),
        Some(0),
        "{}",
        text(&answered.stderr)
    );
    assert_eq!(text(&answered.stdout), "hello\nworld\n");

    let failed = client(&["-c", &endpoint, "--titanic", "fails", "x"]);
    let stderr = text(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert_eq!(text(&failed.stdout), "partial\n");
    assert!(stderr.contains("exit status 3"), "{stderr}");

    // Titanic stores nothing for mmi.* (400): the request fails at once, nothing on stdout.
    let refused = client(&["-c", &endpoint, "--titanic", "mmi.service", "echo"]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(r#"titanic.request answered "400""#),
        "{stderr}"
    );
    assert!(refused.stdout.is_empty());

    let load = client(&[
        "-c",
        &endpoint,
        "--titanic",
        "echo",
        "-n",
        "5",
        "--stats",
        "x",
    ]);
    assert_eq!(load.status.code(), Some(0), "{}", text(&load.stderr));
    assert!(
        text(&load.stdout).starts_with("requests=5 replies=5 failed=0"),
        "{}",
        text(&load.stdout)
    );
}

#[test]
fn titanic_takes_one_broker_and_not_with_a_window() {
    for args in [
        &[
            "-c",
            "tcp://127.0.0.1:1",
            "-c",
            "tcp://127.0.0.1:2",
            "--titanic",
            "echo",
            "x",
        ][..],
        &["--titanic", "echo", "-w", "4", "x"],
        &["--titanic", "echo", "-s", "echo", "x"],
    ] {
        let output = client(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}
