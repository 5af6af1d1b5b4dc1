//! The broker as a state machine, with no sockets and no clock.
//!
//! Everything the broker decides happens here: [`Broker::handle`] takes one message a peer sent
//! (its ROUTER identity and the frames after it) and the current time, and appends the messages
//! to send to an output list; [`Broker::tick`] does the timed work (heartbeats, purging silent
//! workers, expiring old requests) and [`Broker::next_deadline`] says when it is next due. The
//! socket loop in [`crate::server`] owns the socket and the clock and just moves frames in and
//! out. Because nothing here blocks or reads the time, every rule of spec 7 and spec 8 can be
//! tested with a fake clock, and the whole core can be fed random frames by proptest and
//! `cargo fuzz`.
//!
//! # Where spec 7 is silent, this broker chooses
//! * Every worker, idle or busy, gets a HEARTBEAT each interval, and any worker silent for
//!   interval x liveness is purged, idle or busy (a busy worker still heartbeats: spec 7 makes
//!   heartbeats independent of the request dialog). A purged worker gets no DISCONNECT, because
//!   spec 7 says to stop sending to a peer considered disconnected; if it was only slow, its next
//!   command finds it unknown and that earns it a DISCONNECT, after which it registers again.
//! * A malformed message from a registered worker disconnects it ("treating that peer as
//!   invalid"); one from any other peer is logged and dropped. A valid command the broker does not
//!   expect (READY twice, REPLY while idle, REQUEST from a worker, anything but READY or
//!   DISCONNECT from an unknown peer, READY for an `mmi.*` name) gets DISCONNECT.
//! * A REPLY must carry the address of the client whose request the worker holds; a reply for
//!   any other client is a protocol error, so a worker cannot answer someone else's request.
//! * Requests wait per service, at most `max_queue` per service and `max_queued_total` in all,
//!   for at most `request_ttl` (the purge that drops them runs at least once per heartbeat
//!   interval, so up to one interval more). A request an idle worker takes at once does not
//!   wait, so the limits never refuse it. A request refused or expired is logged at warn and
//!   counted; the client hears nothing (MDP/0.1 has no error reply) and its own timeout and
//!   retry take over.
//! * A service is forgotten as soon as it has no worker and no waiting request.
//! * When a REPLY frees a worker that has a request waiting, that REQUEST comes before the reply
//!   in `out`: the worker, not the client, is what waiting requests wait for.
//! * `mmi.service` looks at the first body frame; the reply body is one frame, the status code.
//! * When a busy worker dies its request is lost (logged) unless `redeliver` is on; then it goes
//!   back to the front of its queue, at most once per request, and may run twice. A redelivered
//!   request obeys the queue limits like a new one: if they are reached, it is lost.
//!   A request the socket refused whole ([`Broker::refused`]: the worker was already gone when it
//!   was dispatched) never reached a worker, so it goes back to the front of its queue whether
//!   `redeliver` is on or not, and without using up its one redelivery; the queue limits hold for
//!   it too (past them it is dropped, logged and counted as lost with the worker).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mdp::dump;
use mdp::worker::{FromWorker, Inbound, ToWorker};
use mdp::{client, mmi, Error, Frames, ServiceName};

pub use crate::service::Identity;
use crate::service::{IdleEntry, QueuedRequest, Service};

/// The broker's settings; [`Config::default`] gives the spec's heartbeat values.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often the broker sends HEARTBEAT to each worker (spec 7 reference: 2500 ms).
    pub heartbeat_interval: Duration,
    /// How many intervals of silence make a worker dead (spec 7: "usually 3-5").
    pub liveness: u32,
    /// Most requests that may wait for one service.
    pub max_queue: usize,
    /// Most requests that may wait in all services together.
    pub max_queued_total: usize,
    /// How long a request may wait for a worker before it is dropped.
    pub request_ttl: Duration,
    /// Re-send the request a dead worker held to another worker, at most once.
    pub redeliver: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: Duration::from_millis(mdp::DEFAULT_HEARTBEAT_INTERVAL_MS),
            liveness: mdp::DEFAULT_HEARTBEAT_LIVENESS,
            max_queue: 10_000,
            max_queued_total: 1_000_000,
            request_ttl: Duration::from_secs(60),
            redeliver: false,
        }
    }
}

