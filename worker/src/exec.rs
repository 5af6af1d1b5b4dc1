//! Serving a request by running a shell command: the `worker --exec CMD` mode.
//!
//! The conventions, chosen so that the `client` program round-trips text unchanged:
//! * **stdin**: the request body, each frame followed by a newline, so a line-oriented command
//!   sees one line per frame (`client` sends each FRAME argument as one frame).
//! * **success** (exit status 0): the reply is exactly **one** frame, the command's stdout with one
//!   trailing newline removed (as the shell's `$(...)` does), which `client` prints as a line. What
//!   the command wrote to stderr goes to the worker's stderr.
//! * **failure** (a non-zero status, a signal, a timeout, `sh` not starting): the reply is the
//!   project's failure report, [`mdp::failure`]: four frames, `MDP-FAILED`, the reason (`exit
//!   status 3`, `killed by signal 9`, `timed out after 60s`, `cannot start sh: ...`), the command's
//!   stdout (what it wrote before it failed, one trailing newline removed) and its stderr (the
//!   same). The worker logs each failure as a warning, at most one line a second
//!   ([`zsocket::limit::LogLimit`]): a command that fails on every request does not flood the log.
//!
//! A client tells the two apart by the shape alone, so even a command whose output is the word
//! `MDP-FAILED` cannot be mistaken for a failure.
//!
//! # Timeout and stopping
//! Each command runs in a process group of its own, so that it and everything it started (a
//! pipeline, a `sleep &`) can be stopped together. A command that runs longer than its timeout
//! (`worker --exec-timeout`; [`DEFAULT_TIMEOUT`] unless told otherwise) is sent SIGTERM, to its
//! whole group, and SIGKILL [`DEFAULT_GRACE`] later if the group has not closed its output by
//! then; the reply says `timed out after ...`. A command counts as running until it has exited
//! **and** closed its stdout and stderr: one that leaves a background process holding them runs
//! into the timeout as well.
//!
//! [`Stopper::stop_all`] (the worker's SIGINT and SIGTERM handler) does the same to every command
//! running at the time, and refuses to start new ones, so that the worker can send DISCONNECT and
//! exit at once rather than when the command ends. [`Exec::run`] may be called from several
//! threads at once: the running commands are kept in one registry that the stopper reads.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use log::warn;
use mdp::failure::Failure;
use mdp::Frames;
use zsocket::limit::LogLimit;

/// The timeout of a command unless told otherwise: generous for a request-reply service (whose
/// clients give up after seconds), short enough that a hung command does not keep its worker
/// from the service forever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a command has between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// The `--exec-timeout` value: a duration (`500ms`, `30s`, `5m`, `2h`) or `none` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

impl Default for Timeout {
    fn default() -> Self {
        Timeout(Some(DEFAULT_TIMEOUT))
    }
}

impl FromStr for Timeout {
    type Err = String;

    fn from_str(text: &str) -> Result<Timeout, String> {
        if text == "none" {
            return Ok(Timeout(None));
        }
        match parse_duration(text)? {
            duration if duration.is_zero() => {
                Err("must be more than 0 (`none` for no limit)".into())
            }
            duration => Ok(Timeout(Some(duration))),
        }
    }
}

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(duration) => f.write_str(&format_duration(duration)),
        }
    }
}

/// A whole number and a unit: `ms`, `s`, `m` or `h` (`250ms`, `30s`, `5m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let bad = || format!("{text:?} is not a duration such as 500ms, 30s, 5m or 2h");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let duration = match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs),
        "h" => number.checked_mul(3600).map(Duration::from_secs),
        "" => {
            return Err(format!(
                "{text:?} needs a unit: {text}s, {text}ms, {text}m or {text}h"
            ))
        }
        _ => return Err(bad()),
    };
    duration.ok_or_else(|| format!("{text:?} is too long"))
}

/// An exact form [`parse_duration`] reads back: milliseconds below a second or for a fraction,
/// seconds up to 10 minutes (`60s`, `300s`), then minutes or hours (`15m`, `2h`).
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_nanos() != 0 || secs == 0 {
        format!("{}ms", duration.as_millis())
    } else if secs <= 600 || !secs.is_multiple_of(60) {
        format!("{secs}s")
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else {
        format!("{}m", secs / 60)
    }
}

/// Runs one shell command per request; see the [module docs](self). Cheap to clone: the clones
/// share the registry of running commands.
#[derive(Debug, Clone)]
pub struct Exec {
    command: String,
    timeout: Option<Duration>,
    grace: Duration,
    shared: Arc<Shared>,
}

