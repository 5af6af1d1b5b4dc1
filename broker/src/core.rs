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
//! * Requests wait per service, at most `max_queue` per service, `max_queued_total` in all, and
//!   `max_queued_bytes` in all (each request counted as [`request_cost`]: its bytes plus a fixed
//!   overhead per request and per frame), for at most `request_ttl` (the purge that drops them
//!   runs at least once per heartbeat interval, so up to one interval more). A request an idle
//!   worker takes at once does not wait, so the limits never refuse it. A request refused or
//!   expired is counted and logged at warn (at most once a second per reason, with a count);
//!   the client hears nothing (MDP/0.1 has no error reply) and its own timeout and retry take
//!   over.
//! * Fair shares: one client holds at most half of `max_queue` (rounded up) in one service and
//!   half of `max_queued_bytes` in all, so at least half is always left for the others. A client
//!   is its connection (ROUTER identity), or with `--auth` its principal, so opening more sockets
//!   buys no more room. A request that was let in and comes back (redelivered, or refused by the
//!   socket) is not checked against the shares again.
//! * At most `max_absent_services` services may have waiting requests and no worker: a request
//!   that would create one more is refused, so asking for made-up names cannot fill the map.
//! * With [`Access`] rules (`--auth`), READY for a service the principal may not serve gets
//!   DISCONNECT, and a REQUEST (`mmi.*` included) it may not call is dropped; both are counted
//!   and logged. Every line a peer can cause goes through a per-kind [`LogLimit`].
//! * A client whose routing identity says it sends one request at a time ([`mdp::tries`]:
//!   `req:NUMBER:N`, one per REQ socket, as our sync client sets it) has given up on what it sent
//!   from its older sockets: such a request still waiting is dropped unsent when it reaches the
//!   front of its queue (counted in [`Stats::requests_superseded`]; checked only there, so a
//!   resend costs O(1) however long the queue). And a request from such a client goes to a worker
//!   only if its socket is still connected ([`Outgoing::if_connected`]: the driver probes it,
//!   and a request whose client is gone comes back through [`Broker::client_gone`]). A request
//!   already handed to a worker is never taken back. Any other identity is opaque, as spec 7
//!   says.
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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mdp::dump;
use mdp::tries::TryIdentity;
use mdp::worker::{FromWorker, Inbound, ToWorker};
use mdp::{client, mmi, Error, Frames, ServiceName};
use zsocket::limit::LogLimit;

pub use crate::access::Access;
pub use crate::service::Identity;
use crate::service::{IdleEntry, QueuedRequest, Service, ShareKey};

/// What one waiting request is counted as against `max_queued_bytes`, besides its bytes: the
/// request's own bookkeeping (its entry in the queue, the client's address, the frame list).
pub const REQUEST_OVERHEAD: usize = 256;
/// What one body frame is counted as besides its bytes (a `zmq_msg_t` is 64 bytes): so 10,000
/// empty frames are not free.
pub const FRAME_OVERHEAD: usize = 64;

/// The bytes a waiting request is counted as: its body, the client's address, and the fixed
/// overheads.
pub fn request_cost(client: &[u8], body: &[zmq::Message]) -> usize {
    REQUEST_OVERHEAD
        + client.len()
        + body
            .iter()
            .map(|frame| FRAME_OVERHEAD + frame.len())
            .sum::<usize>()
}

/// The broker's settings; [`Config::default`] gives the spec's heartbeat values.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often the broker sends HEARTBEAT to each worker (spec 7 reference: 2500 ms).
    pub heartbeat_interval: Duration,
    /// How many intervals of silence make a worker dead (spec 7: "usually 3-5").
    pub liveness: u32,
    /// Most requests that may wait for one service. One client (a connection, or a principal
    /// with `--auth`) may hold at most half of them, rounded up.
    pub max_queue: usize,
    /// Most requests that may wait in all services together.
    pub max_queued_total: usize,
    /// Most bytes that may wait in all queues together, each request counted by
    /// [`request_cost`]. One client may hold at most half of them.
    pub max_queued_bytes: usize,
    /// Most services that have no worker, only waiting requests: a peer asking for a new name
    /// with every request creates no more than this many.
    pub max_absent_services: usize,
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
            // Generous counts: the bytes are what bound memory. The guide's mdclient2 sends
            // 100,000 requests before it reads a reply, within one client's half of these.
            max_queue: 500_000,
            max_queued_total: 1_000_000,
            max_queued_bytes: 256 * 1024 * 1024,
            max_absent_services: 10_000,
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

    /// Most requests one client may hold waiting for one service: half of `max_queue`, rounded
    /// up, so a limit of 1 still lets a client queue one.
    pub fn share_of_queue(&self) -> usize {
        self.max_queue.div_ceil(2)
    }

    /// Most bytes one client may hold waiting in all queues.
    pub fn share_of_bytes(&self) -> usize {
        self.max_queued_bytes.div_ceil(2)
    }
}

/// One message to send: `frames[0]` is the recipient's identity, for the ROUTER to route on.
#[derive(Debug)]
pub struct Outgoing {
    /// The recipient's identity, then the message.
    pub frames: Frames,
    /// Send the message only if this peer, a one-request-at-a-time client ([`mdp::tries`]), is
    /// still connected. The driver first sends it [`mdp::tries::probe`]; if the ROUTER refuses that because the client is gone, the driver hands this message
    /// back through [`Broker::client_gone`] instead of sending it. `None` for most messages.
    pub if_connected: Option<Identity>,
}

