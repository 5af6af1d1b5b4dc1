//! Serving a request by running a shell command: the `worker --exec CMD` mode.
//!
//! The conventions, chosen so that the `client` program round-trips text unchanged:
//! * **stdin**: the request body, each frame followed by a newline, so a line-oriented command
//!   sees one line per frame (`client` sends each FRAME argument as one frame).
//! * **success** (exit status 0): the reply is exactly **one** frame, the command's stdout with one
//!   trailing newline removed (as the shell's `$(...)` does), which `client` prints as a line.
//! * **failure** (a non-zero status, a signal, or `sh` not starting): the reply is exactly
//!   **three** frames: [`ERROR_FRAME`] (`ERROR`), what happened (`exit status 3`, `killed by
//!   signal 9`, `cannot start sh: ...`), and the command's stderr.
//!
//! A client tells the two apart by the frame count alone, so even a command whose output is the
//! word `ERROR` cannot be mistaken for a failure.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

use mdp::Frames;

/// The first of the three frames of a failure reply.
pub const ERROR_FRAME: &[u8] = b"ERROR";

/// Runs `sh -c command` with `body` on stdin and returns the reply body described in the
/// [module docs](self). Blocks until the command exits; it never fails, since every failure
/// becomes a reply the client can read.
pub fn run(command: &str, body: &[zmq::Message]) -> Frames {
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => return failure(&format!("cannot start sh: {error}"), b""),
    };
    let mut input = Vec::with_capacity(body.iter().map(|frame| frame.len() + 1).sum());
    for frame in body {
        input.extend_from_slice(frame);
        input.push(b'\n');
    }
    // Feed stdin from another thread: a command that writes a lot before it reads would block on
    // a full stdout pipe while we block on a full stdin pipe. A command that never reads stdin
    // closes it, and the write then fails with a broken pipe, which is fine.
    let feeder = child.stdin.take().map(|mut stdin| {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        })
    });
    let output = child.wait_with_output();
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    match output {
        Err(error) => failure(&format!("cannot read the command's output: {error}"), b""),
        Ok(output) if output.status.success() => {
            if !output.stderr.is_empty() {
                // Not part of the reply, but not lost either: it goes where an inherited stderr
                // would have gone.
                let _ = std::io::stderr().write_all(&output.stderr);
            }
            let mut stdout = output.stdout;
            if stdout.last() == Some(&b'\n') {
                stdout.pop();
            }
            vec![zmq::Message::from(stdout)]
        }
        Ok(output) => failure(&describe(output.status), &output.stderr),
    }
}

/// `ERROR`, the reason, the command's stderr (one trailing newline removed).
fn failure(reason: &str, stderr: &[u8]) -> Frames {
    let stderr = stderr.strip_suffix(b"\n").unwrap_or(stderr);
    vec![
        zmq::Message::from(ERROR_FRAME),
        zmq::Message::from(reason),
        zmq::Message::from(stderr),
    ]
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
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

    #[test]
    fn success_is_one_frame_of_stdout_without_its_last_newline() {
        let reply = run("tr a-z A-Z", &frames(&["hello", "world"]));
        assert_eq!(texts(&reply), ["HELLO\nWORLD"]);
    }

    #[test]
    fn output_that_reads_error_is_still_a_success() {
        let reply = run("echo ERROR", &frames(&["x"]));
        assert_eq!(texts(&reply), ["ERROR"]);
    }

    #[test]
    fn failure_is_three_frames_with_status_and_stderr() {
        let reply = run("echo oops >&2; exit 3", &frames(&["x"]));
        assert_eq!(texts(&reply), ["ERROR", "exit status 3", "oops"]);
    }

    #[test]
    fn a_killed_command_says_which_signal() {
        let reply = run("kill -9 $$", &frames(&["x"]));
        assert_eq!(texts(&reply)[..2], ["ERROR", "killed by signal 9"]);
    }

    #[test]
    fn a_command_that_ignores_a_large_stdin_does_not_hang() {
        let big = "x".repeat(1 << 20);
        let reply = run("echo done", &frames(&[&big]));
        assert_eq!(texts(&reply), ["done"]);
    }
}
