//! The whole system in one process: the real broker core, worker cores and client cores, each
//! driven the way its socket loop drives it, over the socket model of [`crate::net`], in virtual
//! time, with faults drawn from a seed; and, as it runs, the checks of every rule that can be
//! seen from outside the cores.
//!
//! # The parties
//! * **Brokers**, one or more (`Scenario::brokers`), each a process of its own bound at its own
//!   endpoint: a [`broker::Broker`] behind a ROUTER with `ZMQ_ROUTER_MANDATORY`, fed as
//!   `broker::server` feeds it: each message, then whatever it says to send, in order; a message
//!   the ROUTER refuses goes back to [`broker::Broker::refused`]; [`broker::Broker::tick`] at
//!   its deadline. Broker `b` is party `b`.
//! * **Workers**: a [`worker::core::WorkerCore`] with a link per slot (`Scenario::slots`), each
//!   link a DEALER socket of its own, whose application echoes each request's body after a random
//!   service time. A placed worker serves one broker (worker `n` the broker `n % brokers`).
//! * **Synchronous clients**: a [`client::core::SyncCore`] on a REQ socket, one request after
//!   the other.
//! * **Asynchronous clients**: a [`client::core::AsyncCore`] on DEALER sockets (high-water marks
//!   0, as `client::AsyncClient` sets them), keeping a window of requests in flight.
//!
//! Every request body is one frame: the request's number in the run's
//! [`crate::report::Ledger`], so the checks can tell which request a reply answers.
//!
//! # Faults
//! A worker killed (its sockets close; a new worker process starts after a pause), a worker
//! frozen (it stops reading and sending, its sockets stay up: the silent worker the broker must
//! purge), a process cut off from the network and healed, a process's traffic held up (a delayed
//! message, and what follows it), a broker killed and restarted with its state lost, and a broker
//! cut off from its workers only, from its clients only, or from everyone, then healed. A cut is
//! kept per (process, broker) pair, and applied to the pipes of that process's sockets that lead
//! to that broker ([`crate::net::Network::set_pipe_partitioned`]).
//!
//! # What is checked
//! After every event, for every broker: its own invariants ([`broker::Broker::check_invariants`]);
//! its waiting requests within `max_queued_total`; no registered worker silent for longer than
//! interval x liveness plus one interval; no request lost with a worker beyond those the network
//! had actually handed to a worker that then went away. At a bounded time after each broker
//! restart: every worker link to it that was left alone meanwhile is registered again. With
//! `Scenario::check_sync_availability`: no synchronous request fails while a broker its client
//! knows and reaches was *fit to serve* it from before the request was issued (running, a worker
//! of the service registered, and every worker registered with it alive, not frozen, reachable:
//! so no try sent there can be lost). Every run counts how often each request was handed to a
//! worker, and how often after its client gave up on it; with
//! `Scenario::given_up_runs_at_most_once`, a request given up on that ran twice fails the run.
//! At the end: every
//! request the applications issued ended exactly once, as a reply or a failure with a reason,
//! and no reply answered the wrong request (exactly for the synchronous client and tag matching;
//! for matching by service, which cannot promise it, only that the reply is for one of that
//! client's requests to that service).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use broker::Broker;
use client::core::{AsyncAction, AsyncCore, ConnId, Link as ClientLink, SyncAction, SyncCore};
use client::{Matching, Outcome, RequestId};
use mdp::{Frames, ServiceName, WORKER_HEADER};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use worker::core::{Action, LinkId, Mode, ReplyTo, Topology, WorkerCore};

use crate::net::{Network, Notice, SocketId, SocketKind, SocketOptions};
use crate::report::{Coverage, Ended, Ledger, Report, RequestRecord};
use crate::scenario::{ClientMode, FaultKind, Scenario, ScriptedFault, WorkerMode};
use crate::time::{Clock, Timeline};

/// Where broker `broker` binds, and its workers and clients connect.
fn endpoint(broker: usize) -> String {
    format!("tcp://broker{broker}:5555")
}

/// The service names workers serve: worker `n` serves `SERVICES[n % services]`.
const SERVICES: [&str; 2] = ["echo", "time"];

/// Something due at a virtual time.
#[derive(Debug)]
enum Event {
    /// A party's core asked to be woken now.
    Wake {
        node: usize,
        token: u64,
    },
    /// A worker's application has finished a request.
    Finish {
        node: usize,
        incarnation: u64,
        reply_to: ReplyTo,
        body: Frames,
    },
    /// A synchronous client's application issues its next request.
    NextRequest {
        node: usize,
    },
    Fault(ScriptedFault),
    /// The next random fault is drawn.
    RandomFault,
    /// A killed worker's replacement starts, or a broker comes back.
    Revive {
        node: usize,
    },
    /// A worker program starts late (`Scenario::workers_start_at`).
    Start {
        node: usize,
    },
    Thaw {
        node: usize,
    },
    Heal {
        node: usize,
    },
    /// All workers left alone since restart `restart` of broker `broker` must be registered
    /// with it by now.
    CheckRegistered {
        broker: usize,
        restart: u64,
        since: Duration,
    },
}

/// A party's process: whether it runs, and what has been done to it.
#[derive(Debug, Default)]
struct Process {
    alive: bool,
    frozen: bool,
    partitioned: bool,
    /// Bumped when the process dies, so that its pending work is recognised as stale.
    incarnation: u64,
    /// The latest fault that touched it (for the re-registration check).
    last_fault_at: Option<Duration>,
    /// Its core's deadline as scheduled, and the token of that wake-up.
    wake_at: Option<Duration>,
    wake_token: u64,
    /// Work that came due while it was frozen.
    deferred: Vec<Event>,
    /// Its traffic is held back until then (a delay fault).
    held_until: Duration,
}

#[derive(Debug)]
struct BrokerRole {
    core: Option<Broker>,
    socket: Option<SocketId>,
    /// When the broker last heard from each peer.
    last_heard: HashMap<Vec<u8>, Duration>,
    /// REQUESTs the ROUTER took for each worker and the worker has not answered.
    at_risk: HashMap<Vec<u8>, u64>,
    /// Requests the broker may have lost with a worker: handed to one that then went away.
    loss_budget: u64,
    restarts: u64,
    /// Since when (the last restart) the workers left alone are not all registered again.
    awaiting_registration: Option<Duration>,
    /// The counters of the broker's earlier incarnations.
    earlier_stats: broker::Stats,
}

struct WorkerRole {
    core: WorkerCore,
    service: usize,
    /// The broker it serves (placed workers).
    home: usize,
    /// Each link's socket (`worker::core::LinkId` is the index), and the broker it connects to.
    sockets: Vec<Option<SocketId>>,
    brokers_of_links: Vec<usize>,
    /// The application's requests in hand, per link.
    busy: Vec<usize>,
}

impl WorkerRole {
    fn busy(&self) -> usize {
        self.busy.iter().sum()
    }

    fn link_of(&self, socket: SocketId) -> Option<usize> {
        self.sockets.iter().position(|held| *held == Some(socket))
    }
}

struct SyncRole {
    core: SyncCore,
    socket: Option<SocketId>,
    /// The broker it uses (placed clients), or the first of its list (clients of every broker:
    /// the core's broker `i` is broker `(i + home) % brokers`).
    home: usize,
    /// The broker the current socket connects to.
    socket_broker: usize,
    service: usize,
    issued: u32,
    current: Option<usize>,
}

struct AsyncRole {
    core: AsyncCore,
    /// The broker it uses (placed clients), or the first of its list (as for `SyncRole`).
    home: usize,
    /// The broker each connection connects to.
    conn_brokers: BTreeMap<ConnId, usize>,
    // Ordered maps: the simulation iterates them, and must do so in the same order every run.
    sockets: BTreeMap<ConnId, SocketId>,
    conns: BTreeMap<SocketId, ConnId>,
    in_flight: HashMap<RequestId, usize>,
    issued: u32,
    dropped_before: u64,
}

/// What a core said to do, to be carried out once the core is no longer borrowed.
enum Produced {
    Broker(Vec<broker::Outgoing>),
    Worker(Vec<Action>),
    Sync(Vec<SyncAction>),
    Async(Vec<AsyncAction>),
    Nothing,
}

