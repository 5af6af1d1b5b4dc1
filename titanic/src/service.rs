//! The three services of spec 9, `titanic.request`, `titanic.reply` and `titanic.close`, as MDP
//! workers of the broker.
//!
//! Each is answered by [`Services::handle`], which reads the request frames, asks the store and
//! returns the reply frames: no socket, and the time is given, so it is tested as it is. The
//! workers around it ([`spawn`]) are `worker::Worker`s, one conversation each with the broker:
//! the broker gives a worker one request at a time, so `titanic.request` is served over several
//! conversations at once, and submissions that arrive together wait for the same commit (see
//! [`crate::sqlite`]'s group commit) instead of one sync each.
//!
//! | service | request frames | reply frames |
//! |---|---|---|
//! | `titanic.request` | service, body... (2 or more) | `200`, id; `400` (malformed, or a service Titanic does not serve); `500` (store full or failing) |
//! | `titanic.reply` | id | `200`, reply body...; `300` (pending); `400` (unknown, closed or expired id, or malformed); `500` (store failing) |
//! | `titanic.close` | id | `200` (also for an unknown id); `400` (not one frame); `500` (store failing) |
//!
//! A request older than the time to live is given up: `titanic.reply` answers 400 for it, as for
//! one never stored. Not 500: spec 9's 500 tells the client to retry later, and no later will
//! bring that reply.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{info, warn};
use mdp::Frames;
use worker::{ServiceName, StopHandle, Worker, WorkerConfig};
use zsocket::limit::LogLimit;

use crate::id::RequestId;
use crate::patterns::ServicePatterns;
use crate::store::{PendingRequest, ReplyState, Store, StoreError, Submitted};

/// Spec 9's status codes, as the first frame of every reply.
pub mod status {
    pub const OK: &[u8] = b"200";
    pub const PENDING: &[u8] = b"300";
    pub const UNKNOWN: &[u8] = b"400";
    pub const ERROR: &[u8] = b"500";
}

/// The names Titanic registers with the broker.
pub const REQUEST: &str = "titanic.request";
pub const REPLY: &str = "titanic.reply";
pub const CLOSE: &str = "titanic.close";

/// Milliseconds since the Unix epoch, as the store keeps times.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What the three services share: the store, the rules, and where a newly stored request goes
/// (the dispatcher).
pub struct Services {
    pub store: Arc<dyn Store>,
    pub allowed: ServicePatterns,
    pub ttl_ms: u64,
    /// Called with each request once it is durable.
    pub on_stored: Box<dyn Fn(PendingRequest) + Send + Sync>,
    store_errors: Mutex<LogLimit>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("allowed", &self.allowed)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

/// Which of the three services a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Reply,
    Close,
}

impl Kind {
    pub fn service_name(self) -> &'static str {
        match self {
            Kind::Request => REQUEST,
            Kind::Reply => REPLY,
            Kind::Close => CLOSE,
        }
    }
}

fn reply(frames: Vec<Vec<u8>>) -> Frames {
    frames.into_iter().map(zmq::Message::from).collect()
}

fn status_only(status: &[u8]) -> Frames {
    vec![zmq::Message::from(status)]
}

impl Services {
    pub fn new(
        store: Arc<dyn Store>,
        allowed: ServicePatterns,
        ttl_ms: u64,
        on_stored: Box<dyn Fn(PendingRequest) + Send + Sync>,
    ) -> Services {
        Services {
            store,
            allowed,
            ttl_ms,
            on_stored,
            store_errors: Mutex::new(LogLimit::default()),
        }
    }

    /// The reply to one request to service `kind`, at `now_ms`.
    pub fn handle(&self, kind: Kind, body: &[zmq::Message], now_ms: u64) -> Frames {
        match kind {
            Kind::Request => self.request(body, now_ms),
            Kind::Reply => self.reply(body, now_ms),
            Kind::Close => self.close(body),
        }
    }

    fn request(&self, body: &[zmq::Message], now_ms: u64) -> Frames {
        let [service, frames @ ..] = body else {
            return status_only(status::UNKNOWN);
        };
        if frames.is_empty() || ServiceName::new(service).is_err() || !self.allowed.allows(service)
        {
            return status_only(status::UNKNOWN);
        }
        let frames: Vec<&[u8]> = frames.iter().map(|frame| &frame[..]).collect();
        match self.store.submit(service, &frames, now_ms, self.ttl_ms) {
            Ok(Submitted::Stored(id)) => {
                (self.on_stored)(PendingRequest {
                    id,
                    service: service.to_vec(),
                    expires_ms: now_ms.saturating_add(self.ttl_ms),
                    attempts: 0,
                });
                reply(vec![status::OK.to_vec(), id.to_hex().into_bytes()])
            }
            Ok(Submitted::Full) => {
                if let Some(held_back) = self.log_allowed() {
                    warn!(
                        "the store is full (--max-stored): refusing new requests with 500 \
                         ({held_back} more store warnings since the last line)"
                    );
                }
                status_only(status::ERROR)
            }
            Err(error) => self.store_failed(&error),
        }
    }

