//! The worker as a state machine, with no sockets and no clock: everything the worker decides
//! about its conversations with the broker (spec 7, MDP/Worker) happens here.
//!
//! The core is given the current time with every input, and appends what to do to an output
//! list of [`Action`]s, which the driver (the [`crate::Worker`] socket loop, or a simulation)
//! executes in order: open a link's socket, send frames on it, close it, or hand a request to the
//! application. [`WorkerCore::tick`] does the timed work and [`WorkerCore::next_deadline`] says
//! when it is next due. Because nothing here blocks or reads the clock, every timing rule is
//! tested with a fake clock (`core/tests.rs`), and the same core runs in the simulation.
//!
//! # Links, brokers and slots
//! A *link* ([`LinkId`]) is one MDP worker conversation slot: one DEALER socket at a time, each
//! socket a brand-new peer for the broker (a new ROUTER identity) that starts with READY. Spec 7
//! identifies a worker by its socket, so each link is one MDP worker, with its own clocks and
//! backoff, independent of the others. A link's *generation* counts the sockets it has opened, so
//! a reply can be matched to the conversation its request came in.
//!
//! The links are laid out by a [`Topology`]: `brokers x slots` of them, link
//! `broker * slots + slot`, each knowing its broker (the index of its endpoint in the driver's
//! list) and its slot. Several slots to one broker are several workers to it, so up to `slots`
//! requests can be in flight to one program while the broker still dispatches by readiness. The
//! [`Mode`] says which links are open:
//! * [`Mode::All`]: every link of every broker, all the time. The loss of one broker closes and
//!   reopens only its own links; the others never notice.
//! * [`Mode::Failover`]: only the slots of one broker, the *active* one, starting with the first.
//!   When it has been silent for interval x liveness on any of its slots, or the driver reports
//!   that its connection is refused ([`WorkerCore::unreachable`]), every link of it is closed and
//!   the next broker in the list (after the last, the first again) is opened after a backoff, with
//!   READY there. The worker stays on that broker until it fails in turn: no going back to the
//!   first when it returns, which would move the worker's registration (and cut its requests
//!   short) every time a broker flaps. A DISCONNECT is not a failure: a broker that sends one is
//!   alive, so that slot registers again on the same broker.
//!
//! # The rules each link keeps
//! * **READY on every new socket.** [`WorkerCore::start`] opens every link the mode wants open; a
//!   link reopened after a backoff says READY again.
//! * **Registered** is the moment the broker first speaks on a new socket (a HEARTBEAT or a
//!   REQUEST): [`WorkerCore::handle`] returns true for that message, once per socket, so a driver
//!   can log it once per registration.
//! * **Heartbeats out, every interval, idle or busy.** Spec 7 makes heartbeats independent of the
//!   request dialog, and a broker purges a worker that is silent for interval x liveness, busy or
//!   not: a handler that runs for a minute must not cost the worker its registration. So a
//!   HEARTBEAT goes out whenever `heartbeat_interval` has passed since the last command sent, with
//!   or without a request in hand; any command sent (READY, REPLY, HEARTBEAT) pushes the next one
//!   back by an interval.
//! * **The broker's liveness.** Any command from the broker but DISCONNECT (a HEARTBEAT, a
//!   REQUEST) proves it alive; after `heartbeat_interval x liveness` without one, the broker is
//!   dead: the link's socket is closed without a word (there is nobody to tell), and after the
//!   backoff a new socket says READY. The countdown is suspended while the link holds a request:
//!   some brokers (the guide's among them) heartbeat only idle workers, and a driver with one
//!   thread does not read a busy link, so silence during a request proves nothing. It starts
//!   again from the REPLY, when the worker is ready to listen again.
//! * **DISCONNECT from the broker** ends the conversation: close the socket without a word (spec
//!   7: send nothing further), wait the backoff, open a new socket and say READY.
//! * **A DISCONNECT right after READY** (before the broker said anything else on that socket)
//!   is a refused registration: DISCONNECT carries no reason, but a broker with `--auth`
//!   answers this way a READY for a service the principal may not serve. It is handled as any
//!   DISCONNECT, with a `warn` line that says so, at most one a second; the backoff doubles on
//!   each (the broker never speaks first, so it never falls back), up to `reconnect_max`.
//! * **A refused handshake** ([`WorkerCore::handshake_failed`], from the driver's socket
//!   monitor: wrong credentials, or a mechanism the endpoint does not take) closes the link and
//!   reopens it after its backoff, as a DISCONNECT does; libzmq alone would retry every 100 ms.
//!   In failover mode a refusing active broker counts as down.
//! * **Backoff.** The wait before reopening starts at `reconnect_initial` and doubles on each
//!   reopening up to `reconnect_max`; it falls back to `reconnect_initial` once the broker speaks
//!   on the new socket, since a broker that answered accepted the conversation. In failover mode
//!   the move to the next broker waits a backoff of its own, kept the same way, so that a list of
//!   brokers that are all down is tried at a falling rate, not in a tight loop.
//! * **Quiet retries.** The first silent expiry of a link that was never answered says so at
//!   `warn`; the repeats, against a broker that stays unreachable, are `debug` until it answers.
//! * **A reply for an ended conversation** (its link's socket was closed since the request came)
//!   is dropped with a log line: the broker no longer knows that socket, a REPLY on the new one
//!   would only earn a DISCONNECT, and the client resends after its timeout.
//! * **Malformed messages** from the broker are dropped and logged, at most one line a second
//!   with a count of the others, so whatever connects where the broker should be cannot flood the
//!   log. They do not count as signs of life.

