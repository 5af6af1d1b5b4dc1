//! The one socket layer under every program of this workspace: the broker's server loop, the
//! clients, the worker and lbbroker all open, read, write, wait and stop through it, so that each
//! of those jobs is written, explained and tested once.
//!
//! What it does, and nothing more:
//!
//! * [`recv`] / [`recv_routed`]: receive one whole multipart message into [`zmq::Message`]s,
//!   without copying a byte (ZeroMQ delivers the frames of a message together, so once the first
//!   frame is there the rest never make the caller wait).
//! * [`send`]: send a message's frames, moving each [`zmq::Message`] into the socket; a message
//!   the socket refuses at its first frame comes back whole ([`Refused`]), so a caller can take a
//!   request back instead of losing it.
//! * [`wait`]: sleep until one of some sockets is readable, a deadline passes, or a [`StopHandle`]
//!   fires; [`recv_until`]: the cheaper wait for a loop with one socket (see below).
//! * [`stop_pair`] / [`stop_router`]: one stop/wake API, with the implementation each kind of
//!   socket needs (see [`stop`]).
//! * [`connect`] / [`bind`]: open a socket with linger 0 and connect or bind it, with an error
//!   that names the endpoint.
//! * [`monitor`]: what libzmq knows about a socket's connections (a socket monitor, read
//!   without blocking), opened and closed so that it can never block libzmq.
//! * [`Error`]: the one error type, which names the action that failed.
//!
//! The protocol lives elsewhere: frames are built and parsed by `mdp` (or, for lbbroker, by its
//! balancer), and decisions are made by the sans-IO cores. Nothing here knows what a frame means.

pub mod credentials;
pub mod curve;
mod error;
pub mod ipc;
pub mod limit;
pub mod monitor;
pub mod stop;
#[doc(hidden)]
pub mod testing;

use std::time::Instant;

pub use error::{Error, ResultExt};
pub use stop::{stop_pair, stop_router, StopHandle, StopSignal};

/// The frames of one multipart message, in order.
pub type Frames = Vec<zmq::Message>;

/// The result of every call in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Opens a socket of `kind` and connects it to `endpoint`, with linger 0: a socket of ours is
/// only closed when what is still queued in it is no longer wanted (a try being abandoned, a
/// conversation that ended, a program stopping), and a closed socket must never hold up the end
/// of the process. Returns at once: ZeroMQ connects in the background, and messages sent before
/// the peer is there wait in the socket.
pub fn connect(
    context: &zmq::Context,
    kind: zmq::SocketType,
    endpoint: &str,
) -> Result<zmq::Socket> {
    let socket = context.socket(kind).doing("create a socket")?;
    socket.set_linger(0).doing("set ZMQ_LINGER")?;
    socket
        .connect(endpoint)
        .map_err(|source| Error::new(format!("connect to {endpoint}"), source))?;
    Ok(socket)
}

/// Binds `socket` to `endpoint`. The [`Binding`] says the endpoint as bound, with a wildcard
/// resolved (`tcp://127.0.0.1:*` becomes `tcp://127.0.0.1:41235`), so tests can bind port 0 and
/// connect to what they got.
///
/// An `ipc://` path is claimed first ([`ipc::IpcClaim`]): if another program is bound to it, this
/// fails as a tcp port in use would, instead of silently taking the path from that program. The
/// claim is held by the `Binding`, which removes the socket file when dropped: keep it as long as
/// the socket, and declare it after the socket in a struct so that it drops after it.
pub fn bind(socket: &zmq::Socket, endpoint: &str) -> Result<Binding> {
    let claim = match endpoint.strip_prefix("ipc://") {
        // `ipc://@name` is Linux's abstract namespace: no file, and the kernel refuses a clash.
        // `ipc://*` is a temporary file that libzmq names and removes itself.
        Some(path) if !path.is_empty() && !path.starts_with('@') && path != "*" => Some(
            ipc::IpcClaim::claim(std::path::Path::new(path))
                .map_err(|claim| Error::in_use(format!("bind {endpoint}"), claim))?,
        ),
        _ => None,
    };
    socket.bind(endpoint).map_err(|source| match source {
        // What libzmq says for `tcp://localhost:5555`: it binds interfaces, not host names.
        zmq::Error::ENODEV if endpoint.starts_with("tcp://") => {
            Error::with_hint(format!("bind {endpoint}"), source, BIND_HINT)
        }
        _ => Error::new(format!("bind {endpoint}"), source),
    })?;
    let endpoint = match socket.get_last_endpoint() {
        Ok(Ok(actual)) => actual,
        _ => endpoint.to_owned(),
    };
    Ok(Binding {
        endpoint,
        _claim: claim,
    })
}

