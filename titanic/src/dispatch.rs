//! The dispatcher: stored requests go to their services, as an MDP client of the broker, and
//! the replies go into the store.
//!
//! # Rules
//! * **Each service on its own.** Every service has its own queue and its own lanes (threads,
//!   each with its own client socket), so a service that is slow, or has no worker at all, holds
//!   up only its own requests.
//! * **Ask first.** Before a service's first request goes out, and again after a try of it went
//!   unanswered, one lane asks the broker's `mmi.service` whether the service has a worker. While
//!   it has none, nothing is sent (the broker would only queue it, and a request queued at a
//!   broker is lost with the broker); the question is asked again after a backoff that doubles up
//!   to a maximum.
//! * **One try out per request.** A request is in one lane at a time. A lane waits for the reply up
//!   to the try timeout; then it closes its socket (a late reply goes nowhere), and the request
//!   waits a backoff of its own before its next try. A try abandoned that way may still have run:
//!   a request can run twice, never be answered twice (the store keeps the first reply).
//! * **Exact replies.** An MDP/0.1 reply carries no request id, and Titanic must file each reply
//!   under the right request, so a lane has one request out at a time on its own REQ socket
//!   (`client::Client` with one try): the reply on that socket is the reply to that request. (The
//!   asynchronous client's by-service matching could swap the replies of two requests in flight
//!   to the same service.) Lanes give the parallelism.
//! * **Expiry.** A request past its time to live is dropped from the queues; the store's sweep
//!   deletes it.
//!
//! The queue's rules are in [`ServiceQueue`], which is given the time and tested in virtual time;
//! the lanes are its driver.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use client::{Client, ClientConfig, ServiceName};
use log::{debug, info, warn};
use zsocket::limit::LogLimit;

use crate::id::RequestId;
use crate::service::unix_ms;
use crate::store::{PendingRequest, Store};

/// The dispatcher's settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Tries out at once per service (lanes). Default 4.
    pub lanes: usize,
    /// How long a try waits for the service's reply. Default 30 s.
    pub try_timeout: Duration,
    /// How long `mmi.service` may take to answer. Default 2 s.
    pub check_timeout: Duration,
    /// The first backoff, after an unanswered try or a service without a worker. Default 100 ms.
    pub backoff_initial: Duration,
    /// The longest backoff. Default 10 s.
    pub backoff_max: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            lanes: 4,
            try_timeout: Duration::from_secs(30),
            check_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

impl DispatchConfig {
    /// `initial x 2^failures`, at most `max`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// One request in a service's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: RequestId,
    pub expires_ms: u64,
    /// Not sent before this (after an unanswered try).
    pub not_before: Option<Instant>,
    /// Tries that went unanswered since this process has it.
    pub failures: u32,
}

/// Whether the service has a worker, as far as the queue knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Not asked yet, or a try went unanswered since: ask before sending.
    Unknown,
    /// A lane is asking `mmi.service`.
    Checking,
    /// `mmi.service` said 200, and no try has gone unanswered since.
    Present,
    /// `mmi.service` said 404 (or did not answer): ask again at `recheck_at`.
    Absent { recheck_at: Instant },
}

/// What a lane should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Ask `mmi.service` about the service, then call [`ServiceQueue::checked`].
    Check,
    /// Send this request, then call [`ServiceQueue::answered`] or [`ServiceQueue::unanswered`].
    Send(Entry),
    /// Nothing to do before this time (`None`: until something changes).
    Wait(Option<Instant>),
}

/// A service's queue and what is known of the service: the dispatcher's rules, without threads,
/// sockets or clocks. See the [module docs](self).
#[derive(Debug)]
pub struct ServiceQueue {
    config: DispatchConfig,
    waiting: VecDeque<Entry>,
    out: usize,
    presence: Presence,
    /// Checks in a row that found no worker: the exponent of the next recheck's backoff.
    absent_checks: u32,
}

impl ServiceQueue {
    pub fn new(config: DispatchConfig) -> ServiceQueue {
        ServiceQueue {
            config,
            waiting: VecDeque::new(),
            out: 0,
            presence: Presence::Unknown,
            absent_checks: 0,
        }
    }

    pub fn presence(&self) -> Presence {
        self.presence
    }

    /// Requests waiting (not out).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Tries out now.
    pub fn out(&self) -> usize {
        self.out
    }

    /// A new request for the service.
    pub fn add(&mut self, id: RequestId, expires_ms: u64) {
        self.waiting.push_back(Entry {
            id,
            expires_ms,
            not_before: None,
            failures: 0,
        });
    }