use std::fmt;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mdp::worker::{FromWorker, ToWorker};
use mdp::{dump, Frames, ServiceName};

use zsocket::limit::LogLimit;

use crate::WorkerConfig;

/// One MDP worker conversation slot: one DEALER socket at a time, numbered from 0. With a
/// [`Topology`] of several brokers, link `broker * slots + slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub usize);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link {}", self.0)
    }
}

/// Which links are open at once. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every slot of every broker, all the time.
    #[default]
    All,
    /// The slots of one broker at a time: the first in the list that answers, then the next one
    /// each time the one in use fails.
    Failover,
}

/// How many brokers, how many slots (MDP workers) to each, and which are open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// The brokers, by their index in the driver's list of endpoints. At least 1.
    pub brokers: usize,
    /// The links to each broker, each its own MDP worker. At least 1.
    pub slots: usize,
    /// Whether every broker's links are open at once ([`Mode::All`]) or one broker's at a time
    /// ([`Mode::Failover`]).
    pub mode: Mode,
}

impl Topology {
    /// `slots` links to one broker.
    pub fn single(slots: usize) -> Topology {
        Topology {
            brokers: 1,
            slots,
            mode: Mode::All,
        }
    }

    /// How many links this makes: brokers x slots.
    pub fn links(&self) -> usize {
        self.brokers.saturating_mul(self.slots)
    }
}

impl Default for Topology {
    /// One broker, one slot: the worker of spec 7.
    fn default() -> Self {
        Topology::single(1)
    }
}

/// What the core asks its driver to do. Execute them in the order given.
#[derive(Debug)]
pub enum Action {
    /// Drop the link's old socket, if any, then open a new DEALER and connect it to the link's
    /// broker ([`WorkerCore::broker_of`]). A `Send` of READY follows at once.
    Open {
        /// The link to (re)open.
        link: LinkId,
    },
    /// Send these frames on the link's socket: a whole message, from the empty delimiter on, as
    /// `mdp::worker::FromWorker` encodes it.
    Send {
        /// The link whose socket sends them.
        link: LinkId,
        /// The whole message, ready for the socket.
        frames: Frames,
    },
    /// Drop the link's socket without a word, discarding whatever is still queued in it (linger
    /// 0). After [`WorkerCore::shutdown`] a driver may give it a moment first, so that the
    /// DISCONNECT just sent can leave.
    Close {
        /// The link whose socket goes.
        link: LinkId,
    },
    /// A request for the application; answer it with [`WorkerCore::reply`].
    Deliver(Request),
}

/// One request from a client. Destructure it: the body is the application's to read or to send
/// back, and `reply_to` goes to the reply.
#[derive(Debug)]
pub struct Request {
    /// Where the reply goes: hand it back to `reply` with the reply body. It names the socket
    /// the request came in on, so a reply after that conversation has ended (the broker went
    /// silent and the link was reopened) is dropped with a warning, never sent on the new one.
    pub reply_to: ReplyTo,
    /// The request body, one frame or more, as the client sent it.
    pub body: Frames,
}