/// Stops the commands an [`Exec`] (and its clones) is running, from any thread.
#[derive(Debug, Clone)]
pub struct Stopper {
    grace: Duration,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a command leaves the registry.
    left: Condvar,
    failures: Mutex<LogLimit>,
}

#[derive(Debug, Default)]
struct State {
    /// The process group ids (= the `sh` pids) of the running commands. A group is here from its
    /// spawn until just before its `sh` is reaped, and is signalled only while the lock is held:
    /// so the id cannot have been reused by another process when it is signalled.
    running: HashSet<u32>,
    /// [`Stopper::stop_all`] was called: no new command starts.
    stopping: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `signal` to the group `pid` if it is still running; true if it was.
    fn signal(&self, pid: u32, signal: i32) -> bool {
        let state = self.state();
        let running = state.running.contains(&pid);
        if running {
            sys::kill_group(pid, signal);
        }
        running
    }
}

impl Exec {
    /// Runs `sh -c command` per request, killed after `timeout` (`None`: no limit).
    pub fn new(command: impl Into<String>, timeout: Option<Duration>) -> Exec {
        Exec {
            command: command.into(),
            timeout,
            grace: DEFAULT_GRACE,
            shared: Arc::default(),
        }
    }

    /// The time between SIGTERM and SIGKILL, [`DEFAULT_GRACE`] unless set here.
    pub fn with_grace(mut self, grace: Duration) -> Exec {
        self.grace = grace;
        self
    }

    /// A handle that stops the running commands, for a signal handler.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            grace: self.grace,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs the command with `body` on stdin and returns the reply body described in the
    /// [module docs](self). Blocks until the command ends (or is stopped); it never fails, since
    /// every failure becomes a reply the client can read.
    pub fn run(&self, body: &[zmq::Message]) -> Frames {
        match self.execute(body) {
            Ok(Done { stdout, stderr }) => {
                if !stderr.is_empty() {
                    // Not part of the reply, but not lost either: it goes where an inherited
                    // stderr would have gone.
                    let _ = std::io::stderr().write_all(&stderr);
                }
                vec![zmq::Message::from(without_last_newline(&stdout))]
            }
            Err(failed) => {
                self.log_failure(&failed);
                Failure {
                    reason: failed.reason.as_bytes(),
                    output: without_last_newline(&failed.stdout),
                    diagnostics: without_last_newline(&failed.stderr),
                }
                .encode()
            }
        }
    }

    fn log_failure(&self, failed: &Failed) {
        let mut limit = self
            .shared
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(held_back) = limit.allow(Instant::now()) else {
            return;
        };
        let stderr = String::from_utf8_lossy(without_last_newline(&failed.stderr));
        let last_line = stderr.lines().last().unwrap_or("");
        let also = match held_back {
            0 => String::new(),
            1 => " (and 1 more failure in the last second)".to_owned(),
            n => format!(" (and {n} more failures in the last second)"),
        };
        if last_line.is_empty() {
            warn!("--exec command failed: {}{also}", failed.reason);
        } else {
            warn!(
                "--exec command failed: {}: {last_line}{also}",
                failed.reason
            );
        }
    }

    fn execute(&self, body: &[zmq::Message]) -> Result<Done, Failed> {
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        let mut child =
            spawned.map_err(|error| Failed::new(format!("cannot start sh: {error}")))?;
        let pid = child.id();
        {
            let mut state = self.shared.state();
            if state.stopping {
                sys::kill_group(pid, sys::SIGKILL);
                drop(state);
                let _ = child.wait();
                return Err(Failed::new("not run: the worker is stopping".into()));
            }
            state.running.insert(pid);
        }
        match self.start_threads(&mut child, body) {
            Ok(()) => self.collect(child, pid),
            Err(error) => {
                self.shared.signal(pid, sys::SIGKILL);
                self.forget(pid);
                let _ = child.wait();
                Err(Failed::new(format!("cannot start a thread: {error}")))
            }
        }
    }

    /// The threads that feed stdin (a command that writes a lot before it reads would block on a
    /// full stdout pipe while we block on a full stdin pipe; one that never reads stdin closes it,
    /// and the write then fails with a broken pipe, which is fine).
    fn start_threads(&self, child: &mut Child, body: &[zmq::Message]) -> std::io::Result<()> {
        let mut input = Vec::with_capacity(body.iter().map(|frame| frame.len() + 1).sum());
        for frame in body {
            input.extend_from_slice(frame);
            input.push(b'\n');
        }
        if let Some(mut stdin) = child.stdin.take() {
            std::thread::Builder::new()
                .name("exec-stdin".into())
                .spawn(move || {
                    let _ = stdin.write_all(&input);
                })?;
        }
        Ok(())
    }

