//! A client of Titanic (rfc.zeromq.org spec 9): requests handed to a durable store, replies
//! collected later, across crashes and restarts of anything in between.
//!
//! Three steps, each an ordinary MDP request (over [`Client`], with its timeout and retries):
//! 1. **submit**: `titanic.request` with the service name and the body. `200` and an id come back
//!    once Titanic has the request on disk.
//! 2. **wait**: `titanic.reply` with the id, again and again, with a delay that doubles from
//!    [`TitanicConfig::poll_initial`] to [`TitanicConfig::poll_max`], until it answers `200` and
//!    the reply. `300` (not answered yet) and `500` (Titanic's store failed: retry later) mean
//!    wait on; `400` means the id is unknown (never stored, closed, or expired) and ends it.
//! 3. **close**: `titanic.close`, so that Titanic may forget the request and its reply.
//!
//! [`TitanicClient::request`] does all three. The id is all a client needs to resume after its own
//! crash: keep it, and call [`TitanicClient::wait`] and [`TitanicClient::close`] with it later.
//!
//! Spec 9 has no idempotency key: if the `200` of a submission is lost (Titanic crashed after
//! storing, the broker died on the way back), the client cannot tell whether the request was
//! stored, and submitting it again may run it twice.

use std::time::{Duration, Instant};

use mdp::dump::Printable;
use mdp::{Frames, ServiceName};

use crate::{Client, ClientConfig};

/// Spec 9's service for step 1, submit: body frames are the service name, then the request
/// body; the answer is `200` and the request id (32 hex digits).
pub const REQUEST: &str = "titanic.request";
/// Spec 9's service for step 2, wait: the body is the request id; the answer is `200` and the
/// reply, `300` (pending), `400` (unknown id) or `500` (store failing).
pub const REPLY: &str = "titanic.reply";
/// Spec 9's service for step 3, close: the body is the request id; the answer is `200`, also for an
/// id Titanic does not know.
pub const CLOSE: &str = "titanic.close";

/// Polling settings.
#[derive(Debug, Clone)]
pub struct TitanicConfig {
    /// Each `titanic.*` request's timeout and tries.
    pub client: ClientConfig,
    /// The first wait between two polls of `titanic.reply`. Default 50 ms.
    pub poll_initial: Duration,
    /// The longest wait between two polls. Default 2 s.
    pub poll_max: Duration,
}

impl Default for TitanicConfig {
    fn default() -> Self {
        TitanicConfig {
            client: ClientConfig::default(),
            poll_initial: Duration::from_millis(50),
            poll_max: Duration::from_secs(2),
        }
    }
}

impl TitanicConfig {
    /// The wait after `previous` (doubled, within the bounds); the first wait for `None`.
    pub fn next_poll_delay(&self, previous: Option<Duration>) -> Duration {
        match previous {
            None => self.poll_initial,
            Some(previous) => previous.saturating_mul(2).min(self.poll_max),
        }
        .max(Duration::from_millis(1))
    }
}

/// What can go wrong with Titanic.
#[derive(Debug, thiserror::Error)]
pub enum TitanicError {
    /// The MDP request itself failed (no reply from the broker or Titanic within the tries).
    #[error(transparent)]
    Client(#[from] crate::Error),
    /// Titanic refused the request: `400` to a submission (a malformed request, or a service it
    /// does not serve) or `500` (its store is full or failing: retry later).
    #[error("{service} answered {status}")]
    Refused {
        /// The `titanic.*` service that refused ([`REQUEST`] or [`CLOSE`]).
        service: &'static str,
        /// The status it answered, `400` or `500`.
        status: Printable,
    },
    /// `titanic.reply` answered 400: the id was never stored, or closed, or expired.
    #[error("Titanic does not know request {0}: never stored, closed, or expired")]
    Unknown(String),
    /// Titanic answered something that spec 9 does not allow.
    #[error("{service} answered {reply}, which is not a spec 9 reply")]
    Malformed {
        /// The `titanic.*` service that answered.
        service: &'static str,
        /// Its reply's first frame, truncated for printing.
        reply: Printable,
    },
    /// [`TitanicClient::wait_until`]'s deadline passed with the reply still pending.
    #[error("request {0} is still pending")]
    StillPending(String),
}

/// What one poll of `titanic.reply` found.
#[derive(Debug)]
pub enum Poll {
    /// `200`: the reply body.
    Done(Frames),
    /// `300`, or `500` (retry later): not yet.
    Pending,
    /// `400`.
    Unknown,
}

/// A Titanic client. See the [module docs](self).
#[derive(Debug)]
pub struct TitanicClient {
    client: Client,
    config: TitanicConfig,
    /// Polls of `titanic.reply` made, over the client's life.
    polls: u64,
}

fn service(name: &'static str) -> Result<ServiceName, TitanicError> {
    // The three names are valid constants: ServiceName refuses only empty or over-long ones.
    Ok(ServiceName::new(name.as_bytes()).map_err(crate::Error::from)?)
}

fn first(reply: &Frames) -> &[u8] {
    reply.first().map(|frame| &frame[..]).unwrap_or_default()
}

impl TitanicClient {
    /// Connects to the broker that Titanic serves (see [`Client::connect`]).
    pub fn connect(endpoint: &str, config: TitanicConfig) -> Result<TitanicClient, TitanicError> {
        TitanicClient::with_context(&zmq::Context::new(), endpoint, config)
    }

