//! A convention of this project, not of spec 7: the reply body that says "the work failed".
//!
//! MDP replies carry no status: a REPLY is whatever frames the worker sent back. A worker that
//! runs something that can fail (our `worker --exec`, for one) still needs a way to say so that a
//! client can tell apart from an ordinary answer. This module fixes that shape, so that any worker
//! can produce it and any client can recognise it:
//!
//! | frame | content |
//! |---|---|
//! | 1 | `MDP-FAILED` ([`MARKER`]), exactly |
//! | 2 | the reason, UTF-8 text for a person: `exit status 3`, `killed by signal 9`, `timed out after 30s` |
//! | 3 | what the work wrote as its result before it failed (for a command: its stdout); may be empty |
//! | 4 | the diagnostics (for a command: its stderr); may be empty |
//!
//! Exactly four frames, the first of them the marker. A reply of any other shape is an ordinary
//! answer, whatever its bytes: one frame reading `MDP-FAILED`, or five frames starting with it, are
//! not failure reports. So an application whose answers are arbitrary bytes is safe as long as it
//! does not send four frames that begin with the marker.
//!
//! Our `client` program exits with status 1 (failed) when a reply has this shape, and prints the
//! stdout frame to stdout and the reason and stderr to stderr.

use crate::Frames;

/// The first frame of a failure report.
pub const MARKER: &[u8] = b"MDP-FAILED";

/// How many frames a failure report has.
pub const FRAMES: usize = 4;

/// A failure report, read from a reply body without copying. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure<'a> {
    /// What went wrong, for a person to read (UTF-8 from our workers; not checked here).
    pub reason: &'a [u8],
    /// The partial result the work produced before it failed (a command's stdout).
    pub output: &'a [u8],
    /// The diagnostics (a command's stderr).
    pub diagnostics: &'a [u8],
}

impl<'a> Failure<'a> {
    /// The failure report in `body`, if `body` has exactly the shape of one.
    pub fn parse(body: &'a [zmq::Message]) -> Option<Failure<'a>> {
        match body {
            [marker, reason, output, diagnostics] if &marker[..] == MARKER => Some(Failure {
                reason,
                output,
                diagnostics,
            }),
            _ => None,
        }
    }

    /// The four frames of this report.
    pub fn encode(&self) -> Frames {
        vec![
            zmq::Message::from(MARKER),
            zmq::Message::from(self.reason),
            zmq::Message::from(self.output),
            zmq::Message::from(self.diagnostics),
        ]
    }

    /// The reason as text, with any invalid UTF-8 replaced.
    pub fn reason_text(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.reason)
    }
}

/// Whether `body` is a failure report.
pub fn is_failure(body: &[zmq::Message]) -> bool {
    Failure::parse(body).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Frames {
        parts.iter().map(|part| zmq::Message::from(*part)).collect()
    }

    #[test]
    fn a_report_round_trips() {
        let failure = Failure {
            reason: b"exit status 3",
            output: b"partial",
            diagnostics: b"oops",
        };
        let body = failure.encode();
        assert_eq!(body.len(), FRAMES);
        assert_eq!(Failure::parse(&body), Some(failure));
        assert_eq!(failure.reason_text(), "exit status 3");
    }

    #[test]
    fn only_exactly_four_frames_starting_with_the_marker_are_a_report() {
        assert!(is_failure(&frames(&[MARKER, b"", b"", b""])));
        for body in [
            frames(&[MARKER]),
            frames(&[MARKER, b"why", b"out"]),
            frames(&[MARKER, b"why", b"out", b"err", b"more"]),
            frames(&[b"ERROR", b"why", b"out", b"err"]),
            frames(&[b"mdp-failed", b"why", b"out", b"err"]),
            frames(&[]),
        ] {
            assert!(!is_failure(&body), "{body:?}");
        }
    }
}
