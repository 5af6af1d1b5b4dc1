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
//! Both can use several brokers ([`Client::connect_all`], [`AsyncClient::connect_all`]): the
//! synchronous client keeps the broker that last answered and moves to the next on a timeout;
//! the asynchronous one spreads requests over the live brokers and leaves a failed one alone
//! until it answers an `mmi.service` probe (see [`core::AsyncCore`]). Both say when a request
//! failed without any connection to a broker ([`Error::NoConnection`], from a socket monitor)
//! rather than for want of a reply ([`Error::NoReply`]), and look a tcp host name up before
//! connecting ([`Error::UnknownHost`]).
//!
//! Both are thin drivers over the state machines in [`core`] ([`core::SyncCore`],
//! [`core::AsyncCore`]), which hold every rule above and are given the time instead of reading
//! it; the drivers own the sockets (through the workspace's socket layer, `zsocket`) and the
//! clock.
//!
//! A request and an `mmi.service` query through a broker and an echo worker started here, the
//! broker on a free port:
//!
//! ```
//! use client::{Client, ClientConfig};
//! use std::thread;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut broker = broker::Server::bind(
//!     &["tcp://127.0.0.1:*".to_owned()],
//!     broker::Config::default(),
//!     &Default::default(),
//! )?;
//! let endpoint = broker.endpoints()[0].clone(); // tcp://127.0.0.1:<the port it got>
//! let stop_broker = broker.stop_handle();
//! let broker_thread = thread::spawn(move || broker.run());
//! let mut worker =
//!     worker::Worker::connect(&endpoint, "echo".parse()?, worker::WorkerConfig::default())?;
//! let stop_worker = worker.stop_handle();
//! let worker_thread = thread::spawn(move || worker.serve(|body| body));
//!
//! // Each try waits up to 2.5 s (ClientConfig::default(): 3 tries), then Error::NoReply.
//! let mut client = Client::connect(&endpoint, ClientConfig::default())?;
//! let echo = "echo".parse()?;
//! let reply = client.send(&echo, &["hello"])?; // waits in the broker until the worker is READY
//! assert_eq!(&reply[0][..], b"hello");
//! assert!(client.has_service(&echo)?); // mmi.service answered 200
//! assert!(!client.has_service(&"nobody".parse()?)?); // and 404
//!
//! stop_worker.stop();
//! worker_thread.join().expect("the worker thread")?;
//! stop_broker.stop();
//! broker_thread.join().expect("the broker thread")?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod async_client;
pub mod core;
pub mod stats;
pub mod sync_client;
pub mod titanic;

use std::time::Duration;

