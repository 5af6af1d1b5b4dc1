//! The synchronous client: one request at a time on a REQ socket, with spec 7's recommended
//! recovery: wait for the reply only up to a timeout instead of blocking, and on a timeout close
//! the socket, open a new one and resend; after the last try, report failure.
//!
//! [`Client`] is a thin driver: the rules (timeout, tries, when to take a new socket, what counts
//! as the reply) are those of the sans-IO [`crate::core::SyncCore`], and this module only sends,
//! receives, reopens the REQ socket and reads the clock.
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

use std::time::Instant;

use log::{debug, log_enabled, Level};
use mdp::{dump, mmi, Frames, ServiceName};

pub use crate::core::sync_core::ClientConfig;
use crate::core::{SyncAction, SyncCore};
use crate::Error;

/// A synchronous MDP client: [`Client::send`] returns the reply or an error. See the
/// [crate docs](crate) and the [module docs](self).
pub struct Client {
    context: zmq::Context,
    endpoint: String,
    socket: zmq::Socket,
    core: SyncCore,
    /// The core's actions, executed and emptied after each call into the core.
    actions: Vec<SyncAction>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("config", self.core.config())
            .field("resends", &self.core.resends())
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
        let socket = zsocket::connect(context, zmq::REQ, endpoint)?;
        Ok(Client {
            context: context.clone(),
            endpoint: endpoint.to_owned(),
            socket,
            core: SyncCore::new(config),
            actions: Vec::with_capacity(4),
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
        let body: Frames = body
            .iter()
            .map(|frame| zmq::Message::from(frame.as_ref()))
            .collect();
        self.core
            .start(Instant::now(), service, body, &mut self.actions);
        loop {
            if let Some(result) = self.execute()? {
                return result;
            }
            let received =
                zsocket::recv_until(&self.socket, self.core.next_deadline(), Instant::now())?;
            // Read after the wait: it is what the core compares with the deadline.
            let now = Instant::now();
            match received {
                Some(frames) => {
                    if log_enabled!(Level::Debug) {
                        debug!("broker -> client: {}", dump::Message(&frames));
                    }
                    self.core.handle(now, frames, &mut self.actions);
                }
                // The timeout, or a signal that cut the wait short (then the core waits on).
                None => self.core.tick(now, &mut self.actions),
            }
        }
    }

    /// How many times a request was sent again after a try timed out, over the client's life;
    /// compare it before and after [`Client::send`] to know whether that request was resent.
    pub fn resends(&self) -> u64 {
        self.core.resends()
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

    /// Does what the core asked, in order; the request's result once the core says it is done.
    fn execute(&mut self) -> Result<Option<Result<Frames, Error>>, Error> {
        let mut done = None;
        for action in self.actions.drain(..) {
            match action {
                SyncAction::Send(frames) => {
                    if log_enabled!(Level::Debug) {
                        debug!("client -> broker: {}", dump::Message(&frames));
                    }
                    zsocket::send(&self.socket, frames, 0).map_err(zsocket::Error::from)?;
                }
                // The old socket is dropped, and so closed (linger 0), as it is replaced.
                SyncAction::Reopen => {
                    self.socket = zsocket::connect(&self.context, zmq::REQ, &self.endpoint)?;
                }
                SyncAction::Done(result) => done = Some(result),
            }
        }
        Ok(done)
    }
}
