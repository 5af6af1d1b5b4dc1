//! One error type for everything that can be wrong with frames a peer sent.

use crate::dump::Printable;
use crate::Command;

/// What was wrong with a message. Each variant names the frame at fault so a log line can say
/// exactly what a peer sent; none of them is fatal to the process that received it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The message ended before a frame the protocol requires.
    #[error("missing {0} frame")]
    MissingFrame(&'static str),
    /// A frame that must be empty (a delimiter) carried bytes.
    #[error("{frame} frame must be empty, it has {len} bytes")]
    NotEmpty {
        /// Which frame it was.
        frame: &'static str,
        /// How many bytes it carried.
        len: usize,
    },
    /// The protocol header was neither `MDPC01` nor `MDPW01` (or not the one expected here).
    #[error("unknown protocol header {0}")]
    BadHeader(Printable),
    /// The command frame was not exactly one byte long.
    #[error("command frame must be 1 byte, it has {0}")]
    BadCommandFrame(usize),
    /// The command byte is not one of spec 7's five commands.
    #[error("unknown command 0x{0:02x}")]
    UnknownCommand(u8),
    /// A valid command that this side never receives (a worker sending REQUEST, say).
    #[error("{0} is not a command this side accepts")]
    UnexpectedCommand(Command),
    /// A command that has a fixed number of frames came with more.
    #[error("{command} has {extra} unexpected trailing frame(s)")]
    TrailingFrames {
        /// The command whose frames ran over.
        command: Command,
        /// How many frames were left after its last one.
        extra: usize,
    },
    /// A service name frame was empty.
    #[error("service name is empty")]
    EmptyServiceName,
    /// A service name frame was longer than [`crate::ServiceName::MAX_LEN`].
    #[error("service name is {0} bytes, longer than the {max} allowed", max = crate::ServiceName::MAX_LEN)]
    ServiceNameTooLong(usize),
    /// A client address frame (the envelope in REQUEST and REPLY) was empty.
    #[error("client address frame is empty")]
    EmptyClientAddress,
}