pub use async_client::{AsyncClient, AsyncClientConfig, Matching, Outcome, RequestId};
pub use core::Link;
pub use mdp::{Frames, ServiceName};
pub use sync_client::{Client, ClientConfig};
pub use zsocket::credentials::{Credentials, Refusal};

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A ZeroMQ call failed: the endpoint is not one ZeroMQ can connect to (a typo, an unknown
    /// transport), or a socket failed for another reason than the broker's absence (which shows
    /// as a timeout, never as an error from ZeroMQ). [`zsocket::Error::zmq_error`] tells which.
    #[error(transparent)]
    Socket(#[from] zsocket::Error),
    /// A tcp endpoint names a host that does not resolve (looked up before connecting, since
    /// libzmq would only retry it in the background, for ever).
    #[error("cannot connect to {endpoint}: host {host} does not resolve ({reason})")]
    UnknownHost {
        /// The endpoint as given, e.g. `tcp://no-such-host:5555`.
        endpoint: String,
        /// The host part of it, without brackets.
        host: String,
        /// The resolver's error, or "no address" when it answered with none.
        reason: String,
    },
    /// Every try of a synchronous request timed out without a connection to any broker: nothing
    /// accepted a connection at the endpoint (no broker running there, a wrong port, a firewall).
    #[error("{}", no_connection(brokers, *attempts, *timeout))]
    NoConnection {
        /// The endpoints tried.
        brokers: Vec<String>,
        /// How many times the request was sent in all ([`ClientConfig::retries`], at least 1).
        attempts: u32,
        /// How long each try waited ([`ClientConfig::timeout`]).
        timeout: Duration,
    },
    /// Every try of a synchronous request timed out, with the connection to the broker made:
    /// the service did not answer in time.
    #[error("{}", no_reply(service, *attempts, *timeout))]
    NoReply {
        /// The service asked.
        service: ServiceName,
        /// How many times the request was sent in all ([`ClientConfig::retries`], at least 1).
        attempts: u32,
        /// How long each try waited ([`ClientConfig::timeout`]).
        timeout: Duration,
    },
    /// The reply was not a valid MDP/Client REPLY (the broker broke spec 7).
    #[error("the broker's reply is malformed")]
    InvalidReply(#[from] mdp::Error),
    /// The reply names another service than the request did (the broker broke spec 7).
    #[error("asked service {asked} but the reply is from {replied}")]
    WrongService {
        /// The service the request was sent to.
        asked: ServiceName,
        /// The service the reply's header named.
        replied: ServiceName,
    },
    /// `mmi.service` answered something other than 200 or 404.
    #[error("mmi.service answered {0}, neither 200 nor 404")]
    UnexpectedMmiReply(mdp::dump::Printable),
    /// The broker refused our handshake (its `--auth` did not accept the credentials, or the
    /// endpoint wants another mechanism), as the socket monitor said: each refusal the request
    /// met, with what to check. Not retried on the same broker before a backoff (see
    /// [`core::SyncCore::refused`]).
    #[error("{}", refused_text(refusals))]
    AuthRefused {
        /// The refusals, one per broker that refused (the endpoint, the mechanism, the reason).
        refusals: Vec<zsocket::credentials::Refusal>,
    },
    /// Credentials that cannot be set on a socket: CURVE in a build without it (the message
    /// says how to get one), or a key libzmq refuses.
    #[error(transparent)]
    Credentials(#[from] zsocket::credentials::Error),
    /// A client was given an empty list of brokers.
    #[error("no broker endpoint given")]
    NoBroker,
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

/// Each refusal's sentence ("authentication refused by the broker at EP (PLAIN): ...; check
/// --user and --password-file"), joined by "; and " when several brokers refused.
fn refused_text(refusals: &[zsocket::credentials::Refusal]) -> String {
    if refusals.is_empty() {
        return "authentication refused by the broker".to_owned();
    }
    refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; and ")
}

/// Credentials for `brokers` endpoints from what a caller gave: none (no credentials for
/// any), one (the same for every broker), or one per broker.
pub(crate) fn per_broker(
    credentials: Vec<Credentials>,
    brokers: usize,
) -> Result<Vec<Credentials>, Error> {
    match credentials.len() {
        0 => Ok(vec![Credentials::None; brokers]),
        1 => Ok(vec![credentials[0].clone(); brokers]),
        n if n == brokers => Ok(credentials),
        _ => Err(Error::Credentials(
            zsocket::credentials::Error::Combination(
                "give one Credentials for every broker, or one per endpoint in their order",
            ),
        )),
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

/// "no connection to the broker at tcp://localhost:6999 in 3 tries of 2.5s each: nothing accepted
/// the connection (is a broker running there?)": the broker was never reached, which is not the
/// same failure as a service that does not answer.
pub fn no_connection(brokers: &[String], tries: u32, timeout: Duration) -> String {
    let whom = match brokers {
        [only] => format!("the broker at {only}"),
        several => format!("any broker ({})", several.join(", ")),
    };
    let when = if tries > 1 {
        format!("in {tries} tries of {timeout:?} each")
    } else {
        format!("within {timeout:?}")
    };
    format!(
        "no connection to {whom} {when}: nothing accepted the connection (is a broker running \
         there, and is the endpoint right?)"
    )
}

/// Looks up the host of a `tcp://host:port` endpoint before connecting to it: libzmq resolves it
/// in the background and retries for ever, so a name that does not resolve would otherwise look
/// like a broker that does not answer. Other transports, numeric addresses and endpoints this
/// cannot read are left to libzmq.
pub fn check_host(endpoint: &str) -> Result<(), Error> {
    use std::net::ToSocketAddrs;

    let Some(address) = endpoint.strip_prefix("tcp://") else {
        return Ok(());
    };
    // `tcp://source;host:port` connects from a source address: the host is after the `;`.
    let address = address.rsplit(';').next().unwrap_or(address);
    let Some((host, port)) = address.rsplit_once(':') else {
        return Ok(());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(port) = port.parse::<u16>() else {
        return Ok(());
    };
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    match (host, port)
        .to_socket_addrs()
        .map(|mut addresses| addresses.next().is_some())
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::UnknownHost {
            endpoint: endpoint.to_owned(),
            host: host.to_owned(),
            reason: "no address".to_owned(),
        }),
        Err(error) => Err(Error::UnknownHost {
            endpoint: endpoint.to_owned(),
            host: host.to_owned(),
            reason: error.to_string(),
        }),
    }
}

/// What a `--tag` client adds to "no reply" when replies did come, without the tag: "3 replies
/// arrived without the tag: the service does not echo it".
pub fn untagged(replies: u64) -> String {
    let count = if replies == 1 {
        "1 reply".to_owned()
    } else {
        format!("{replies} replies")
    };
    format!("{count} arrived without the tag: the service does not echo it")
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

    #[test]
    fn no_connection_names_the_brokers_and_the_tries() {
        let timeout = Duration::from_millis(500);
        assert_eq!(
            no_connection(&["tcp://a:1".to_owned()], 3, timeout),
            "no connection to the broker at tcp://a:1 in 3 tries of 500ms each: nothing accepted \
             the connection (is a broker running there, and is the endpoint right?)"
        );
        assert!(no_connection(
            &["tcp://a:1".to_owned(), "tcp://b:2".to_owned()],
            1,
            timeout
        )
        .starts_with("no connection to any broker (tcp://a:1, tcp://b:2) within 500ms"));
    }

    #[test]
    fn a_host_that_does_not_resolve_is_named_and_others_pass() {
        // `.invalid` is reserved never to resolve (RFC 2606).
        let error = check_host("tcp://no-such-host.invalid:5555").unwrap_err();
        assert!(
            matches!(&error, Error::UnknownHost { host, .. } if host == "no-such-host.invalid"),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .starts_with("cannot connect to tcp://no-such-host.invalid:5555: host no-such-host.invalid does not resolve"));
        for fine in [
            "tcp://127.0.0.1:5555",
            "tcp://[::1]:5555",
            "tcp://localhost:5555",
            "ipc:///tmp/x.ipc",
            "inproc://x",
            "tcp://127.0.0.1;127.0.0.1:5555",
        ] {
            assert!(check_host(fine).is_ok(), "{fine}");
        }
    }
}