enum Role {
    Broker(Box<BrokerRole>),
    Worker(Box<WorkerRole>),
    Sync(Box<SyncRole>),
    Async(Box<AsyncRole>),
}

/// The running system.
pub struct World {
    seed: u64,
    scenario: Scenario,
    clock: Clock,
    net: Network,
    timeline: Timeline<Event>,
    rng: StdRng,
    processes: Vec<Process>,
    roles: Vec<Role>,
    ledger: Ledger,
    coverage: Coverage,
    violation: Option<String>,
    longest_reregistration: Duration,
    peak_queued: usize,
    peak_workers: usize,
    kills: u64,
    kills_of_busy_workers: u64,
    /// Print every message the brokers receive and send (`SIM_TRACE=1`, for replays).
    trace: bool,
    /// The (process, broker) pairs cut off from each other, besides whole processes cut off.
    cuts: BTreeSet<(usize, usize)>,
    /// When each (process, broker) pair was last cut off or healed.
    cut_changed: HashMap<(usize, usize), Duration>,
    /// Since when each broker has been fit to serve each service (see `fit_to_serve`), if it is.
    fit_since: Vec<Vec<Option<Duration>>>,
    /// Requests handed to a worker after their client had given up on them.
    runs_after_give_up: u64,
    /// The brokers the current event ran or changed, to be checked after it.
    touched: Vec<bool>,
}

impl fmt::Debug for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.seed)
            .field("elapsed", &self.clock.elapsed())
            .finish_non_exhaustive()
    }
}

/// More events than this at one virtual instant means a livelock.
const MAX_EVENTS_AT_ONE_INSTANT: u64 = 100_000;

/// Brokers are the first parties: broker `b` is party `b`.
fn is_broker(node: usize, brokers: usize) -> bool {
    node < brokers
}

impl World {
    /// Builds the system of `scenario`; nothing runs until [`World::run`].
    pub fn new(scenario: Scenario, seed: u64) -> World {
        let brokers = scenario.brokers.max(1);
        let services = scenario.services.clamp(1, SERVICES.len());
        let mut world = World {
            seed,
            net: Network::new(
                scenario.net.clone(),
                seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            clock: Clock::new(),
            timeline: Timeline::new(),
            rng: StdRng::seed_from_u64(seed),
            processes: Vec::new(),
            roles: Vec::new(),
            ledger: Ledger::default(),
            coverage: Coverage {
                runs: 1,
                ..Coverage::default()
            },
            violation: None,
            longest_reregistration: Duration::ZERO,
            peak_queued: 0,
            peak_workers: 0,
            kills: 0,
            kills_of_busy_workers: 0,
            trace: std::env::var_os("SIM_TRACE").is_some(),
            cuts: BTreeSet::new(),
            cut_changed: HashMap::new(),
            fit_since: vec![vec![None; services]; brokers],
            runs_after_give_up: 0,
            touched: vec![true; brokers],
            scenario,
        };
        for _ in 0..brokers {
            world.add(Role::Broker(Box::new(BrokerRole {
                core: None,
                socket: None,
                last_heard: HashMap::new(),
                at_risk: HashMap::new(),
                loss_budget: 0,
                restarts: 0,
                awaiting_registration: None,
                earlier_stats: broker::Stats::default(),
            })));
        }
        for index in 0..world.scenario.workers {
            let role = world.new_worker(index % services, index % brokers);
            world.add(Role::Worker(Box::new(role)));
        }
        // Clients are placed on the brokers in turn, counted over both kinds.
        let mut placed = 0;
        let every_broker = world.scenario.client_mode == ClientMode::EveryBroker;
        for index in 0..world.scenario.sync_clients {
            let home = placed % brokers;
            let config = world.scenario.sync.clone();
            let core = if every_broker {
                let names = (0..brokers)
                    .map(|i| endpoint((i + home) % brokers))
                    .collect();
                SyncCore::with_brokers(config, names)
            } else {
                SyncCore::new(config)
            };
            // Its sockets' identities from its place in the run, not a random number: a seed
            // replays exactly.
            let core = core.with_number(index as u64 + 1);
            world.add(Role::Sync(Box::new(SyncRole {
                core,
                socket: None,
                home,
                socket_broker: home,
                service: index % services,
                issued: 0,
                current: None,
            })));
            placed += 1;
        }
        for _ in 0..world.scenario.async_clients {
            let config = world.scenario.async_config.clone();
            let core = if every_broker {
                AsyncCore::with_brokers(config, brokers)
            } else {
                AsyncCore::new(config)
            };
            world.add(Role::Async(Box::new(AsyncRole {
                core,
                home: placed % brokers,
                conn_brokers: BTreeMap::new(),
                sockets: BTreeMap::new(),
                conns: BTreeMap::new(),
                in_flight: HashMap::new(),
                issued: 0,
                dropped_before: 0,
            })));
            placed += 1;
        }
        world
    }

    /// A worker program's state before it starts: its core with a link per slot to its broker
    /// (placed), or per slot to every broker (all or failover mode). A worker's list of brokers
    /// starts at its home broker (worker `n` is given brokers `n % brokers`, `n % brokers + 1`,
    /// ...), so that failover workers, which start on the first broker of their list, are spread
    /// over the brokers as a deployment would spread them.
    fn new_worker(&self, service: usize, home: usize) -> WorkerRole {
        let slots = self.scenario.slots.max(1);
        let topology = match self.scenario.worker_mode {
            WorkerMode::Placed => Topology::single(slots),
            WorkerMode::All => Topology {
                brokers: self.brokers(),
                slots,
                mode: Mode::All,
            },
            WorkerMode::Failover => Topology {
                brokers: self.brokers(),
                slots,
                mode: Mode::Failover,
            },
        };
        let core = WorkerCore::with_topology(
            service_name(service),
            self.scenario.worker.clone(),
            topology,
            self.clock.now(),
        );
        let links = core.link_count();
        let brokers_of_links = (0..links)
            .map(|link| match self.scenario.worker_mode {
                WorkerMode::Placed => home,
                _ => (core.broker_of(LinkId(link)) + home) % self.brokers(),
            })
            .collect();
        WorkerRole {
            core,
            service,
            home,
            sockets: vec![None; links],
            brokers_of_links,
            busy: vec![0; links],
        }
    }

    fn brokers(&self) -> usize {
        self.scenario.brokers.max(1)
    }

    fn is_broker(&self, node: usize) -> bool {
        is_broker(node, self.brokers())
    }

    fn add(&mut self, role: Role) {
        self.roles.push(role);
        self.processes.push(Process::default());
    }

    /// Runs the system to its end and checks it; the report says what happened.
    pub fn run(mut self) -> Report {
        let late = self.scenario.workers_start_at;
        for node in 0..self.roles.len() {
            if late > Duration::ZERO && matches!(self.roles[node], Role::Worker(_)) {
                self.timeline.schedule(late, Event::Start { node });
            } else {
                self.start(node);
            }
        }
        for fault in self.scenario.scripted_faults.clone() {
            self.timeline.schedule(fault.at, Event::Fault(fault));
        }
        if let Some(plan) = &self.scenario.random_faults {
            let first = plan.start;
            self.timeline.schedule(first, Event::RandomFault);
        }
        // How many events ran at the current instant: the clock must move on eventually.
        let mut same_instant = (Duration::ZERO, 0u64);
        while self.violation.is_none()
            && (!self.all_requests_ended() || self.elapsed() < self.scenario.run_at_least)
        {
            let net_at = self.net.next_at();
            let world_at = self.timeline.next_at();
            let take_net = match (net_at, world_at) {
                (Some(net), Some(world)) => net <= world,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let at = if take_net { net_at } else { world_at }.unwrap_or_default();
            if at > self.scenario.end_by {
                break;
            }
            if at == same_instant.0 {
                same_instant.1 += 1;
                if same_instant.1 > MAX_EVENTS_AT_ONE_INSTANT {
                    self.violate("the system is stuck: the clock no longer moves".to_owned());
                    break;
                }
            } else {
                same_instant = (at, 0);
            }
            self.clock.advance_to(at);
            self.net.set_now(at);
            // Whether the event may have changed which brokers are fit to serve: anything but a
            // client reading its socket.
            let mut fitness_may_change = true;
            if take_net {
                match self.net.step() {
                    Some(Notice::Readable { socket, owner }) => {
                        fitness_may_change =
                            matches!(self.roles[owner], Role::Broker(_) | Role::Worker(_));
                        self.readable(owner, socket);
                    }
                    Some(Notice::Refused { socket, owner }) => self.refused(owner, socket),
                    Some(Notice::Connected { socket, owner }) => {
                        self.link_changed(owner, socket, ClientLink::Up)
                    }
                    Some(Notice::Disconnected { socket, owner }) => {
                        self.link_changed(owner, socket, ClientLink::Down)
                    }
                    None => {}
                }
            } else if let Some((_, event)) = self.timeline.pop() {
                self.event(event);
            }
            // A broker's state changes only when it is the one running, so only the brokers the
            // event touched are checked (a silent worker is then caught at that broker's next
            // tick at the latest, one heartbeat interval later).
            for broker in 0..self.brokers() {
                if std::mem::take(&mut self.touched[broker]) {
                    self.check_broker(broker);
                    self.note_reregistration(broker);
                }
            }
            if fitness_may_change {
                self.note_fitness();
            }
        }
        self.finish()
    }

    fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(format!("at {:?}: {what}", self.elapsed()));
        }
    }