impl Outgoing {
    /// A message to send as it is.
    pub fn new(frames: Frames) -> Outgoing {
        Outgoing {
            frames,
            if_connected: None,
        }
    }

    /// Who the message is for.
    pub fn recipient(&self) -> &[u8] {
        self.frames.first().map_or(&[], |frame| &frame[..])
    }
}

/// Counters of what the broker did, for logs and benchmarks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Requests from clients, `mmi.*` included.
    pub requests_received: u64,
    /// Requests sent to a worker.
    pub requests_dispatched: u64,
    /// Replies from workers sent on to their clients.
    pub replies_forwarded: u64,
    /// `mmi.*` requests the broker answered itself.
    pub mmi_answered: u64,
    /// Refused because a queue limit (`max_queue`, `max_queued_total`) was reached.
    pub requests_refused_queue_full: u64,
    /// Refused because `max_queued_bytes` was reached.
    pub requests_refused_bytes: u64,
    /// Refused because the client already held its half of a limit.
    pub requests_refused_fair_share: u64,
    /// Refused because `max_absent_services` services already had no worker.
    pub requests_refused_services: u64,
    /// Dropped because the client's principal may not call the service (`--auth`).
    pub requests_refused_unauthorized: u64,
    /// Workers sent DISCONNECT for a READY their principal may not serve (`--auth`).
    pub workers_refused_unauthorized: u64,
    /// Dropped after waiting longer than `request_ttl`.
    pub requests_expired: u64,
    /// Lost because the worker holding them died or left.
    pub requests_lost_with_worker: u64,
    /// Sent to another worker after theirs died (`redeliver`).
    pub requests_redelivered: u64,
    /// Dropped unsent: their one-request-at-a-time client ([`mdp::tries`]) had sent again from
    /// a newer socket, so it had given up on them.
    pub requests_superseded: u64,
    /// Dropped unsent at dispatch: their one-request-at-a-time client's connection was gone
    /// ([`Broker::client_gone`]).
    pub requests_abandoned: u64,
    /// Workers that sent READY and were taken.
    pub workers_registered: u64,
    /// Workers silent for longer than the expiry.
    pub workers_purged: u64,
    /// DISCONNECTs sent to workers.
    pub workers_disconnected: u64,
    /// Messages that did not parse.
    pub malformed_messages: u64,
    /// Messages handed to the core (every whole message the ROUTER delivered).
    pub messages_in: u64,
    /// Messages the core asked to send.
    pub messages_out: u64,
}

impl Stats {
    /// Requests refused or dropped on arrival, for every reason (none reached a queue or a
    /// worker).
    pub fn requests_refused(&self) -> u64 {
        self.requests_refused_queue_full
            + self.requests_refused_bytes
            + self.requests_refused_fair_share
            + self.requests_refused_services
            + self.requests_refused_unauthorized
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests={} dispatched={} replies={} mmi={} refused_queue_full={} \
             refused_bytes={} refused_fair_share={} refused_services={} \
             refused_unauthorized={} expired={} lost_with_worker={} redelivered={} \
             superseded={} abandoned={} workers_registered={} workers_refused_unauthorized={} workers_purged={} \
             workers_disconnected={} malformed={}",
            self.requests_received,
            self.requests_dispatched,
            self.replies_forwarded,
            self.mmi_answered,
            self.requests_refused_queue_full,
            self.requests_refused_bytes,
            self.requests_refused_fair_share,
            self.requests_refused_services,
            self.requests_refused_unauthorized,
            self.requests_expired,
            self.requests_lost_with_worker,
            self.requests_redelivered,
            self.requests_superseded,
            self.requests_abandoned,
            self.workers_registered,
            self.workers_refused_unauthorized,
            self.workers_purged,
            self.workers_disconnected,
            self.malformed_messages
        )
    }
}

/// The kinds of log line a peer can cause. Each goes through a [`LogLimit`] of its own: at most
/// one line a second, the next one saying how many were held back (those go to the debug log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    QueueFull,
    Bytes,
    FairShare,
    Services,
    CallDenied,
    ServeDenied,
    Registered,
    Reserved,
    UnknownWorker,
    Malformed,
    Protocol,
    Unreachable,
    Lost,
    Redelivered,
    Purged,
    Expired,
}

impl Line {
    const ALL: [Line; 16] = [
        Line::QueueFull,
        Line::Bytes,
        Line::FairShare,
        Line::Services,
        Line::CallDenied,
        Line::ServeDenied,
        Line::Registered,
        Line::Reserved,
        Line::UnknownWorker,
        Line::Malformed,
        Line::Protocol,
        Line::Unreachable,
        Line::Lost,
        Line::Redelivered,
        Line::Purged,
        Line::Expired,
    ];

