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
//! * **Leases, on a shared store.** When several processes share the store ([`Store::shared`],
//!   PostgreSQL), a lane claims a request's lease before it reads and sends it, and drops the
//!   request if another process holds it; a keeper thread renews the leases of the tries out
//!   every third of the lease, and the lane gives a try up when its lease ends unrenewed (see
//!   [`crate::lease`]), so two processes never have the same request out at once. The keeper also
//!   looks for claimable requests every `poll` (stored by another process, or left by one that
//!   died, once its lease ran out) and queues them here.
//!
//! The queue's rules are in [`ServiceQueue`], which is given the time and tested in virtual time;
//! the lanes are its driver.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use client::{Client, ClientConfig, ServiceName};
use log::{debug, info, warn};
use mdp::client::{Reply, Request};
use mdp::Frames;
use zsocket::credentials::Credentials;
use zsocket::limit::LogLimit;

use crate::id::RequestId;
use crate::lease::Lease;
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
    /// On a shared store: how long a claimed request's lease lasts unrenewed. Default 30 s.
    pub lease: Duration,
    /// On a shared store: how often to look for requests no lease holds. Default 1 s.
    pub poll: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            lanes: 4,
            try_timeout: Duration::from_secs(30),
            check_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
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
    /// Requests dropped as expired, until [`ServiceQueue::take_expired`].
    expired: Vec<RequestId>,
}

impl ServiceQueue {
    pub fn new(config: DispatchConfig) -> ServiceQueue {
        ServiceQueue {
            config,
            waiting: VecDeque::new(),
            out: 0,
            presence: Presence::Unknown,
            absent_checks: 0,
            expired: Vec::new(),
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
        let expired = &mut self.expired;
        self.waiting.retain(|entry| {
            let live = entry.expires_ms > now_ms;
            if !live {
                expired.push(entry.id);
            }
            live
        });
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

    /// The requests dropped as expired since the last call.
    pub fn take_expired(&mut self) -> Vec<RequestId> {
        std::mem::take(&mut self.expired)
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
    /// Claims refused: another process holds the request, or it is no longer pending.
    pub not_claimed: AtomicU64,
    /// Tries given up because their lease ended unrenewed.
    pub lease_lost: AtomicU64,
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
    credentials: Credentials,
    config: DispatchConfig,
    store: Arc<dyn Store>,
    services: Mutex<HashMap<Vec<u8>, Arc<Shared>>>,
    stopping: Arc<AtomicBool>,
    stats: Arc<DispatchStats>,
    leases: Arc<Leases>,
}

/// What the lanes and the keeper share about requests in this process.
#[derive(Debug)]
struct Leases {
    /// This process's name in the store's `lease_owner`.
    owner: String,
    /// Whether the store is shared (leases are taken).
    shared: bool,
    /// Every request queued or out here, with its expiry: a request is queued once.
    known: Mutex<HashMap<RequestId, u64>>,
    /// The leases of the tries out now, which the keeper renews.
    out: Mutex<HashMap<RequestId, Arc<Mutex<Lease>>>>,
}

impl Leases {
    fn forget(&self, id: &RequestId) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// A name for this process in the store: host, process id, and a random part (a restarted
/// process is a new owner).
fn owner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let random = RequestId::random().to_hex();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
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
        credentials: &Credentials,
        config: DispatchConfig,
        store: Arc<dyn Store>,
    ) -> Dispatcher {
        Dispatcher {
            context: context.clone(),
            endpoint: endpoint.to_owned(),
            credentials: credentials.clone(),
            config,
            leases: Arc::new(Leases {
                owner: owner_name(),
                shared: store.shared(),
                known: Mutex::new(HashMap::new()),
                out: Mutex::new(HashMap::new()),
            }),
            store,
            services: Mutex::new(HashMap::new()),
            stopping: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(DispatchStats::default()),
        }
    }

    /// This process's name as a lease owner.
    pub fn owner(&self) -> &str {
        &self.leases.owner
    }

    /// On a shared store, starts the thread that renews the leases of the tries out and queues
    /// the requests no lease holds; nothing on a store of one process.
    pub fn start_keeper(self: &Arc<Self>) {
        if !self.leases.shared {
            return;
        }
        let dispatcher = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("titanic-leases".into())
            .spawn(move || dispatcher.keep());
        if let Err(error) = spawned {
            warn!("cannot start the lease keeper: {error}");
        }
    }

    fn keep(&self) {
        let lease = self.config.lease;
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let renew_every = Lease::renew_every(lease);
        let mut warnings = LogLimit::default();
        let mut next_renewal = Instant::now();
        let mut next_poll = Instant::now();
        while !self.stopping.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_renewal {
                next_renewal = now + renew_every;
                let out: Vec<(RequestId, Arc<Mutex<Lease>>)> = self
                    .leases
                    .out
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|(id, lease)| (*id, Arc::clone(lease)))
                    .collect();
                let ids: Vec<RequestId> = out.iter().map(|(id, _)| *id).collect();
                let asked_at = Instant::now();
                match self.store.renew(
                    &ids,
                    &self.leases.owner,
                    unix_ms(SystemTime::now()),
                    lease_ms,
                ) {
                    Ok(renewed) => {
                        for (id, lease) in &out {
                            if renewed.contains(id) {
                                lease
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .renewed(asked_at);
                            }
                        }
                    }
                    Err(error) => {
                        if warnings.allow(Instant::now()).is_some() {
                            warn!("cannot renew {} leases: {error}", ids.len());
                        }
                    }
                }
            }
            if now >= next_poll {
                next_poll = now + self.config.poll;
                let now_ms = unix_ms(SystemTime::now());
                self.leases
                    .known
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|_, expires_ms| *expires_ms > now_ms);
                match self.store.claimable(now_ms, 1000) {
                    Ok(requests) => {
                        for request in requests {
                            self.add(request);
                        }
                    }
                    Err(error) => {
                        if warnings.allow(Instant::now()).is_some() {
                            warn!("cannot look for requests to dispatch: {error}");
                        }
                    }
                }
            }
            let until = next_renewal.min(next_poll);
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
            );
        }
    }

    pub fn stats(&self) -> &DispatchStats {
        &self.stats
    }

    /// Queues a stored request for its service, starting the service's lanes if it is new. A
    /// request queued or out here already is not queued again.
    pub fn add(&self, request: PendingRequest) {
        {
            let mut known = self
                .leases
                .known
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if known.insert(request.id, request.expires_ms).is_some() {
                return;
            }
        }
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
                leases: Arc::clone(&self.leases),
                context: self.context.clone(),
                endpoint: self.endpoint.clone(),
                credentials: self.credentials.clone(),
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
    leases: Arc<Leases>,
    context: zmq::Context,
    endpoint: String,
    credentials: Credentials,
    config: DispatchConfig,
    warnings: LogLimit,
}

