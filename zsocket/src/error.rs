//! The one error type of the socket layer: what was being done, and what libzmq said.

use std::borrow::Cow;

/// A ZeroMQ call failed. The message names the action (`cannot bind tcp://*:5555`, `cannot
/// receive`), and [`std::error::Error::source`] is the cause (libzmq's `Address already in use`,
/// or for an ipc path another program holds, which one), so a program that prints the chain tells
/// the user both what and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action}")]
pub struct Error {
    action: Cow<'static, str>,
    #[source]
    source: Cause,
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
enum Cause {
    #[error(transparent)]
    Zmq(zmq::Error),
    #[error(transparent)]
    InUse(Box<crate::ipc::ClaimError>),
    /// libzmq's error, which does not say what to do about it, with a hint that does.
    #[error("{error}; {hint}")]
    Hinted {
        error: zmq::Error,
        hint: &'static str,
    },
}

impl Error {
    /// An error for `action` (a verb phrase: "bind tcp://*:5555", "set ZMQ_LINGER").
    pub fn new(action: impl Into<Cow<'static, str>>, source: zmq::Error) -> Error {
        Error {
            action: action.into(),
            source: Cause::Zmq(source),
        }
    }

    /// libzmq's `error` for `action`, and what the user can do about it.
    pub fn with_hint(
        action: impl Into<Cow<'static, str>>,
        error: zmq::Error,
        hint: &'static str,
    ) -> Error {
        Error {
            action: action.into(),
            source: Cause::Hinted { error, hint },
        }
    }

    /// An `ipc://` endpoint that cannot be bound because of `claim` (see [`crate::ipc`]).
    pub(crate) fn in_use(action: String, claim: crate::ipc::ClaimError) -> Error {
        Error {
            action: action.into(),
            source: Cause::InUse(Box::new(claim)),
        }
    }

    /// The action that failed, as a verb phrase.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// True if ZeroMQ refused the endpoint itself (at connect or bind): malformed, an unknown
    /// transport, one this socket type cannot use, an ipc path too long. That is a mistake of
    /// whoever wrote the endpoint (a program exits with its usage status), not a failure of the
    /// system.
    pub fn is_bad_endpoint(&self) -> bool {
        matches!(
            self.source,
            Cause::Zmq(
                zmq::Error::EINVAL
                    | zmq::Error::EPROTONOSUPPORT
                    | zmq::Error::ENOCOMPATPROTO
                    | zmq::Error::ENAMETOOLONG
            )
        )
    }

    /// What libzmq said; for an ipc path held by another program `EADDRINUSE`, as libzmq says
    /// for a tcp port in use, and for a lock file that cannot be made, the system's error.
    pub fn zmq_error(&self) -> zmq::Error {
        match &self.source {
            Cause::Zmq(error) | Cause::Hinted { error, .. } => *error,
            Cause::InUse(claim) => match &**claim {
                crate::ipc::ClaimError::Io { source, .. } => {
                    zmq::Error::from_raw(source.raw_os_error().unwrap_or(libc_einval()))
                }
                _ => zmq::Error::EADDRINUSE,
            },
        }
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

/// `EINVAL`, for an I/O error that carries no errno.
fn libc_einval() -> i32 {
    zmq::Error::EINVAL.to_raw()
}