    /// What the held-back lines were about, for the line that reports them.
    fn what(self) -> &'static str {
        match self {
            Line::QueueFull => "request(s) refused: queue full",
            Line::Bytes => "request(s) refused: max queued bytes reached",
            Line::FairShare => "request(s) refused: the client's fair share is used up",
            Line::Services => "request(s) refused: too many services without a worker",
            Line::CallDenied => "request(s) dropped: the principal may not call the service",
            Line::ServeDenied => "READY(s) refused: the principal may not serve the service",
            Line::Registered => "worker registration(s)",
            Line::Reserved => "READY(s) for a reserved mmi.* name",
            Line::UnknownWorker => "command(s) from unknown workers",
            Line::Malformed => "malformed message(s)",
            Line::Protocol => "protocol violation(s) by workers",
            Line::Unreachable => "unreachable worker(s) forgotten",
            Line::Lost => "request(s) lost with their worker",
            Line::Redelivered => "request(s) redelivered",
            Line::Purged => "silent worker(s) purged",
            Line::Expired => "expiry report(s)",
        }
    }
}

/// One [`LogLimit`] per [`Line`].
#[derive(Debug, Default)]
struct Logs([LogLimit; Line::ALL.len()]);

impl Logs {
    fn allow(&mut self, line: Line, now: Instant) -> Option<u64> {
        self.0[line as usize].allow(now)
    }
}

/// Logs a line a peer can cause, at most once a second for its [`Line`] (see [`Logs`]); the
/// lines held back go to the debug log.
macro_rules! peer_log {
    ($self:ident, $line:expr, $level:ident, $($arg:tt)+) => {
        match $self.logs.allow($line, $self.now) {
            Some(0) => log::$level!($($arg)+),
            Some(held) => log::$level!(
                "{} ({held} more like it in the last second)",
                format_args!($($arg)+)
            ),
            None => log::debug!($($arg)+),
        }
    };
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
        /// Whose share the request counted against, should it wait again.
        share: ShareKey,
    },
}

#[derive(Debug)]
struct Worker {
    service: ServiceName,
    expires_at: Instant,
    state: WorkerState,
    /// Who ZAP said this peer is (`--auth`), for checking it again when the rules change.
    principal: Option<Arc<str>>,
}