    fn all_requests_ended(&self) -> bool {
        let issuing = self.elapsed() < self.scenario.issue_until;
        let quotas_issued = self.roles.iter().all(|role| match role {
            _ if !issuing => true,
            Role::Sync(sync) => {
                sync.issued >= self.scenario.sync_requests && sync.current.is_none()
            }
            Role::Async(client) => {
                client.issued >= self.scenario.async_requests && client.in_flight.is_empty()
            }
            _ => true,
        });
        quotas_issued && self.ledger.requests.iter().all(|r| r.ended.is_some())
    }

    // ---- starting, waking and feeding the parties ----

    fn start(&mut self, node: usize) {
        if let Some(touched) = self.touched.get_mut(node) {
            *touched = true;
        }
        self.processes[node].alive = true;
        let now = self.clock.now();
        match &mut self.roles[node] {
            Role::Broker(role) => {
                role.core = Some(Broker::new(self.scenario.broker.clone(), now));
                let options = SocketOptions {
                    router_mandatory: true,
                    ..SocketOptions::default()
                };
                let socket = self.net.socket(SocketKind::Router, options, node);
                let bound = self.net.bind(socket, &endpoint(node));
                role.socket = Some(socket);
                role.last_heard.clear();
                role.at_risk.clear();
                role.loss_budget = 0;
                if bound.is_err() {
                    self.violate("the broker cannot bind: its old socket is still open".into());
                }
            }
            Role::Worker(role) => {
                let mut out = Vec::new();
                role.core.start(now, &mut out);
                self.execute(node, Produced::Worker(out));
            }
            Role::Sync(_) => self.next_sync_request(node),
            Role::Async(role) => {
                let mut out = Vec::new();
                role.core.start(&mut out);
                self.execute(node, Produced::Async(out));
            }
        }
        self.reschedule(node);
    }

    /// Carries out what a core said, in order.
    fn execute(&mut self, node: usize, produced: Produced) {
        if let Some(touched) = self.touched.get_mut(node) {
            *touched = true;
        }
        match produced {
            Produced::Broker(out) => self.broker_send_all(node, out),
            Produced::Worker(out) => self.worker_actions(node, out),
            Produced::Sync(out) => self.sync_actions(node, out),
            Produced::Async(out) => {
                self.async_actions(node, out);
                self.async_outcomes(node);
            }
            Produced::Nothing => {}
        }
    }

    /// Schedules the party's wake-up at its core's next deadline, if that changed.
    fn reschedule(&mut self, node: usize) {
        let deadline = match &self.roles[node] {
            Role::Broker(role) => role.core.as_ref().map(Broker::next_deadline),
            Role::Worker(role) => Some(role.core.next_deadline()),
            Role::Sync(role) => role.core.next_deadline(),
            Role::Async(role) => role.core.next_deadline(),
        };
        let at = deadline.map(|deadline| self.clock.offset_of(deadline).max(self.elapsed()));
        let process = &mut self.processes[node];
        if at == process.wake_at || !process.alive {
            return;
        }
        process.wake_at = at;
        process.wake_token += 1;
        if let Some(at) = at {
            let token = process.wake_token;
            self.timeline.schedule(at, Event::Wake { node, token });
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Wake { node, token } => {
                let process = &mut self.processes[node];
                if token != process.wake_token || !process.alive {
                    return;
                }
                process.wake_at = None;
                if process.frozen {
                    return;
                }
                self.tick(node);
            }
            Event::Finish {
                node,
                incarnation,
                reply_to,
                body,
            } => {
                let process = &mut self.processes[node];
                if process.incarnation != incarnation || !process.alive {
                    return;
                }
                if process.frozen {
                    process.deferred.push(Event::Finish {
                        node,
                        incarnation,
                        reply_to,
                        body,
                    });
                    return;
                }
                let now = self.clock.now();
                let mut out = Vec::new();
                if let Role::Worker(role) = &mut self.roles[node] {
                    if let Some(busy) = role.busy.get_mut(reply_to.link().0) {
                        *busy = busy.saturating_sub(1);
                    }
                    role.core.reply(now, reply_to, body, &mut out);
                }
                self.execute(node, Produced::Worker(out));
                self.reschedule(node);
            }
            Event::NextRequest { node } => self.next_sync_request(node),
            Event::Fault(fault) => self.fault(fault),
            Event::RandomFault => self.random_fault(),
            Event::Revive { node } => {
                if let Role::Worker(role) = &self.roles[node] {
                    let fresh = self.new_worker(role.service, role.home);
                    self.roles[node] = Role::Worker(Box::new(fresh));
                }
                self.processes[node].last_fault_at = Some(self.elapsed());
                self.start(node);
                if self.is_broker(node) {
                    let since = self.elapsed();
                    let restart = match &mut self.roles[node] {
                        Role::Broker(role) => {
                            role.restarts += 1;
                            role.awaiting_registration = Some(since);
                            role.restarts
                        }
                        _ => 0,
                    };
                    let bound = self.reregistration_bound();
                    self.timeline.schedule(
                        since + bound,
                        Event::CheckRegistered {
                            broker: node,
                            restart,
                            since,
                        },
                    );
                }
            }
            Event::Start { node } => self.start(node),
            Event::Thaw { node } => {
                let elapsed = self.elapsed();
                let process = &mut self.processes[node];
                if !process.frozen {
                    return;
                }
                process.frozen = false;
                process.last_fault_at = Some(elapsed);
                let deferred = std::mem::take(&mut process.deferred);
                for event in deferred {
                    self.event(event);
                }
                self.drain_all(node);
                self.processes[node].wake_at = None;
                self.tick(node);
            }
            Event::Heal { node } => {
                self.processes[node].partitioned = false;
                self.processes[node].last_fault_at = Some(self.elapsed());
                if self.is_broker(node) {
                    let healed: Vec<(usize, usize)> = self
                        .cuts
                        .iter()
                        .filter(|(_, broker)| *broker == node)
                        .copied()
                        .collect();
                    for pair in healed {
                        self.cuts.remove(&pair);
                        self.cut_changed.insert(pair, self.elapsed());
                        self.apply_cuts(pair.0);
                    }
                } else {
                    for broker in 0..self.brokers() {
                        self.cut_changed.insert((node, broker), self.elapsed());
                    }
                    self.apply_cuts(node);
                }
            }
            Event::CheckRegistered {
                broker,
                restart,
                since,
            } => self.check_registered(broker, restart, since),
        }
    }