    fn reply(&self, body: &[zmq::Message], now_ms: u64) -> Frames {
        let [id] = body else {
            return status_only(status::UNKNOWN);
        };
        let Some(id) = RequestId::parse(id) else {
            return status_only(status::UNKNOWN);
        };
        match self.store.reply(&id, now_ms) {
            Ok(ReplyState::Done(frames)) => {
                let mut out = Vec::with_capacity(frames.len() + 1);
                out.push(status::OK.to_vec());
                out.extend(frames);
                reply(out)
            }
            Ok(ReplyState::Pending) => status_only(status::PENDING),
            Ok(ReplyState::Unknown) => status_only(status::UNKNOWN),
            Err(error) => self.store_failed(&error),
        }
    }

    fn close(&self, body: &[zmq::Message]) -> Frames {
        let [id] = body else {
            return status_only(status::UNKNOWN);
        };
        // Spec 9: 200 for an id that is not known, and one that is not even well-formed is not.
        let Some(id) = RequestId::parse(id) else {
            return status_only(status::OK);
        };
        match self.store.close(&id) {
            Ok(()) => status_only(status::OK),
            Err(error) => self.store_failed(&error),
        }
    }

    fn log_allowed(&self) -> Option<u64> {
        self.store_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(Instant::now())
    }

    fn store_failed(&self, error: &StoreError) -> Frames {
        if let Some(held_back) = self.log_allowed() {
            warn!(
                "the store failed, answering 500: {error} \
                 ({held_back} more store warnings since the last line)"
            );
        }
        status_only(status::ERROR)
    }
}

/// How many conversations with the broker each service gets.
#[derive(Debug, Clone, Copy)]
pub struct Conversations {
    pub request: usize,
    pub reply: usize,
    pub close: usize,
}

/// The running service workers.
#[derive(Debug)]
pub struct ServiceWorkers {
    stops: Vec<StopHandle>,
    threads: Vec<JoinHandle<()>>,
}

impl ServiceWorkers {
    /// Stops every worker (each sends DISCONNECT) and waits for them.
    pub fn stop(self) {
        for stop in &self.stops {
            stop.stop();
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Connects `conversations` workers per service to the broker at `endpoint`, each on a thread of
/// its own, serving with `services`.
pub fn spawn(
    context: &zmq::Context,
    endpoint: &str,
    credentials: &zsocket::credentials::Credentials,
    config: &WorkerConfig,
    conversations: Conversations,
    services: Arc<Services>,
) -> Result<ServiceWorkers, worker::Error> {
    let mut workers = ServiceWorkers {
        stops: Vec::new(),
        threads: Vec::new(),
    };
    for (kind, count) in [
        (Kind::Request, conversations.request),
        (Kind::Reply, conversations.reply),
        (Kind::Close, conversations.close),
    ] {
        for _ in 0..count.max(1) {
            let name = ServiceName::new(kind.service_name().as_bytes()).map_err(|_| {
                worker::Error::Socket(zsocket::Error::new("name a service", zmq::Error::EINVAL))
            })?;
            let mut worker = Worker::builder(name)
                .context(context)
                .endpoint(endpoint)
                .config(config.clone())
                .credentials(credentials.clone())
                .build()?;
            workers.stops.push(worker.stop_handle());
            let services = Arc::clone(&services);
            let thread = std::thread::Builder::new()
                .name(kind.service_name().into())
                .spawn(move || serve(&mut worker, kind, &services))
                .map_err(|source| worker::Error::Setup {
                    action: "start a service thread",
                    source,
                })?;
            workers.threads.push(thread);
        }
    }
    info!(
        "serving {REQUEST} ({} conversations), {REPLY} ({}), {CLOSE} ({}) at {endpoint}",
        conversations.request.max(1),
        conversations.reply.max(1),
        conversations.close.max(1)
    );
    Ok(workers)
}

fn serve(worker: &mut Worker, kind: Kind, services: &Services) {
    let result = worker.serve(|body| services.handle(kind, &body, unix_ms(SystemTime::now())));
    if let Err(error) = result {
        warn!("the {} worker stopped: {error}", kind.service_name());
    }
}

#[cfg(test)]
mod tests;
