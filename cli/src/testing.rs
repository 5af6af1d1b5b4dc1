//! Test support, not part of the API: a program of the workspace run as a process by a test,
//! with its log (stderr) read line by line on a thread, so that a test can wait for a line
//! without a hang: every wait has a guard ([`PATIENCE`]) that turns a line that never comes into
//! a failure that shows the log so far. The broker's and the worker's process tests share it.
//!
//! It lives in `src/` (compiled in every build, behind no feature) only so that the tests of
//! several crates can share it; it is `#[doc(hidden)]`, and no program uses it. Test code: it
//! panics, with a message that says what went wrong, where a test would fail.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long a test waits for a line that must come; a guard against a hang, not a timing rule.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running program and the lines of its stderr. Killed when dropped, however the test ends.
#[derive(Debug)]
pub struct Program {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    /// How many of `seen` [`Program::next_with`] has looked at.
    looked_at: usize,
}

impl Program {
    /// Starts `program` (a `CARGO_BIN_EXE_*` path) with `args`: stdin and stdout closed, stderr
    /// read, and `RUST_LOG` removed so that the log is the one the flags ask for.
    pub fn start(program: impl AsRef<OsStr>, args: &[&str]) -> Program {
        let program = program.as_ref();
        let mut child = Command::new(program)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {program:?}: {error}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Program {
            child,
            lines,
            seen: Vec::new(),
            looked_at: 0,
        }
    }

    /// Reads lines until `count` of those read so far contain `text`; fails the test if they
    /// have not within [`PATIENCE`], or the log ends first.
    pub fn wait_for(&mut self, text: &str, count: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.count(text) < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "{count} x {text:?} never came; stderr so far:\n{}",
                    self.log()
                ),
            }
        }
    }

    /// The next line containing `text` after the last one this returned (the log is read on as
    /// far as needed); fails the test if none comes within [`PATIENCE`], or the log ends first.
    pub fn next_with(&mut self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            while self.looked_at < self.seen.len() {
                let line = &self.seen[self.looked_at];
                self.looked_at += 1;
                if line.contains(text) {
                    return line.clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line with {text:?}; stderr so far:\n{}", self.log()),
            }
        }
    }

    /// The next line if one comes within `wait` (kept with the others), else `None`.
    pub fn next_line_within(&mut self, wait: Duration) -> Option<&str> {
        let line = self.lines.recv_timeout(wait).ok()?;
        self.seen.push(line);
        self.seen.last().map(String::as_str)
    }

    /// Every line that has come so far, without waiting.
    pub fn drain(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// The lines read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// The lines read so far that contain `text`.
    pub fn lines_with(&self, text: &str) -> Vec<&String> {
        self.seen
            .iter()
            .filter(|line| line.contains(text))
            .collect()
    }

    /// How many of the lines read so far contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.seen.iter().filter(|line| line.contains(text)).count()
    }

    /// The lines read so far, one a line, for a failure message.
    pub fn log(&self) -> String {
        self.seen.join("\n")
    }

    /// Sends the signal `name` (`HUP`, `TERM`) to the program.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    /// Waits for the program to exit, and returns its status.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for the program")
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
