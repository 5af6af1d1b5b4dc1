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
//! Both are thin drivers over the state machines in [`core`] ([`core::SyncCore`],
//! [`core::AsyncCore`]), which hold every rule above and are given the time instead of reading
//! it; the drivers own the sockets (through the workspace's socket layer, `zsocket`) and the
//! clock.
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
pub mod core;
pub mod stats;
pub mod sync_client;

use std::time::Duration;

pub use async_client::{AsyncClient, AsyncClientConfig, Matching, Outcome, RequestId};
pub use mdp::{Frames, ServiceName};
pub use sync_client::{Client, ClientConfig};

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A ZeroMQ call failed: the endpoint is not one ZeroMQ can connect to (a typo, an unknown
    /// transport), or a socket failed for another reason than the broker's absence (which shows
    /// as a timeout, never as an error from ZeroMQ). [`zsocket::Error::zmq_error`] tells which.
    #[error(transparent)]
    Socket(#[from] zsocket::Error),
    /// Every try of a synchronous request timed out.
    #[error("{}", no_reply(service, *attempts, *timeout))]
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
    /// True if ZeroMQ refused the endpoint itself: malformed, an unknown transport, one this
    /// socket type cannot use, an ipc path too long. That is a mistake of whoever wrote the
    /// endpoint (the `client` program exits with its usage status), not a failure of the system.
    pub fn is_bad_endpoint(&self) -> bool {
        matches!(self, Error::Socket(error) if error.is_bad_endpoint())
    }
}

/// "no reply from service echo within 2.5s", or "... after 3 tries of 2.5s each" when the
/// request was sent more than once: what the user needs to judge the failure, in plain words.
pub fn no_reply(service: &ServiceName, tries: u32, timeout: Duration) -> String {
    if tries > 1 {
        format!("no reply from service {service} after {tries} tries of {timeout:?} each")
    } else {
        format!("no reply from service {service} within {timeout:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_reply_says_tries_only_when_there_were_several() {
        let echo: ServiceName = "echo".parse().unwrap();
        let timeout = Duration::from_millis(500);
        let once = Error::NoReply {
            service: echo.clone(),
            attempts: 1,
            timeout,
        };
        assert_eq!(once.to_string(), "no reply from service echo within 500ms");
        let thrice = Error::NoReply {
            service: echo,
            attempts: 3,
            timeout,
        };
        assert_eq!(
            thrice.to_string(),
            "no reply from service echo after 3 tries of 500ms each"
        );
    }
}