    /// Waits for the command (stdout and stderr closed, `sh` exited), killing it at the timeout.
    fn collect(&self, mut child: Child, pid: u32) -> Result<Done, Failed> {
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (sender, receiver) = mpsc::channel();
        let shared = Arc::clone(&self.shared);
        let collector = std::thread::Builder::new()
            .name("exec-output".into())
            .spawn(move || {
                let collected = read_outputs(stdout, stderr).map(|(stdout, stderr)| {
                    // Out of the registry before `sh` is reaped, so that its pid (the group id) is
                    // never signalled after it may have been reused.
                    sys::wait_unreaped(pid);
                    forget(&shared, pid);
                    let status = child.wait();
                    (status, stdout, stderr)
                });
                if collected.is_err() {
                    forget(&shared, pid);
                    let _ = child.wait();
                }
                let _ = sender.send(collected);
            });
        if let Err(error) = collector {
            self.shared.signal(pid, sys::SIGKILL);
            self.forget(pid);
            return Err(Failed::new(format!("cannot start a thread: {error}")));
        }

        let first = match self.timeout {
            Some(timeout) => receiver.recv_timeout(timeout),
            None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let (collected, timed_out) = match first {
            Ok(collected) => (Some(collected), None),
            Err(RecvTimeoutError::Timeout) => {
                let timeout = self.timeout.unwrap_or_default();
                (self.terminate(pid, &receiver), Some(timeout))
            }
            Err(RecvTimeoutError::Disconnected) => (None, None),
        };
        let stopping = self.shared.state().stopping;
        let Some(collected) = collected else {
            let reason = match timed_out {
                Some(timeout) => format!(
                    "timed out after {}, and still running after SIGKILL",
                    format_duration(timeout)
                ),
                None => "lost the command's output".to_owned(),
            };
            return Err(Failed::new(reason));
        };
        let (status, stdout, stderr) = match collected {
            Ok((Ok(status), stdout, stderr)) => (status, stdout, stderr),
            Ok((Err(error), stdout, stderr)) => {
                return Err(Failed {
                    reason: format!("cannot wait for the command: {error}"),
                    stdout,
                    stderr,
                })
            }
            Err(error) => {
                return Err(Failed::new(format!(
                    "cannot read the command's output: {error}"
                )))
            }
        };
        let reason = match timed_out {
            Some(timeout) => format!(
                "timed out after {} ({})",
                format_duration(timeout),
                describe(status)
            ),
            None if status.success() => return Ok(Done { stdout, stderr }),
            None if stopping => format!(
                "stopped: the worker is shutting down ({})",
                describe(status)
            ),
            None => describe(status),
        };
        Err(Failed {
            reason,
            stdout,
            stderr,
        })
    }

    /// SIGTERM to the group, SIGKILL after the grace; the output if it then ends within another
    /// grace (a process that left the group may hold the pipes open: then it is given up on).
    fn terminate(&self, pid: u32, receiver: &mpsc::Receiver<Collected>) -> Option<Collected> {
        self.shared.signal(pid, sys::SIGTERM);
        match receiver.recv_timeout(self.grace) {
            Ok(collected) => Some(collected),
            Err(_) => {
                self.shared.signal(pid, sys::SIGKILL);
                receiver.recv_timeout(self.grace).ok()
            }
        }
    }

    fn forget(&self, pid: u32) {
        forget(&self.shared, pid);
    }
}

impl Stopper {
    /// Refuses new commands and stops the running ones as a timeout does: SIGTERM to each group,
    /// SIGKILL to those still running after the grace. Returns once all have ended, or after a
    /// second grace.
    pub fn stop_all(&self) {
        let mut state = self.shared.state();
        state.stopping = true;
        for (signal, deadline) in [
            (sys::SIGTERM, Instant::now() + self.grace),
            (sys::SIGKILL, Instant::now() + self.grace * 2),
        ] {
            for &pid in &state.running {
                sys::kill_group(pid, signal);
            }
            while !state.running.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = self
                    .shared
                    .left
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if state.running.is_empty() {
                return;
            }
        }
    }
}

fn forget(shared: &Shared, pid: u32) {
    shared.state().running.remove(&pid);
    shared.left.notify_all();
}

type Collected = std::io::Result<(std::io::Result<ExitStatus>, Vec<u8>, Vec<u8>)>;

/// Reads stdout here and stderr on a thread of its own, both to their end.
fn read_outputs(
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let stderr_reader = stderr
        .map(|mut stderr| {
            std::thread::Builder::new()
                .name("exec-stderr".into())
                .spawn(move || {
                    let mut bytes = Vec::new();
                    stderr.read_to_end(&mut bytes).map(|_| bytes)
                })
        })
        .transpose()?;
    let mut out = Vec::new();
    if let Some(mut stdout) = stdout {
        stdout.read_to_end(&mut out)?;
    }
    let err = match stderr_reader {
        Some(reader) => reader
            .join()
            .map_err(|_| std::io::Error::other("the stderr reader panicked"))??,
        None => Vec::new(),
    };
    Ok((out, err))
}

/// A command that ended well: its output.
struct Done {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// A command that failed: why, and what it wrote.
struct Failed {
    reason: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Failed {
    fn new(reason: String) -> Failed {
        Failed {
            reason,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }
}

fn without_last_newline(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\n").unwrap_or(bytes)
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// The two system calls std does not wrap.
#[allow(unsafe_code)]
mod sys {
    pub use libc::{SIGKILL, SIGTERM};

    /// `kill(-pgid, signal)`: the signal to every process of the group. An error (the group has
    /// ended meanwhile) changes nothing for the caller.
    pub fn kill_group(pgid: u32, signal: i32) {
        let Ok(pgid) = libc::pid_t::try_from(pgid) else {
            return;
        };
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }

    /// Waits until the child `pid` has exited, leaving it a zombie (`WNOWAIT`) so that its pid
    /// stays taken until `Child::wait` reaps it. Returns at once on an error.
    pub fn wait_unreaped(pid: u32) {
        let pid: libc::id_t = pid;
        loop {
            // SAFETY: siginfo_t is plain data for which all zeroes is a valid value; waitid
            // writes into it and keeps no pointer after it returns.
            let status = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT)
            };
            if status == 0
                || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&str]) -> Frames {
        parts.iter().map(|part| zmq::Message::from(*part)).collect()
    }

    fn texts(frames: &Frames) -> Vec<String> {
        frames
            .iter()
            .map(|frame| String::from_utf8_lossy(frame).into_owned())
            .collect()
    }

    fn run(command: &str, body: &Frames) -> Frames {
        Exec::new(command, None).run(body)
    }

    #[test]
    fn success_is_one_frame_of_stdout_without_its_last_newline() {
        let reply = run("tr a-z A-Z", &frames(&["hello", "world"]));
        assert_eq!(texts(&reply), ["HELLO\nWORLD"]);
    }

    #[test]
    fn output_that_reads_like_a_failure_is_still_a_success() {
        let reply = run("echo MDP-FAILED", &frames(&["x"]));
        assert_eq!(texts(&reply), ["MDP-FAILED"]);
        assert!(!mdp::failure::is_failure(&reply));
    }

    #[test]
    fn failure_is_the_failure_report_with_status_stdout_and_stderr() {
        let reply = run("echo partial; echo oops >&2; exit 3", &frames(&["x"]));
        assert_eq!(
            texts(&reply),
            ["MDP-FAILED", "exit status 3", "partial", "oops"]
        );
        let failure = Failure::parse(&reply).expect("a failure report");
        assert_eq!(failure.output, b"partial");
    }

    #[test]
    fn a_killed_command_says_which_signal() {
        let reply = run("kill -9 $$", &frames(&["x"]));
        assert_eq!(texts(&reply)[..2], ["MDP-FAILED", "killed by signal 9"]);
    }

    #[test]
    fn a_command_that_ignores_a_large_stdin_does_not_hang() {
        let big = "x".repeat(1 << 20);
        let reply = run("echo done", &frames(&[&big]));
        assert_eq!(texts(&reply), ["done"]);
    }

    /// Whether process `pid` ends within a few seconds: gone, or a zombie waiting for its parent
    /// (an orphan's new parent may take its time to reap it). A killed process closes its files
    /// (which ends the command's output) a moment before it is a zombie, hence the wait.
    fn has_ended(pid: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ended = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => true,
                // "pid (comm) state ...": the state follows the last parenthesis.
                Ok(stat) => stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z'),
            };
            if ended || Instant::now() > deadline {
                return ended;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_timeout_kills_the_command_and_keeps_what_it_wrote() {
        let exec = Exec::new(
            "echo started; echo working >&2; sleep 1000",
            Some(Duration::from_millis(100)),
        );
        let reply = exec.with_grace(Duration::from_secs(5)).run(&frames(&["x"]));
        assert_eq!(
            texts(&reply),
            [
                "MDP-FAILED",
                "timed out after 100ms (killed by signal 15)",
                "started",
                "working"
            ]
        );
    }

    #[test]
    fn a_timeout_kills_the_commands_children_too() {
        let dir = tempfile::TempDir::new().unwrap();
        let pid_file = dir.path().join("pid");
        let command = format!(
            "sh -c 'sleep 1000 & echo $! > {}; wait'",
            pid_file.display()
        );
        let reply = Exec::new(command, Some(Duration::from_millis(200))).run(&frames(&["x"]));
        assert_eq!(
            texts(&reply)[..2],
            ["MDP-FAILED", "timed out after 200ms (killed by signal 15)"]
        );
        let grandchild = std::fs::read_to_string(&pid_file).unwrap();
        assert!(
            has_ended(grandchild.trim()),
            "sleep {grandchild} still runs"
        );
    }

    #[test]
    fn a_command_that_ignores_sigterm_gets_sigkill_after_the_grace() {
        let exec = Exec::new("trap '' TERM; sleep 1000", Some(Duration::from_millis(100)))
            .with_grace(Duration::from_millis(100));
        let reply = exec.run(&frames(&["x"]));
        assert_eq!(
            texts(&reply)[..2],
            ["MDP-FAILED", "timed out after 100ms (killed by signal 9)"]
        );
    }

    #[test]
    fn a_background_process_holding_stdout_runs_into_the_timeout() {
        let exec = Exec::new("sleep 1000 & echo early", Some(Duration::from_millis(100)));
        let reply = exec.run(&frames(&["x"]));
        assert_eq!(
            texts(&reply)[..3],
            [
                "MDP-FAILED",
                "timed out after 100ms (exit status 0)",
                "early"
            ]
        );
    }

    #[test]
    fn stop_all_ends_running_commands_and_refuses_new_ones() {
        let dir = tempfile::TempDir::new().unwrap();
        let started = dir.path().join("started");
        let exec = Exec::new(format!("touch {}; sleep 1000", started.display()), None);
        let running = {
            let exec = exec.clone();
            std::thread::spawn(move || exec.run(&frames(&["x"])))
        };
        while !started.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        exec.stopper().stop_all();
        let reply = running.join().unwrap();
        assert_eq!(
            texts(&reply)[..2],
            [
                "MDP-FAILED",
                "stopped: the worker is shutting down (killed by signal 15)"
            ]
        );
        let refused = exec.run(&frames(&["x"]));
        assert_eq!(
            texts(&refused)[..2],
            ["MDP-FAILED", "not run: the worker is stopping"]
        );
        assert!(exec.shared.state().running.is_empty());
    }

    #[test]
    fn several_threads_may_run_commands_at_once() {
        let exec = Exec::new(
            "read line; sleep 0.1; echo \"$line$line\"",
            Some(Duration::from_secs(30)),
        );
        let threads: Vec<_> = (0..4)
            .map(|index| {
                let exec = exec.clone();
                std::thread::spawn(move || (index, exec.run(&frames(&[&index.to_string()]))))
            })
            .collect();
        for thread in threads {
            let (index, reply) = thread.join().unwrap();
            assert_eq!(texts(&reply), [format!("{index}{index}")]);
        }
        assert!(exec.shared.state().running.is_empty());
    }

    #[test]
    fn timeouts_read_and_print_with_units_or_none() {
        for (text, timeout) in [
            ("none", None),
            ("250ms", Some(Duration::from_millis(250))),
            ("30s", Some(Duration::from_secs(30))),
            ("15m", Some(Duration::from_secs(900))),
            ("2h", Some(Duration::from_secs(7200))),
        ] {
            let parsed: Timeout = text.parse().unwrap();
            assert_eq!(parsed, Timeout(timeout), "{text}");
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(Timeout::default().to_string(), "60s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(300)), "300s");
        assert_eq!("5m".parse(), Ok(Timeout(Some(Duration::from_secs(300)))));
        for (text, error) in [
            ("5", "\"5\" needs a unit: 5s, 5ms, 5m or 5h"),
            ("0s", "must be more than 0 (`none` for no limit)"),
            (
                "1.5s",
                "\"1.5s\" is not a duration such as 500ms, 30s, 5m or 2h",
            ),
            ("s", "\"s\" is not a duration such as 500ms, 30s, 5m or 2h"),
        ] {
            assert_eq!(text.parse::<Timeout>(), Err(error.to_owned()), "{text}");
        }
    }
}