/// What to do when libzmq cannot bind a tcp endpoint to a "device".
const BIND_HINT: &str = "to bind, name an interface address such as 127.0.0.1, or * for every \
interface (host names such as localhost are for connecting)";

/// A bound endpoint; see [`bind`]. Dropping it removes an `ipc://` socket file and its lock.
#[derive(Debug)]
pub struct Binding {
    endpoint: String,
    _claim: Option<ipc::IpcClaim>,
}

impl Binding {
    /// The endpoint as bound, wildcards resolved.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Receives one whole message. With `zmq::DONTWAIT` in `flags`, or with `ZMQ_RCVTIMEO` set and
/// run out, `None` when nothing is waiting; `None` also when a signal interrupted the wait
/// (`EINTR`), so that the caller looks at its stop signal and its clock before waiting again.
pub fn recv(socket: &zmq::Socket, flags: i32) -> Result<Option<Frames>> {
    let mut first = zmq::Message::new();
    match socket.recv(&mut first, flags) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(None),
        Err(source) => return Err(Error::new("receive", source)),
    }
    let mut more = first.get_more();
    let mut frames = Vec::with_capacity(if more { 6 } else { 1 });
    frames.push(first);
    while more {
        // The rest of a multipart message arrives with its first frame, so this never waits.
        let mut frame = zmq::Message::new();
        socket.recv(&mut frame, 0).doing("receive")?;
        more = frame.get_more();
        frames.push(frame);
    }
    Ok(Some(frames))
}

/// Receives one whole message on a ROUTER: the sender's routing identity, and the frames after it.
pub fn recv_routed(socket: &zmq::Socket, flags: i32) -> Result<Option<(zmq::Message, Frames)>> {
    Ok(recv(socket, flags)?.and_then(split_routed))
}

/// A message a ROUTER received, split into the sender's routing identity (which a ROUTER always
/// puts first) and the frames after it; `None` for an empty list.
pub fn split_routed(mut frames: Frames) -> Option<(zmq::Message, Frames)> {
    if frames.is_empty() {
        return None;
    }
    let identity = frames.remove(0);
    Some((identity, frames))
}

/// Waits up to `deadline` (forever with `None`) for one whole message on a socket that no other
/// socket shares a wait with, by setting `ZMQ_RCVTIMEO` and receiving.
///
/// This is the broker's wait: `zmq_poll` asks each socket for `ZMQ_EVENTS` before and after it
/// sleeps, and each ask is a system call of its own, so a loop that waits in `recv` directly
/// made about 4.5 system calls per request where a `zmq_poll` loop over the ROUTER and a stop
/// socket made 10.6 (measured with `strace -c`; see BENCHMARKS.md). A loop that waits this way
/// is stopped with [`stop_router`].
pub fn recv_until(
    socket: &zmq::Socket,
    deadline: Option<Instant>,
    now: Instant,
) -> Result<Option<Frames>> {
    let timeout = i32::try_from(millis_until(deadline, now)).unwrap_or(i32::MAX);
    socket.set_rcvtimeo(timeout).doing("set ZMQ_RCVTIMEO")?;
    recv(socket, 0)
}

/// A message the socket would not take, given back whole: its first frame was refused
/// (`EHOSTUNREACH` from a ROUTER with `ZMQ_ROUTER_MANDATORY` when the peer is gone, `EAGAIN` with
/// `ZMQ_DONTWAIT` when the peer's queue is full), and nothing of it was sent.
#[derive(Debug)]
pub struct Refused {
    /// The message, all of it.
    pub frames: Frames,
    /// Why it was refused.
    pub error: zmq::Error,
}

/// How [`send`] failed.
#[derive(Debug)]
pub enum SendError {
    /// Refused at the first frame; nothing was sent and here is the whole message.
    Refused(Refused),
    /// The socket took the first frame and failed on a later one. A ROUTER or DEALER decides at
    /// the first frame, so this is not expected; the message is lost but for its first frame
    /// (on a ROUTER, the recipient's identity), kept so the caller can say who missed it.
    Failed {
        /// The message's first frame.
        first_frame: zmq::Message,
        /// What failed.
        error: Error,
    },
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Refused(refused) => write!(f, "cannot send: {}", refused.error),
            SendError::Failed { error, .. } => error.fmt(f),
        }
    }
}