/// The Majordomo broker's state: services, workers and the timers that drive heartbeating.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    services: HashMap<ServiceName, Service>,
    workers: HashMap<Identity, Worker>,
    /// What waits in all queues, in requests and bytes, and per client.
    held: Held,
    /// How many services have at least one worker; the rest have only waiting requests.
    served_services: usize,
    /// Who may serve and call what; `None` (no `--auth`) lets everyone do everything.
    access: Option<Access>,
    next_idle_token: u64,
    next_heartbeat_at: Instant,
    next_purge_at: Instant,
    stats: Stats,
    /// The time of the latest call, for the log limits of lines caused deep inside.
    now: Instant,
    logs: Logs,
    /// Requests expired since the last line that reported expiries.
    expired_unreported: u64,
    /// Services whose queue, workers or counters changed since the dashboard last looked
    /// ([`Broker::take_changed_services`]).
    dashboard_changed: HashSet<ServiceName>,
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
            held: Held::default(),
            served_services: 0,
            access: None,
            next_idle_token: 0,
            stats: Stats::default(),
            now,
            logs: Logs::default(),
            expired_unreported: 0,
            dashboard_changed: HashSet::new(),
        }
    }

    /// A broker that checks every READY and REQUEST against `access` ([`Broker::set_access`]).
    pub fn with_access(config: Config, access: Access, now: Instant) -> Broker {
        let mut broker = Broker::new(config, now);
        broker.access = Some(access);
        broker
    }

    /// The rules in force; `None` when everyone may serve and call everything.
    pub fn access(&self) -> Option<&Access> {
        self.access.as_ref()
    }

    /// New rules (the auth file was read again). Registered workers whose principal may no
    /// longer serve their service get DISCONNECT; waiting requests stay (they were allowed when
    /// they came).
    pub fn set_access(&mut self, access: Option<Access>, out: &mut Vec<Outgoing>) {
        self.access = access;
        let Some(access) = &self.access else {
            return;
        };
        let mut denied: Vec<Identity> = self
            .workers
            .iter()
            .filter(|(_, worker)| !access.may_serve(worker.principal.as_deref(), &worker.service))
            .map(|(identity, _)| identity.clone())
            .collect();
        denied.sort_unstable();
        for identity in denied {
            peer_log!(
                self,
                Line::ServeDenied,
                warn,
                "worker {} may no longer serve its service under the new rules: disconnecting it",
                dump::Identity(&identity)
            );
            self.stats.workers_refused_unauthorized += 1;
            self.remove_worker(&identity, out);
            self.send_disconnect(&identity, out);
        }
    }

    /// The bytes waiting in all queues, as counted against `max_queued_bytes`.
    pub fn queued_bytes(&self) -> usize {
        self.held.bytes
    }

    /// The settings it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What it has done so far.
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
        self.held.total
    }

    /// True when a service changed since [`Broker::take_changed_services`] was last called.
    pub fn has_dashboard_changes(&self) -> bool {
        !self.dashboard_changed.is_empty()
    }

    /// At most `limit` of the services whose queue, workers or counters changed (or that were
    /// forgotten) since they were last taken, for the dashboard to rebuild only those. The rest
    /// stay marked ([`Broker::has_dashboard_changes`]) for the next call, so that one publish
    /// after, say, 100,000 new services costs the loop a bounded pause, not all of it at once.
    pub fn take_changed_services(&mut self, limit: usize) -> Vec<ServiceName> {
        if self.dashboard_changed.len() <= limit {
            return self.dashboard_changed.drain().collect();
        }
        let taken: Vec<ServiceName> = self.dashboard_changed.iter().take(limit).cloned().collect();
        for name in &taken {
            self.dashboard_changed.remove(name);
        }
        taken
    }

    /// One service as the dashboard shows it: its queue, its idle workers least recently used
    /// first, its busy ones, its counters and latency; `None` if the broker no longer knows it.
    /// Costs O(idle workers) plus, while any of its workers is busy, O(all workers).
    pub fn service_snapshot(&self, name: &ServiceName) -> Option<dashboard::ServiceSnapshot> {
        let service = self.services.get(name)?;
        let mut snapshot = dashboard::ServiceSnapshot::named(name.to_string());
        snapshot.requests_waiting = service.requests.len() as u64;
        let workers = &self.workers;
        let live = |entry: &&IdleEntry| is_live_idle_entry(workers, entry);
        snapshot.set_idle(
            service.idle_entries().filter(live).count(),
            service
                .idle_entries()
                .filter(live)
                .map(|entry| dump::Identity(&entry.worker).to_string()),
        );
        let mut busy: Vec<String> = if service.busy_count == 0 {
            Vec::new()
        } else {
            workers
                .iter()
                .filter(|(_, w)| w.service == *name && matches!(w.state, WorkerState::Busy { .. }))
                .take(dashboard::MAX_LISTED_WORKERS)
                .map(|(id, _)| dump::Identity(id).to_string())
                .collect()
        };
        busy.sort_unstable();
        snapshot.set_busy(service.busy_count, busy);
        snapshot.counters = service.counters.clone();
        snapshot.latency = service.latency;
        Some(snapshot)
    }

    /// When [`Broker::tick`] next has work to do.
    pub fn next_deadline(&self) -> Instant {
        self.next_heartbeat_at.min(self.next_purge_at)
    }

    /// Handles one message from a peer: `sender` is the identity the ROUTER put first, `frames`
    /// the rest. What to send in answer is appended to `out`.
    pub fn handle(&mut self, now: Instant, sender: &[u8], frames: Frames, out: &mut Vec<Outgoing>) {
        self.handle_as(now, sender, None, frames, out);
    }

    /// [`Broker::handle`] for a message whose connection ZAP authenticated as `principal` (the
    /// `User-Id` property libzmq puts on each message). With [`Access`] rules in force, the
    /// principal decides what the sender may serve and call, and a request counts against the
    /// principal's fair share rather than the connection's.
    pub fn handle_as(
        &mut self,
        now: Instant,
        sender: &[u8],
        principal: Option<&str>,
        frames: Frames,
        out: &mut Vec<Outgoing>,
    ) {
        self.now = now;
        self.stats.messages_in += 1;
        let sent_before = out.len();
        match Inbound::parse(frames) {
            Ok(Inbound::Client(request)) => {
                self.client_request(now, sender, principal, request, out)
            }
            Ok(Inbound::Worker(command)) => {
                self.worker_command(now, sender, principal, command, out)
            }
            Err(error) => self.malformed(sender, error, out),
        }
        self.stats.messages_out += out.len().saturating_sub(sent_before) as u64;
    }

    /// The timed work: heartbeats to every worker, purging silent workers, expiring old requests.
    /// Call it when [`Broker::next_deadline`] has passed (calling it earlier is harmless).
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        let sent_before = out.len();
        self.tick_inner(now, out);
        self.stats.messages_out += out.len().saturating_sub(sent_before) as u64;
    }

    fn tick_inner(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        self.now = now;
        for line in Line::ALL {
            if let Some(held) = self.logs.0[line as usize].overdue(now) {
                if line == Line::Expired {
                    continue;
                }
                warn!(
                    "{held} more {} in the last second (each at debug)",
                    line.what()
                );
            }
        }
        if now >= self.next_purge_at {
            self.purge(now, out);
        }
        if now >= self.next_heartbeat_at {
            for worker in sorted_identities(&self.workers) {
                out.push(Outgoing::new(ToWorker::Heartbeat.encode_for_router(worker)));
            }
            self.next_heartbeat_at = now + self.config.heartbeat_interval;
        }
    }

    /// The socket could not deliver a message to `recipient` (it is gone, or not reading). A
    /// worker that cannot be reached is forgotten; a lost reply to a client is only logged.
    pub fn undeliverable(&mut self, recipient: &[u8], out: &mut Vec<Outgoing>) {
        if self.workers.contains_key(recipient) {
            peer_log!(
                self,
                Line::Unreachable,
                warn,
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
            peer_log!(
                self,
                Line::Unreachable,
                warn,
                "worker {} cannot be reached: forgetting it, and queuing again the request it never got",
                dump::Identity(&recipient)
            );
            self.remove_worker_with(&recipient, Delivery::Refused, out);
        } else {
            self.undeliverable(&recipient, out);
        }
        returned
    }

    /// The driver did not send `message` (an [`Outgoing`] with [`Outgoing::if_connected`] set:
    /// a REQUEST for a worker) because the client it came from is gone: nobody is left to read
    /// the reply, so the request is dropped unsent and counted in
    /// [`Stats::requests_abandoned`]. The worker never got it: it goes back to the front of its
    /// service's idle list, still the least recently used, and takes the next waiting request
    /// if there is one.
    pub fn client_gone(&mut self, message: Frames, out: &mut Vec<Outgoing>) {
        let mut frames = message.into_iter();
        let Some(recipient) = frames.next() else {
            return;
        };
        let Ok(ToWorker::Request { client, .. }) = ToWorker::parse(frames.collect()) else {
            return;
        };
        let Some(worker) = self.workers.get_mut(&recipient[..]) else {
            return;
        };
        let WorkerState::Busy {
            client: holding, ..
        } = &worker.state
        else {
            return;
        };
        if holding[..] != client[..] {
            return;
        }
        let token = self.next_idle_token;
        self.next_idle_token += 1;
        worker.state = WorkerState::Idle { token };
        let name = worker.service.clone();
        self.stats.requests_dispatched -= 1;
        self.stats.requests_abandoned += 1;
        debug!(
            "dropping request from client {} for service {name}: the client is gone",
            dump::Identity(&client)
        );
        if let Some(service) = self.services.get_mut(&name) {
            service.counters.dispatched = service.counters.dispatched.saturating_sub(1);
            service.busy_count = service.busy_count.saturating_sub(1);
            service.push_idle_front(IdleEntry {
                worker: recipient.to_vec(),
                token,
            });
        }
        self.dashboard_changed.insert(name.clone());
        self.dispatch(&name, out);
    }

    /// Shutting down: DISCONNECT to every worker, so they re-register with the next broker
    /// instead of waiting out the heartbeat expiry.
    pub fn shutdown(&mut self, out: &mut Vec<Outgoing>) {
        for worker in sorted_identities(&self.workers) {
            out.push(Outgoing::new(
                ToWorker::Disconnect.encode_for_router(worker),
            ));
        }
        self.workers.clear();
        self.dashboard_changed
            .extend(self.services.drain().map(|(name, _)| name));
        self.held = Held::default();
        self.served_services = 0;
    }

    fn client_request(
        &mut self,
        now: Instant,
        client: &[u8],
        principal: Option<&str>,
        request: client::Request,
        out: &mut Vec<Outgoing>,
    ) {
        self.stats.requests_received += 1;
        let allowed = self
            .access
            .as_ref()
            .is_none_or(|access| access.may_call(principal, &request.service));
        if !allowed {
            // Spec 7 has no error reply: the client's own timeout takes over.
            self.stats.requests_refused_unauthorized += 1;
            if let Some(service) = self.services.get_mut(&request.service) {
                service.counters.received += 1;
                *service
                    .counters
                    .refused
                    .entry("unauthorized".to_owned())
                    .or_default() += 1;
                self.dashboard_changed.insert(request.service.clone());
            }
            peer_log!(
                self,
                Line::CallDenied,
                warn,
                "dropping request from client {} ({}) for service {}: not allowed to call it",
                dump::Identity(client),
                principal.unwrap_or("no principal"),
                request.service
            );
            return;
        }
        let tries = TryIdentity::parse(client);
        self.held.heard_from(tries);
        if request.service.is_mmi() {
            return self.mmi_request(client, request, out);
        }
        let client::Request {
            service: name,
            body,
        } = request;
        if !self.services.contains_key(&name)
            && self.services.len() - self.served_services >= self.config.max_absent_services
        {
            self.stats.requests_refused_services += 1;
            peer_log!(
                self,
                Line::Services,
                warn,
                "refusing request from client {} for service {name}: {} services already have \
                 no worker (--max-absent-services)",
                dump::Identity(client),
                self.config.max_absent_services
            );
            return;
        }
        let share = match principal {
            Some(principal) => ShareKey::Principal(Arc::from(principal)),
            None => ShareKey::Connection(client.to_vec()),
        };
        let waiting = QueuedRequest {
            cost: request_cost(client, &body),
            client: client.to_vec(),
            body,
            queued_at: now,
            redelivered: false,
            share,
            tries,
        };
        self.held.add(&waiting);
        let service = self.services.entry(name.clone()).or_default();
        service.counters.received += 1;
        service.enqueue_back(waiting);
        self.dashboard_changed.insert(name.clone());
        // Only a request that has to wait counts against the limits: one that an idle worker takes
        // at once is never refused, so a flood of requests for a service nobody serves cannot
        // shut out the services that have workers.
        let dispatched_before = self.stats.requests_dispatched;
        self.dispatch(&name, out);
        let taken = self.stats.requests_dispatched > dispatched_before;
        let Some(service) = self.services.get_mut(&name) else {
            return;
        };
        if taken {
            return;
        }
        let Some(waiting) = service.requests.back() else {
            return;
        };
        let config = &self.config;
        let refusal = if service.requests.len() > config.max_queue
            || self.held.total > config.max_queued_total
        {
            Some(Line::QueueFull)
        } else if self.held.bytes > config.max_queued_bytes {
            Some(Line::Bytes)
        } else if service.held_by(&waiting.share) > config.share_of_queue()
            || self.held.bytes_of(&waiting.share) > config.share_of_bytes()
        {
            Some(Line::FairShare)
        } else {
            None
        };
        let Some(line) = refusal else {
            // It waits: give back the spare room of the frame list it arrived in (a few hundred
            // bytes, which add up over 100,000 waiting requests).
            if let Some(waiting) = service.requests.back_mut() {
                waiting.body.shrink_to_fit();
            }
            return;
        };
        // No worker took anything, so the request just added is still the last one.
        let Some(refused) = service.dequeue_back() else {
            return;
        };
        self.held.remove(&refused);
        let (counter, why) = match line {
            Line::QueueFull => (
                &mut self.stats.requests_refused_queue_full,
                format!(
                    "queue full ({} waiting for it, {} in all; limits {} and {})",
                    service.requests.len(),
                    self.held.total,
                    config.max_queue,
                    config.max_queued_total
                ),
            ),
            Line::Bytes => (
                &mut self.stats.requests_refused_bytes,
                format!(
                    "{} bytes waiting in all, limit {} (--max-queued-bytes)",
                    self.held.bytes, config.max_queued_bytes
                ),
            ),
            _ => (
                &mut self.stats.requests_refused_fair_share,
                format!(
                    "the client holds its fair share ({} waiting for this service, {} bytes in \
                     all; at most {} and {})",
                    service.held_by(&refused.share),
                    self.held.bytes_of(&refused.share),
                    config.share_of_queue(),
                    config.share_of_bytes()
                ),
            ),
        };
        *counter += 1;
        let reason = match line {
            Line::QueueFull => "queue_full",
            Line::Bytes => "bytes",
            _ => "fair_share",
        };
        *service
            .counters
            .refused
            .entry(reason.to_owned())
            .or_default() += 1;
        if service.is_unused() {
            self.services.remove(&name);
        }
        peer_log!(
            self,
            line,
            warn,
            "refusing request from client {} for service {name}: {why}",
            dump::Identity(client)
        );
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
        out.push(Outgoing::new(client::Reply::encode_for_router(
            client,
            &request.service,
            body,
        )));
    }

    fn worker_command(
        &mut self,
        now: Instant,
        sender: &[u8],
        principal: Option<&str>,
        command: FromWorker,
        out: &mut Vec<Outgoing>,
    ) {
        let expires_at = now + self.config.worker_expiry();
        let Some(worker) = self.workers.get_mut(sender) else {
            return self.unknown_worker_command(now, sender, principal, command, out);
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
                        client: expected,
                        queued_at,
                        ..
                    } if *expected == client => Ok((worker.service.clone(), *queued_at)),
                    WorkerState::Busy { .. } => {
                        Err("sent a REPLY for a client whose request it does not hold")
                    }
                    WorkerState::Idle { .. } => Err("sent a REPLY while holding no request"),
                };
                match verdict {
                    Ok((service, queued_at)) => {
                        self.stats.replies_forwarded += 1;
                        if let Some(entry) = self.services.get_mut(&service) {
                            entry.counters.answered += 1;
                            entry
                                .latency
                                .observe(now.saturating_duration_since(queued_at));
                        }
                        // The worker's next request, if one waits, goes out before this reply:
                        // with one request per worker at a time the worker is what requests
                        // wait for, so it should not also wait for the reply to be sent.
                        self.worker_idle(sender, out);
                        out.push(Outgoing::new(client::Reply::encode_for_router(
                            &client, &service, body,
                        )));
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
        principal: Option<&str>,
        command: FromWorker,
        out: &mut Vec<Outgoing>,
    ) {
        match command {
            FromWorker::Ready { service } if service.is_mmi() => {
                peer_log!(
                    self,
                    Line::Reserved,
                    warn,
                    "worker {} tried to register reserved service {service}: disconnecting it",
                    dump::Identity(sender)
                );
                self.send_disconnect(sender, out);
            }
            FromWorker::Ready { service }
                if !self
                    .access
                    .as_ref()
                    .is_none_or(|access| access.may_serve(principal, &service)) =>
            {
                self.stats.workers_refused_unauthorized += 1;
                peer_log!(
                    self,
                    Line::ServeDenied,
                    warn,
                    "worker {} ({}) may not serve {service}: disconnecting it",
                    dump::Identity(sender),
                    principal.unwrap_or("no principal")
                );
                self.send_disconnect(sender, out);
            }
            FromWorker::Ready { service } => {
                // Once per worker: at debug (the periodic summary counts them).
                debug!(
                    "worker {} registered for service {service}",
                    dump::Identity(sender)
                );
                self.stats.workers_registered += 1;
                let entry = self.services.entry(service.clone()).or_default();
                entry.worker_count += 1;
                if entry.worker_count == 1 {
                    self.served_services += 1;
                }
                let expires_at = now + self.config.worker_expiry();
                self.workers.insert(
                    sender.to_vec(),
                    Worker {
                        service,
                        expires_at,
                        // Made idle (with a real token) just below.
                        state: WorkerState::Idle { token: u64::MAX },
                        principal: principal.map(Arc::from),
                    },
                );
                self.next_purge_at = self.next_purge_at.min(expires_at);
                self.worker_idle(sender, out);
            }
            FromWorker::Disconnect => {
                debug!("DISCONNECT from unknown worker {}", dump::Identity(sender));
            }
            other => {
                peer_log!(
                    self,
                    Line::UnknownWorker,
                    warn,
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
            peer_log!(
                self,
                Line::Malformed,
                warn,
                "malformed message from {} ({error}): disconnecting it",
                dump::Identity(sender)
            );
            self.remove_worker(sender, out);
            self.send_disconnect(sender, out);
        } else {
            peer_log!(
                self,
                Line::Malformed,
                warn,
                "dropping malformed message from {}: {error}",
                dump::Identity(sender)
            );
        }
    }

    fn protocol_violation(&mut self, sender: &[u8], what: &str, out: &mut Vec<Outgoing>) {
        peer_log!(
            self,
            Line::Protocol,
            warn,
            "worker {} {what}: disconnecting it",
            dump::Identity(sender)
        );
        self.remove_worker(sender, out);
        self.send_disconnect(sender, out);
    }

    fn send_disconnect(&mut self, worker: &[u8], out: &mut Vec<Outgoing>) {
        self.stats.workers_disconnected += 1;
        out.push(Outgoing::new(
            ToWorker::Disconnect.encode_for_router(worker),
        ));
    }

    /// The worker is waiting for work: it goes to the back of its service's idle list, and gets
    /// a request at once if one is waiting.
    fn worker_idle(&mut self, identity: &[u8], out: &mut Vec<Outgoing>) {
        let Some(worker) = self.workers.get_mut(identity) else {
            return;
        };
        let token = self.next_idle_token;
        self.next_idle_token += 1;
        let was_busy = matches!(worker.state, WorkerState::Busy { .. });
        worker.state = WorkerState::Idle { token };
        let name = worker.service.clone();
        self.dashboard_changed.insert(name.clone());
        if let Some(service) = self.services.get_mut(&name) {
            if was_busy {
                service.busy_count = service.busy_count.saturating_sub(1);
            }
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
            // A try its client has given up on is dropped unsent (see `mdp::tries`); it is
            // checked only here, at the front, so a resend costs O(1) however long the queue.
            while let Some(front) = service.requests.front() {
                if !self.held.is_superseded(front) {
                    break;
                }
                let Some(superseded) = service.dequeue_front() else {
                    break;
                };
                self.held.remove(&superseded);
                self.stats.requests_superseded += 1;
                debug!(
                    "dropping request from client {} for service {name}: the client sent \
                     again from a newer socket",
                    dump::Identity(&superseded.client)
                );
            }
            if service.requests.is_empty() {
                break;
            }
            let Some(entry) = service.pop_idle(|entry| is_live_idle_entry(workers, entry)) else {
                break;
            };
            let Some(request) = service.dequeue_front() else {
                break;
            };
            self.held.remove(&request);
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
                share: request.share,
            };
            self.stats.requests_dispatched += 1;
            service.counters.dispatched += 1;
            service.busy_count += 1;
            let if_connected = request.tries.map(|_| request.client.clone());
            let command = ToWorker::Request {
                client: zmq::Message::from(request.client),
                body: request.body,
            };
            out.push(Outgoing {
                frames: command.encode_for_router(&entry.worker),
                if_connected,
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
        self.dashboard_changed.insert(name.clone());
        let Some(service) = self.services.get_mut(&name) else {
            return;
        };
        if matches!(worker.state, WorkerState::Busy { .. }) {
            service.busy_count = service.busy_count.saturating_sub(1);
        }
        service.worker_count -= 1;
        if service.worker_count == 0 {
            self.served_services -= 1;
        }
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
                share,
            } => match request {
                // The fair share is not checked again: the request was let in once. The byte
                // limit is, like the count limits.
                Some(body)
                    if (delivery == Delivery::Refused || !redelivered)
                        && service.requests.len() < self.config.max_queue
                        && self.held.total < self.config.max_queued_total
                        && self.held.bytes + request_cost(&client, &body)
                            <= self.config.max_queued_bytes =>
                {
                    let redelivered = match delivery {
                        Delivery::Refused => {
                            // It never left: it was not dispatched after all (so the counters
                            // still add up), and it keeps its one redelivery.
                            self.stats.requests_dispatched =
                                self.stats.requests_dispatched.saturating_sub(1);
                            service.counters.dispatched =
                                service.counters.dispatched.saturating_sub(1);
                            redelivered
                        }
                        Delivery::Unknown => {
                            peer_log!(
                                self,
                                Line::Redelivered,
                                info,
                                "worker {} died holding a request from client {}: redelivering it",
                                dump::Identity(identity),
                                dump::Identity(&client)
                            );
                            self.stats.requests_redelivered += 1;
                            true
                        }
                    };
                    let waiting = QueuedRequest {
                        cost: request_cost(&client, &body),
                        tries: TryIdentity::parse(&client),
                        client,
                        body,
                        queued_at,
                        redelivered,
                        share,
                    };
                    self.held.add(&waiting);
                    service.enqueue_front(waiting);
                    self.dispatch(&name, out);
                    return self.forget_service_if_unused(&name);
                }
                _ => {
                    self.stats.requests_lost_with_worker += 1;
                    service.counters.lost_with_worker += 1;
                    peer_log!(
                        self,
                        Line::Lost,
                        warn,
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
            peer_log!(
                self,
                Line::Purged,
                warn,
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
            let expired_before = expired_requests;
            while service
                .requests
                .front()
                .is_some_and(|request| request.queued_at + ttl <= now)
            {
                if let Some(request) = service.dequeue_front() {
                    expired_requests += 1;
                    self.held.remove(&request);
                    debug!(
                        "dropping request from client {} for service {name}: no worker took it within {ttl:?}",
                        dump::Identity(&request.client)
                    );
                }
            }
            if expired_requests > expired_before {
                service.counters.expired += (expired_requests - expired_before) as u64;
                self.dashboard_changed.insert(name.clone());
            }
            service.shrink();
        }
        self.stats.requests_expired += expired_requests as u64;
        self.expired_unreported += expired_requests as u64;
        self.services.retain(|_, service| !service.is_unused());
        shrink_map(&mut self.services);
        shrink_map(&mut self.workers);

        self.report_drops();

        let earliest_expiry = self.workers.values().map(|worker| worker.expires_at).min();
        let next_tick = now + self.config.heartbeat_interval;
        self.next_purge_at = earliest_expiry.map_or(next_tick, |at| at.min(next_tick));
    }

    /// Logs at warn, at most once a second, how many requests expired since the last such line.
    /// (Refusals are logged as they happen, at most once a second per reason.)
    fn report_drops(&mut self) {
        if self.expired_unreported > 0 && self.logs.allow(Line::Expired, self.now).is_some() {
            warn!(
                "dropped {} request(s): no worker took them within {:?}",
                self.expired_unreported, self.config.request_ttl
            );
            self.expired_unreported = 0;
        }
    }

    /// Checks the structure's invariants, panicking with a description of the first one broken.
    /// For tests and fuzzing; it walks everything, so never call it on the hot path.
    pub fn check_invariants(&self) {
        let mut idle_seen = std::collections::HashSet::new();
        let mut queued = 0;
        let mut tries: HashMap<u64, usize> = HashMap::new();
        for (name, service) in &self.services {
            for request in &service.requests {
                assert_eq!(
                    request.tries,
                    TryIdentity::parse(&request.client),
                    "a waiting request's identity read wrong"
                );
                if let Some(id) = request.tries {
                    *tries.entry(id.client).or_default() += 1;
                }
            }
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
        assert_eq!(queued, self.held.total, "queued total");
        let bytes: usize = self
            .services
            .values()
            .flat_map(|service| service.requests.iter())
            .map(|request| request.cost)
            .sum();
        assert_eq!(bytes, self.held.bytes, "queued bytes");
        let by_share: usize = self.held.by_share.values().sum();
        assert_eq!(by_share, self.held.bytes, "bytes by share");
        assert!(
            self.held.by_share.values().all(|&bytes| bytes > 0),
            "empty share kept"
        );
        let served = self
            .services
            .values()
            .filter(|service| service.worker_count > 0)
            .count();
        assert_eq!(served, self.served_services, "served services");
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
        let held_tries: HashMap<u64, usize> = self
            .held
            .tries
            .iter()
            .map(|(client, t)| (*client, t.waiting))
            .collect();
        assert_eq!(
            held_tries, tries,
            "one-request-at-a-time clients' waiting counts"
        );
    }
}

/// What waits in all queues: requests, their bytes ([`request_cost`]), and the bytes per client.
#[derive(Debug, Default)]
struct Held {
    total: usize,
    bytes: usize,
    by_share: HashMap<ShareKey, usize>,
    /// The one-request-at-a-time clients ([`mdp::tries`]) with requests waiting, by their
    /// number: an entry lives exactly as long as its client has one waiting, so this holds no
    /// more entries than there are waiting requests.
    tries: HashMap<u64, Tries>,
}

/// What a one-request-at-a-time client has waiting.
#[derive(Debug, Clone, Copy)]
struct Tries {
    /// The newest of its sockets heard from while it had requests waiting.
    latest: u32,
    /// How many of its requests wait, in all queues.
    waiting: usize,
}

impl Held {
    fn add(&mut self, request: &QueuedRequest) {
        self.total += 1;
        self.bytes += request.cost;
        *self.by_share.entry(request.share.clone()).or_default() += request.cost;
        if let Some(id) = request.tries {
            let tries = self.tries.entry(id.client).or_insert(Tries {
                latest: id.socket,
                waiting: 0,
            });
            tries.latest = tries.latest.max(id.socket);
            tries.waiting += 1;
        }
    }

    fn remove(&mut self, request: &QueuedRequest) {
        self.total -= 1;
        self.bytes -= request.cost;
        if let Some(bytes) = self.by_share.get_mut(&request.share) {
            *bytes -= request.cost;
            if *bytes == 0 {
                self.by_share.remove(&request.share);
            }
        }
        if let Some(id) = request.tries {
            if let Some(tries) = self.tries.get_mut(&id.client) {
                tries.waiting -= 1;
                if tries.waiting == 0 {
                    self.tries.remove(&id.client);
                }
            }
        }
    }

    /// A request came from `client` (its identity as read by [`TryIdentity::parse`]): if it is a
    /// newer socket of a one-request-at-a-time client with requests waiting, those from its
    /// older sockets are superseded.
    fn heard_from(&mut self, client: Option<TryIdentity>) {
        if let Some(id) = client {
            if let Some(tries) = self.tries.get_mut(&id.client) {
                tries.latest = tries.latest.max(id.socket);
            }
        }
    }

    /// True when `request` came from an older socket of a client that has since sent from a
    /// newer one: the client gave up on it.
    fn is_superseded(&self, request: &QueuedRequest) -> bool {
        request.tries.is_some_and(|id| {
            self.tries
                .get(&id.client)
                .is_some_and(|tries| tries.latest > id.socket)
        })
    }

    fn bytes_of(&self, share: &ShareKey) -> usize {
        self.by_share.get(share).copied().unwrap_or(0)
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