impl Config {
    /// How long a worker may stay silent before it is purged.
    pub fn worker_expiry(&self) -> Duration {
        self.heartbeat_interval * self.liveness
    }
}

/// One message to send: `frames[0]` is the recipient's identity, for the ROUTER to route on.
#[derive(Debug)]
pub struct Outgoing {
    pub frames: Frames,
}

impl Outgoing {
    /// Who the message is for.
    pub fn recipient(&self) -> &[u8] {
        self.frames.first().map_or(&[], |frame| &frame[..])
    }
}

/// Counters of what the broker did, for logs and benchmarks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub requests_received: u64,
    pub requests_dispatched: u64,
    pub replies_forwarded: u64,
    pub mmi_answered: u64,
    pub requests_refused_queue_full: u64,
    pub requests_expired: u64,
    pub requests_lost_with_worker: u64,
    pub requests_redelivered: u64,
    pub workers_registered: u64,
    pub workers_purged: u64,
    pub workers_disconnected: u64,
    pub malformed_messages: u64,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests={} dispatched={} replies={} mmi={} refused_queue_full={} expired={} \
             lost_with_worker={} redelivered={} workers_registered={} workers_purged={} \
             workers_disconnected={} malformed={}",
            self.requests_received,
            self.requests_dispatched,
            self.replies_forwarded,
            self.mmi_answered,
            self.requests_refused_queue_full,
            self.requests_expired,
            self.requests_lost_with_worker,
            self.requests_redelivered,
            self.workers_registered,
            self.workers_purged,
            self.workers_disconnected,
            self.malformed_messages
        )
    }
}

/// Whether a request a busy worker held may have reached it, when that worker is forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// It was sent and may have run: redelivered only if `redeliver` is on, and once.
    Unknown,
    /// The socket refused it: it cannot have run, so it is queued again whether or not
    /// `redeliver` is on, within the queue limits like any request (past them it is dropped and
    /// counted lost with the worker).
    Refused,
}

#[derive(Debug)]
enum WorkerState {
    /// Waiting for work; `token` matches its one live entry in the service's idle list.
    Idle { token: u64 },
    /// Holding a request for `client`; `request` is a copy kept only when redelivery is on.
    Busy {
        client: Identity,
        request: Option<Frames>,
        redelivered: bool,
        queued_at: Instant,
    },
}

#[derive(Debug)]
struct Worker {
    service: ServiceName,
    expires_at: Instant,
    state: WorkerState,
}

/// The Majordomo broker's state: services, workers and the timers that drive heartbeating.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    services: HashMap<ServiceName, Service>,
    workers: HashMap<Identity, Worker>,
    queued_total: usize,
    next_idle_token: u64,
    next_heartbeat_at: Instant,
    next_purge_at: Instant,
    stats: Stats,
    /// The counters as of the last [`Broker::report_drops`].
    reported: Stats,
}

