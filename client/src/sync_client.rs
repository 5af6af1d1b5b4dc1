//! The synchronous client: one request at a time on a REQ socket, with spec 7's recommended
//! recovery: poll instead of blocking, and on a timeout close the socket, open a new one and
//! resend; after the last try, report failure.
//!
//! A REQ socket adds the empty delimiter frame to what we send and strips it from what we
//! receive, so the frames handled here start at the protocol header:
//!
//! ```text
//! REQUEST  ["MDPC01"] [service] [body...]      REPLY  ["MDPC01"] [service] [body...]
//! ```
//!
//! Closing the socket after a timeout is not only about a lost broker: a REQ socket that sent a
//! request and got no answer refuses to send again, and a new socket is a new identity at the
//! broker, so a late reply to the abandoned try is dropped by the broker's ROUTER instead of
//! arriving as the answer to the next request.

use std::time::{Duration, Instant};

use log::{debug, log_enabled, warn, Level};
use mdp::{client::Reply, dump, mmi, Frames, ServiceName, CLIENT_HEADER};

use crate::{millis_until, open_socket, recv_rest, Error};

/// Timeout and retries of the synchronous client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long one try waits for the reply. Default 2500 ms, as the guide's mdcliapi.
    pub timeout: Duration,
    /// How many times a request is sent in all before [`Error::NoReply`]; counted as the
    /// guide's mdcliapi counts its `retries`: the default 3 is one send and two resends.
    /// 0 counts as 1.
    pub retries: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_millis(2500),
            retries: 3,
        }
    }
}

/// A synchronous MDP client: [`Client::send`] returns the reply or an error. See the
/// [crate docs](crate) and the [module docs](self).
pub struct Client {
    context: zmq::Context,
    endpoint: String,
    config: ClientConfig,
    socket: zmq::Socket,
    resends: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("config", &self.config)
            .field("resends", &self.resends)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the broker at `endpoint` (e.g. `tcp://localhost:5555`). Returns at once:
    /// ZeroMQ connects in the background, and a request sent before the broker is up waits in
    /// the socket until it is (or until the timeout).
    pub fn connect(endpoint: &str, config: ClientConfig) -> Result<Client, Error> {
        Client::with_context(&zmq::Context::new(), endpoint, config)
    }

    /// The same, with sockets made by the caller's ZeroMQ context.
    pub fn with_context(
        context: &zmq::Context,
        endpoint: &str,
        config: ClientConfig,
    ) -> Result<Client, Error> {
        let socket = open_socket(context, zmq::REQ, endpoint)?;
        Ok(Client {
            context: context.clone(),
            endpoint: endpoint.to_owned(),
            config,
            socket,
            resends: 0,
        })
    }

    /// Sends a request to `service` and returns the reply body. `body` is one frame or more;
    /// an empty slice is sent as one empty frame, since spec 7 requires at least one.
    ///
    /// Errors: [`Error::NoReply`] after the last try timed out; [`Error::InvalidReply`] or
    /// [`Error::WrongService`] if the broker answered something that is not the reply.
    pub fn send<B: AsRef<[u8]>>(
        &mut self,
        service: &ServiceName,
        body: &[B],
    ) -> Result<Frames, Error> {
        let attempts = self.config.retries.max(1);
        for attempt in 1..=attempts {
            if attempt > 1 {
                warn!(
                    "no reply from {service} within {:?}, reconnecting and resending (try {attempt} of {attempts})",
                    self.config.timeout
                );
                self.reopen()?;
                self.resends += 1;
            }
            self.send_request(service, body)?;
            if let Some(frames) = self.wait_for_reply()? {
                let reply = Reply::parse(frames)?;
                if reply.service != *service {
                    return Err(Error::WrongService {
                        asked: service.clone(),
                        replied: reply.service,
                    });
                }
                return Ok(reply.body);
            }
        }
        // The REQ socket still waits for the abandoned reply and would refuse the next send.
        self.reopen()?;
        Err(Error::NoReply {
            service: service.clone(),
            attempts,
            timeout: self.config.timeout,
        })
    }

    /// How many times a request was sent again after a try timed out, over the client's life;
    /// compare it before and after [`Client::send`] to know whether that request was resent.
    pub fn resends(&self) -> u64 {
        self.resends
    }

    /// Asks the broker's `mmi.service` (spec 8) whether `service` has a worker: true for `200`,
    /// false for `404`.
    pub fn has_service(&mut self, service: &ServiceName) -> Result<bool, Error> {
        // A constant, valid name: this cannot fail.
        let mmi_service = ServiceName::new(mmi::SERVICE)?;
        let reply = self.send(&mmi_service, &[service.as_bytes()])?;
        match reply.first().map(|frame| &frame[..]) {
            Some(status) if status == mmi::Status::Found.as_bytes() => Ok(true),
            Some(status) if status == mmi::Status::NotFound.as_bytes() => Ok(false),
            other => Err(Error::UnexpectedMmiReply(mdp::dump::Printable::truncated(
                other.unwrap_or_default(),
            ))),
        }
    }

    fn reopen(&mut self) -> Result<(), Error> {
        self.socket = open_socket(&self.context, zmq::REQ, &self.endpoint)?;
        Ok(())
    }

    fn send_request<B: AsRef<[u8]>>(&self, service: &ServiceName, body: &[B]) -> Result<(), Error> {
        if log_enabled!(Level::Debug) {
            let mut shown: Vec<&[u8]> = vec![CLIENT_HEADER, service.as_bytes()];
            shown.extend(body.iter().map(AsRef::as_ref));
            debug!("client -> broker: {}", dump::Message(&shown));
        }
        let failed = Error::zmq("send the request");
        self.socket
            .send(CLIENT_HEADER, zmq::SNDMORE)
            .map_err(failed)?;
        self.socket
            .send(service.as_bytes(), zmq::SNDMORE)
            .map_err(failed)?;
        match body.split_last() {
            None => self.socket.send(zmq::Message::new(), 0).map_err(failed),
            Some((last, rest)) => {
                for frame in rest {
                    self.socket
                        .send(frame.as_ref(), zmq::SNDMORE)
                        .map_err(failed)?;
                }
                self.socket.send(last.as_ref(), 0).map_err(failed)
            }
        }
    }

    /// The reply frames, or `None` if the timeout passed first.
    fn wait_for_reply(&self) -> Result<Option<Frames>, Error> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match self.socket.poll(zmq::POLLIN, millis_until(deadline, now)) {
                Ok(0) | Err(zmq::Error::EINTR) => continue,
                Ok(_) => break,
                Err(source) => {
                    return Err(Error::Zmq {
                        action: "poll",
                        source,
                    })
                }
            }
        }
        let first = self.socket.recv_msg(0).map_err(Error::zmq("receive"))?;
        let frames = recv_rest(&self.socket, first)?;
        if log_enabled!(Level::Debug) {
            debug!("broker -> client: {}", dump::Message(&frames));
        }
        Ok(Some(frames))
    }
}