/// Where a reply goes: the client address of the REQUEST it answers, and the link and socket
/// (generation) that request came in on.
pub struct ReplyTo {
    link: LinkId,
    generation: u64,
    client: zmq::Message,
}

impl ReplyTo {
    /// The client address frame as the broker sent it: opaque bytes, usually a ROUTER identity.
    pub fn client_address(&self) -> &[u8] {
        &self.client
    }

    /// The link the request came in on.
    pub fn link(&self) -> LinkId {
        self.link
    }
}

impl fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ReplyTo({} via {} socket {})",
            dump::Identity(&self.client),
            self.link,
            self.generation
        )
    }
}

/// Where a link is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No socket, and none wanted: before [`WorkerCore::start`], after
    /// [`WorkerCore::shutdown`], and in failover mode for every broker but the active one.
    Stopped,
    /// A socket is open and registered (or registering) with the broker.
    Open,
    /// The last conversation ended; a new socket opens at `reopen_at`.
    Backoff { reopen_at: Instant },
}

/// One conversation slot's state and clocks.
#[derive(Debug, Clone)]
struct Link {
    phase: Phase,
    /// How many sockets this link has opened; while `Open`, the number of the current one.
    generation: u64,
    /// The broker has spoken on the current socket: the worker is registered.
    registered: bool,
    /// When the broker is next owed a sign of life from us.
    heartbeat_at: Instant,
    /// When we give up on the broker, if it has said nothing by then (and no request is in hand).
    broker_expires_at: Instant,
    /// The wait before the next reopening.
    reconnect_delay: Duration,
    /// Requests delivered on the current socket and not answered yet. The broker sends one at a
    /// time, so this is 0 or 1 with a broker that keeps spec 7.
    requests_in_hand: u32,
}

impl Link {
    fn new(config: &WorkerConfig, now: Instant) -> Link {
        Link {
            phase: Phase::Stopped,
            generation: 0,
            registered: false,
            heartbeat_at: now,
            broker_expires_at: now,
            reconnect_delay: config.reconnect_initial,
            requests_in_hand: 0,
        }
    }

    /// When this link next has timed work: a heartbeat, the broker's expiry, or a reopening.
    fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Stopped => None,
            Phase::Open if self.requests_in_hand > 0 => Some(self.heartbeat_at),
            Phase::Open => Some(self.heartbeat_at.min(self.broker_expires_at)),
            Phase::Backoff { reopen_at } => Some(reopen_at),
        }
    }

    /// No socket from now on, and nothing in hand.
    fn stop(&mut self) {
        self.phase = Phase::Stopped;
        self.registered = false;
        self.requests_in_hand = 0;
    }
}

/// The worker's protocol state for all of its links. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct WorkerCore {
    service: ServiceName,
    config: WorkerConfig,
    topology: Topology,
    /// Indexed by [`LinkId`].
    links: Vec<Link>,
    /// In failover mode, the broker whose slots are open (or reopening); 0 in all mode.
    active: usize,
    /// In failover mode, the wait before the next broker's slots open.
    failover_delay: Duration,
    /// Per broker: a silent expiry of a link it never answered has been logged at `warn`, so the
    /// repeats go to `debug` until it answers.
    quiet: Vec<bool>,
    /// After [`WorkerCore::shutdown`]: nothing opens again until [`WorkerCore::start`].
    stopped: bool,
    /// At most one line a second about malformed messages.
    malformed_log: LogLimit,
    malformed_messages: u64,
    /// At most one line a second about READY answered by DISCONNECT.
    serve_refused_log: LogLimit,
    serve_refused: u64,
    handshakes_refused: u64,
    /// The latest `now` the core was given, for [`WorkerCore::next_deadline`] when no link has a
    /// deadline.
    latest_now: Instant,
}

impl WorkerCore {
    /// A core for `links` conversation slots to one broker, none of them open yet:
    /// [`WorkerCore::start`] opens them. The service name should not be `mmi.*` (spec 8 reserves
    /// it; a broker disconnects a worker that registers one).
    pub fn new(service: ServiceName, config: WorkerConfig, links: usize, now: Instant) -> Self {
        WorkerCore::with_topology(service, config, Topology::single(links), now)
    }

