//! The real binary, as a user runs it: in a fresh directory, with the gist's default endpoints.
#![allow(clippy::unwrap_used)]

mod common;

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

// Issue #16, item 8: global flags before or after the subcommand, one -v rule.

fn lines_of(output: &Output) -> usize {
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[test]
fn the_demos_flags_work_before_the_demo_subcommand() {
    let cwd = TempDir::new().unwrap();
    let output = lbbroker(&cwd, &["--unit-ms", "1", "--clients", "2", "demo"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(lines_of(&output), 4, "{output:?}");
    // Given on both sides, the subcommand's value wins.
    let output = lbbroker(
        &cwd,
        &["--clients", "2", "demo", "--unit-ms", "1", "--clients", "1"],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(lines_of(&output), 2, "{output:?}");
}

#[test]
fn verbose_works_before_and_after_the_subcommand_and_twice() {
    let cwd = TempDir::new().unwrap();
    for args in [
        &["-v", "demo", "--unit-ms", "1", "--clients", "1"][..],
        &["demo", "-v", "--unit-ms", "1", "--clients", "1"],
        &["-vv", "--unit-ms", "1", "--clients", "1", "demo"],
    ] {
        let output = lbbroker(&cwd, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.contains("DEBUG"), "{args:?}: {stderr}");
        assert_eq!(lines_of(&output), 2, "{args:?}");
    }
}

#[test]
fn a_shared_flag_before_a_subcommand_that_takes_it_is_used() {
    let cwd = TempDir::new().unwrap();
    let broker =
        common::Background::start(cwd.path(), &["--frontend", "ipc://elsewhere.ipc", "broker"]);
    common::wait_for_file(&cwd.path().join("elsewhere.ipc"));
    common::wait_for_file(&cwd.path().join("backend.ipc"));
    assert!(!cwd.path().join("frontend.ipc").exists());
    broker.signal("INT");
    let stopped = broker.finish_within(common::PATIENCE).unwrap();
    assert_eq!(stopped.code(), Some(0), "{stopped:?}");
}

#[test]
fn a_shared_flag_before_a_subcommand_that_does_not_take_it_is_a_usage_error() {
    let cwd = TempDir::new().unwrap();
    let output = lbbroker(&cwd, &["--clients", "3", "broker"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--clients does not apply to `lbbroker broker`"),
        "{stderr}"
    );
    assert!(entries(&cwd).is_empty(), "{:?}", entries(&cwd));
}

/// `lbbroker | head -2`: the reader has gone after two lines. The program ends quietly with
/// 141, having stopped every thread (the broker's files are gone, so it ended cleanly).
#[test]
fn a_closed_stdout_ends_the_demo_quietly_with_141() {
    use std::io::{BufRead, BufReader};
    let cwd = TempDir::new().unwrap();
    let mut demo = common::Background::start(cwd.path(), &["--unit-ms", "50"]);
    let mut stdout = BufReader::new(demo.take_stdout());
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains(": REQ "), "{line:?}");
    }
    drop(stdout);
    let finished = demo.finish_within(common::PATIENCE).unwrap();
    assert_eq!(finished.code(), Some(141), "{finished:?}");
    assert_eq!(finished.stderr, "");
    assert!(entries(&cwd).is_empty(), "{:?}", entries(&cwd));
}

// Issue #16, item 9: the broker says where it listens.

#[test]
fn the_broker_says_once_where_it_listens_and_how_it_ended() {
    let cwd = TempDir::new().unwrap();
    let broker = common::Background::start(cwd.path(), &["broker"]);
    common::wait_for_file(&cwd.path().join("frontend.ipc"));
    common::wait_for_file(&cwd.path().join("backend.ipc"));
    broker.signal("INT");
    let stopped = broker.finish_within(common::PATIENCE).unwrap();
    assert_eq!(stopped.code(), Some(0), "{stopped:?}");
    assert_eq!(stopped.stdout, "", "stdout carries only the gist's lines");
    let active: Vec<&str> = stopped
        .stderr
        .lines()
        .filter(|line| line.contains("is active"))
        .collect();
    assert_eq!(active.len(), 1, "{}", stopped.stderr);
    assert!(
        active[0].ends_with(
            "lbbroker broker is active: clients connect to ipc://frontend.ipc, processors to \
             ipc://backend.ipc"
        ),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains(
            "broker stopped: 0 requests forwarded, 0 replies forwarded, 0 messages dropped"
        ),
        "{}",
        stopped.stderr
    );
}

// Issue #16, item 10: the limits are in --help.

#[test]
fn help_gives_the_limits_of_clients_and_processors() {
    let cwd = TempDir::new().unwrap();
    for args in [&["--help"][..], &["demo", "--help"], &["client", "--help"]] {
        let help = String::from_utf8(lbbroker(&cwd, args).stdout).unwrap();
        assert!(
            help.contains(&format!("1 to {}", lbbroker::MAX_CLIENTS)),
            "{args:?}: {help}"
        );
    }
    for args in [&["--help"][..], &["processor", "--help"]] {
        let help = String::from_utf8(lbbroker(&cwd, args).stdout).unwrap();
        assert!(
            help.contains(&format!("1 to {}", lbbroker::MAX_PROCESSORS)),
            "{args:?}: {help}"
        );
    }
    // And the limits are what the flags enforce.
    let too_many = lbbroker(
        &cwd,
        &["--clients", &(lbbroker::MAX_CLIENTS + 1).to_string()],
    );
    assert_eq!(too_many.status.code(), Some(2));
    let too_many = lbbroker(
        &cwd,
        &["--processors", &(lbbroker::MAX_PROCESSORS + 1).to_string()],
    );
    assert_eq!(too_many.status.code(), Some(2));
}