    /// What a free lane should do at `now` (`now_ms` on the store's clock, for expiry).
    pub fn next(&mut self, now: Instant, now_ms: u64) -> Next {
        self.waiting.retain(|entry| entry.expires_ms > now_ms);
        if self.waiting.is_empty() {
            return Next::Wait(None);
        }
        match self.presence {
            Presence::Unknown => {
                self.presence = Presence::Checking;
                return Next::Check;
            }
            Presence::Absent { recheck_at, .. } if now >= recheck_at => {
                self.presence = Presence::Checking;
                return Next::Check;
            }
            Presence::Absent { recheck_at, .. } => return Next::Wait(Some(recheck_at)),
            Presence::Checking => return Next::Wait(None),
            Presence::Present => {}
        }
        if self.out >= self.config.lanes {
            return Next::Wait(None);
        }
        let ready = self
            .waiting
            .iter()
            .position(|entry| entry.not_before.is_none_or(|at| at <= now));
        match ready.and_then(|index| self.waiting.remove(index)) {
            Some(entry) => {
                self.out += 1;
                Next::Send(entry)
            }
            None => Next::Wait(
                self.waiting
                    .iter()
                    .filter_map(|entry| entry.not_before)
                    .min(),
            ),
        }
    }

    /// The answer of `mmi.service`: true for 200.
    pub fn checked(&mut self, now: Instant, present: bool) {
        self.presence = if present {
            self.absent_checks = 0;
            Presence::Present
        } else {
            let recheck_at = now + self.config.backoff(self.absent_checks);
            self.absent_checks += 1;
            Presence::Absent { recheck_at }
        };
    }

    /// A try was answered (or its request turned out to be gone): it is out no more.
    pub fn answered(&mut self) {
        self.out = self.out.saturating_sub(1);
    }

    /// A try went unanswered: the request waits its backoff, and the service is asked about again
    /// before the next send.
    pub fn unanswered(&mut self, now: Instant, mut entry: Entry) {
        self.out = self.out.saturating_sub(1);
        entry.not_before = Some(now + self.config.backoff(entry.failures));
        entry.failures += 1;
        self.waiting.push_back(entry);
        if self.presence == Presence::Present {
            self.presence = Presence::Unknown;
        }
    }
}

/// Counters of what the dispatcher did.
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// Tries sent to services.
    pub sent: AtomicU64,
    /// Replies stored.
    pub answered: AtomicU64,
    /// Tries that went unanswered within the try timeout.
    pub unanswered: AtomicU64,
    /// Replies that came for a request that was no longer pending (closed, expired).
    pub late: AtomicU64,
}

/// One service's queue with what its lanes wait on.
struct Shared {
    queue: Mutex<ServiceQueue>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ServiceQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The dispatcher: a queue and lanes per service, created when the service's first request comes.
pub struct Dispatcher {
    context: zmq::Context,
    endpoint: String,
    config: DispatchConfig,
    store: Arc<dyn Store>,
    services: Mutex<HashMap<Vec<u8>, Arc<Shared>>>,
    stopping: Arc<AtomicBool>,
    stats: Arc<DispatchStats>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("endpoint", &self.endpoint)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    pub fn new(
        context: &zmq::Context,
        endpoint: &str,
        config: DispatchConfig,
        store: Arc<dyn Store>,
    ) -> Dispatcher {
        Dispatcher {
            context: context.clone(),
            endpoint: endpoint.to_owned(),
            config,
            store,
            services: Mutex::new(HashMap::new()),
            stopping: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(DispatchStats::default()),
        }
    }

    pub fn stats(&self) -> &DispatchStats {
        &self.stats
    }

    /// Queues a stored request for its service, starting the service's lanes if it is new.
    pub fn add(&self, request: PendingRequest) {
        let shared = {
            let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
            match services.get(&request.service) {
                Some(shared) => Arc::clone(shared),
                None => {
                    let shared = Arc::new(Shared {
                        queue: Mutex::new(ServiceQueue::new(self.config.clone())),
                        changed: Condvar::new(),
                    });
                    services.insert(request.service.clone(), Arc::clone(&shared));
                    self.start_lanes(&request.service, &shared);
                    shared
                }
            }
        };
        shared.lock().add(request.id, request.expires_ms);
        shared.changed.notify_one();
    }