    fn tick(&mut self, node: usize) {
        let now = self.clock.now();
        let produced = match &mut self.roles[node] {
            Role::Broker(role) => match role.core.as_mut() {
                Some(core) => {
                    let mut out = Vec::new();
                    core.tick(now, &mut out);
                    Produced::Broker(out)
                }
                None => Produced::Nothing,
            },
            Role::Worker(role) => {
                let mut out = Vec::new();
                role.core.tick(now, &mut out);
                Produced::Worker(out)
            }
            Role::Sync(role) => {
                let mut out = Vec::new();
                role.core.tick(now, &mut out);
                Produced::Sync(out)
            }
            Role::Async(role) => {
                let mut out = Vec::new();
                role.core.tick(now, &mut out);
                Produced::Async(out)
            }
        };
        self.execute(node, produced);
        // A core whose deadline is still due after its tick would be woken again at once, for
        // ever: its driver's loop would spin (`broker::testing` checks the same of the broker).
        let deadline = match &self.roles[node] {
            Role::Broker(role) => role.core.as_ref().map(Broker::next_deadline),
            Role::Worker(role) => Some(role.core.next_deadline()),
            Role::Sync(role) => role.core.next_deadline(),
            Role::Async(role) => role.core.next_deadline(),
        };
        if deadline.is_some_and(|deadline| deadline <= now) && self.processes[node].alive {
            return self.violate(format!(
                "after a tick, party {node}'s core still has a deadline due: its loop would spin"
            ));
        }
        self.reschedule(node);
    }

    fn readable(&mut self, node: usize, socket: SocketId) {
        let process = &self.processes[node];
        if !process.alive || process.frozen {
            // A frozen process does not read: the message waits in its socket.
            return;
        }
        self.drain(node, socket);
        self.reschedule(node);
    }

    /// A connection attempt of `socket` was refused: a worker's driver learns it from its
    /// socket monitor and tells the core (which, in failover mode, moves to the next broker).
    fn refused(&mut self, node: usize, socket: SocketId) {
        let process = &self.processes[node];
        if !process.alive || process.frozen {
            return;
        }
        let now = self.clock.now();
        let Role::Worker(role) = &mut self.roles[node] else {
            return;
        };
        let Some(link) = role.link_of(socket) else {
            return;
        };
        // The core names brokers by their place in the worker's own list.
        let broker = role.core.broker_of(LinkId(link));
        let mut out = Vec::new();
        role.core.unreachable(now, broker, &mut out);
        self.execute(node, Produced::Worker(out));
        self.reschedule(node);
    }

    /// A client's socket monitor saw its connection come up or go down: the driver tells the
    /// core (the asynchronous core marks a broker down when its connection drops, and probes it
    /// when it is back).
    fn link_changed(&mut self, node: usize, socket: SocketId, link: ClientLink) {
        let process = &self.processes[node];
        if !process.alive || process.frozen {
            return;
        }
        let now = self.clock.now();
        match &mut self.roles[node] {
            Role::Sync(role) => {
                if role.socket == Some(socket) {
                    role.core.link(now, link);
                }
            }
            Role::Async(role) => {
                let Some(conn) = role.conns.get(&socket).copied() else {
                    return;
                };
                let mut out = Vec::new();
                role.core.link(now, conn, link, &mut out);
                self.execute(node, Produced::Async(out));
            }
            _ => return,
        }
        self.reschedule(node);
    }

    fn drain_all(&mut self, node: usize) {
        for socket in self.sockets_of(node) {
            self.drain(node, socket);
        }
    }

    /// Reads everything waiting on `socket` and feeds it to the party's core.
    fn drain(&mut self, node: usize, socket: SocketId) {
        let now = self.clock.now();
        let elapsed = self.elapsed();
        while self.processes[node].alive {
            let Ok(Some(mut frames)) = self.net.recv(socket) else {
                return;
            };
            let produced = match &mut self.roles[node] {
                Role::Broker(role) => {
                    let Some(core) = role.core.as_mut() else {
                        return;
                    };
                    if frames.is_empty() {
                        continue;
                    }
                    let sender = frames.remove(0);
                    if self.trace {
                        println!(
                            "{elapsed:>14?} broker {node} <- {} {}",
                            mdp::dump::Identity(&sender),
                            mdp::dump::Message(&frames)
                        );
                    }
                    role.last_heard.insert(sender.to_vec(), elapsed);
                    if is_worker_command(&frames, mdp::Command::Reply) {
                        role.at_risk.remove(&sender[..]);
                    }
                    let mut out = Vec::new();
                    core.handle(now, &sender, frames, &mut out);
                    Produced::Broker(out)
                }
                Role::Worker(role) => {
                    let Some(link) = role.link_of(socket) else {
                        return;
                    };
                    let mut out = Vec::new();
                    role.core.handle(now, LinkId(link), frames, &mut out);
                    Produced::Worker(out)
                }
                Role::Sync(role) => {
                    if role.socket != Some(socket) {
                        return;
                    }
                    let mut out = Vec::new();
                    role.core.handle(now, frames, &mut out);
                    Produced::Sync(out)
                }
                Role::Async(role) => {
                    let Some(conn) = role.conns.get(&socket).copied() else {
                        return;
                    };
                    let mut out = Vec::new();
                    role.core.handle(now, conn, frames, &mut out);
                    Produced::Async(out)
                }
            };
            self.execute(node, produced);
        }
    }

    fn sockets_of(&self, node: usize) -> Vec<SocketId> {
        match &self.roles[node] {
            Role::Broker(role) => role.socket.into_iter().collect(),
            _ => self
                .connecting_sockets(node)
                .into_iter()
                .map(|(socket, _)| socket)
                .collect(),
        }
    }

    /// A worker's or a client's open sockets, each with the broker it connects to.
    fn connecting_sockets(&self, node: usize) -> Vec<(SocketId, usize)> {
        match &self.roles[node] {
            Role::Broker(_) => Vec::new(),
            Role::Worker(role) => role
                .sockets
                .iter()
                .zip(&role.brokers_of_links)
                .filter_map(|(socket, broker)| socket.map(|socket| (socket, *broker)))
                .collect(),
            Role::Sync(role) => role
                .socket
                .map(|socket| (socket, role.socket_broker))
                .into_iter()
                .collect(),
            Role::Async(role) => role
                .sockets
                .iter()
                .map(|(conn, socket)| {
                    (
                        *socket,
                        role.conn_brokers.get(conn).copied().unwrap_or(role.home),
                    )
                })
                .collect(),
        }
    }

    /// Whether `node` (a worker or a client) and `broker` cannot reach each other now.
    fn is_cut(&self, node: usize, broker: usize) -> bool {
        (!self.is_broker(node) && self.processes[node].partitioned)
            || self.cuts.contains(&(node, broker))
    }

    /// Makes the network cut off exactly the sockets of `node` whose broker it cannot reach.
    fn apply_cuts(&mut self, node: usize) {
        for (socket, broker) in self.connecting_sockets(node) {
            let cut = self.is_cut(node, broker);
            self.net
                .set_pipe_partitioned(socket, &endpoint(broker), cut);
        }
    }

    /// Opens a connecting socket for `node` to `broker`, cut off at once if they are.
    fn open_socket(
        &mut self,
        node: usize,
        broker: usize,
        kind: SocketKind,
        options: SocketOptions,
    ) -> SocketId {
        let socket = self.net.socket(kind, options, node);
        let endpoint = endpoint(broker);
        self.net.connect(socket, &endpoint);
        if self.is_cut(node, broker) {
            self.net.set_pipe_partitioned(socket, &endpoint, true);
        }
        socket
    }

    // ---- the broker ----