    /// A core for `topology.brokers x topology.slots` links, none of them open yet.
    pub fn with_topology(
        service: ServiceName,
        config: WorkerConfig,
        topology: Topology,
        now: Instant,
    ) -> Self {
        WorkerCore {
            links: (0..topology.links())
                .map(|_| Link::new(&config, now))
                .collect(),
            service,
            failover_delay: config.reconnect_initial,
            config,
            topology,
            active: 0,
            quiet: vec![false; topology.brokers],
            stopped: true,
            malformed_log: LogLimit::default(),
            malformed_messages: 0,
            serve_refused_log: LogLimit::default(),
            serve_refused: 0,
            handshakes_refused: 0,
            latest_now: now,
        }
    }

    /// Opens every link the mode wants open that has no socket: `Open`, then READY. In all mode
    /// that is every link; in failover mode the active broker's (at first, the first broker's).
    pub fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.latest_now = now;
        self.stopped = false;
        for index in 0..self.links.len() {
            if self.links[index].phase == Phase::Stopped && self.wanted(LinkId(index)) {
                self.open(LinkId(index), now, out);
            }
        }
    }

    /// Handles one whole message the broker sent on `link`: the frames its DEALER received,
    /// delimiter first. A REQUEST becomes [`Action::Deliver`]; nothing a broker sends is an error.
    ///
    /// Returns true when this message registered the link: the first HEARTBEAT or REQUEST the
    /// broker sent on the link's current socket. Once per socket, so once per registration.
    pub fn handle(
        &mut self,
        now: Instant,
        link: LinkId,
        frames: Frames,
        out: &mut Vec<Action>,
    ) -> bool {
        self.latest_now = now;
        let on = self.on(link);
        let broker = self.broker_of(link);
        let Some(state) = self.links.get_mut(link.0) else {
            debug!("dropped a message for {link}, which does not exist");
            return false;
        };
        if state.phase != Phase::Open {
            // Sent to a socket that has been closed since; a driver may still have had it queued.
            debug!("dropped a message that came{on} after its socket was closed");
            return false;
        }
        let registered = match ToWorker::parse(frames) {
            Ok(ToWorker::Heartbeat) => heard_from_broker(state, &self.config, now),
            Ok(ToWorker::Request { client, body }) => {
                let registered = heard_from_broker(state, &self.config, now);
                state.requests_in_hand = state.requests_in_hand.saturating_add(1);
                out.push(Action::Deliver(Request {
                    reply_to: ReplyTo {
                        link,
                        generation: state.generation,
                        client,
                    },
                    body,
                }));
                registered
            }
            Ok(ToWorker::Disconnect) => {
                let (registered, delay) = (state.registered, state.reconnect_delay);
                if registered {
                    info!("broker sent DISCONNECT{on}; will register again");
                } else {
                    // DISCONNECT carries no reason, but one before any HEARTBEAT or REQUEST is
                    // the broker's answer to our READY: a broker with --auth refuses a service
                    // that this principal may not serve.
                    self.serve_refused += 1;
                    let service = &self.service;
                    match self.serve_refused_log.allow(now) {
                        Some(held_back) => warn!(
                            "broker sent DISCONNECT{on} right after READY for {service}: it may \
                             not allow this worker's principal to serve {service} (check the \
                             serve list of the broker's --auth file); registering again in \
                             {delay:?}{}",
                            held_back_text(held_back)
                        ),
                        None => debug!("DISCONNECT right after READY{on}; retrying in {delay:?}"),
                    }
                }
                self.close_and_back_off(link, now, out);
                false
            }
            Err(error) => {
                self.malformed_messages += 1;
                match self.malformed_log.allow(now) {
                    Some(0) => warn!("dropped a malformed message from the broker{on}: {error}"),
                    Some(unreported) => warn!(
                        "dropped a malformed message from the broker{on}: {error} \
                         ({unreported} more dropped since the last line)"
                    ),
                    None => {}
                }
                false
            }
        };
        if registered {
            // A broker that answered accepted the conversation: the next failure of any kind
            // starts from the short waits again, and its silence is worth a warning again.
            self.failover_delay = self.config.reconnect_initial;
            if let Some(quiet) = self.quiet.get_mut(broker) {
                *quiet = false;
            }
        }
        registered
    }

    /// Sends the reply to a delivered request: REPLY with the client's address exactly as it came
    /// in the REQUEST, which the broker routes the body back by. An empty body goes out as one
    /// empty frame, since spec 7 requires at least one.
    ///
    /// If the conversation the request came in has ended (its link's socket was closed since), the
    /// reply is dropped with a log line.
    pub fn reply(&mut self, now: Instant, reply_to: ReplyTo, body: Frames, out: &mut Vec<Action>) {
        self.latest_now = now;
        let ReplyTo {
            link,
            generation,
            client,
        } = reply_to;
        let on = self.on(link);
        let current = self
            .links
            .get_mut(link.0)
            .filter(|state| state.phase == Phase::Open && state.generation == generation);
        let Some(state) = current else {
            warn!("dropped a reply{on}: the conversation its request came in has ended");
            return;
        };
        state.requests_in_hand = state.requests_in_hand.saturating_sub(1);
        // The broker may have been silent while we were busy, and we were not listening: its
        // countdown starts again now that we are ready for the next request.
        state.broker_expires_at = now + self.config.heartbeat_interval * self.config.liveness;
        let mut body = body;
        if body.is_empty() {
            body.push(zmq::Message::new());
        }
        self.send(link, now, FromWorker::encode_reply(client, body), out);
    }

    /// The timed work, on every link: a HEARTBEAT if one is due, closing a link whose broker has
    /// been silent too long (in failover mode: moving to the next broker), reopening a link whose
    /// backoff has passed. Call it when [`WorkerCore::next_deadline`] has passed; calling it
    /// earlier is harmless.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.latest_now = now;
        for index in 0..self.links.len() {
            let link = LinkId(index);
            let state = &self.links[index];
            match state.phase {
                Phase::Stopped => {}
                Phase::Backoff { reopen_at } => {
                    if now >= reopen_at {
                        self.open(link, now, out);
                    }
                }
                Phase::Open => {
                    if state.requests_in_hand == 0 && now >= state.broker_expires_at {
                        self.log_silence(link);
                        match self.topology.mode {
                            Mode::All => self.close_and_back_off(link, now, out),
                            Mode::Failover => self.fail_over(now, out),
                        }
                    } else if now >= state.heartbeat_at {
                        self.send(link, now, FromWorker::Heartbeat.encode(), out);
                    }
                }
            }
        }
        if let Some(unreported) = self.malformed_log.overdue(now) {
            warn!("dropped {unreported} more malformed message(s) from the broker");
        }
    }

    /// What the driver learned from the socket monitor: the connection to `broker` was refused
    /// (or failed) while a link of it was open. In failover mode, if `broker` is the active one,
    /// that is the broker failing: its links close and the next broker's open after the
    /// backoff. In all mode nothing changes: the sockets keep retrying, and each link's liveness
    /// decides as always.
    pub fn unreachable(&mut self, now: Instant, broker: usize, out: &mut Vec<Action>) {
        self.latest_now = now;
        if self.stopped || self.topology.mode != Mode::Failover || broker != self.active {
            return;
        }
        let open = self
            .links_of(broker)
            .any(|link| self.links[link.0].phase == Phase::Open);
        if open {
            debug!("the connection to broker {broker} is refused: failing over");
            self.fail_over(now, out);
        }
    }

    /// What the driver learned from the socket monitor: the broker refused the handshake of
    /// `link`'s socket (its ZAP handler said no to our credentials, or the mechanisms differ).
    /// libzmq would try that socket again every reconnect interval, so the link is closed and
    /// reopened after its backoff, which doubles as for any other failure: in all mode that
    /// link alone; in failover mode, if its broker is the active one, a refusing broker is as
    /// good as down, and the worker moves to the next. Returns the wait before the next try,
    /// for the driver's log line; `None` if the link was not open (nothing changes).
    pub fn handshake_failed(
        &mut self,
        now: Instant,
        link: LinkId,
        out: &mut Vec<Action>,
    ) -> Option<Duration> {
        self.latest_now = now;
        if self.stopped || !self.is_open(link) {
            return None;
        }
        self.handshakes_refused += 1;
        match self.topology.mode {
            Mode::All => {
                let delay = self.links[link.0].reconnect_delay;
                self.close_and_back_off(link, now, out);
                Some(delay)
            }
            Mode::Failover => {
                let delay = self.failover_delay;
                if self.broker_of(link) == self.active {
                    self.fail_over(now, out);
                }
                Some(delay)
            }
        }
    }

    /// How many handshakes the brokers refused ([`WorkerCore::handshake_failed`]).
    pub fn handshakes_refused(&self) -> u64 {
        self.handshakes_refused
    }

    /// How many times a broker answered READY with DISCONNECT before anything else: refused
    /// registrations (the broker may not let this principal serve the service).
    pub fn serve_refused(&self) -> u64 {
        self.serve_refused
    }

    /// When [`WorkerCore::tick`] next has work to do: the earliest heartbeat, broker expiry or
    /// reopening of any link. With no link open or waiting to reopen (before `start`, after
    /// `shutdown`), one heartbeat interval after the latest call: a wake-up with nothing to do.
    pub fn next_deadline(&self) -> Instant {
        self.links
            .iter()
            .filter_map(Link::next_deadline)
            .min()
            .unwrap_or(self.latest_now + self.config.heartbeat_interval)
    }

    /// Ends every conversation politely: DISCONNECT, then `Close`, on every open link, so the
    /// broker forgets this worker at once instead of after its heartbeat expiry. Links waiting to
    /// reopen stay closed. Nothing more happens after this.
    pub fn shutdown(&mut self, out: &mut Vec<Action>) {
        self.stopped = true;
        for index in 0..self.links.len() {
            let link = LinkId(index);
            if self.links[index].phase == Phase::Open {
                debug!("sending DISCONNECT{}", self.on(link));
                out.push(Action::Send {
                    link,
                    frames: FromWorker::Disconnect.encode(),
                });
                out.push(Action::Close { link });
            }
            self.links[index].stop();
        }
    }

    /// How many links the core has.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// The layout of the links.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// The broker `link` talks to: the index of its endpoint in the driver's list.
    pub fn broker_of(&self, link: LinkId) -> usize {
        link.0 / self.topology.slots.max(1)
    }

    /// Which of its broker's slots `link` is.
    pub fn slot_of(&self, link: LinkId) -> usize {
        link.0 % self.topology.slots.max(1)
    }

    /// The links to `broker`, slot by slot.
    pub fn links_of(&self, broker: usize) -> impl Iterator<Item = LinkId> {
        let slots = self.topology.slots;
        let end = ((broker + 1) * slots).min(self.links.len());
        (broker * slots..end).map(LinkId)
    }

    /// In failover mode, the broker in use (or about to be); `None` in all mode.
    pub fn active_broker(&self) -> Option<usize> {
        (self.topology.mode == Mode::Failover).then_some(self.active)
    }

    /// True while `link` holds a request it has not answered. A driver need not read such a
    /// link: a broker sends it nothing but heartbeats until the reply.
    pub fn holds_request(&self, link: LinkId) -> bool {
        self.links
            .get(link.0)
            .is_some_and(|state| state.requests_in_hand > 0)
    }

    /// True while `link` has a socket open.
    pub fn is_open(&self, link: LinkId) -> bool {
        self.links
            .get(link.0)
            .is_some_and(|state| state.phase == Phase::Open)
    }

    /// True once the broker has spoken on `link`'s current socket.
    pub fn is_registered(&self, link: LinkId) -> bool {
        self.links
            .get(link.0)
            .is_some_and(|state| state.phase == Phase::Open && state.registered)
    }

    /// How many sockets `link` has opened (the current one's number while it is open).
    pub fn generation(&self, link: LinkId) -> u64 {
        self.links.get(link.0).map_or(0, |state| state.generation)
    }

    /// How many malformed messages from the broker have been dropped, on all links.
    pub fn malformed_messages(&self) -> u64 {
        self.malformed_messages
    }

    /// Whether the mode wants `link` open now.
    fn wanted(&self, link: LinkId) -> bool {
        match self.topology.mode {
            Mode::All => true,
            Mode::Failover => self.broker_of(link) == self.active,
        }
    }

    /// A new socket for `link`, and READY on it: the start of a conversation.
    fn open(&mut self, link: LinkId, now: Instant, out: &mut Vec<Action>) {
        let patience = self.config.heartbeat_interval * self.config.liveness;
        let state = &mut self.links[link.0];
        state.phase = Phase::Open;
        state.generation += 1;
        state.registered = false;
        state.requests_in_hand = 0;
        state.broker_expires_at = now + patience;
        out.push(Action::Open { link });
        let ready = FromWorker::Ready {
            service: self.service.clone(),
        };
        self.send(link, now, ready.encode(), out);
    }

    /// Ends `link`'s conversation without a word, and schedules its reopening after the backoff.
    fn close_and_back_off(&mut self, link: LinkId, now: Instant, out: &mut Vec<Action>) {
        let state = &mut self.links[link.0];
        let delay = state.reconnect_delay;
        state.stop();
        state.reconnect_delay = (delay * 2).min(self.config.reconnect_max);
        state.phase = Phase::Backoff {
            reopen_at: now + delay,
        };
        out.push(Action::Close { link });
    }

    /// Failover mode: the active broker has failed. Closes every link of it without a word and
    /// schedules the next broker's links to open after the failover backoff.
    fn fail_over(&mut self, now: Instant, out: &mut Vec<Action>) {
        let from = self.active;
        let to = (from + 1) % self.topology.brokers.max(1);
        for link in self.links_of(from).collect::<Vec<_>>() {
            let state = &mut self.links[link.0];
            if state.phase == Phase::Open {
                out.push(Action::Close { link });
            }
            state.stop();
        }
        let delay = self.failover_delay;
        self.failover_delay = (delay * 2).min(self.config.reconnect_max);
        self.active = to;
        info!("broker {from} failed: moving to broker {to} in {delay:?}");
        for link in self.links_of(to).collect::<Vec<_>>() {
            self.links[link.0].phase = Phase::Backoff {
                reopen_at: now + delay,
            };
        }
    }

    /// The log line for a link whose broker has been silent for interval x liveness.
    fn log_silence(&mut self, link: LinkId) {
        let patience = self.config.heartbeat_interval * self.config.liveness;
        let (interval, liveness) = (self.config.heartbeat_interval, self.config.liveness);
        let on = self.on(link);
        if self.links[link.0].registered {
            // A broker with other heartbeat settings looks exactly like a dead one from here, so
            // the line says which settings this side uses.
            warn!(
                "no heartbeat from the broker{on} for {patience:?} (heartbeat interval \
                 {interval:?} x liveness {liveness}); reconnecting. If the broker is up, check \
                 that it uses the same --heartbeat-ms and --liveness"
            );
            return;
        }
        let broker = self.broker_of(link);
        let quiet = self.quiet.get_mut(broker);
        match quiet {
            Some(quiet) if !*quiet => {
                *quiet = true;
                warn!(
                    "no answer from the broker{on} to READY within {patience:?}; it is down or \
                     unreachable, or uses other heartbeat settings. Retrying quietly"
                );
            }
            _ => debug!("still no answer from the broker{on}; retrying"),
        }
    }

    /// Sends a command on `link`: every command is a sign of life, so the next HEARTBEAT is due
    /// one interval from now.
    fn send(&mut self, link: LinkId, now: Instant, frames: Frames, out: &mut Vec<Action>) {
        self.links[link.0].heartbeat_at = now + self.config.heartbeat_interval;
        out.push(Action::Send { link, frames });
    }

    /// `" on broker B slot S"` for log lines, naming only what there is more than one of.
    fn on(&self, link: LinkId) -> OnLink {
        OnLink {
            broker: (self.topology.brokers > 1).then(|| self.broker_of(link)),
            slot: (self.topology.slots > 1).then(|| self.slot_of(link)),
        }
    }
}

/// A HEARTBEAT or a REQUEST: the broker is alive, and it accepted this conversation, so the next
/// reopening need not wait long. True if this is the first sign on the current socket.
fn heard_from_broker(state: &mut Link, config: &WorkerConfig, now: Instant) -> bool {
    state.broker_expires_at = now + config.heartbeat_interval * config.liveness;
    state.reconnect_delay = config.reconnect_initial;
    !std::mem::replace(&mut state.registered, true)
}

/// " (N more since the last line)" for a rate-limited line that held some back.
fn held_back_text(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} more since the last line)")
    }
}

/// Names the broker and slot in a log line, or nothing when the core has only one of each.
struct OnLink {
    broker: Option<usize>,
    slot: Option<usize>,
}

impl fmt::Display for OnLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.broker, self.slot) {
            (Some(broker), Some(slot)) => write!(f, " on broker {broker} slot {slot}"),
            (Some(broker), None) => write!(f, " on broker {broker}"),
            (None, Some(slot)) => write!(f, " on slot {slot}"),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
