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
//! # Links
//! A *link* ([`LinkId`]) is one MDP worker conversation slot: one DEALER socket at a time, each
//! socket a brand-new peer for the broker (a new ROUTER identity) that starts with READY. The core
//! keeps any number of links, each with its own clocks and backoff, independent of the others;
//! the [`crate::Worker`] uses one. A link's *generation* counts the sockets it has opened, so a
//! reply can be matched to the conversation its request came in.
//!
//! # The rules each link keeps
//! * **READY on every new socket.** [`WorkerCore::start`] opens every link; a link reopened after
//!   a backoff says READY again.
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
//! * **Backoff.** The wait before reopening starts at `reconnect_initial` and doubles on each
//!   reopening up to `reconnect_max`; it falls back to `reconnect_initial` once the broker speaks
//!   on the new socket, since a broker that answered accepted the conversation.
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

/// One MDP worker conversation slot: one DEALER socket at a time, numbered from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub usize);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link {}", self.0)
    }
}

/// What the core asks its driver to do. Execute them in the order given.
#[derive(Debug)]
pub enum Action {
    /// Drop the link's old socket, if any, then open a new DEALER and connect it to the broker.
    /// A `Send` of READY follows at once.
    Open { link: LinkId },
    /// Send these frames on the link's socket: a whole message, from the empty delimiter on, as
    /// `mdp::worker::FromWorker` encodes it.
    Send { link: LinkId, frames: Frames },
    /// Drop the link's socket without a word, discarding whatever is still queued in it (linger
    /// 0). After [`WorkerCore::shutdown`] a driver may give it a moment first, so that the
    /// DISCONNECT just sent can leave.
    Close { link: LinkId },
    /// A request for the application; answer it with [`WorkerCore::reply`].
    Deliver(Request),
}

/// One request from a client. Destructure it: the body is the application's to read or to send
/// back, and `reply_to` goes to the reply.
#[derive(Debug)]
pub struct Request {
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
    /// No socket, and none wanted: before [`WorkerCore::start`] and after
    /// [`WorkerCore::shutdown`].
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
}

/// The worker's protocol state for all of its links. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct WorkerCore {
    service: ServiceName,
    config: WorkerConfig,
    links: Vec<Link>,
    /// At most one line a second about malformed messages.
    malformed_log: LogLimit,
    malformed_messages: u64,
    /// The latest `now` the core was given, for [`WorkerCore::next_deadline`] when no link has a
    /// deadline.
    latest_now: Instant,
}

impl WorkerCore {
    /// A core for `links` conversation slots, none of them open yet: [`WorkerCore::start`] opens
    /// them. The service name should not be `mmi.*` (spec 8 reserves it; a broker disconnects a
    /// worker that registers one).
    pub fn new(service: ServiceName, config: WorkerConfig, links: usize, now: Instant) -> Self {
        WorkerCore {
            links: (0..links).map(|_| Link::new(&config, now)).collect(),
            service,
            config,
            malformed_log: LogLimit::default(),
            malformed_messages: 0,
            latest_now: now,
        }
    }

    /// Opens every link that has no socket: `Open`, then READY.
    pub fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.latest_now = now;
        for index in 0..self.links.len() {
            if self.links[index].phase == Phase::Stopped {
                self.open(LinkId(index), now, out);
            }
        }
    }

    /// Handles one whole message the broker sent on `link`: the frames its DEALER received,
    /// delimiter first. A REQUEST becomes [`Action::Deliver`]; nothing a broker sends is an error.
    pub fn handle(&mut self, now: Instant, link: LinkId, frames: Frames, out: &mut Vec<Action>) {
        self.latest_now = now;
        let on = self.on(link);
        let Some(state) = self.links.get_mut(link.0) else {
            debug!("dropped a message for {link}, which does not exist");
            return;
        };
        if state.phase != Phase::Open {
            // Sent to a socket that has been closed since; a driver may still have had it queued.
            debug!("dropped a message that came{on} after its socket was closed");
            return;
        }
        match ToWorker::parse(frames) {
            Ok(ToWorker::Heartbeat) => heard_from_broker(state, &self.config, now),
            Ok(ToWorker::Request { client, body }) => {
                heard_from_broker(state, &self.config, now);
                state.requests_in_hand = state.requests_in_hand.saturating_add(1);
                out.push(Action::Deliver(Request {
                    reply_to: ReplyTo {
                        link,
                        generation: state.generation,
                        client,
                    },
                    body,
                }));
            }
            Ok(ToWorker::Disconnect) => {
                info!("broker sent DISCONNECT{on}; will register again");
                self.close_and_back_off(link, now, out);
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
            }
        }
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
    /// been silent too long, reopening a link whose backoff has passed. Call it when
    /// [`WorkerCore::next_deadline`] has passed; calling it earlier is harmless.
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
                        // A broker with other heartbeat settings looks exactly like a dead one
                        // from here, so the line says which settings this side uses.
                        warn!(
                            "no heartbeat from the broker{} for {:?} (heartbeat interval {:?} x \
                             liveness {}); reconnecting. If the broker is up, check that it uses \
                             the same --heartbeat-ms and --liveness",
                            self.on(link),
                            self.config.heartbeat_interval * self.config.liveness,
                            self.config.heartbeat_interval,
                            self.config.liveness
                        );
                        self.close_and_back_off(link, now, out);
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
            let state = &mut self.links[index];
            state.phase = Phase::Stopped;
            state.requests_in_hand = 0;
        }
    }

    /// How many links the core has.
    pub fn link_count(&self) -> usize {
        self.links.len()
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

    /// How many sockets `link` has opened (the current one's number while it is open).
    pub fn generation(&self, link: LinkId) -> u64 {
        self.links.get(link.0).map_or(0, |state| state.generation)
    }

    /// How many malformed messages from the broker have been dropped, on all links.
    pub fn malformed_messages(&self) -> u64 {
        self.malformed_messages
    }

    /// A new socket for `link`, and READY on it: the start of a conversation.
    fn open(&mut self, link: LinkId, now: Instant, out: &mut Vec<Action>) {
        let patience = self.config.heartbeat_interval * self.config.liveness;
        let state = &mut self.links[link.0];
        state.phase = Phase::Open;
        state.generation += 1;
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
        state.reconnect_delay = (delay * 2).min(self.config.reconnect_max);
        state.phase = Phase::Backoff {
            reopen_at: now + delay,
        };
        state.requests_in_hand = 0;
        out.push(Action::Close { link });
    }

    /// Sends a command on `link`: every command is a sign of life, so the next HEARTBEAT is due
    /// one interval from now.
    fn send(&mut self, link: LinkId, now: Instant, frames: Frames, out: &mut Vec<Action>) {
        self.links[link.0].heartbeat_at = now + self.config.heartbeat_interval;
        out.push(Action::Send { link, frames });
    }

    /// `" on link N"` for log lines, when there is more than one link to tell apart.
    fn on(&self, link: LinkId) -> OnLink {
        OnLink((self.links.len() > 1).then_some(link))
    }
}

/// A HEARTBEAT or a REQUEST: the broker is alive, and it accepted this conversation, so the next
/// reopening need not wait long.
fn heard_from_broker(state: &mut Link, config: &WorkerConfig, now: Instant) {
    state.broker_expires_at = now + config.heartbeat_interval * config.liveness;
    state.reconnect_delay = config.reconnect_initial;
}

/// Names the link in a log line, or nothing when the core has only one.
struct OnLink(Option<LinkId>);

impl fmt::Display for OnLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(link) => write!(f, " on {link}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