impl Broker {
    /// A broker with no services and no workers, whose first heartbeat is due one interval after
    /// `now`.
    pub fn new(config: Config, now: Instant) -> Broker {
        Broker {
            next_heartbeat_at: now + config.heartbeat_interval,
            next_purge_at: now + config.heartbeat_interval,
            config,
            services: HashMap::new(),
            workers: HashMap::new(),
            queued_total: 0,
            next_idle_token: 0,
            stats: Stats::default(),
            reported: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True if a worker with this identity is registered.
    pub fn has_worker(&self, identity: &[u8]) -> bool {
        self.workers.contains_key(identity)
    }

    /// How many workers are registered.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// How many services the broker knows (each has a worker or a waiting request).
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// How many requests wait for a worker, in all services.
    pub fn queued_requests(&self) -> usize {
        self.queued_total
    }

    /// When [`Broker::tick`] next has work to do.
    pub fn next_deadline(&self) -> Instant {
        self.next_heartbeat_at.min(self.next_purge_at)
    }

    /// Handles one message from a peer: `sender` is the identity the ROUTER put first, `frames`
    /// the rest. What to send in answer is appended to `out`.
    pub fn handle(&mut self, now: Instant, sender: &[u8], frames: Frames, out: &mut Vec<Outgoing>) {
        match Inbound::parse(frames) {
            Ok(Inbound::Client(request)) => self.client_request(now, sender, request, out),
            Ok(Inbound::Worker(command)) => self.worker_command(now, sender, command, out),
            Err(error) => self.malformed(sender, error, out),
        }
    }

    /// The timed work: heartbeats to every worker, purging silent workers, expiring old requests.
    /// Call it when [`Broker::next_deadline`] has passed (calling it earlier is harmless).
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        if now >= self.next_purge_at {
            self.purge(now, out);
        }
        if now >= self.next_heartbeat_at {
            for worker in sorted_identities(&self.workers) {
                out.push(Outgoing {
                    frames: ToWorker::Heartbeat.encode_for_router(worker),
                });
            }
            self.next_heartbeat_at = now + self.config.heartbeat_interval;
        }
    }

    /// The socket could not deliver a message to `recipient` (it is gone, or not reading). A
    /// worker that cannot be reached is forgotten; a lost reply to a client is only logged.
    pub fn undeliverable(&mut self, recipient: &[u8], out: &mut Vec<Outgoing>) {
        if self.workers.contains_key(recipient) {
            warn!(
                "worker {} cannot be reached: forgetting it",
                dump::Identity(recipient)
            );
            self.remove_worker(recipient, out);
        }
    }

    /// The socket refused the whole of `message` (an [`Outgoing`]'s frames, identity first)
    /// before queuing any of it: the ROUTER knows the peer is gone, or its queue is full. The
    /// recipient is handled as by [`Broker::undeliverable`], except that if the message is the
    /// REQUEST the worker holds, that request cannot have reached it: it goes back to the front of
    /// its queue (to the next idle worker) instead of being lost. This is what happens to a
    /// request dispatched to a worker that died while idle, before a heartbeat bounced.
    ///
    /// Returns true if the message was taken back (queued again), false if it is dropped.
    pub fn refused(&mut self, message: Frames, out: &mut Vec<Outgoing>) -> bool {
        let mut frames = message.into_iter();
        let Some(recipient) = frames.next() else {
            return false;
        };
        let mut returned = false;
        if let (Ok(ToWorker::Request { client, body }), Some(worker)) = (
            ToWorker::parse(frames.collect()),
            self.workers.get_mut(&recipient[..]),
        ) {
            if let WorkerState::Busy {
                client: holding,
                request,
                ..
            } = &mut worker.state
            {
                if holding[..] == client[..] {
                    // The body is back in our hands: no copy needed, whatever `redeliver` says.
                    *request = Some(body);
                    returned = true;
                }
            }
        }
        if returned {
            warn!(
                "worker {} cannot be reached: forgetting it, and queuing again the request it never got",
                dump::Identity(&recipient)
            );
            self.remove_worker_with(&recipient, Delivery::Refused, out);
        } else {
            self.undeliverable(&recipient, out);
        }
        returned
    }

    /// Shutting down: DISCONNECT to every worker, so they re-register with the next broker
    /// instead of waiting out the heartbeat expiry.
    pub fn shutdown(&mut self, out: &mut Vec<Outgoing>) {
        for worker in sorted_identities(&self.workers) {
            out.push(Outgoing {
                frames: ToWorker::Disconnect.encode_for_router(worker),
            });
        }
        self.workers.clear();
        self.services.clear();
        self.queued_total = 0;
    }

    fn client_request(
        &mut self,
        now: Instant,
        client: &[u8],
        request: client::Request,
        out: &mut Vec<Outgoing>,
    ) {
        self.stats.requests_received += 1;
        if request.service.is_mmi() {
            return self.mmi_request(client, request, out);
        }
        let client::Request {
            service: name,
            body,
        } = request;
        let waiting = QueuedRequest {
            client: client.to_vec(),
            body,
            queued_at: now,
            redelivered: false,
        };
        self.services
            .entry(name.clone())
            .or_default()
            .requests
            .push_back(waiting);
        self.queued_total += 1;
        // Only a request that has to wait counts against the limits: one that an idle worker takes
        // at once is never refused, so a flood of requests for a service nobody serves cannot
        // shut out the services that have workers.
        let dispatched_before = self.stats.requests_dispatched;
        self.dispatch(&name, out);
        let taken = self.stats.requests_dispatched > dispatched_before;
        let Some(service) = self.services.get_mut(&name) else {
            return;
        };
        if !taken
            && (service.requests.len() > self.config.max_queue
                || self.queued_total > self.config.max_queued_total)
        {
            // No worker took anything, so the request just added is still the last one.
            service.requests.pop_back();
            self.queued_total -= 1;
            self.stats.requests_refused_queue_full += 1;
            debug!(
                "dropping request from client {} for service {name}: queue full ({} waiting for it, {} in all)",
                dump::Identity(client),
                service.requests.len(),
                self.queued_total
            );
            if service.is_unused() {
                self.services.remove(&name);
            }
            return;
        }
        // If no worker took it, it waits: give back the spare room of the frame list it arrived
        // in (a few hundred bytes, which add up over 100,000 waiting requests).
        if let Some(waiting) = service.requests.back_mut() {
            waiting.body.shrink_to_fit();
        }
    }

    /// Spec 8: the broker answers `mmi.*` itself and never creates a service for it.
    fn mmi_request(&mut self, client: &[u8], request: client::Request, out: &mut Vec<Outgoing>) {
        let status = if request.service.as_bytes() == mmi::SERVICE {
            let asked = request
                .body
                .first()
                .and_then(|frame| ServiceName::new(frame).ok());
            let registered = asked
                .and_then(|name| self.services.get(&name))
                .is_some_and(|service| service.worker_count > 0);
            if registered {
                mmi::Status::Found
            } else {
                mmi::Status::NotFound
            }
        } else {
            mmi::Status::NotImplemented
        };
        self.stats.mmi_answered += 1;
        let body = vec![zmq::Message::from(status.as_bytes())];
        out.push(Outgoing {
            frames: client::Reply::encode_for_router(client, &request.service, body),
        });
    }

    fn worker_command(
        &mut self,
        now: Instant,
        sender: &[u8],
        command: FromWorker,
        out: &mut Vec<Outgoing>,
    ) {
        let expires_at = now + self.config.worker_expiry();
        let Some(worker) = self.workers.get_mut(sender) else {
            return self.unknown_worker_command(now, sender, command, out);
        };
        // Any command from a worker shows it is alive.
        worker.expires_at = expires_at;
        match command {
            FromWorker::Heartbeat => {}
            FromWorker::Disconnect => {
                debug!("worker {} disconnected", dump::Identity(sender));
                self.remove_worker(sender, out);
            }
            FromWorker::Ready { .. } => {
                self.protocol_violation(sender, "sent READY a second time", out)
            }
            FromWorker::Reply { client, body } => {
                let verdict = match &worker.state {
                    WorkerState::Busy {
                        client: expected, ..
                    } if *expected == client => Ok(worker.service.clone()),
                    WorkerState::Busy { .. } => {
                        Err("sent a REPLY for a client whose request it does not hold")
                    }
                    WorkerState::Idle { .. } => Err("sent a REPLY while holding no request"),
                };
                match verdict {
                    Ok(service) => {
                        self.stats.replies_forwarded += 1;
                        // The worker's next request, if one waits, goes out before this reply:
                        // with one request per worker at a time the worker is what requests
                        // wait for, so it should not also wait for the reply to be sent.
                        self.worker_idle(sender, out);
                        out.push(Outgoing {
                            frames: client::Reply::encode_for_router(&client, &service, body),
                        });
                    }
                    Err(what) => self.protocol_violation(sender, what, out),
                }
            }
        }
    }

    /// A command from a peer that is not a registered worker: only READY (to register) and
    /// DISCONNECT (nothing to do) make sense.
    fn unknown_worker_command(
        &mut self,
        now: Instant,
        sender: &[u8],
        command: FromWorker,
        out: &mut Vec<Outgoing>,
    ) {
        match command {
            FromWorker::Ready { service } if service.is_mmi() => {
                warn!(
                    "worker {} tried to register reserved service {service}: disconnecting it",
                    dump::Identity(sender)
                );
                self.send_disconnect(sender, out);
            }
            FromWorker::Ready { service } => {
                info!(
                    "worker {} registered for service {service}",
                    dump::Identity(sender)
                );
                self.stats.workers_registered += 1;
                self.services
                    .entry(service.clone())
                    .or_default()
                    .worker_count += 1;
                let expires_at = now + self.config.worker_expiry();
                self.workers.insert(
                    sender.to_vec(),
                    Worker {
                        service,
                        expires_at,
                        // Made idle (with a real token) just below.
                        state: WorkerState::Idle { token: u64::MAX },
                    },
                );
                self.next_purge_at = self.next_purge_at.min(expires_at);
                self.worker_idle(sender, out);
            }
            FromWorker::Disconnect => {
                debug!("DISCONNECT from unknown worker {}", dump::Identity(sender));
            }
            other => {
                warn!(
                    "{} from unknown worker {}: disconnecting it",
                    other.command(),
                    dump::Identity(sender)
                );
                self.send_disconnect(sender, out);
            }
        }
    }

    /// A message that does not parse. Spec 7: the broker SHOULD drop invalid messages and treat
    /// the peer as invalid, and MUST answer a valid but unexpected command with DISCONNECT.
    fn malformed(&mut self, sender: &[u8], error: Error, out: &mut Vec<Outgoing>) {
        self.stats.malformed_messages += 1;
        let known_worker = self.workers.contains_key(sender);
        if known_worker || matches!(error, Error::UnexpectedCommand(_)) {
            warn!(
                "malformed message from {} ({error}): disconnecting it",
                dump::Identity(sender)
            );
            self.remove_worker(sender, out);
            self.send_disconnect(sender, out);
        } else {
            warn!(
                "dropping malformed message from {}: {error}",
                dump::Identity(sender)
            );
        }
    }

    fn protocol_violation(&mut self, sender: &[u8], what: &str, out: &mut Vec<Outgoing>) {
        warn!("worker {} {what}: disconnecting it", dump::Identity(sender));
        self.remove_worker(sender, out);
        self.send_disconnect(sender, out);
    }

    fn send_disconnect(&mut self, worker: &[u8], out: &mut Vec<Outgoing>) {
        self.stats.workers_disconnected += 1;
        out.push(Outgoing {
            frames: ToWorker::Disconnect.encode_for_router(worker),
        });
    }

    /// The worker is waiting for work: it goes to the back of its service's idle list, and gets
    /// a request at once if one is waiting.
    fn worker_idle(&mut self, identity: &[u8], out: &mut Vec<Outgoing>) {
        let Some(worker) = self.workers.get_mut(identity) else {
            return;
        };
        let token = self.next_idle_token;
        self.next_idle_token += 1;
        worker.state = WorkerState::Idle { token };
        let name = worker.service.clone();
        if let Some(service) = self.services.get_mut(&name) {
            service.push_idle(IdleEntry {
                worker: identity.to_vec(),
                token,
            });
        }
        self.dispatch(&name, out);
    }

    /// Hands waiting requests of one service to its idle workers, least recently used first.
    fn dispatch(&mut self, name: &ServiceName, out: &mut Vec<Outgoing>) {
        let Some(service) = self.services.get_mut(name) else {
            return;
        };
        let workers = &mut self.workers;
        while !service.requests.is_empty() {
            let Some(entry) = service.pop_idle(|entry| is_live_idle_entry(workers, entry)) else {
                break;
            };
            let Some(request) = service.requests.pop_front() else {
                break;
            };
            self.queued_total -= 1;
            let Some(worker) = workers.get_mut(&entry.worker) else {
                break;
            };
            let kept = self.config.redeliver.then(|| {
                request
                    .body
                    .iter()
                    .map(|f| zmq::Message::from(&f[..]))
                    .collect()
            });
            worker.state = WorkerState::Busy {
                client: request.client.clone(),
                request: kept,
                redelivered: request.redelivered,
                queued_at: request.queued_at,
            };
            self.stats.requests_dispatched += 1;
            let command = ToWorker::Request {
                client: zmq::Message::from(request.client),
                body: request.body,
            };
            out.push(Outgoing {
                frames: command.encode_for_router(&entry.worker),
            });
        }
    }

    /// Forgets a worker: it leaves its service's count and idle list, the request it held is
    /// redelivered or reported lost, and the service goes if nothing else uses it.
    fn remove_worker(&mut self, identity: &[u8], out: &mut Vec<Outgoing>) {
        self.remove_worker_with(identity, Delivery::Unknown, out);
    }

    /// [`Broker::remove_worker`], told whether the request a busy worker holds may have reached it.
    fn remove_worker_with(&mut self, identity: &[u8], delivery: Delivery, out: &mut Vec<Outgoing>) {
        let Some(worker) = self.workers.remove(identity) else {
            return;
        };
        let name = worker.service;
        let Some(service) = self.services.get_mut(&name) else {
            return;
        };
        service.worker_count -= 1;
        match worker.state {
            WorkerState::Idle { .. } => {
                let workers = &self.workers;
                service.idle_entry_died(|entry| is_live_idle_entry(workers, entry));
            }
            WorkerState::Busy {
                client,
                request,
                redelivered,
                queued_at,
            } => match request {
                Some(body)
                    if (delivery == Delivery::Refused || !redelivered)
                        && service.requests.len() < self.config.max_queue
                        && self.queued_total < self.config.max_queued_total =>
                {
                    let redelivered = match delivery {
                        Delivery::Refused => {
                            // It never left: it was not dispatched after all (so the counters
                            // still add up), and it keeps its one redelivery.
                            self.stats.requests_dispatched =
                                self.stats.requests_dispatched.saturating_sub(1);
                            redelivered
                        }
                        Delivery::Unknown => {
                            info!(
                                "worker {} died holding a request from client {}: redelivering it",
                                dump::Identity(identity),
                                dump::Identity(&client)
                            );
                            self.stats.requests_redelivered += 1;
                            true
                        }
                    };
                    service.requests.push_front(QueuedRequest {
                        client,
                        body,
                        queued_at,
                        redelivered,
                    });
                    self.queued_total += 1;
                    self.dispatch(&name, out);
                    return self.forget_service_if_unused(&name);
                }
                _ => {
                    self.stats.requests_lost_with_worker += 1;
                    warn!(
                        "request from client {} for service {name} is lost with worker {}",
                        dump::Identity(&client),
                        dump::Identity(identity)
                    );
                }
            },
        }
        self.forget_service_if_unused(&name);
    }

    fn forget_service_if_unused(&mut self, name: &ServiceName) {
        if self.services.get(name).is_some_and(Service::is_unused) {
            debug!("forgetting service {name}: no workers, no requests");
            self.services.remove(name);
        }
    }

    /// Purges workers silent for longer than the expiry and requests older than the TTL, then
    /// schedules the next purge for the earliest moment a worker could expire.
    fn purge(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        let mut expired: Vec<(bool, Identity)> = self
            .workers
            .iter()
            .filter(|(_, worker)| worker.expires_at <= now)
            .map(|(identity, worker)| {
                let busy = matches!(worker.state, WorkerState::Busy { .. });
                (busy, identity.clone())
            })
            .collect();
        // Idle ones first: a busy one's request, if redelivered, must not be handed to a worker
        // that this same pass is about to purge. Then by identity, so the order never depends on
        // the map's random hashing (see `sorted_identities`).
        expired.sort_unstable();
        for (_, identity) in expired {
            warn!(
                "worker {} silent for {:?}: purging it",
                dump::Identity(&identity),
                self.config.worker_expiry()
            );
            self.stats.workers_purged += 1;
            self.remove_worker(&identity, out);
        }

        let ttl = self.config.request_ttl;
        let mut expired_requests = 0;
        for (name, service) in &mut self.services {
            while service
                .requests
                .front()
                .is_some_and(|request| request.queued_at + ttl <= now)
            {
                if let Some(request) = service.requests.pop_front() {
                    expired_requests += 1;
                    debug!(
                        "dropping request from client {} for service {name}: no worker took it within {ttl:?}",
                        dump::Identity(&request.client)
                    );
                }
            }
            service.shrink();
        }
        self.queued_total -= expired_requests;
        self.stats.requests_expired += expired_requests as u64;
        self.services.retain(|_, service| !service.is_unused());
        shrink_map(&mut self.services);
        shrink_map(&mut self.workers);

        self.report_drops();

        let earliest_expiry = self.workers.values().map(|worker| worker.expires_at).min();
        let next_tick = now + self.config.heartbeat_interval;
        self.next_purge_at = earliest_expiry.map_or(next_tick, |at| at.min(next_tick));
    }

    /// Logs at warn, once per purge, how many requests were dropped since the last report and
    /// why. One line per dropped request (at debug) would let an overload flood the log.
    fn report_drops(&mut self) {
        let (now, then) = (&self.stats, &self.reported);
        let refused = now.requests_refused_queue_full - then.requests_refused_queue_full;
        if refused > 0 {
            warn!(
                "refused {refused} request(s): queue full (limits: {} per service, {} in all)",
                self.config.max_queue, self.config.max_queued_total
            );
        }
        let expired = now.requests_expired - then.requests_expired;
        if expired > 0 {
            warn!(
                "dropped {expired} request(s): no worker took them within {:?}",
                self.config.request_ttl
            );
        }
        self.reported = self.stats.clone();
    }

    /// Checks the structure's invariants, panicking with a description of the first one broken.
    /// For tests and fuzzing; it walks everything, so never call it on the hot path.
    pub fn check_invariants(&self) {
        let mut idle_seen = std::collections::HashSet::new();
        let mut queued = 0;
        for (name, service) in &self.services {
            assert!(!service.is_unused(), "unused service {name} kept");
            assert!(
                service.requests.len() <= self.config.max_queue,
                "service {name} over its queue limit"
            );
            queued += service.requests.len();
            let registered = self.workers.values().filter(|w| w.service == *name).count();
            assert_eq!(service.worker_count, registered, "worker count of {name}");
            let mut dead = 0;
            let mut live = 0;
            for entry in service.idle_entries() {
                match self.workers.get(&entry.worker) {
                    Some(Worker {
                        state: WorkerState::Idle { token },
                        service: worker_service,
                        ..
                    }) if *token == entry.token => {
                        assert_eq!(worker_service, name, "idle in the wrong service");
                        assert!(idle_seen.insert(entry.worker.clone()), "worker idle twice");
                        live += 1;
                    }
                    _ => dead += 1,
                }
            }
            assert_eq!(
                dead,
                service.dead_idle_entries(),
                "dead idle entries of {name}"
            );
            assert!(
                live == 0 || service.requests.is_empty(),
                "service {name} has idle workers and waiting requests"
            );
        }
        assert_eq!(queued, self.queued_total, "queued total");
        for (identity, worker) in &self.workers {
            assert!(
                self.services.contains_key(&worker.service),
                "worker's service is unknown"
            );
            if matches!(worker.state, WorkerState::Idle { .. }) {
                assert!(
                    idle_seen.contains(identity),
                    "idle worker not in its idle list"
                );
            }
        }
    }
}

/// True when `entry` is the one live idle-list entry of its worker: the worker still exists, is
/// idle, and went idle with this entry's token.
/// The workers' identities in byte order. Whatever the broker sends to many workers at once goes
/// out in this order rather than the map's, which its random hashing changes from run to run, so
/// the same inputs always give the same outputs (a simulation seed replays exactly). Sorting is
/// done once per heartbeat interval, not per message.
fn sorted_identities(workers: &HashMap<Identity, Worker>) -> Vec<&Identity> {
    let mut identities: Vec<&Identity> = workers.keys().collect();
    identities.sort_unstable();
    identities
}

fn is_live_idle_entry(workers: &HashMap<Identity, Worker>, entry: &IdleEntry) -> bool {
    matches!(workers.get(&entry.worker),
        Some(Worker { state: WorkerState::Idle { token }, .. }) if *token == entry.token)
}

/// Gives a map's memory back once it holds less than a quarter of what it could.
fn shrink_map<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests;
