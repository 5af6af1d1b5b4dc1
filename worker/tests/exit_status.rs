//! The exit-status contract of the workspace (`cli::exit`) for every status the `worker` program
//! can give (issue #16, item 11), and what its `--help` says about them. A server has nothing "to
//! be done", so SIGINT and SIGTERM are its normal end: 0, also while an `--exec` command hangs
//! (the command's process group is stopped first, and none of it is left behind). 1 is a failure
//! at run time; 2 a usage error. 130 and 141 do not apply: a signal is the normal end, and the
//! worker writes nothing to stdout.
//!
//! The signal tests run the real `broker` program beside the worker (a sibling binary in
//! `target/<profile>/`: `cargo build -p broker` first), and a client played by a REQ socket.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a program that should end at once may take before the test gives up on it.
const PATIENCE: Duration = Duration::from_secs(10);

fn worker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
    command.env_remove("RUST_LOG").stdin(Stdio::null());
    command
}

/// The `broker` program, beside this crate's binaries.
fn broker_binary() -> PathBuf {
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_worker"));
    let path = worker.with_file_name("broker");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p broker` first",
        path.display()
    );
    path
}

/// A program in the background, killed if the test ends first.
struct Background(Option<Child>);

impl Background {
    fn start(command: &mut Command) -> Background {
        Background(Some(
            command
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
    }

    fn signal(&self, signal: &str) {
        let pid = self.0.as_ref().unwrap().id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// The exit status and stderr, or `None` (and the program killed) after `limit`.
    fn finish_within(&mut self, limit: Duration) -> Option<(ExitStatus, String)> {
        let mut child = self.0.take().unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait_with_output();
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let Output { status, stderr, .. } = child.wait_with_output().unwrap();
        Some((status, String::from_utf8_lossy(&stderr).into_owned()))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kills, when the test ends, the processes whose pids are listed in the files of `dir` named
/// `pids*`: a test that fails leaves no `sleep 1000` behind (a worker killed by the test cannot
/// stop its commands).
struct Leftovers<'a>(&'a Path);

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.0) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with("pids") {
                continue;
            }
            let pids = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill")
                    .args(["-KILL", pid])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn wait_for_file(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < PATIENCE,
            "{} did not appear",
            path.display()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A broker on an ipc endpoint in `dir`, once it is bound.
fn start_broker(dir: &Path) -> (Background, String) {
    let socket = dir.join("broker.ipc");
    let endpoint = format!("ipc://{}", socket.display());
    let broker = Background::start(Command::new(broker_binary()).args(["--bind", &endpoint]));
    wait_for_file(&socket);
    (broker, endpoint)
}

/// A client played by a REQ socket: sends one MDP/0.1 request for `echo`.
fn send_request(endpoint: &str, body: &str) -> zmq::Socket {
    let socket = zmq::Context::new().socket(zmq::REQ).unwrap();
    socket.set_linger(0).unwrap();
    socket.connect(endpoint).unwrap();
    socket
        .send_multipart([&b"MDPC01"[..], b"echo", body.as_bytes()], 0)
        .unwrap();
    socket
}

/// The reply's body (after the header and service frames), or `None` after `wait`.
fn recv_reply(socket: &zmq::Socket, wait: Duration) -> Option<Vec<String>> {
    let millis = i64::try_from(wait.as_millis()).unwrap();
    if socket.poll(zmq::POLLIN, millis).unwrap() == 0 {
        return None;
    }
    let frames = socket.recv_multipart(0).unwrap();
    assert_eq!(frames[0], b"MDPC01", "{frames:?}");
    Some(
        frames[2..]
            .iter()
            .map(|frame| String::from_utf8_lossy(frame).into_owned())
            .collect(),
    )
}

/// Whether process `pid` ends within [`PATIENCE`]: gone, or a zombie waiting for a parent to
/// reap it. A killed process closes its files (which ends the command's output, and so lets the
/// worker go on) a moment before it is a zombie, hence the wait.
fn has_ended(pid: &str) -> bool {
    let started = Instant::now();
    loop {
        let ended = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
        };
        if ended || started.elapsed() > PATIENCE {
            return ended;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn help_states_the_exit_statuses_and_the_exec_conventions() {
    let help = worker().arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8(help.stdout).unwrap();
    for text in [
        "Exit status: 0 after SIGINT or SIGTERM",
        "1 failed",
        "2 usage error",
        "--exec-timeout <DURATION>",
        "[default: 60s]",
        "MDP-FAILED",
    ] {
        assert!(help.contains(text), "{text:?} in {help}");
    }
}

#[test]
fn done_is_0_after_sigterm_while_a_command_hangs_and_none_of_it_is_left() {
    let dir = TempDir::new().unwrap();
    let (_broker, endpoint) = start_broker(dir.path());
    let pids = dir.path().join("pids");
    let _leftovers = Leftovers(dir.path());
    // `sh` writes its own pid and its child's; both must be gone after the worker's exit.
    let command = format!("sleep 1000 & echo $$ $! > {}; wait", pids.display());
    let mut worker = Background::start(worker().args(["--connect", &endpoint, "--exec", &command]));
    let client = send_request(&endpoint, "hi");
    wait_for_file(&pids);
    // The file may be created and not written yet.
    let mut written = String::new();
    while written.split_whitespace().count() < 2 {
        written = std::fs::read_to_string(&pids).unwrap();
    }

    let signalled = Instant::now();
    worker.signal("TERM");
    let ended = worker.finish_within(PATIENCE);
    let took = signalled.elapsed();
    let (status, stderr) = ended.expect("the worker ends on SIGTERM while its command hangs");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(took < Duration::from_secs(1), "took {took:?}: {stderr}");
    for pid in written.split_whitespace() {
        assert!(has_ended(pid), "process {pid} of the command still runs");
    }
    assert!(stderr.contains("sending DISCONNECT"), "{stderr}");
    // The request in hand is answered: its command was stopped, and the reply says so.
    let reply = recv_reply(&client, PATIENCE).expect("a reply to the stopped request");
    assert_eq!(reply[0], "MDP-FAILED", "{reply:?}");
    assert_eq!(reply.len(), 4, "{reply:?}");
    assert!(
        reply[1].starts_with("stopped: the worker is shutting down"),
        "{reply:?}"
    );
}

#[test]
fn done_is_0_after_sigterm_with_several_commands_hanging_at_once() {
    let dir = TempDir::new().unwrap();
    let (_broker, endpoint) = start_broker(dir.path());
    // One file per command, named after its `sh`, written once it holds both pids.
    let command = format!(
        "sleep 1000 & echo $$ $! > {0}/pids.$$.tmp && mv {0}/pids.$$.tmp {0}/pids.$$; wait",
        dir.path().display()
    );
    let _leftovers = Leftovers(dir.path());
    let mut worker = Background::start(worker().args([
        "--connect",
        &endpoint,
        "--slots",
        "3",
        "--exec",
        &command,
    ]));
    let clients: Vec<zmq::Socket> = (0..3).map(|_| send_request(&endpoint, "hi")).collect();
    let pid_files = || -> Vec<PathBuf> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                let name = path.file_name().unwrap().to_string_lossy();
                name.starts_with("pids.") && !name.ends_with(".tmp")
            })
            .collect()
    };
    let started = Instant::now();
    while pid_files().len() < 3 {
        assert!(started.elapsed() < PATIENCE, "three commands did not start");
        thread::sleep(Duration::from_millis(5));
    }

    worker.signal("TERM");
    let (status, stderr) = worker.finish_within(PATIENCE).expect("ends on SIGTERM");
    assert_eq!(status.code(), Some(0), "{stderr}");
    for file in pid_files() {
        for pid in std::fs::read_to_string(&file).unwrap().split_whitespace() {
            assert!(has_ended(pid), "process {pid} of a command still runs");
        }
    }
    for client in &clients {
        let reply = recv_reply(client, PATIENCE).expect("each stopped request is answered");
        assert_eq!(reply[0], "MDP-FAILED", "{reply:?}");
    }
}

#[test]
fn done_is_0_after_sigint_for_an_echo_worker() {
    let dir = TempDir::new().unwrap();
    let (_broker, endpoint) = start_broker(dir.path());
    let mut worker = Background::start(worker().args(["--connect", &endpoint]));
    // A reply means the worker is serving, so its signal handler is in place.
    let client = send_request(&endpoint, "hello");
    assert_eq!(recv_reply(&client, PATIENCE).unwrap(), ["hello"]);
    worker.signal("INT");
    let (status, stderr) = worker.finish_within(PATIENCE).expect("ends on SIGINT");
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn failed_is_1_when_the_worker_cannot_make_its_socket() {
    // Five file descriptors: enough to start, not enough for ZeroMQ's socket. (Descriptors 3 and
    // 4 are closed in case the test runner left any open.)
    let worker = env!("CARGO_BIN_EXE_worker");
    let run = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 5; exec 3>&- 4>&-; exec {worker} --connect tcp://127.0.0.1:1"
        ))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("worker: cannot create a socket"),
        "{stderr}"
    );
}

#[test]
fn usage_is_2_for_bad_flags_services_endpoints_and_timeouts() {
    for args in [
        &["--no-such-flag"][..],
        &["--service", "mmi.echo"],
        &["--service", ""],
        &["--heartbeat-ms", "0"],
        &["--exec", "cat", "--exec-timeout", "5"],
        &["--exec", "cat", "--exec-timeout", "0s"],
        &["--connect", "tcpx://nowhere:1"],
        &["--connect", "not an endpoint"],
    ] {
        let run = worker().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.is_empty(), "{args:?}");
    }
}
