//! Running the real `lbbroker` binary from tests: in the foreground with a time limit, or in the
//! background as a terminal would (a broker, processors), stopped with a signal as Ctrl-C would.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a program that should end at once may take before the test gives up on it.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The binary in `cwd`, with the caller's RUST_LOG out of the way.
pub fn command(cwd: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lbbroker"));
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// What a finished run said.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// A program running in the background, killed if the test ends first.
pub struct Background {
    child: Option<Child>,
    /// Reads stderr once [`Background::wait_for_stderr`] has taken it; gives all of it back.
    stderr_reader: Option<thread::JoinHandle<String>>,
}

impl Background {
    /// Starts `lbbroker args` in `cwd` with stdout and stderr captured.
    pub fn start(cwd: &Path, args: &[&str]) -> Background {
        let child = command(cwd, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Background {
            child: Some(child),
            stderr_reader: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `signal` (e.g. "INT", as Ctrl-C does) to the program.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Waits up to `limit` for the program to end; `None` (and the program killed) if it did not.
    pub fn finish_within(mut self, limit: Duration) -> Option<Finished> {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let mut stdout = String::new();
        let mut stderr = String::new();
        // Either may have been taken by the test already.
        if let Some(mut pipe) = child.stdout.take() {
            pipe.read_to_string(&mut stdout).unwrap();
        }
        if let Some(mut pipe) = child.stderr.take() {
            pipe.read_to_string(&mut stderr).unwrap();
        } else if let Some(reader) = self.stderr_reader.take() {
            stderr = reader.join().unwrap();
        }
        Some(Finished {
            status: child.wait().unwrap(),
            stdout,
            stderr,
        })
    }

    /// Reads the program's stderr until a line contains `text` (the rest of stderr is not kept).
    /// A program that logs something once it is set up says so: after that, a signal reaches
    /// its handler rather than killing it.
    pub fn wait_for_stderr(&mut self, text: &str) {
        self.wait_for_stderr_line(text);
    }

    /// [`Background::wait_for_stderr`], giving back the line that contains `text`.
    pub fn wait_for_stderr_line(&mut self, text: &str) -> String {
        use std::io::BufRead;
        let stderr = self.child.as_mut().unwrap().stderr.take().unwrap();
        let mut reader = std::io::BufReader::new(stderr);
        let mut seen = String::new();
        let line_start = loop {
            let start = seen.len();
            match reader.read_line(&mut seen) {
                Ok(0) | Err(_) => panic!("the program ended without logging {text:?}: {seen}"),
                Ok(_) if seen[start..].contains(text) => break start,
                Ok(_) => {}
            }
        };
        // Keep reading: a program whose stderr is closed fails to log (Rust's eprintln panics).
        let line = seen[line_start..].trim_end().to_owned();
        self.stderr_reader = Some(thread::spawn(move || {
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            seen + &rest
        }));
        line
    }

    /// Takes the program's stdout, to read it while it runs.
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child.as_mut().unwrap().stdout.take().unwrap()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `lbbroker args` in `cwd` to its end; fails the test if that takes longer than `limit`.
pub fn run_within(cwd: &Path, args: &[&str], limit: Duration) -> Finished {
    Background::start(cwd, args)
        .finish_within(limit)
        .unwrap_or_else(|| panic!("lbbroker {args:?} did not end within {limit:?}"))
}

/// Waits until `path` exists (a broker has bound it).
pub fn wait_for_file(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < PATIENCE,
            "{} did not appear",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The names in `dir`.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `lbbroker broker` in `dir`, once both of its ipc files are there (it is bound).
pub fn start_broker(dir: &Path) -> Background {
    let broker = Background::start(dir, &["broker"]);
    wait_for_file(&dir.join("frontend.ipc"));
    wait_for_file(&dir.join("backend.ipc"));
    broker
}

/// `lbbroker broker --http 127.0.0.1:0` in `dir`, once it is bound, and the dashboard's address
/// as the broker logged it (the port the system picked).
pub fn start_broker_with_dashboard(dir: &Path) -> (Background, std::net::SocketAddr) {
    let mut broker = Background::start(dir, &["broker", "--http", "127.0.0.1:0"]);
    let line = broker.wait_for_stderr_line("dashboard at http://");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap();
    wait_for_file(&dir.join("frontend.ipc"));
    wait_for_file(&dir.join("backend.ipc"));
    (broker, addr)
}

/// `GET path` from the dashboard at `addr`: the status code and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The dashboard's `/status`, parsed.
pub fn status(addr: std::net::SocketAddr) -> serde_json::Value {
    let (code, body) = http_get(addr, "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Reads `/status` until `done` says yes; fails the test after [`PATIENCE`]. The broker
/// publishes at most every 100 ms, so what it did shows a moment later.
pub fn wait_for_status(
    addr: std::net::SocketAddr,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let status = status(addr);
        if done(&status) {
            return status;
        }
        assert!(started.elapsed() < PATIENCE, "never {what}: {status}");
        thread::sleep(Duration::from_millis(20));
    }
}