    /// Lanes stop after what they are doing now.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        for shared in services.values() {
            shared.changed.notify_all();
        }
    }

    fn start_lanes(&self, service: &[u8], shared: &Arc<Shared>) {
        let Ok(name) = ServiceName::new(service) else {
            warn!("a stored request names an invalid service; it is not dispatched");
            return;
        };
        info!(
            "dispatching to service {name} over {} lanes",
            self.config.lanes
        );
        for number in 0..self.config.lanes.max(1) {
            let lane = Lane {
                service: name.clone(),
                shared: Arc::clone(shared),
                store: Arc::clone(&self.store),
                stopping: Arc::clone(&self.stopping),
                stats: Arc::clone(&self.stats),
                context: self.context.clone(),
                endpoint: self.endpoint.clone(),
                config: self.config.clone(),
                warnings: LogLimit::default(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("titanic-lane-{number}"))
                .spawn(move || lane.run());
            if let Err(error) = spawned {
                warn!("cannot start a dispatch lane for {name}: {error}");
            }
        }
    }
}

/// One lane of a service: one try out at a time on its own client socket.
struct Lane {
    service: ServiceName,
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    stopping: Arc<AtomicBool>,
    stats: Arc<DispatchStats>,
    context: zmq::Context,
    endpoint: String,
    config: DispatchConfig,
    warnings: LogLimit,
}

/// The longest a lane sleeps without looking at the stop flag.
const LANE_NAP: Duration = Duration::from_millis(500);

impl Lane {
    fn run(mut self) {
        let one_try = |timeout| ClientConfig {
            timeout,
            retries: 1,
        };
        let clients = Client::with_context(
            &self.context,
            &self.endpoint,
            one_try(self.config.try_timeout),
        )
        .and_then(|sender| {
            Client::with_context(
                &self.context,
                &self.endpoint,
                one_try(self.config.check_timeout),
            )
            .map(|checker| (sender, checker))
        });
        let (mut sender, mut checker) = match clients {
            Ok(clients) => clients,
            Err(error) => {
                warn!("a dispatch lane for {} cannot start: {error}", self.service);
                return;
            }
        };
        while let Some(next) = self.next() {
            match next {
                Next::Check => {
                    let present = match checker.has_service(&self.service) {
                        Ok(present) => present,
                        Err(error) => {
                            self.warn(&format!("mmi.service for {}: {error}", self.service));
                            false
                        }
                    };
                    if !present {
                        debug!("service {} has no worker yet", self.service);
                    }
                    self.shared.lock().checked(Instant::now(), present);
                    self.shared.changed.notify_all();
                }
                Next::Send(entry) => self.send(&mut sender, entry),
                Next::Wait(_) => {}
            }
        }
    }

    /// Waits until there is something to do; `None` once the dispatcher stops.
    fn next(&self) -> Option<Next> {
        let mut queue = self.shared.lock();
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return None;
            }
            let now = Instant::now();
            match queue.next(now, unix_ms(SystemTime::now())) {
                Next::Wait(until) => {
                    let nap = until.map_or(LANE_NAP, |at| at.saturating_duration_since(now));
                    queue = self
                        .shared
                        .changed
                        .wait_timeout(queue, nap.min(LANE_NAP))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                next => return Some(next),
            }
        }
    }

    fn send(&mut self, sender: &mut Client, entry: Entry) {
        let body = match self.store.body(&entry.id) {
            Ok(Some(body)) => body,
            // Closed or expired meanwhile: nothing to send.
            Ok(None) => {
                self.shared.lock().answered();
                self.shared.changed.notify_one();
                return;
            }
            Err(error) => {
                self.warn(&format!("cannot read request {}: {error}", entry.id));
                self.shared.lock().unanswered(Instant::now(), entry);
                return;
            }
        };
        if let Err(error) = self.store.record_attempt(&entry.id) {
            self.warn(&format!("cannot count a try of {}: {error}", entry.id));
        }
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        match sender.send(&self.service, &body) {
            Ok(reply) => {
                let frames: Vec<&[u8]> = reply.iter().map(|frame| &frame[..]).collect();
                match self.store.complete(&entry.id, &frames) {
                    Ok(true) => {
                        self.stats.answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {
                        self.stats.late.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        self.warn(&format!("cannot store the reply to {}: {error}", entry.id));
                        self.shared.lock().unanswered(Instant::now(), entry);
                        self.shared.changed.notify_one();
                        return;
                    }
                }
                self.shared.lock().answered();
                self.shared.changed.notify_one();
            }
            Err(error) => {
                self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
                debug!("try of {} to {}: {error}", entry.id, self.service);
                self.shared.lock().unanswered(Instant::now(), entry);
                self.shared.changed.notify_all();
            }
        }
    }

    fn warn(&mut self, line: &str) {
        if let Some(held_back) = self.warnings.allow(Instant::now()) {
            if held_back > 0 {
                warn!("{line} ({held_back} more warnings held back)");
            } else {
                warn!("{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
