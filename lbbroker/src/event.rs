//! What the role threads tell the thread that prints, over a crossbeam channel.
//!
//! In the gist every thread calls `printf` itself. Here the processors and clients send an
//! [`Event`] instead, and the launching thread is the only one that writes: lines never tear,
//! tests can read them, and the launcher learns from the same events when every client has its
//! reply. The two printable events format exactly like the gist's
//! `printf "%11s: REQ %2s from %s\n"` and `printf "%11s: REP %2s\n"`.

use std::fmt;

use crate::error::Error;

/// A processor took a request; printed like the gist's `REQ` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenRequest {
    /// The processor's identity, e.g. `PROCESSOR-0`.
    pub processor: String,
    /// The request as it arrived: the load, e.g. `2`.
    pub load: String,
    /// The client it came from, read from the envelope, e.g. `CLIENT-7`.
    pub client: String,
}

impl fmt::Display for TakenRequest {
    /// `PROCESSOR-0: REQ  2 from CLIENT-7`, as `printf "%11s: REQ %2s from %s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>11}: REQ {:>2} from {}",
            self.processor, self.load, self.client
        )
    }
}

/// A client got its reply; printed like the gist's `REP` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReply {
    /// The client's identity, e.g. `CLIENT-7`.
    pub client: String,
    /// The reply, e.g. `OK from PROCESSOR-0`.
    pub reply: String,
}

impl fmt::Display for ClientReply {
    /// `   CLIENT-7: REP OK from PROCESSOR-0`, as `printf "%11s: REP %2s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>11}: REP {:>2}", self.client, self.reply)
    }
}

/// One thing a role thread reports.
#[derive(Debug)]
pub enum Event {
    /// The broker received a processor's `READY`: it is in the ready queue for the first time.
    ProcessorJoined {
        /// Its identity.
        processor: String,
    },
    /// A processor took a request (an output line).
    RequestTaken(TakenRequest),
    /// A client received its reply (an output line).
    ReplyReceived(ClientReply),
    /// A role's thread stopped on an error; the launcher stops the others.
    RoleFailed {
        /// The role, e.g. `PROCESSOR-1`.
        role: String,
        /// Why.
        error: Error,
    },
}

impl Event {
    /// The line this event prints, if it is one of the gist's.
    pub fn output_line(&self) -> Option<String> {
        match self {
            Event::RequestTaken(request) => Some(request.to_string()),
            Event::ReplyReceived(reply) => Some(reply.to_string()),
            Event::ProcessorJoined { .. } | Event::RoleFailed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected strings are the lines of a real run of the Ruby gist.
    #[test]
    fn request_line_matches_the_gists_printf() {
        let request = TakenRequest {
            processor: "PROCESSOR-0".into(),
            load: "1".into(),
            client: "CLIENT-7".into(),
        };
        assert_eq!(request.to_string(), "PROCESSOR-0: REQ  1 from CLIENT-7");
    }

    #[test]
    fn reply_line_matches_the_gists_printf() {
        let reply = ClientReply {
            client: "CLIENT-7".into(),
            reply: "OK from PROCESSOR-0".into(),
        };
        assert_eq!(reply.to_string(), "   CLIENT-7: REP OK from PROCESSOR-0");
    }

    #[test]
    fn widths_are_minimums_like_printf() {
        let request = TakenRequest {
            processor: "PROCESSOR-12".into(),
            load: "100".into(),
            client: "C".into(),
        };
        assert_eq!(request.to_string(), "PROCESSOR-12: REQ 100 from C");
        let reply = ClientReply {
            client: "C".into(),
            reply: "x".into(),
        };
        assert_eq!(reply.to_string(), "          C: REP  x");
    }

    #[test]
    fn only_requests_and_replies_are_printed() {
        let joined = Event::ProcessorJoined {
            processor: "PROCESSOR-0".into(),
        };
        assert_eq!(joined.output_line(), None);
    }
}
