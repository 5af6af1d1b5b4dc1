//! The one error type of this crate. Each variant says what was being done and keeps the
//! underlying cause as its `source()`, so the binary can print the whole chain, for example:
//!
//! ```text
//! lbbroker: cannot bind the frontend ROUTER to ipc://frontend.ipc: /home/me/frontend.ipc is in
//! use: another program is bound to it (it holds /home/me/frontend.ipc.lock)
//! ```
//!
//! Failures of the socket layer itself (a receive, a send, a poll) are [`zsocket::Error`]s, which
//! name the call that failed; binding and connecting get variants of their own, because only this
//! crate knows which socket it was and whose.

use std::fmt;
use std::io;

/// Everything that can stop a broker, a processor, a client or the demo.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range (for example `clients: 0`).
    #[error("invalid {setting}: {reason}")]
    InvalidSetting {
        /// The setting, named like its command-line flag.
        setting: &'static str,
        /// What is wrong and what would be right.
        reason: String,
    },

    /// A socket could not be bound: a directory that does not exist, a TCP port in use, an ipc
    /// path another program is bound to, a typo.
    #[error("cannot bind the {socket} to {endpoint}")]
    Bind {
        /// Which socket, e.g. "frontend ROUTER".
        socket: &'static str,
        /// The endpoint as given.
        endpoint: String,
        /// Why: what libzmq said, or why the ipc path could not be claimed.
        source: BindCause,
    },

    /// A socket could not connect. ZeroMQ connects in the background, so this only happens for
    /// an endpoint it cannot even parse; a peer that is not there yet is not an error.
    #[error("{identity} cannot connect to {endpoint}")]
    Connect {
        /// Who was connecting.
        identity: String,
        /// The endpoint as given.
        endpoint: String,
        /// What libzmq said.
        source: zmq::Error,
    },

    /// The dashboard (`--http`) could not start: its address is in use, or not this machine's.
    #[error(transparent)]
    Dashboard(#[from] dashboard::ServeError),

    /// Any other ZeroMQ call failed; the socket layer's error names the call.
    #[error(transparent)]
    Socket(#[from] zsocket::Error),

    /// The stop signal (a Unix socket pair) could not be created.
    #[error("cannot create the stop signal")]
    StopSignal(#[source] io::Error),

    /// A processor received a request without the `[client][]` envelope the broker always puts
    /// in front: it cannot know where the reply should go.
    #[error("{processor} received a request without a client envelope: {frames}")]
    MissingEnvelope {
        /// The processor's identity.
        processor: String,
        /// The frames it received, as the debug log shows them.
        frames: String,
    },

    /// A role's thread stopped with an error of its own.
    #[error("{role} stopped")]
    RoleFailed {
        /// The role, e.g. "PROCESSOR-1" or "broker".
        role: String,
        /// Why it stopped.
        source: Box<Error>,
    },

    /// A role's thread panicked. That is a bug in this crate.
    #[error("the {role} thread panicked")]
    Panicked {
        /// The role whose thread it was.
        role: String,
    },

    /// A thread could not be started.
    #[error("cannot start the {role} thread")]
    Spawn {
        /// The role it was for.
        role: String,
        /// What the operating system said.
        source: io::Error,
    },

    /// The lines could not be written out (for example stdout was a closed pipe).
    #[error("cannot write the output")]
    Output(#[source] io::Error),

    /// A client's reply did not come in time (`lbbroker client --timeout`).
    #[error(
        "no reply within {} ms (--timeout) from the broker at {frontend}",
        timeout.as_millis()
    )]
    NoReply {
        /// The broker's frontend endpoint the client sent to.
        frontend: String,
        /// How long it waited.
        timeout: std::time::Duration,
    },

    /// The run was interrupted (Ctrl-C) before every client had its reply.
    #[error("interrupted before every client had its reply ({replies} of {clients} replies)")]
    Interrupted {
        /// Replies received so far.
        replies: usize,
        /// Clients started.
        clients: usize,
    },
}

/// Why a bind failed: the cause inside the socket layer's error, without that error's own
/// "cannot bind ENDPOINT", which [`Error::Bind`] already says (and says which socket it was).
/// The chain then reads once: "cannot bind the frontend ROUTER to ipc://frontend.ipc: ... is in
/// use: another program is bound to it ...", not "cannot bind ...: cannot bind ...: ...".
#[derive(Debug)]
pub struct BindCause(zsocket::Error);

impl BindCause {
    /// What libzmq said, for matching: `EADDRINUSE` for a tcp port or an ipc path in use.
    pub fn zmq_error(&self) -> zmq::Error {
        self.0.zmq_error()
    }

    /// The socket layer's whole error.
    pub fn socket_error(&self) -> &zsocket::Error {
        &self.0
    }
}

impl From<zsocket::Error> for BindCause {
    fn from(error: zsocket::Error) -> Self {
        BindCause(error)
    }
}

impl fmt::Display for BindCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::error::Error::source(&self.0) {
            Some(cause) => fmt::Display::fmt(cause, f),
            None => fmt::Display::fmt(&self.0, f),
        }
    }
}

impl std::error::Error for BindCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0).and_then(std::error::Error::source)
    }
}