    /// Sends what the broker core said, in order, as `broker::server` does: a message the
    /// ROUTER refuses goes back to the core, which may answer with more.
    fn broker_send_all(&mut self, node: usize, mut out: Vec<broker::Outgoing>) {
        // As a stack, reversed: what the core answers to a refusal goes out before the rest.
        out.reverse();
        while let Some(message) = out.pop() {
            let answered_from = out.len();
            let Role::Broker(role) = &mut self.roles[node] else {
                return;
            };
            let (Some(socket), Some(core)) = (role.socket, role.core.as_mut()) else {
                return;
            };
            if let Some(client) = &message.if_connected {
                // The probe `broker::server` sends first: refused only if the client is gone.
                let gone = matches!(
                    self.net.send(socket, mdp::tries::probe(client)),
                    Err(crate::net::Refused {
                        error: zmq::Error::EHOSTUNREACH,
                        ..
                    })
                );
                if gone {
                    if self.trace {
                        println!(
                            "{:>14?} broker {node}: client {} gone, its request not sent",
                            self.clock.elapsed(),
                            mdp::dump::Identity(client)
                        );
                    }
                    core.client_gone(message.frames, &mut out);
                    out[answered_from..].reverse();
                    continue;
                }
            }
            let request_for = is_request(&message.frames).then(|| message.frames[0].to_vec());
            let shown = self.trace.then(|| {
                format!(
                    "{:>14?} broker {node} -> {} {}",
                    self.clock.elapsed(),
                    mdp::dump::Identity(&message.frames[0]),
                    mdp::dump::Message(&message.frames[1..])
                )
            });
            let sent = self.net.send(socket, message.frames);
            if let Some(shown) = shown {
                let verdict = match &sent {
                    Ok(()) => String::new(),
                    Err(refused) => format!("  REFUSED {:?}", refused.error),
                };
                println!("{shown}{verdict}");
            }
            match sent {
                Ok(()) => {
                    if let Some(worker) = request_for {
                        *role.at_risk.entry(worker).or_default() += 1;
                    }
                }
                Err(refused) => {
                    // A REQUEST refused whole never reached the worker: the broker must take
                    // it back (`Broker::refused`). It may drop it only if its queue is full.
                    let lost_before = core.stats().requests_lost_with_worker;
                    let config = core.config();
                    let queued = core.queued_requests();
                    let room = queued < config.max_queued_total && queued < config.max_queue;
                    core.refused(refused.frames, &mut out);
                    out[answered_from..].reverse();
                    let lost = core.stats().requests_lost_with_worker - lost_before;
                    if request_for.is_some() && lost > 0 {
                        if room {
                            self.violate(format!(
                                "a REQUEST the ROUTER refused ({:?}), which no worker got, \
                                     was lost with {queued} requests waiting, under the limits",
                                refused.error
                            ));
                            return;
                        }
                        role.loss_budget += lost;
                        self.coverage.refused_requests_lost_queue_full += lost;
                    }
                }
            }
        }
    }

    /// A broker's rules that can be seen from outside, after every event.
    fn check_broker(&mut self, broker: usize) {
        let elapsed = self.elapsed();
        let Role::Broker(role) = &mut self.roles[broker] else {
            return;
        };
        let Some(core) = role.core.as_ref() else {
            return;
        };
        core.check_invariants();
        let config = core.config();
        let queued = core.queued_requests();
        self.peak_queued = self.peak_queued.max(queued);
        self.peak_workers = self.peak_workers.max(core.worker_count());
        if queued > config.max_queued_total {
            let limit = config.max_queued_total;
            return self.violate(format!(
                "broker {broker} holds {queued} waiting requests, over max_queued_total {limit}"
            ));
        }
        // A worker the broker forgot that held a REQUEST the ROUTER had taken: that request
        // may be lost with it.
        let forgotten: Vec<Vec<u8>> = role
            .at_risk
            .keys()
            .filter(|worker| !core.has_worker(worker))
            .cloned()
            .collect();
        for worker in forgotten {
            role.loss_budget += role.at_risk.remove(&worker).unwrap_or(0);
        }
        // Each request handed to a worker that went away may be lost, or redelivered. Not
        // "lost + redelivered": one request can be both. When a worker's HEARTBEAT bounces, the
        // request it held is redelivered to the next idle worker, and if that one is also gone
        // and its own HEARTBEAT bounces later in the same batch of sends (the broker's HashMap
        // order decides), it is forgotten before its REQUEST is even tried, and the request is
        // counted lost with it although it never reached it (`broker::server::send_all` sends
        // what a refusal produces after the rest of the batch; found by seed 207).
        let stats = core.stats();
        let budget = role.loss_budget;
        for (what, count) in [
            ("lost", stats.requests_lost_with_worker),
            ("redelivered", stats.requests_redelivered),
        ] {
            if count > budget {
                let what = format!(
                    "broker {broker} {what} {count} requests with workers, but the network \
                     handed only {budget} to workers that went away ({stats})"
                );
                return self.violate(what);
            }
        }
        let allowed = config.worker_expiry() + config.heartbeat_interval;
        // Only registered workers matter; the rest (clients, workers gone) would only grow it.
        role.last_heard
            .retain(|identity, _| core.has_worker(identity));
        let silent = role
            .last_heard
            .iter()
            .find(|(_, heard)| elapsed > **heard + allowed);
        if let Some((identity, heard)) = silent {
            let what = format!(
                "worker {} silent since {heard:?} is still registered with broker {broker} \
                 (expiry {:?} + one interval)",
                mdp::dump::Identity(identity),
                config.worker_expiry()
            );
            self.violate(what);
        }
    }

    /// Notes, for every broker and service, since when the broker has been fit to serve it (for
    /// `Scenario::check_sync_availability`).
    fn note_fitness(&mut self) {
        if !self.scenario.check_sync_availability {
            return;
        }
        let elapsed = self.elapsed();
        for broker in 0..self.brokers() {
            for service in 0..self.fit_since[broker].len() {
                let fit = self.fit_to_serve(broker, service);
                let since = &mut self.fit_since[broker][service];
                match (fit, *since) {
                    (true, None) => *since = Some(elapsed),
                    (false, Some(_)) => *since = None,
                    _ => {}
                }
            }
        }
    }

    /// A broker is fit to serve a service when it runs, at least one worker of that service is
    /// registered with it, and every worker registered with it (of any service) is sound: alive,
    /// not frozen, not cut off from it, its traffic not held up. Then a request it is sent goes
    /// to a worker that answers: none is lost with a dead worker, none waits behind a frozen one.
    fn fit_to_serve(&self, broker: usize, service: usize) -> bool {
        let Role::Broker(role) = &self.roles[broker] else {
            return false;
        };
        let Some(core) = role.core.as_ref() else {
            return false;
        };
        let elapsed = self.elapsed();
        let (mut sound, mut sound_for_service) = (0, 0);
        for node in self.brokers()..self.roles.len() {
            let Role::Worker(worker) = &self.roles[node] else {
                continue;
            };
            let process = &self.processes[node];
            let healthy = process.alive
                && !process.frozen
                && process.held_until <= elapsed
                && !self.is_cut(node, broker);
            for link in 0..worker.sockets.len() {
                if !healthy || worker.brokers_of_links[link] != broker {
                    continue;
                }
                let identity = worker.sockets[link].and_then(|socket| self.net.identity_of(socket));
                if identity.is_some_and(|identity| core.has_worker(identity)) {
                    sound += 1;
                    if worker.service == service {
                        sound_for_service += 1;
                    }
                }
            }
        }
        sound_for_service > 0 && sound == core.worker_count()
    }

    /// The brokers a client knows.
    fn brokers_of_client(&self, node: usize) -> Vec<usize> {
        let home = match &self.roles[node] {
            Role::Sync(role) => role.home,
            Role::Async(role) => role.home,
            _ => return Vec::new(),
        };
        match self.scenario.client_mode {
            ClientMode::Placed => vec![home],
            ClientMode::EveryBroker => (0..self.brokers()).collect(),
        }
    }

    /// `Scenario::check_sync_availability`: a synchronous request failed; with at least as many
    /// tries as its client knows brokers, it must not have while one of them was fit to serve it
    /// and reachable from the client since before the request was issued, with no fault on the
    /// client meanwhile.
    fn check_sync_failure(&mut self, number: usize, reason: &str) {
        let record = &self.ledger.requests[number];
        let (client, service, issued_at) = (record.client, record.service, record.issued_at);
        let process = &self.processes[client];
        let client_left_alone = process.last_fault_at.is_none_or(|at| at < issued_at)
            && process.held_until <= issued_at
            && !process.partitioned;
        let known = self.brokers_of_client(client);
        // Only with a try for every broker it knows must the client get through: it may have
        // spent fewer on brokers that could not serve.
        let tries = self.scenario.sync.retries.max(1) as usize;
        if !client_left_alone || tries < known.len() {
            return;
        }
        let fit = known.into_iter().find(|&broker| {
            let reachable = !self.is_cut(client, broker)
                && self
                    .cut_changed
                    .get(&(client, broker))
                    .is_none_or(|at| *at < issued_at);
            let fit_since = self.fit_since[broker].get(service).copied().flatten();
            reachable && fit_since.is_some_and(|since| since <= issued_at)
        });
        if let Some(broker) = fit {
            let since = self.fit_since[broker][service];
            self.violate(format!(
                "synchronous request {number} of client {client} issued at {issued_at:?} failed \
                 ({reason}) although broker {broker}, which it can reach, has been fit to serve \
                 {} since {since:?}",
                SERVICES[service]
            ));
        }
    }

