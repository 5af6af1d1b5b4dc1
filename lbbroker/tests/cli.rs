//! The real binary, as a user runs it: in a fresh directory, with the gist's default endpoints.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use tempfile::TempDir;

fn lbbroker(cwd: &TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lbbroker"))
        .args(args)
        .current_dir(cwd.path())
        // Logging settings of the caller's shell must not change what the test sees.
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn entries(dir: &TempDir) -> Vec<String> {
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_default_demo_prints_only_the_gists_lines_and_cleans_up() {
    let cwd = TempDir::new().unwrap();
    let output = lbbroker(&cwd, &["--unit-ms", "1"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr, "", "nothing but warnings goes to stderr by default");

    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 20, "{stdout}");
    let requests = lines.iter().filter(|line| line.contains(": REQ ")).count();
    let replies: Vec<&str> = lines
        .iter()
        .filter(|line| line.contains(": REP "))
        .copied()
        .collect();
    assert_eq!(requests, 10);
    for client in 0..10 {
        let wanted = format!("{:>11}: REP OK from PROCESSOR-", format!("CLIENT-{client}"));
        assert_eq!(
            replies
                .iter()
                .filter(|line| line.starts_with(&wanted))
                .count(),
            1,
            "CLIENT-{client} in {stdout}"
        );
    }
    // Both ipc files were created in the working directory, and both are gone.
    assert!(entries(&cwd).is_empty(), "{:?}", entries(&cwd));
}

#[test]
fn zero_clients_is_a_usage_error_not_a_panic() {
    let cwd = TempDir::new().unwrap();
    let output = lbbroker(&cwd, &["--clients", "0"]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--clients"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let cwd = TempDir::new().unwrap();
    let output = lbbroker(&cwd, &["broker", "--clients", "3"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn an_endpoint_that_cannot_be_bound_exits_non_zero_with_the_cause() {
    let cwd = TempDir::new().unwrap();
    let output = lbbroker(&cwd, &["--frontend", "ipc://no/such/dir/frontend.ipc"]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // One line: what failed, then why (the lock file beside the socket file is the first thing
    // that needs the missing directory).
    let lock = cwd
        .path()
        .canonicalize()
        .unwrap()
        .join("no/such/dir/frontend.ipc.lock");
    assert_eq!(
        stderr,
        format!(
            "lbbroker: cannot bind the frontend ROUTER to ipc://no/such/dir/frontend.ipc: \
             cannot create the lock file {}: No such file or directory (os error 2)\n",
            lock.display()
        )
    );
    assert!(output.stdout.is_empty());
    assert!(entries(&cwd).is_empty(), "{:?}", entries(&cwd));
}

#[test]
fn help_explains_the_pattern() {
    let cwd = TempDir::new().unwrap();
    let output = lbbroker(&cwd, &["--help"]);
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success());
    for needle in [
        "--clients",
        "--processors",
        "--unit-ms",
        "--frontend",
        "--backend",
        "--seed",
        "ROUTER",
        "READY",
    ] {
        assert!(help.contains(needle), "--help should mention {needle}");
    }
}