    /// The same, with sockets made by the caller's ZeroMQ context.
    pub fn with_context(
        context: &zmq::Context,
        endpoint: &str,
        config: TitanicConfig,
    ) -> Result<TitanicClient, TitanicError> {
        let client = Client::with_context(context, endpoint, config.client.clone())?;
        Ok(TitanicClient {
            client,
            config,
            polls: 0,
        })
    }

    /// Titanic's requests through a [`Client`] made by the caller (with credentials, say:
    /// [`Client::with_credentials`]).
    pub fn with_client(client: Client, config: TitanicConfig) -> TitanicClient {
        TitanicClient {
            client,
            config,
            polls: 0,
        }
    }

    /// How many times `titanic.reply` was asked, over the client's life.
    pub fn polls(&self) -> u64 {
        self.polls
    }

    /// How many `titanic.*` requests the underlying client sent again after a timeout.
    pub fn resends(&self) -> u64 {
        self.client.resends()
    }

    /// Hands a request for `service` to Titanic; the id once it is stored.
    pub fn submit<B: AsRef<[u8]>>(
        &mut self,
        target: &ServiceName,
        body: &[B],
    ) -> Result<String, TitanicError> {
        let mut frames: Vec<&[u8]> = Vec::with_capacity(body.len() + 1);
        frames.push(target.as_bytes());
        frames.extend(body.iter().map(AsRef::as_ref));
        if body.is_empty() {
            // Spec 9 wants a body of one frame or more: an empty body is one empty frame.
            frames.push(b"");
        }
        let reply = self.client.send(&service(REQUEST)?, &frames)?;
        match (first(&reply), reply.get(1)) {
            (b"200", Some(id)) if id.len() == 32 && id.iter().all(u8::is_ascii_hexdigit) => {
                Ok(String::from_utf8_lossy(id).into_owned())
            }
            (b"400" | b"500", _) => Err(TitanicError::Refused {
                service: REQUEST,
                status: Printable::truncated(first(&reply)),
            }),
            _ => Err(malformed(REQUEST, &reply)),
        }
    }

    /// Asks `titanic.reply` once.
    pub fn poll(&mut self, id: &str) -> Result<Poll, TitanicError> {
        self.polls += 1;
        let mut reply = self.client.send(&service(REPLY)?, &[id.as_bytes()])?;
        match first(&reply) {
            b"200" => {
                reply.remove(0);
                Ok(Poll::Done(reply))
            }
            b"300" | b"500" if reply.len() == 1 => Ok(Poll::Pending),
            b"400" if reply.len() == 1 => Ok(Poll::Unknown),
            _ => Err(malformed(REPLY, &reply)),
        }
    }

    /// Polls until the reply is there, with backoff; [`TitanicError::Unknown`] for a 400.
    pub fn wait(&mut self, id: &str) -> Result<Frames, TitanicError> {
        self.wait_until(id, None)
    }

    /// [`TitanicClient::wait`], giving up with [`TitanicError::StillPending`] at `deadline`.
    pub fn wait_until(
        &mut self,
        id: &str,
        deadline: Option<Instant>,
    ) -> Result<Frames, TitanicError> {
        let mut delay = None;
        loop {
            match self.poll(id)? {
                Poll::Done(reply) => return Ok(reply),
                Poll::Unknown => return Err(TitanicError::Unknown(id.to_owned())),
                Poll::Pending => {}
            }
            let next = self.config.next_poll_delay(delay);
            delay = Some(next);
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(TitanicError::StillPending(id.to_owned()));
                }
                std::thread::sleep(next.min(left));
            } else {
                std::thread::sleep(next);
            }
        }
    }

    /// Tells Titanic it may forget `id` and its reply (200 also for an unknown id).
    pub fn close(&mut self, id: &str) -> Result<(), TitanicError> {
        let reply = self.client.send(&service(CLOSE)?, &[id.as_bytes()])?;
        match first(&reply) {
            b"200" => Ok(()),
            b"400" | b"500" => Err(TitanicError::Refused {
                service: CLOSE,
                status: Printable::truncated(first(&reply)),
            }),
            _ => Err(malformed(CLOSE, &reply)),
        }
    }

    /// Submit, wait for the reply, close: a request that survives a crash of anything but this
    /// client while it waits.
    pub fn request<B: AsRef<[u8]>>(
        &mut self,
        target: &ServiceName,
        body: &[B],
    ) -> Result<Frames, TitanicError> {
        let id = self.submit(target, body)?;
        let reply = self.wait(&id)?;
        self.close(&id)?;
        Ok(reply)
    }
}

fn malformed(service: &'static str, reply: &Frames) -> TitanicError {
    TitanicError::Malformed {
        service,
        reply: Printable::truncated(first(reply)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_by_doubling_up_to_the_maximum() {
        let config = TitanicConfig {
            poll_initial: Duration::from_millis(50),
            poll_max: Duration::from_millis(300),
            ..TitanicConfig::default()
        };
        let mut delay = None;
        let mut delays = Vec::new();
        for _ in 0..5 {
            let next = config.next_poll_delay(delay);
            delays.push(next.as_millis());
            delay = Some(next);
        }
        assert_eq!(delays, [50, 100, 200, 300, 300]);
    }
}