    /// How long after a broker restart every worker left alone must be registered again: the
    /// broker's liveness (a worker that noticed nothing waits for its HEARTBEAT to earn a
    /// DISCONNECT, or for the broker's silence to pass interval x liveness), plus the longest
    /// reconnection backoff, plus one interval for the READY and the heartbeat schedule.
    fn reregistration_bound(&self) -> Duration {
        let worker = &self.scenario.worker;
        worker.heartbeat_interval * (worker.liveness + 1) + worker.reconnect_max
    }

    /// The workers that have been left alone since `since` (alive, not frozen, not cut off from
    /// `broker`, no fault since) and have a link to `broker` that is not registered with it now
    /// (links with a request in hand are not counted: they notice nothing until they reply).
    fn unregistered_workers(&self, broker: usize, since: Duration) -> Vec<usize> {
        let Role::Broker(role) = &self.roles[broker] else {
            return Vec::new();
        };
        let Some(core) = role.core.as_ref() else {
            return Vec::new();
        };
        let mut missing = Vec::new();
        for node in 0..self.roles.len() {
            let Role::Worker(worker) = &self.roles[node] else {
                continue;
            };
            let process = &self.processes[node];
            let left_alone = process.alive
                && !process.frozen
                && !self.is_cut(node, broker)
                && process.last_fault_at.is_none_or(|at| at < since)
                && self
                    .cut_changed
                    .get(&(node, broker))
                    .is_none_or(|at| *at < since);
            if !left_alone {
                continue;
            }
            // A failover worker is expected back only if this broker is (still) its active one.
            let expected = worker
                .core
                .active_broker()
                .is_none_or(|active| (active + worker.home) % self.brokers() == broker);
            let unregistered = (0..worker.sockets.len()).any(|link| {
                if !expected || worker.brokers_of_links[link] != broker || worker.busy[link] > 0 {
                    return false;
                }
                let identity = worker.sockets[link].and_then(|socket| self.net.identity_of(socket));
                !identity.is_some_and(|identity| core.has_worker(identity))
            });
            if unregistered {
                missing.push(node);
            }
        }
        missing
    }

    /// After a restart, notes when the workers left alone are all registered again.
    fn note_reregistration(&mut self, broker: usize) {
        let Role::Broker(role) = &self.roles[broker] else {
            return;
        };
        let Some(since) = role.awaiting_registration else {
            return;
        };
        if self.unregistered_workers(broker, since).is_empty() {
            let took = self.elapsed() - since;
            self.longest_reregistration = self.longest_reregistration.max(took);
            if let Role::Broker(role) = &mut self.roles[broker] {
                role.awaiting_registration = None;
            }
        }
    }

    fn check_registered(&mut self, broker: usize, restart: u64, since: Duration) {
        let bound = self.reregistration_bound();
        let Role::Broker(role) = &self.roles[broker] else {
            return;
        };
        let still_waiting = role.restarts == restart && role.awaiting_registration == Some(since);
        if !still_waiting || self.processes[broker].last_fault_at > Some(since) {
            return;
        }
        let missing = self.unregistered_workers(broker, since);
        if !missing.is_empty() {
            self.violate(format!(
                "workers {missing:?} are not registered with broker {broker} {bound:?} after it \
                 restarted"
            ));
        }
    }

    // ---- workers ----

    fn worker_actions(&mut self, node: usize, out: Vec<Action>) {
        for action in out {
            match action {
                Action::Open { link } => {
                    let Role::Worker(role) = &mut self.roles[node] else {
                        return;
                    };
                    let Some(broker) = role.brokers_of_links.get(link.0).copied() else {
                        continue;
                    };
                    if let Some(old) = role.sockets[link.0].take() {
                        self.net.close(old);
                    }
                    let socket = self.open_socket(
                        node,
                        broker,
                        SocketKind::Dealer,
                        SocketOptions::default(),
                    );
                    if let Role::Worker(role) = &mut self.roles[node] {
                        role.sockets[link.0] = Some(socket);
                    }
                }
                Action::Send { link, frames } => {
                    if let Role::Worker(role) = &self.roles[node] {
                        if let Some(socket) = role.sockets.get(link.0).copied().flatten() {
                            // A DEALER with no room would block; the message is dropped here,
                            // and the protocol's timeouts must cope.
                            let _ = self.net.send(socket, frames);
                        }
                    }
                }
                Action::Close { link } => {
                    if let Role::Worker(role) = &mut self.roles[node] {
                        if let Some(socket) = role.sockets.get_mut(link.0).and_then(Option::take) {
                            self.net.close(socket);
                        }
                    }
                }
                Action::Deliver(request) => {
                    self.note_run(&request.body);
                    let (low, high) = self.scenario.service_time;
                    let service_time = if high > low {
                        self.rng.random_range(low..=high)
                    } else {
                        low
                    };
                    if let Role::Worker(role) = &mut self.roles[node] {
                        if let Some(busy) = role.busy.get_mut(request.reply_to.link().0) {
                            *busy += 1;
                        }
                    }
                    let incarnation = self.processes[node].incarnation;
                    self.timeline.schedule(
                        self.elapsed() + service_time,
                        Event::Finish {
                            node,
                            incarnation,
                            reply_to: request.reply_to,
                            // The application echoes the body.
                            body: request.body,
                        },
                    );
                }
            }
        }
    }

    /// A worker's application was handed a request: count the run, and whether its client had
    /// already given up on it. The request's number is the last body frame (a tag may come first).
    fn note_run(&mut self, body: &Frames) {
        let Some(number) = body.last().and_then(number_in) else {
            return;
        };
        let Some(record) = self.ledger.requests.get_mut(number) else {
            return;
        };
        record.runs += 1;
        if matches!(record.ended, Some(Ended::Failed(_))) {
            record.runs_after_give_up += 1;
            self.runs_after_give_up += 1;
        }
    }

    // ---- synchronous clients ----

    fn next_sync_request(&mut self, node: usize) {
        let quota = self.scenario.sync_requests;
        let elapsed = self.elapsed();
        let Role::Sync(role) = &mut self.roles[node] else {
            return;
        };
        if role.issued >= quota || role.current.is_some() || elapsed >= self.scenario.issue_until {
            return;
        }
        role.issued += 1;
        let number = self.ledger.requests.len();
        self.ledger.requests.push(RequestRecord {
            client: node,
            service: role.service,
            exact: true,
            ended: None,
            issued_at: elapsed,
            runs: 0,
            runs_after_give_up: 0,
        });
        role.current = Some(number);
        self.coverage.sync_requests += 1;
        let mut out = Vec::new();
        let service = service_name(role.service);
        role.core
            .start(self.clock.now(), &service, body_of(number), &mut out);
        self.sync_actions(node, out);
        self.reschedule(node);
    }

    /// Opens a synchronous client's REQ socket to `broker`, with the routing identity its core
    /// names it by (`mdp::tries`), as `client::Client` does, and makes it the client's socket.
    fn open_sync_socket(&mut self, node: usize, broker: usize) -> SocketId {
        let routing_id = match &mut self.roles[node] {
            Role::Sync(role) => Some(role.core.next_socket_identity()),
            _ => None,
        };
        let options = SocketOptions {
            routing_id,
            ..SocketOptions::default()
        };
        let socket = self.open_socket(node, broker, SocketKind::Req, options);
        if let Role::Sync(role) = &mut self.roles[node] {
            role.socket = Some(socket);
            role.socket_broker = broker;
        }
        socket
    }

    fn sync_actions(&mut self, node: usize, out: Vec<SyncAction>) {
        for action in out {
            match action {
                SyncAction::Send(frames) => {
                    let brokers = self.brokers();
                    let (socket, broker) = match &self.roles[node] {
                        Role::Sync(role) => {
                            (role.socket, (role.core.broker() + role.home) % brokers)
                        }
                        _ => return,
                    };
                    let socket = match socket {
                        Some(socket) => socket,
                        None => self.open_sync_socket(node, broker),
                    };
                    // Refused only if the REQ has no room: the try then times out.
                    let _ = self.net.send(socket, frames);
                }
                SyncAction::Reopen => {
                    let Role::Sync(role) = &mut self.roles[node] else {
                        return;
                    };
                    let broker = (role.core.broker() + role.home) % self.scenario.brokers.max(1);
                    if let Some(old) = role.socket.take() {
                        self.net.close(old);
                    }
                    self.open_sync_socket(node, broker);
                }
                SyncAction::Done(result) => {
                    let Role::Sync(role) = &mut self.roles[node] else {
                        return;
                    };
                    let service = role.service;
                    let Some(number) = role.current.take() else {
                        self.violate(format!("client {node} ended a request it did not start"));
                        return;
                    };
                    match result {
                        Ok(body) => self.answered(number, node, service, &body),
                        Err(error) => self.failed(number, error.to_string()),
                    }
                    let think = if self.scenario.think_time.is_zero() {
                        Duration::ZERO
                    } else {
                        self.rng
                            .random_range(Duration::ZERO..=self.scenario.think_time)
                    };
                    self.timeline
                        .schedule(self.elapsed() + think, Event::NextRequest { node });
                }
            }
        }
    }