impl std::error::Error for SendError {}

impl From<SendError> for Error {
    fn from(error: SendError) -> Error {
        match error {
            SendError::Refused(refused) => Error::new("send", refused.error),
            SendError::Failed { error, .. } => error,
        }
    }
}

/// Sends `frames` as one message, moving each frame into the socket (no copy); `flags` is
/// `0` or `zmq::DONTWAIT`. An empty `frames` sends nothing.
///
/// The first frame goes out as a copy of its bytes, so that if the socket refuses it (it decides
/// there: a ROUTER routes on it, a full queue refuses it) the message is still whole for the
/// caller. The first frame is a routing identity or an empty delimiter in every message this
/// workspace sends: a few bytes, copied into the message itself, no allocation.
pub fn send(socket: &zmq::Socket, frames: Frames, flags: i32) -> Result<(), SendError> {
    let Some(first) = frames.first() else {
        return Ok(());
    };
    let more = frames.len() - 1;
    let first_flags = if more > 0 {
        flags | zmq::SNDMORE
    } else {
        flags
    };
    if let Err(error) = socket.send(&first[..], first_flags) {
        return Err(SendError::Refused(Refused { frames, error }));
    }
    let mut frames = frames.into_iter();
    let Some(first_frame) = frames.next() else {
        return Ok(());
    };
    for (index, frame) in frames.enumerate() {
        let frame_flags = if index + 1 < more {
            flags | zmq::SNDMORE
        } else {
            flags
        };
        if let Err(source) = socket.send(frame, frame_flags) {
            return Err(SendError::Failed {
                first_frame,
                error: Error::new("send", source),
            });
        }
    }
    Ok(())
}

/// Milliseconds from `now` until `deadline`, for `zmq_poll` and `ZMQ_RCVTIMEO`: -1 (forever)
/// for no deadline, and rounded up, so that a wait never ends just before the deadline and the
/// loop spins until it passes.
pub fn millis_until(deadline: Option<Instant>, now: Instant) -> i64 {
    match deadline {
        None => -1,
        Some(deadline) => {
            let wait = deadline.saturating_duration_since(now);
            i64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
        }
    }
}

/// What ended a [`wait`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Woken {
    /// These sockets (indexes into the slice given to `wait`) have a message waiting.
    Readable(Vec<usize>),
    /// The deadline passed, or a signal interrupted the wait: look at the clock and wait again.
    Timeout,
    /// The stop signal was raised.
    Stopped,
}

/// Sleeps until one of `sockets` has a message, `deadline` passes (never, with `None`), or `stop`
/// is raised. Stopping wins over a readable socket, so a flood cannot delay a stop.
pub fn wait(
    sockets: &[&zmq::Socket],
    stop: Option<&StopSignal>,
    deadline: Option<Instant>,
    now: Instant,
) -> Result<Woken> {
    if stop.is_some_and(StopSignal::is_raised) {
        return Ok(Woken::Stopped);
    }
    // One allocation, with room for the stop signal's item.
    let mut items: Vec<zmq::PollItem<'_>> = Vec::with_capacity(sockets.len() + 1);
    items.extend(
        sockets
            .iter()
            .map(|socket| socket.as_poll_item(zmq::POLLIN)),
    );
    if let Some(item) = stop.and_then(StopSignal::poll_item) {
        items.push(item);
    }
    match zmq::poll(&mut items, millis_until(deadline, now)) {
        Ok(_) => {}
        Err(zmq::Error::EINTR) => return Ok(Woken::Timeout),
        Err(source) => return Err(Error::new("poll", source)),
    }
    if stop.is_some_and(StopSignal::is_raised) {
        return Ok(Woken::Stopped);
    }
    let readable: Vec<usize> = items[..sockets.len()]
        .iter()
        .enumerate()
        .filter(|(_, item)| item.is_readable())
        .map(|(index, _)| index)
        .collect();
    Ok(if readable.is_empty() {
        Woken::Timeout
    } else {
        Woken::Readable(readable)
    })
}

#[cfg(test)]
mod tests;
