//! MDP/0.1 clients (rfc.zeromq.org spec 7, the MDP/Client sub-protocol) as a library.
//!
//! A client sends a REQUEST naming a service and gets back a REPLY from whichever worker the
//! broker chose. Two clients are offered, after the guide's `mdcliapi` and `mdcliapi2`:
//!
//! * [`Client`]: one request at a time on a REQ socket, as spec 7 recommends. It waits up to a
//!   timeout for the reply; when none comes it closes the socket, opens a new one and sends the
//!   request again, up to a number of tries, then returns [`Error::NoReply`]. Because each try
//!   uses a fresh socket (a fresh identity at the broker), a reply that arrives too late goes to
//!   a closed socket and cannot be mistaken for the answer to a later request.
//! * [`AsyncClient`]: many requests in flight on one DEALER socket. [`AsyncClient::send`] returns
//!   at once; [`AsyncClient::recv`] returns the next [`Outcome`]: a reply, or a request that has
//!   waited longer than its timeout and is given up (by default after one try; with
//!   [`AsyncClientConfig::retries`] it is resent first). How replies are matched to requests,
//!   when MDP/0.1 replies carry no request id, is explained in the [`async_client`] module.
//!
//! ```no_run
//! use client::{Client, ClientConfig};
//!
//! # fn main() -> Result<(), client::Error> {
//! let mut client = Client::connect("tcp://localhost:5555", ClientConfig::default())?;
//! let echo = "echo".parse().expect("a valid service name");
//! let reply = client.send(&echo, &["hello"])?;
//! assert_eq!(&reply[0][..], b"hello");
//! # Ok(())
//! # }
//! ```

pub mod async_client;
pub mod stats;
pub mod sync_client;

use std::time::{Duration, Instant};

pub use async_client::{AsyncClient, AsyncClientConfig, Matching, Outcome, RequestId};
pub use mdp::{Frames, ServiceName};
pub use sync_client::{Client, ClientConfig};

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is not one ZeroMQ can connect to (a typo, an unknown transport).
    #[error("cannot connect to {endpoint:?}")]
    Connect {
        endpoint: String,
        #[source]
        source: zmq::Error,
    },
    /// A ZeroMQ call failed for a reason other than the broker's absence (which shows as a
    /// timeout, never as an error from ZeroMQ).
    #[error("ZeroMQ failed to {action}")]
    Zmq {
        action: &'static str,
        #[source]
        source: zmq::Error,
    },
    /// Every try of a synchronous request timed out.
    #[error("no reply from service {service} after {attempts} tries of {timeout:?} each")]
    NoReply {
        service: ServiceName,
        attempts: u32,
        timeout: Duration,
    },
    /// The reply was not a valid MDP/Client REPLY (the broker broke spec 7).
    #[error("the broker's reply is malformed")]
    InvalidReply(#[from] mdp::Error),
    /// The reply names another service than the request did (the broker broke spec 7).
    #[error("asked service {asked} but the reply is from {replied}")]
    WrongService {
        asked: ServiceName,
        replied: ServiceName,
    },
    /// `mmi.service` answered something other than 200 or 404.
    #[error("mmi.service answered {0}, neither 200 nor 404")]
    UnexpectedMmiReply(mdp::dump::Printable),
    /// [`AsyncClient::recv`] was called with no request outstanding: it would wait forever.
    #[error("no request is outstanding, so there is nothing to receive")]
    NothingOutstanding,
}

impl Error {
    /// A `map_err` adapter for ZeroMQ calls: `socket.send(..).map_err(Error::zmq("send"))`.
    fn zmq(action: &'static str) -> impl Fn(zmq::Error) -> Error + Copy {
        move |source| Error::Zmq { action, source }
    }
}

/// Opens a socket of `kind`, connected to `endpoint`, that never delays shutdown: a socket is
/// only closed when what is queued in it is no longer wanted (a request being retried on a new
/// socket, or abandoned), so linger is 0.
fn open_socket(
    context: &zmq::Context,
    kind: zmq::SocketType,
    endpoint: &str,
) -> Result<zmq::Socket, Error> {
    let socket = context
        .socket(kind)
        .map_err(Error::zmq("create a socket"))?;
    socket.set_linger(0).map_err(Error::zmq("set linger"))?;
    socket.connect(endpoint).map_err(|source| Error::Connect {
        endpoint: endpoint.to_owned(),
        source,
    })?;
    Ok(socket)
}

/// Receives the rest of a multipart message whose first frame is `first`.
fn recv_rest(socket: &zmq::Socket, first: zmq::Message) -> Result<Frames, Error> {
    let mut frames = vec![first];
    // ZeroMQ delivers a multipart message whole, so the other frames are already here.
    while socket.get_rcvmore().map_err(Error::zmq("read RCVMORE"))? {
        frames.push(socket.recv_msg(0).map_err(Error::zmq("receive"))?);
    }
    Ok(frames)
}

/// Milliseconds from `now` to `deadline` for `zmq::poll`, rounded up so that a poll never
/// returns just before the deadline and spins.
fn millis_until(deadline: Instant, now: Instant) -> i64 {
    let wait = deadline.saturating_duration_since(now);
    i64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}