    // ---- asynchronous clients ----

    fn fill_window(&mut self, node: usize) {
        let quota = self.scenario.async_requests;
        let window = self.scenario.window.max(1);
        let exact = self.scenario.async_config.matching == Matching::ByTag;
        let services = self.scenario.services.clamp(1, SERVICES.len());
        loop {
            let elapsed = self.elapsed();
            let Role::Async(role) = &mut self.roles[node] else {
                return;
            };
            if role.issued >= quota
                || role.in_flight.len() >= window
                || elapsed >= self.scenario.issue_until
            {
                break;
            }
            let service = role.issued as usize % services;
            role.issued += 1;
            let number = self.ledger.requests.len();
            self.ledger.requests.push(RequestRecord {
                client: node,
                service,
                exact,
                ended: None,
                issued_at: elapsed,
                runs: 0,
                runs_after_give_up: 0,
            });
            self.coverage.async_requests += 1;
            let mut out = Vec::new();
            let id = role.core.send(
                self.clock.now(),
                &service_name(service),
                body_of(number),
                &mut out,
            );
            role.in_flight.insert(id, number);
            self.async_actions(node, out);
        }
    }

    fn async_actions(&mut self, node: usize, out: Vec<AsyncAction>) {
        for action in out {
            match action {
                AsyncAction::Open(conn) => {
                    // As `client::AsyncClient` opens them: no high-water marks.
                    let options = SocketOptions {
                        sndhwm: 0,
                        rcvhwm: 0,
                        ..SocketOptions::default()
                    };
                    let brokers = self.brokers();
                    let broker = match &self.roles[node] {
                        Role::Async(role) => {
                            (role.core.broker_of(conn).unwrap_or(0) + role.home) % brokers
                        }
                        _ => return,
                    };
                    let socket = self.open_socket(node, broker, SocketKind::Dealer, options);
                    if let Role::Async(role) = &mut self.roles[node] {
                        role.sockets.insert(conn, socket);
                        role.conns.insert(socket, conn);
                        role.conn_brokers.insert(conn, broker);
                    }
                }
                AsyncAction::Send { conn, frames } => {
                    if let Role::Async(role) = &self.roles[node] {
                        if let Some(socket) = role.sockets.get(&conn).copied() {
                            let _ = self.net.send(socket, frames);
                        }
                    }
                }
                AsyncAction::Close(conn) => {
                    if let Role::Async(role) = &mut self.roles[node] {
                        role.conn_brokers.remove(&conn);
                        if let Some(socket) = role.sockets.remove(&conn) {
                            role.conns.remove(&socket);
                            self.net.close(socket);
                        }
                    }
                }
            }
        }
    }

    fn async_outcomes(&mut self, node: usize) {
        loop {
            let Role::Async(role) = &mut self.roles[node] else {
                return;
            };
            let Some(outcome) = role.core.pop_outcome() else {
                break;
            };
            match outcome {
                Outcome::Reply {
                    id, body, service, ..
                } => {
                    let Some(number) = role.in_flight.remove(&id) else {
                        self.violate(format!("client {node} got an outcome for unknown {id}"));
                        return;
                    };
                    let service = SERVICES
                        .iter()
                        .position(|name| name.as_bytes() == service.as_bytes())
                        .unwrap_or(usize::MAX);
                    self.answered(number, node, service, &body);
                }
                Outcome::TimedOut { id, tries, .. } => {
                    let Some(number) = role.in_flight.remove(&id) else {
                        self.violate(format!("client {node} timed out unknown {id}"));
                        return;
                    };
                    self.failed(number, format!("no reply after {tries} tries"));
                }
            }
        }
        self.fill_window(node);
    }

    // ---- the ledger ----

    fn answered(&mut self, number: usize, client: usize, service: usize, body: &Frames) {
        let answers = body.first().and_then(number_in);
        let record = &self.ledger.requests[number];
        let exact = record.exact;
        let wrong = match answers.and_then(|answers| self.ledger.requests.get(answers)) {
            None => Some("a body that is no request's".to_owned()),
            Some(_) if exact && answers != Some(number) => {
                Some(format!("the body of request {answers:?}"))
            }
            Some(other) if other.client != client || other.service != service => {
                Some(format!("the body of another client's request {answers:?}"))
            }
            Some(_) => None,
        };
        if let Some(wrong) = wrong {
            return self.violate(format!(
                "request {number} of client {client} was answered with {wrong}"
            ));
        }
        self.end(number, Ended::Answered);
    }

    fn failed(&mut self, number: usize, reason: String) {
        if reason.is_empty() {
            return self.violate(format!("request {number} failed without a reason"));
        }
        let client = self.ledger.requests[number].client;
        if self.scenario.check_sync_availability && matches!(self.roles[client], Role::Sync(_)) {
            self.check_sync_failure(number, &reason);
        }
        self.end(number, Ended::Failed(reason));
    }

    fn end(&mut self, number: usize, ended: Ended) {
        let record = &mut self.ledger.requests[number];
        if let Some(earlier) = &record.ended {
            let what = format!("request {number} ended twice: {earlier:?}, then {ended:?}");
            return self.violate(what);
        }
        match ended {
            Ended::Answered => self.coverage.answered += 1,
            Ended::Failed(_) => self.coverage.failed += 1,
        }
        record.ended = Some(ended);
    }

    // ---- faults ----

    fn random_fault(&mut self) {
        let Some(plan) = self.scenario.random_faults.clone() else {
            return;
        };
        let total: u32 = plan.weights.iter().map(|(_, weight)| weight).sum();
        if total > 0 {
            let mut pick = self.rng.random_range(0..total);
            let kind = plan
                .weights
                .iter()
                .find(|(_, weight)| {
                    let found = pick < *weight;
                    pick = pick.saturating_sub(*weight);
                    found
                })
                .map_or(FaultKind::Delay, |(kind, _)| *kind);
            let ms = Duration::from_millis;
            let lasting = match kind {
                FaultKind::KillWorker => ms(self.rng.random_range(0..=3000)),
                FaultKind::FreezeWorker => ms(self.rng.random_range(100..=15_000)),
                FaultKind::Partition => ms(self.rng.random_range(100..=10_000)),
                FaultKind::Delay => ms(self.rng.random_range(10..=3000)),
                FaultKind::RestartBroker => ms(self.rng.random_range(0..=3000)),
                FaultKind::BrokerCutFromWorkers
                | FaultKind::BrokerCutFromClients
                | FaultKind::BrokerCutOff => ms(self.rng.random_range(100..=10_000)),
            };
            let target = self.rng.random_range(0..usize::MAX / 2);
            let at = self.elapsed();
            self.fault(ScriptedFault {
                at,
                kind,
                target,
                lasting,
            });
        }
        let gap_ms = plan.mean_gap.as_millis().max(1) as u64;
        let gap = Duration::from_millis(self.rng.random_range(1..=2 * gap_ms));
        let next = self.elapsed() + gap;
        if next <= plan.until {
            self.timeline.schedule(next, Event::RandomFault);
        }
    }

    fn worker_nodes(&self) -> Vec<usize> {
        (0..self.roles.len())
            .filter(|&node| matches!(self.roles[node], Role::Worker(_)))
            .collect()
    }

