//! The one error type of the socket layer: what was being done, and what libzmq said.

use std::borrow::Cow;

/// A ZeroMQ call failed. The message names the action (`cannot bind tcp://*:5555`, `cannot
/// receive`), and [`std::error::Error::source`] is libzmq's own error (`Address already in use`),
/// so a program that prints the chain tells the user both what and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action}")]
pub struct Error {
    action: Cow<'static, str>,
    #[source]
    source: zmq::Error,
}

impl Error {
    /// An error for `action` (a verb phrase: "bind tcp://*:5555", "set ZMQ_LINGER").
    pub fn new(action: impl Into<Cow<'static, str>>, source: zmq::Error) -> Error {
        Error {
            action: action.into(),
            source,
        }
    }

    /// The action that failed, as a verb phrase.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// What libzmq said.
    pub fn zmq_error(&self) -> zmq::Error {
        self.source
    }
}

/// `zmq_call().doing("set ZMQ_LINGER")?`: names the action of a ZeroMQ call that failed.
pub trait ResultExt<T> {
    /// Turns a `zmq::Result` into this crate's, naming `action`.
    fn doing(self, action: &'static str) -> Result<T, Error>;
}

impl<T> ResultExt<T> for Result<T, zmq::Error> {
    fn doing(self, action: &'static str) -> Result<T, Error> {
        self.map_err(|source| Error::new(action, source))
    }
}