/// How one try ended.
enum Tried {
    Reply(Frames),
    /// No reply within the try timeout.
    TimedOut,
    /// The lease ended unrenewed before the reply came.
    LeaseLost,
}

/// The longest a lane sleeps without looking at the stop flag.
const LANE_NAP: Duration = Duration::from_millis(500);

impl Lane {
    fn run(mut self) {
        let checker = Client::with_credentials(
            &self.context,
            &[&self.endpoint],
            ClientConfig {
                timeout: self.config.check_timeout,
                retries: 1,
            },
            vec![self.credentials.clone()],
        );
        let mut checker = match checker {
            Ok(checker) => checker,
            Err(error) => {
                warn!("a dispatch lane for {} cannot start: {error}", self.service);
                return;
            }
        };
        // The lane's REQ socket to the broker, kept while tries are answered, closed after one
        // that is not (a late reply then goes nowhere).
        let mut socket = None;
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
                Next::Send(entry) => self.send(&mut socket, entry),
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
            let next = queue.next(now, unix_ms(SystemTime::now()));
            for id in queue.take_expired() {
                self.leases.forget(&id);
            }
            match next {
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

    /// The request is done here: answered, gone, or held by another process.
    fn finished(&self, id: &RequestId) {
        self.leases.forget(id);
        self.shared.lock().answered();
        self.shared.changed.notify_one();
    }

    fn retry_later(&self, entry: Entry) {
        self.shared.lock().unanswered(Instant::now(), entry);
        self.shared.changed.notify_all();
    }

    fn send(&mut self, socket: &mut Option<zmq::Socket>, entry: Entry) {
        // The claim: on a shared store the lease, committed; on the embedded one, a try counted.
        let asked_at = Instant::now();
        let lease_ms = u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX);
        let claim = self.store.claim(
            &entry.id,
            &self.leases.owner,
            unix_ms(SystemTime::now()),
            lease_ms,
        );
        match claim {
            Ok(true) => {}
            Ok(false) => {
                self.stats.not_claimed.fetch_add(1, Ordering::Relaxed);
                debug!("request {} is held elsewhere or done", entry.id);
                self.finished(&entry.id);
                return;
            }
            Err(error) => {
                self.warn(&format!("cannot claim request {}: {error}", entry.id));
                self.retry_later(entry);
                return;
            }
        }
        let lease = self.leases.shared.then(|| {
            let lease = Arc::new(Mutex::new(Lease::taken(asked_at, self.config.lease)));
            self.leases
                .out
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(entry.id, Arc::clone(&lease));
            lease
        });
        let id = entry.id;
        self.send_claimed(socket, entry, lease.as_deref());
        if lease.is_some() {
            self.leases
                .out
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        }
    }

    fn send_claimed(
        &mut self,
        socket: &mut Option<zmq::Socket>,
        entry: Entry,
        lease: Option<&Mutex<Lease>>,
    ) {
        let body = match self.store.body(&entry.id) {
            Ok(Some(body)) => body,
            // Closed or expired meanwhile: nothing to send.
            Ok(None) => {
                self.finished(&entry.id);
                return;
            }
            Err(error) => {
                self.warn(&format!("cannot read request {}: {error}", entry.id));
                self.retry_later(entry);
                return;
            }
        };
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let tried = self.try_once(socket, &body, lease);
        match tried {
            Ok(Tried::Reply(reply)) => {
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
                        self.retry_later(entry);
                        return;
                    }
                }
                self.finished(&entry.id);
            }
            Ok(Tried::TimedOut) => {
                *socket = None;
                self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
                debug!("try of {} to {}: no reply in time", entry.id, self.service);
                self.retry_later(entry);
            }
            Ok(Tried::LeaseLost) => {
                *socket = None;
                self.stats.lease_lost.fetch_add(1, Ordering::Relaxed);
                self.warn(&format!(
                    "the lease of {} ended unrenewed: its try is given up",
                    entry.id
                ));
                self.retry_later(entry);
            }
            Err(error) => {
                *socket = None;
                self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
                self.warn(&format!("try of {} to {}: {error}", entry.id, self.service));
                self.retry_later(entry);
            }
        }
    }

    /// Sends `body` on the lane's REQ socket (opened if there is none) and waits for the reply
    /// until the try timeout, or until the lease ends if it does first.
    fn try_once(
        &self,
        socket: &mut Option<zmq::Socket>,
        body: &[Vec<u8>],
        lease: Option<&Mutex<Lease>>,
    ) -> Result<Tried, String> {
        let socket = match socket {
            Some(socket) => socket,
            None => {
                let opened = self
                    .context
                    .socket(zmq::REQ)
                    .and_then(|new| {
                        new.set_linger(0)?;
                        Ok(new)
                    })
                    .map_err(|error| format!("cannot open a socket to the broker: {error}"))?;
                self.credentials
                    .apply(&opened)
                    .map_err(|error| format!("cannot open a socket to the broker: {error}"))?;
                opened
                    .connect(&self.endpoint)
                    .map_err(|error| format!("cannot connect to the broker: {error}"))?;
                socket.insert(opened)
            }
        };
        let mut frames: Frames = body
            .iter()
            .map(|frame| zmq::Message::from(&frame[..]))
            .collect();
        if frames.is_empty() {
            frames.push(zmq::Message::new());
        }
        zsocket::send(socket, Request::encode(&self.service, frames), 0)
            .map_err(|error| format!("cannot send: {error:?}"))?;
        let try_deadline = Instant::now() + self.config.try_timeout;
        loop {
            let now = Instant::now();
            let lease_end = lease.map(|lease| {
                lease
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .held_until()
            });
            if lease_end.is_some_and(|end| now >= end) {
                return Ok(Tried::LeaseLost);
            }
            if now >= try_deadline {
                return Ok(Tried::TimedOut);
            }
            let deadline = lease_end.map_or(try_deadline, |end| end.min(try_deadline));
            let received = zsocket::recv_until(socket, Some(deadline), now)
                .map_err(|error| format!("cannot receive: {error}"))?;
            if let Some(frames) = received {
                return match Reply::parse(frames) {
                    Ok(reply) if reply.service == self.service => Ok(Tried::Reply(reply.body)),
                    Ok(reply) => Err(format!("a reply from service {}", reply.service)),
                    Err(error) => Err(format!("an invalid reply: {error}")),
                };
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