    fn fault(&mut self, fault: ScriptedFault) {
        let elapsed = self.elapsed();
        let brokers = self.brokers();
        let workers = self.worker_nodes();
        let worker = (!workers.is_empty()).then(|| workers[fault.target % workers.len()]);
        // Partitions and delays may hit any party but the brokers (cutting a broker off is a
        // fault of its own kind).
        let others = self.roles.len() - brokers;
        let anyone = (others > 0).then(|| brokers + fault.target % others);
        let node = match fault.kind {
            kind if kind.hits_broker() => Some(fault.target % brokers),
            FaultKind::KillWorker | FaultKind::FreezeWorker => worker,
            _ => anyone,
        };
        let Some(node) = node else {
            return;
        };
        let process = &self.processes[node];
        if !process.alive || process.frozen || process.partitioned || process.held_until > elapsed {
            // One fault at a time per process keeps the faults' ends simple to reason about.
            return;
        }
        *self.coverage.faults.entry(fault.kind).or_default() += 1;
        self.processes[node].last_fault_at = Some(elapsed);
        let until = elapsed + fault.lasting;
        if self.trace {
            println!(
                "{elapsed:>14?} FAULT {:?} on party {node} until {until:?}",
                fault.kind
            );
        }
        match fault.kind {
            FaultKind::KillWorker | FaultKind::RestartBroker => {
                self.kill(node);
                self.timeline.schedule(until, Event::Revive { node });
            }
            FaultKind::FreezeWorker => {
                self.processes[node].frozen = true;
                self.timeline.schedule(until, Event::Thaw { node });
            }
            FaultKind::Partition => {
                self.processes[node].partitioned = true;
                for broker in 0..brokers {
                    self.cut_changed.insert((node, broker), elapsed);
                }
                self.apply_cuts(node);
                self.timeline.schedule(until, Event::Heal { node });
            }
            FaultKind::BrokerCutFromWorkers
            | FaultKind::BrokerCutFromClients
            | FaultKind::BrokerCutOff => {
                self.processes[node].partitioned = true;
                let from: Vec<usize> = (brokers..self.roles.len())
                    .filter(|&other| {
                        !matches!(
                            (&self.roles[other], fault.kind),
                            (Role::Worker(_), FaultKind::BrokerCutFromClients)
                                | (
                                    Role::Sync(_) | Role::Async(_),
                                    FaultKind::BrokerCutFromWorkers
                                )
                        )
                    })
                    .collect();
                for other in from {
                    self.cuts.insert((other, node));
                    self.cut_changed.insert((other, node), elapsed);
                    self.apply_cuts(other);
                }
                self.timeline.schedule(until, Event::Heal { node });
            }
            FaultKind::Delay => {
                self.processes[node].held_until = until;
                for socket in self.sockets_of(node) {
                    self.net.hold(socket, until);
                }
            }
        }
    }

    /// The process dies: its sockets close, its state is gone, pending work is stale.
    fn kill(&mut self, node: usize) {
        for socket in self.sockets_of(node) {
            self.net.close(socket);
        }
        let process = &mut self.processes[node];
        process.alive = false;
        process.incarnation += 1;
        process.wake_at = None;
        process.deferred.clear();
        match &mut self.roles[node] {
            Role::Broker(role) => {
                if let Some(core) = role.core.take() {
                    add_stats(&mut role.earlier_stats, core.stats());
                }
                role.socket = None;
            }
            Role::Worker(role) => {
                self.kills += 1;
                if role.busy() > 0 {
                    self.kills_of_busy_workers += 1;
                }
                role.sockets.iter_mut().for_each(|socket| *socket = None);
            }
            // Clients are not killed: their applications' requests would die with them.
            Role::Sync(_) | Role::Async(_) => {}
        }
    }

    fn finish(mut self) -> Report {
        if self.violation.is_none() {
            let open: Vec<usize> = (0..self.ledger.requests.len())
                .filter(|&number| self.ledger.requests[number].ended.is_none())
                .collect();
            if !open.is_empty() {
                self.violate(format!(
                    "requests {open:?} never ended (neither answered nor failed)"
                ));
            }
        }
        if self.violation.is_none() && self.scenario.given_up_runs_at_most_once {
            let rerun = self
                .ledger
                .requests
                .iter()
                .enumerate()
                .find(|(_, request)| {
                    matches!(request.ended, Some(Ended::Failed(_))) && request.runs > 1
                });
            if let Some((number, request)) = rerun {
                let what = format!(
                    "request {number} ran {} times although its client gave up on it ({} of \
                     the runs after it gave up)",
                    request.runs, request.runs_after_give_up
                );
                self.violate(what);
            }
        }
        let mut broker_stats = broker::Stats::default();
        for role in &self.roles {
            match role {
                Role::Broker(role) => {
                    add_stats(&mut broker_stats, &role.earlier_stats);
                    if let Some(core) = &role.core {
                        add_stats(&mut broker_stats, core.stats());
                    }
                }
                Role::Sync(role) => self.coverage.client_resends += role.core.resends(),
                Role::Async(role) => {
                    self.coverage.client_resends += role.core.resends();
                    let _ = role.dropped_before;
                }
                Role::Worker(_) => {}
            }
        }
        let net = self.net.stats();
        let coverage = &mut self.coverage;
        coverage.requests = self.ledger.requests.len() as u64;
        coverage.workers_purged = broker_stats.workers_purged;
        coverage.redelivered = broker_stats.requests_redelivered;
        coverage.lost_with_worker = broker_stats.requests_lost_with_worker;
        coverage.refused_queue_full = broker_stats.requests_refused_queue_full;
        coverage.refused_by_router = net.refused_unreachable + net.refused_full;
        coverage.messages = net.messages_sent;
        coverage.messages_lost = net.messages_lost;
        coverage.connections = net.connections;
        coverage.virtual_time = self.clock.elapsed();
        coverage.runs_after_give_up = self.runs_after_give_up;
        Report {
            seed: self.seed,
            coverage: self.coverage,
            violation: self.violation,
            ledger: self.ledger,
            broker: broker_stats,
            longest_reregistration: self.longest_reregistration,
            peak_queued: self.peak_queued,
            peak_workers: self.peak_workers,
            kills_of_busy_workers: self.kills_of_busy_workers,
            kills: self.kills,
            runs_after_give_up: self.runs_after_give_up,
        }
    }
}

/// The request number a body frame carries (8 bytes, big-endian), if it is one.
fn number_in(frame: &zmq::Message) -> Option<usize> {
    let bytes: [u8; 8] = frame[..].try_into().ok()?;
    Some(u64::from_be_bytes(bytes) as usize)
}

fn service_name(index: usize) -> ServiceName {
    // The names are constants, valid by construction.
    ServiceName::new(SERVICES[index % SERVICES.len()].as_bytes())
        .unwrap_or_else(|_| unreachable!("constant service names are valid"))
}

/// A request's body: its number in the ledger, 8 bytes big-endian.
fn body_of(number: usize) -> Frames {
    vec![zmq::Message::from(&(number as u64).to_be_bytes()[..])]
}

/// True if `frames` (after the identity) are an MDP/Worker command of this kind.
fn is_worker_command(frames: &[zmq::Message], command: mdp::Command) -> bool {
    frames.get(1).is_some_and(|f| &f[..] == WORKER_HEADER)
        && frames.get(2).is_some_and(|f| f[..] == [command.byte()])
}

/// True if an outgoing message (identity first) is a REQUEST to a worker.
fn is_request(frames: &[zmq::Message]) -> bool {
    frames.len() > 1 && is_worker_command(&frames[1..], mdp::Command::Request)
}

fn add_stats(total: &mut broker::Stats, more: &broker::Stats) {
    total.requests_received += more.requests_received;
    total.requests_dispatched += more.requests_dispatched;
    total.replies_forwarded += more.replies_forwarded;
    total.mmi_answered += more.mmi_answered;
    total.requests_refused_queue_full += more.requests_refused_queue_full;
    total.requests_expired += more.requests_expired;
    total.requests_lost_with_worker += more.requests_lost_with_worker;
    total.requests_redelivered += more.requests_redelivered;
    total.requests_superseded += more.requests_superseded;
    total.requests_abandoned += more.requests_abandoned;
    total.workers_registered += more.workers_registered;
    total.workers_purged += more.workers_purged;
    total.workers_disconnected += more.workers_disconnected;
    total.malformed_messages += more.malformed_messages;
}

/// Runs one seed of a scenario.
pub fn run(scenario: Scenario, seed: u64) -> Report {
    World::new(scenario, seed).run()
}
