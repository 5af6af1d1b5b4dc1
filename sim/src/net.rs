//! An in-memory model of the three ZeroMQ socket types MDP uses (ROUTER, DEALER, REQ), with the
//! semantics libzmq 4.3.4 gives them over TCP, and a network of links between them that the
//! simulation can break, stall and slow down.
//!
//! # What is modelled, and how libzmq does it
//!
//! * **Connections.** A DEALER or REQ `connect`s to an endpoint that a ROUTER binds. Each
//!   `connect` makes a *pipe* at once (libzmq's default `ZMQ_IMMEDIATE=0`): messages sent before
//!   the connection is up wait in it, and it survives a lost connection, so what was still in it
//!   goes out on the next one. The connecting side retries every `reconnect_interval` (libzmq's
//!   `ZMQ_RECONNECT_IVL`, 100 ms) while nobody is bound there. Each connection that comes up is
//!   a *link*; on the ROUTER's side it is a new peer with a new routing identity, so a
//!   reconnection, or a new socket, is a new identity.
//! * **Routing identities.** A ROUTER names a peer by the identity the peer set
//!   (`ZMQ_ROUTING_ID`) or, if it set none, by five bytes it makes up: a zero byte, then a 32-bit
//!   big-endian counter that starts at a random value per socket (`router_t::identify_peer`).
//!   A second peer that connects with an identity already in use is *ignored*: without
//!   `ZMQ_ROUTER_HANDOVER`, libzmq leaves its pipe unidentified, never reads from it and never
//!   routes to it (its messages pile up until its high-water mark; it is not disconnected). With
//!   handover, the new connection takes the identity and the old one is closed.
//! * **Ordering.** Each direction of a link is a FIFO, as a TCP connection is: a message is
//!   delivered after the network's latency (plus some jitter), never before one sent earlier on
//!   the same link. There is no order between different links.
//! * **A peer that goes away.** Closing a socket, or killing its process, closes its links: what
//!   it had already sent is still delivered (the kernel flushes it), then the other side learns
//!   the connection is closed (a FIN that travels behind those messages). Messages on their way
//!   *to* it are lost. Until the FIN arrives, a ROUTER still routes to the gone peer and the
//!   messages are lost silently; afterwards a ROUTER with `ZMQ_ROUTER_MANDATORY` refuses them
//!   with `EHOSTUNREACH` and gives the message back whole ([`Refused`], as `zsocket::send` does),
//!   and one without it drops them. Messages the gone peer sent that had already arrived stay
//!   readable (libzmq reads a terminated pipe up to its end).
//! * **High-water marks.** A pipe holds at most the sender's `ZMQ_SNDHWM` plus the receiver's
//!   `ZMQ_RCVHWM` messages (in transit or unread), and any number if either is 0: exactly the
//!   rule libzmq applies to `inproc://` pipes, and over TCP the same up to what the kernel's
//!   buffers hold. Every send here is non-blocking (`ZMQ_DONTWAIT`): a ROUTER with
//!   `ZMQ_ROUTER_MANDATORY` refuses a message for a full peer with `EAGAIN`, one without drops it
//!   silently; a DEALER or REQ refuses with `EAGAIN` only when none of its pipes has room (where
//!   libzmq without `DONTWAIT` would block).
//! * **DEALER** sends round-robin over its pipes that have room and receives from all of them in
//!   arrival order (libzmq fair-queues; arrival order is one of the orders it may produce).
//! * **REQ** puts the empty delimiter frame before each request and takes it off the reply;
//!   refuses a second send before the reply came (`EFSM`) and a receive before a send (`EFSM`);
//!   and drops, while waiting, a message that comes from another pipe than the request went out
//!   on, or that does not start with the delimiter (`req_t::recv_reply_pipe`). A reply that comes
//!   when nothing is awaited waits in the pipe, and is taken as the answer to the next request:
//!   libzmq does that too, without `ZMQ_REQ_CORRELATE`.
//!
//! # What the simulation can do to it
//!
//! Close or kill a socket ([`Network::close`]), cut a socket's links off and heal them
//! ([`Network::set_partitioned`]: a partition stalls traffic as TCP retransmission would, and
//! lets it through in order when healed; connection attempts fail meanwhile), hold a socket's
//! traffic back for a while ([`Network::hold`]: a delayed message, and everything behind it, as
//! on a TCP connection). A frozen process is the caller's business: it just stops reading, and
//! its pipes fill up.
//!
//! Nothing here reads a clock: the caller passes the current virtual time (an offset from the
//! start of the run) and runs the events the network schedules ([`Network::next_at`],
//! [`Network::step`]).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use mdp::Frames;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::time::Timeline;

/// A socket of the model; ids are never reused within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub usize);

/// One connection between a connecting socket and a ROUTER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkId(pub usize);

/// The socket types MDP uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    Router,
    Dealer,
    Req,
}

/// The socket options the model honours, with libzmq's defaults.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// `ZMQ_SNDHWM`: 1000 by default; 0 for no limit.
    pub sndhwm: usize,
    /// `ZMQ_RCVHWM`: 1000 by default; 0 for no limit.
    pub rcvhwm: usize,
    /// `ZMQ_ROUTING_ID` of a connecting socket: the identity a ROUTER will know it by.
    pub routing_id: Option<Vec<u8>>,
    /// `ZMQ_ROUTER_MANDATORY`: refuse messages that cannot be routed instead of dropping them.
    pub router_mandatory: bool,
    /// `ZMQ_ROUTER_HANDOVER`: a new peer with an identity in use takes it over.
    pub router_handover: bool,
    /// `ZMQ_RECONNECT_IVL`: 100 ms by default.
    pub reconnect_interval: Duration,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            sndhwm: 1000,
            rcvhwm: 1000,
            routing_id: None,
            router_mandatory: false,
            router_handover: false,
            reconnect_interval: Duration::from_millis(100),
        }
    }
}

/// A message the socket would not take, given back whole, as `zsocket::Refused`.
#[derive(Debug)]
pub struct Refused {
    pub frames: Frames,
    /// `EHOSTUNREACH` (ROUTER, peer unknown or gone), `EAGAIN` (no room), `EFSM` (REQ out of turn).
    pub error: zmq::Error,
}

/// The network's settings.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// One-way delay of every message and of a connection's handshake.
    pub latency: Duration,
    /// Up to this much more, at random, per message (never reordering a link).
    pub jitter: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency: Duration::from_micros(500),
            jitter: Duration::from_micros(500),
        }
    }
}

/// Counters of what the network did, for the coverage report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetStats {
    pub connections: u64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    /// Delivered to a side that had closed its socket: lost with the peer.
    pub messages_lost: u64,
    pub refused_unreachable: u64,
    pub refused_full: u64,
    pub refused_out_of_turn: u64,
    /// Dropped by a ROUTER without `ZMQ_ROUTER_MANDATORY` (no route or no room).
    pub dropped_unroutable: u64,
    /// Peers ignored for connecting with an identity already in use.
    pub duplicate_identities: u64,
    /// Messages a REQ dropped while waiting (another pipe, or no delimiter).
    pub req_discarded: u64,
}

/// Which end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The DEALER or REQ that connected.
    Connector = 0,
    /// The ROUTER that accepted.
    Acceptor = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Connector => Side::Acceptor,
            Side::Acceptor => Side::Connector,
        }
    }
}

#[derive(Debug)]
enum Item {
    Message(Frames),
    /// The sender closed the connection: nothing follows.
    Fin,
}

/// One direction of a link: what is on its way, and what has arrived and not been read.
#[derive(Debug, Default)]
struct Wire {
    in_transit: VecDeque<(Duration, Item)>,
    /// Messages in transit or arrived and unread.
    queued: usize,
    /// The most messages the sender may have outstanding (`None`: no limit), and the low-water
    /// mark: the reader tells the writer about its reads every `lwm` messages, as libzmq's
    /// `activate_write` does, so the writer sees room again only then.
    capacity: Option<usize>,
    lwm: u64,
    /// Messages put on the wire, read (or lost) at the far end, and reads the writer knows of:
    /// the writer counts `sent - acknowledged` against the capacity.
    sent: u64,
    read: u64,
    acknowledged: u64,
    /// The due time of the last item put on the wire: nothing later may arrive before it.
    last_due: Duration,
    /// Bumped whenever the items' due times are recomputed, so that old deliveries are ignored.
    epoch: u64,
    /// Cut off: nothing arrives until healed.
    partitioned: bool,
    /// Nothing arrives before this (a delayed message holds up what follows it).
    held_until: Duration,
    /// How many items were ever put on it: numbers each item's jitter draw.
    items_put: u64,
}

/// One connection.
#[derive(Debug)]
struct Link {
    connector: SocketId,
    pipe: usize,
    acceptor: SocketId,
    /// The connector's routing identity at the ROUTER.
    identity: Vec<u8>,
    /// Ignored by the ROUTER: its identity was in use when it connected.
    parked: bool,
    /// `wires[side]` carries messages *to* `side`.
    wires: [Wire; 2],
    /// Whether each side still holds the link (has not closed it or learnt it is closed).
    open: [bool; 2],
}

impl Wire {
    fn new(capacity: Option<usize>) -> Wire {
        Wire {
            capacity,
            lwm: capacity.map_or(1, low_water_mark),
            ..Wire::default()
        }
    }

    fn has_room(&self) -> bool {
        self.capacity
            .is_none_or(|capacity| self.sent - self.acknowledged < capacity as u64)
    }

    /// A message left the wire at the far end (read, or lost with a closed reader).
    fn taken(&mut self) {
        self.queued -= 1;
        self.read += 1;
        if self.read.is_multiple_of(self.lwm) {
            self.acknowledged = self.read;
        }
    }
}

/// libzmq's `pipe_t::compute_lwm`: half the high-water mark, or 1024 below it for large ones.
fn low_water_mark(hwm: usize) -> u64 {
    let hwm = hwm as u64;
    if hwm > 2048 {
        hwm - 1024
    } else {
        hwm.div_ceil(2).max(1)
    }
}

/// A connecting socket's pipe to one endpoint.
#[derive(Debug)]
struct Pipe {
    endpoint: String,
    /// The connection it runs over now, if one is up.
    link: Option<LinkId>,
    /// Messages waiting for a connection (bounded by `ZMQ_SNDHWM`).
    pending: VecDeque<Frames>,
    /// Cut off from the network: connection attempts fail.
    partitioned: bool,
    /// Given up for good after a protocol error (see [`Network::deliver`]): no more
    /// connections, no more sends.
    terminated: bool,
}

#[derive(Debug)]
struct Socket {
    kind: SocketKind,
    options: SocketOptions,
    /// Who to tell when a message arrives (the caller's tag).
    owner: usize,
    open: bool,
    /// Messages arrived and not read yet, with the link each came on.
    inbox: VecDeque<(LinkId, Frames)>,
    // A ROUTER's state.
    endpoints: Vec<String>,
    routes: HashMap<Vec<u8>, LinkId>,
    next_generated_id: u32,
    /// Every link it accepted and still holds (routed or parked).
    accepted: Vec<LinkId>,
    // A connecting socket's state.
    pipes: Vec<Pipe>,
    next_pipe: usize,
    // A REQ's state.
    awaiting_reply: bool,
    reply_pipe: Option<usize>,
}

#[derive(Debug)]
enum NetEvent {
    Deliver {
        link: LinkId,
        to: Side,
        epoch: u64,
    },
    /// A connecting socket tries its pipe's endpoint.
    Attempt {
        socket: SocketId,
        pipe: usize,
    },
    /// The handshake of an attempt that found a ROUTER is done.
    Established {
        socket: SocketId,
        pipe: usize,
        router: SocketId,
    },
}

/// What a network event did that its owner must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A message arrived for a socket: its owner should read.
    Readable { socket: SocketId, owner: usize },
    /// A connection attempt of a connecting socket was refused: nothing is bound at the endpoint
    /// (what a socket monitor reports as `ZMQ_EVENT_CONNECT_RETRIED`). An attempt cut off by a
    /// partition is not refused: it goes unanswered, as a SYN into a dead link does.
    Refused { socket: SocketId, owner: usize },
    /// A connecting socket's connection is up (`ZMQ_EVENT_HANDSHAKE_SUCCEEDED`).
    Connected { socket: SocketId, owner: usize },
    /// A connecting socket learnt that its connection closed (`ZMQ_EVENT_DISCONNECTED`); it
    /// tries again in the background. A partition closes nothing: it is silent.
    Disconnected { socket: SocketId, owner: usize },
}

/// The model: every socket, every link, and what is on its way.
#[derive(Debug)]
pub struct Network {
    config: NetConfig,
    sockets: Vec<Socket>,
    links: Vec<Link>,
    bound: HashMap<String, SocketId>,
    timeline: Timeline<NetEvent>,
    rng: StdRng,
    /// The seed of the per-wire jitter draws.
    jitter_seed: u64,
    now: Duration,
    stats: NetStats,
}

impl Network {
    pub fn new(config: NetConfig, seed: u64) -> Network {
        Network {
            config,
            sockets: Vec::new(),
            links: Vec::new(),
            bound: HashMap::new(),
            timeline: Timeline::new(),
            rng: StdRng::seed_from_u64(seed),
            jitter_seed: mix(seed, 0x6a09_e667),
            now: Duration::ZERO,
            stats: NetStats::default(),
        }
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Tells the network the time; calls that schedule something count from it.
    pub fn set_now(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// When the network next has something to do.
    pub fn next_at(&self) -> Option<Duration> {
        self.timeline.next_at()
    }

    /// Runs the next network event (moving the network's time to it), and says whom it concerns.
    pub fn step(&mut self) -> Option<Notice> {
        let (at, event) = self.timeline.pop()?;
        self.set_now(at);
        match event {
            NetEvent::Deliver { link, to, epoch } => self.deliver(link, to, epoch),
            NetEvent::Attempt { socket, pipe } => self.attempt(socket, pipe),
            NetEvent::Established {
                socket,
                pipe,
                router,
            } => self.establish(socket, pipe, router),
        }
    }

    /// A new socket; `owner` is the tag [`Notice`]s about it carry.
    pub fn socket(&mut self, kind: SocketKind, options: SocketOptions, owner: usize) -> SocketId {
        let id = SocketId(self.sockets.len());
        let next_generated_id = self.rng.random();
        self.sockets.push(Socket {
            kind,
            options,
            owner,
            open: true,
            inbox: VecDeque::new(),
            endpoints: Vec::new(),
            routes: HashMap::new(),
            next_generated_id,
            accepted: Vec::new(),
            pipes: Vec::new(),
            next_pipe: 0,
            awaiting_reply: false,
            reply_pipe: None,
        });
        id
    }

    /// Binds a ROUTER to `endpoint`; `EADDRINUSE` if an open socket holds it.
    pub fn bind(&mut self, socket: SocketId, endpoint: &str) -> Result<(), zmq::Error> {
        if self.bound.contains_key(endpoint) {
            return Err(zmq::Error::EADDRINUSE);
        }
        let sock = &mut self.sockets[socket.0];
        if sock.kind != SocketKind::Router || !sock.open {
            return Err(zmq::Error::ENOTSUP);
        }
        sock.endpoints.push(endpoint.to_owned());
        self.bound.insert(endpoint.to_owned(), socket);
        Ok(())
    }

    /// Connects a DEALER or REQ to `endpoint`: a pipe at once, the connection in the background.
    pub fn connect(&mut self, socket: SocketId, endpoint: &str) {
        let sock = &mut self.sockets[socket.0];
        if sock.kind == SocketKind::Router || !sock.open {
            return;
        }
        sock.pipes.push(Pipe {
            endpoint: endpoint.to_owned(),
            link: None,
            pending: VecDeque::new(),
            partitioned: false,
            terminated: false,
        });
        let pipe = sock.pipes.len() - 1;
        self.timeline
            .schedule(self.now, NetEvent::Attempt { socket, pipe });
    }

    /// Closes a socket with linger 0 (or its process died): what it sent is still delivered,
    /// what comes for it is lost, and its peers learn it is gone one latency later.
    pub fn close(&mut self, socket: SocketId) {
        let sock = &mut self.sockets[socket.0];
        if !sock.open {
            return;
        }
        sock.open = false;
        sock.inbox.clear();
        let endpoints = std::mem::take(&mut sock.endpoints);
        for endpoint in endpoints {
            self.bound.remove(&endpoint);
        }
        let (side, links): (Side, Vec<LinkId>) = match sock.kind {
            SocketKind::Router => (Side::Acceptor, std::mem::take(&mut sock.accepted)),
            _ => (
                Side::Connector,
                sock.pipes
                    .iter_mut()
                    .filter_map(|pipe| {
                        pipe.pending.clear();
                        pipe.link.take()
                    })
                    .collect(),
            ),
        };
        sock.routes.clear();
        for link in links {
            self.close_link(link, side);
        }
    }

    /// Whether a socket is still open.
    pub fn is_open(&self, socket: SocketId) -> bool {
        self.sockets[socket.0].open
    }

    /// Cuts a connecting socket off from the network, or heals it. While cut off, its links carry
    /// nothing (what is sent waits, as TCP keeps retransmitting) and its connection attempts fail;
    /// once healed, what waited is delivered in order.
    pub fn set_partitioned(&mut self, socket: SocketId, partitioned: bool) {
        let links: Vec<LinkId> = self.sockets[socket.0]
            .pipes
            .iter_mut()
            .filter_map(|pipe| {
                pipe.partitioned = partitioned;
                pipe.link
            })
            .collect();
        for link in links {
            for to in [Side::Connector, Side::Acceptor] {
                self.links[link.0].wires[to as usize].partitioned = partitioned;
                self.reschedule(link, to);
            }
        }
    }

    /// Cuts off, or heals, only a connecting socket's pipe to `endpoint` (a partition between one
    /// process and one broker, the others still reachable). A pipe already in that state is left
    /// alone, so that what is in transit on it is not rescheduled.
    pub fn set_pipe_partitioned(&mut self, socket: SocketId, endpoint: &str, partitioned: bool) {
        let links: Vec<Option<LinkId>> = self.sockets[socket.0]
            .pipes
            .iter_mut()
            .filter(|pipe| pipe.endpoint == endpoint && pipe.partitioned != partitioned)
            .map(|pipe| {
                pipe.partitioned = partitioned;
                pipe.link
            })
            .collect();
        for link in links.into_iter().flatten() {
            for to in [Side::Connector, Side::Acceptor] {
                self.links[link.0].wires[to as usize].partitioned = partitioned;
                self.reschedule(link, to);
            }
        }
    }

    /// Holds back the traffic of a connecting socket's links, both ways, until `until`: the
    /// message on its way is delayed, and what follows it on the same link waits behind it.
    pub fn hold(&mut self, socket: SocketId, until: Duration) {
        let links: Vec<LinkId> = self.sockets[socket.0]
            .pipes
            .iter()
            .filter_map(|pipe| pipe.link)
            .collect();
        for link in links {
            for to in [Side::Connector, Side::Acceptor] {
                let wire = &mut self.links[link.0].wires[to as usize];
                wire.held_until = wire.held_until.max(until);
                self.reschedule(link, to);
            }
        }
    }

    /// The routing identity a connecting socket has at its ROUTER now, if it is connected and
    /// not ignored as a duplicate.
    pub fn identity_of(&self, socket: SocketId) -> Option<&[u8]> {
        self.sockets[socket.0]
            .pipes
            .iter()
            .filter_map(|pipe| pipe.link)
            .map(|link| &self.links[link.0])
            .find(|link| !link.parked)
            .map(|link| &link.identity[..])
    }

    /// Whether a connecting socket has a connection up now (as far as it knows).
    pub fn is_connected(&self, socket: SocketId) -> bool {
        self.sockets[socket.0]
            .pipes
            .iter()
            .any(|pipe| pipe.link.is_some())
    }

    /// Sends one message. A ROUTER's first frame is the routing identity. Never blocks: see the
    /// module docs for when a message is refused, and when it is dropped.
    pub fn send(&mut self, socket: SocketId, mut frames: Frames) -> Result<(), Refused> {
        let sock = &self.sockets[socket.0];
        if !sock.open {
            return Err(Refused {
                frames,
                error: zmq::Error::ENOTSOCK,
            });
        }
        match sock.kind {
            SocketKind::Router => self.router_send(socket, frames),
            SocketKind::Dealer => self.connector_send(socket, frames).map(|_| ()),
            SocketKind::Req => {
                if sock.awaiting_reply {
                    self.stats.refused_out_of_turn += 1;
                    return Err(Refused {
                        frames,
                        error: zmq::Error::EFSM,
                    });
                }
                frames.insert(0, zmq::Message::new());
                match self.connector_send(socket, frames) {
                    Ok(pipe) => {
                        let sock = &mut self.sockets[socket.0];
                        sock.awaiting_reply = true;
                        sock.reply_pipe = Some(pipe);
                        Ok(())
                    }
                    Err(mut refused) => {
                        refused.frames.remove(0);
                        Err(refused)
                    }
                }
            }
        }
    }

    /// Receives one message if one is waiting. A ROUTER's first frame is the sender's identity;
    /// a REQ's reply comes without the delimiter. `EFSM` from a REQ that is not waiting for a
    /// reply.
    pub fn recv(&mut self, socket: SocketId) -> Result<Option<Frames>, zmq::Error> {
        let sock = &self.sockets[socket.0];
        if !sock.open {
            return Err(zmq::Error::ENOTSOCK);
        }
        if sock.kind == SocketKind::Req && !sock.awaiting_reply {
            return Err(zmq::Error::EFSM);
        }
        loop {
            let sock = &mut self.sockets[socket.0];
            let Some((link, mut frames)) = sock.inbox.pop_front() else {
                return Ok(None);
            };
            let side = match sock.kind {
                SocketKind::Router => Side::Acceptor,
                _ => Side::Connector,
            };
            let kind = sock.kind;
            let reply_pipe = sock.reply_pipe;
            let record = &mut self.links[link.0];
            record.wires[side as usize].taken();
            match kind {
                SocketKind::Router => {
                    frames.insert(0, zmq::Message::from(&record.identity[..]));
                    return Ok(Some(frames));
                }
                SocketKind::Dealer => return Ok(Some(frames)),
                SocketKind::Req => {
                    let from_reply_pipe = reply_pipe.is_none_or(|pipe| pipe == record.pipe);
                    let delimited = frames.first().is_some_and(|frame| frame.is_empty());
                    if !from_reply_pipe || !delimited {
                        self.stats.req_discarded += 1;
                        continue;
                    }
                    frames.remove(0);
                    let sock = &mut self.sockets[socket.0];
                    sock.awaiting_reply = false;
                    return Ok(Some(frames));
                }
            }
        }
    }

    /// Whether a message is waiting to be read (for a REQ: one it would accept or discard).
    pub fn has_input(&self, socket: SocketId) -> bool {
        !self.sockets[socket.0].inbox.is_empty()
    }

    /// The routing identities a ROUTER can route to now (for checks and tests).
    pub fn routes(&self, socket: SocketId) -> Vec<Vec<u8>> {
        let mut routes: Vec<Vec<u8>> = self.sockets[socket.0].routes.keys().cloned().collect();
        routes.sort();
        routes
    }

    /// The most messages waiting in any one direction of any link that is still open: what the
    /// high-water marks bound.
    pub fn largest_queue(&self) -> usize {
        self.links
            .iter()
            .filter(|link| link.open[0] && link.open[1])
            .flat_map(|link| link.wires.iter().map(|wire| wire.queued))
            .max()
            .unwrap_or(0)
    }

    /// The capacity of the pipe from `sender` to `receiver`: `None` for no limit.
    fn capacity(&self, sender: SocketId, receiver: SocketId) -> Option<usize> {
        let sndhwm = self.sockets[sender.0].options.sndhwm;
        let rcvhwm = self.sockets[receiver.0].options.rcvhwm;
        (sndhwm != 0 && rcvhwm != 0).then_some(sndhwm + rcvhwm)
    }

    fn router_send(&mut self, socket: SocketId, mut frames: Frames) -> Result<(), Refused> {
        if frames.is_empty() {
            return Ok(());
        }
        let sock = &self.sockets[socket.0];
        let mandatory = sock.options.router_mandatory;
        let route = sock.routes.get(&frames[0][..]).copied();
        let Some(link) = route else {
            if mandatory {
                self.stats.refused_unreachable += 1;
                return Err(Refused {
                    frames,
                    error: zmq::Error::EHOSTUNREACH,
                });
            }
            self.stats.dropped_unroutable += 1;
            return Ok(());
        };
        let full = !self.links[link.0].wires[Side::Connector as usize].has_room();
        if full {
            if mandatory {
                self.stats.refused_full += 1;
                return Err(Refused {
                    frames,
                    error: zmq::Error::EAGAIN,
                });
            }
            self.stats.dropped_unroutable += 1;
            return Ok(());
        }
        frames.remove(0);
        self.put_on_wire(link, Side::Connector, Item::Message(frames));
        Ok(())
    }

    /// Sends on the next pipe (round-robin) that has room; returns which pipe.
    fn connector_send(&mut self, socket: SocketId, frames: Frames) -> Result<usize, Refused> {
        let sock = &self.sockets[socket.0];
        let count = sock.pipes.len();
        let chosen = (0..count)
            .map(|offset| (sock.next_pipe + offset) % count)
            .find(|&index| self.pipe_has_room(socket, index));
        let Some(index) = chosen else {
            self.stats.refused_full += 1;
            return Err(Refused {
                frames,
                error: zmq::Error::EAGAIN,
            });
        };
        let sock = &mut self.sockets[socket.0];
        sock.next_pipe = (index + 1) % count;
        let pipe = &mut sock.pipes[index];
        match pipe.link {
            Some(link) => self.put_on_wire(link, Side::Acceptor, Item::Message(frames)),
            None => {
                pipe.pending.push_back(frames);
                self.stats.messages_sent += 1;
            }
        }
        Ok(index)
    }

    fn pipe_has_room(&self, socket: SocketId, index: usize) -> bool {
        let sock = &self.sockets[socket.0];
        let pipe = &sock.pipes[index];
        if pipe.terminated {
            return false;
        }
        match pipe.link {
            Some(link) => self.links[link.0].wires[Side::Acceptor as usize].has_room(),
            None => sock.options.sndhwm == 0 || pipe.pending.len() < sock.options.sndhwm,
        }
    }

    /// Puts an item on the wire toward `to`, due after the latency and after everything before it.
    fn put_on_wire(&mut self, link: LinkId, to: Side, item: Item) {
        let wire = &mut self.links[link.0].wires[to as usize];
        // Each wire draws its own jitter, numbered by item: the delays on one link do not depend
        // on the order in which messages to other links were sent. The broker core iterates a
        // HashMap (random order per process) to heartbeat its workers, and a shared random
        // stream would make every run after the first heartbeat differ.
        let draw = mix(
            self.jitter_seed ^ ((link.0 as u64) << 1) ^ (to as u64),
            wire.items_put,
        );
        wire.items_put += 1;
        let jitter_ns = self.config.jitter.as_nanos() as u64;
        let jitter = Duration::from_nanos(if jitter_ns == 0 {
            0
        } else {
            draw % (jitter_ns + 1)
        });
        let earliest = self.now + self.config.latency + jitter;
        if matches!(item, Item::Message(_)) {
            wire.queued += 1;
            wire.sent += 1;
            self.stats.messages_sent += 1;
        }
        let due = earliest.max(wire.last_due).max(wire.held_until);
        wire.last_due = due;
        wire.in_transit.push_back((due, item));
        if !wire.partitioned {
            let epoch = wire.epoch;
            self.timeline
                .schedule(due, NetEvent::Deliver { link, to, epoch });
        }
    }

    /// Recomputes the due times of a wire's items after a partition or a hold changed, and
    /// schedules their delivery again (unless it is cut off).
    fn reschedule(&mut self, link: LinkId, to: Side) {
        let floor = self.now + self.config.latency;
        let wire = &mut self.links[link.0].wires[to as usize];
        wire.epoch += 1;
        let mut previous = Duration::ZERO;
        for (due, _) in wire.in_transit.iter_mut() {
            *due = (*due).max(floor).max(wire.held_until).max(previous);
            previous = *due;
        }
        wire.last_due = wire.last_due.max(previous);
        if wire.partitioned {
            return;
        }
        let epoch = wire.epoch;
        let dues: Vec<Duration> = wire.in_transit.iter().map(|(due, _)| *due).collect();
        for due in dues {
            self.timeline
                .schedule(due, NetEvent::Deliver { link, to, epoch });
        }
    }

    fn deliver(&mut self, link: LinkId, to: Side, epoch: u64) -> Option<Notice> {
        let record = &mut self.links[link.0];
        let wire = &mut record.wires[to as usize];
        if wire.epoch != epoch || wire.partitioned {
            return None;
        }
        let (_, item) = wire.in_transit.pop_front()?;
        let receiver_open = record.open[to as usize];
        match item {
            Item::Message(frames) => {
                if !receiver_open {
                    wire.taken();
                    self.stats.messages_lost += 1;
                    return None;
                }
                self.stats.messages_delivered += 1;
                if to == Side::Acceptor && record.parked {
                    // libzmq never reads an unidentified pipe: the message stays in it.
                    return None;
                }
                let receiver = match to {
                    Side::Acceptor => record.acceptor,
                    Side::Connector => record.connector,
                };
                if self.sockets[receiver.0].kind == SocketKind::Req && !is_reply_envelope(&frames) {
                    self.req_protocol_error(link);
                    return None;
                }
                let sock = &mut self.sockets[receiver.0];
                sock.inbox.push_back((link, frames));
                Some(Notice::Readable {
                    socket: receiver,
                    owner: sock.owner,
                })
            }
            Item::Fin => {
                if receiver_open {
                    return self.peer_closed(link, to);
                }
                None
            }
        }
    }

    /// A REQ's session got a message that does not start with the empty delimiter (libzmq's
    /// `req_session_t::push_msg` fails it): the engine drops the connection as a protocol error,
    /// and a connecting session that fails so is terminated, not reconnected. The REQ never hears
    /// from that pipe again: a REQ whose only connection this was is deaf for good.
    fn req_protocol_error(&mut self, link: LinkId) {
        self.stats.req_discarded += 1;
        let (socket, pipe) = (self.links[link.0].connector, self.links[link.0].pipe);
        let pipe = &mut self.sockets[socket.0].pipes[pipe];
        pipe.terminated = true;
        pipe.link = None;
        pipe.pending.clear();
        self.close_link(link, Side::Connector);
    }

    /// Side `side` of `link` learns that the other side closed the connection.
    fn peer_closed(&mut self, link: LinkId, side: Side) -> Option<Notice> {
        let record = &mut self.links[link.0];
        record.open[side as usize] = false;
        match side {
            Side::Acceptor => {
                let router = record.acceptor;
                let identity = record.identity.clone();
                let sock = &mut self.sockets[router.0];
                if sock.routes.get(&identity) == Some(&link) {
                    sock.routes.remove(&identity);
                }
                sock.accepted.retain(|held| *held != link);
                None
            }
            Side::Connector => {
                let (socket, pipe) = (record.connector, record.pipe);
                let sock = &mut self.sockets[socket.0];
                if sock.pipes[pipe].link == Some(link) && !sock.pipes[pipe].terminated {
                    sock.pipes[pipe].link = None;
                    let retry = self.now + sock.options.reconnect_interval;
                    let owner = sock.owner;
                    self.timeline
                        .schedule(retry, NetEvent::Attempt { socket, pipe });
                    return Some(Notice::Disconnected { socket, owner });
                }
                None
            }
        }
    }

    /// `side` closes its end of `link`: messages to it are lost, a FIN goes to the other side.
    fn close_link(&mut self, link: LinkId, side: Side) {
        let record = &mut self.links[link.0];
        if !record.open[side as usize] {
            return;
        }
        record.open[side as usize] = false;
        if record.open[side.other() as usize] {
            self.put_on_wire(link, side.other(), Item::Fin);
        }
    }

    fn attempt(&mut self, socket: SocketId, pipe: usize) -> Option<Notice> {
        let sock = &self.sockets[socket.0];
        if !sock.open || sock.pipes[pipe].link.is_some() || sock.pipes[pipe].terminated {
            return None;
        }
        let target = self.bound.get(&sock.pipes[pipe].endpoint).copied();
        match target {
            Some(router) if !sock.pipes[pipe].partitioned => {
                let at = self.now + self.config.latency;
                self.timeline.schedule(
                    at,
                    NetEvent::Established {
                        socket,
                        pipe,
                        router,
                    },
                );
                None
            }
            target => {
                let refused = target.is_none() && !sock.pipes[pipe].partitioned;
                let owner = sock.owner;
                let retry = self.now + sock.options.reconnect_interval;
                self.timeline
                    .schedule(retry, NetEvent::Attempt { socket, pipe });
                refused.then_some(Notice::Refused { socket, owner })
            }
        }
    }

    fn establish(&mut self, socket: SocketId, pipe: usize, router: SocketId) -> Option<Notice> {
        let sock = &self.sockets[socket.0];
        if !sock.open || sock.pipes[pipe].link.is_some() {
            return None;
        }
        let still_there = self.bound.get(&sock.pipes[pipe].endpoint) == Some(&router);
        if !still_there || sock.pipes[pipe].partitioned {
            let refused = !still_there && !sock.pipes[pipe].partitioned;
            let owner = sock.owner;
            let retry = self.now + sock.options.reconnect_interval;
            self.timeline
                .schedule(retry, NetEvent::Attempt { socket, pipe });
            return refused.then_some(Notice::Refused { socket, owner });
        }
        let explicit = sock.options.routing_id.clone();
        let link = LinkId(self.links.len());
        let router_sock = &mut self.sockets[router.0];
        let (identity, parked) = match explicit {
            Some(identity) => match router_sock.routes.get(&identity).copied() {
                Some(holder) if router_sock.options.router_handover => {
                    // The new peer takes the identity; the old connection is closed.
                    router_sock.routes.insert(identity.clone(), link);
                    router_sock.accepted.retain(|held| *held != holder);
                    self.close_link(holder, Side::Acceptor);
                    (identity, false)
                }
                Some(_) => {
                    self.stats.duplicate_identities += 1;
                    (identity, true)
                }
                None => (identity, false),
            },
            None => {
                let number = router_sock.next_generated_id;
                router_sock.next_generated_id = number.wrapping_add(1);
                let mut identity = vec![0u8];
                identity.extend_from_slice(&number.to_be_bytes());
                (identity, false)
            }
        };
        let router_sock = &mut self.sockets[router.0];
        if !parked {
            router_sock.routes.insert(identity.clone(), link);
        }
        router_sock.accepted.push(link);
        self.links.push(Link {
            connector: socket,
            pipe,
            acceptor: router,
            identity,
            parked,
            wires: [
                Wire::new(self.capacity(router, socket)),
                Wire::new(self.capacity(socket, router)),
            ],
            open: [true, true],
        });
        self.stats.connections += 1;
        let pending = std::mem::take(&mut self.sockets[socket.0].pipes[pipe].pending);
        self.sockets[socket.0].pipes[pipe].link = Some(link);
        // They were counted as sent when they went into the pipe.
        self.stats.messages_sent -= pending.len() as u64;
        for frames in pending {
            self.put_on_wire(link, Side::Acceptor, Item::Message(frames));
        }
        let owner = self.sockets[socket.0].owner;
        Some(Notice::Connected { socket, owner })
    }
}

/// A 64-bit mix of a key and a counter (splitmix64's finaliser): a cheap, well-spread,
/// reproducible random number per (key, counter).
fn mix(key: u64, counter: u64) -> u64 {
    let mut z = key
        .wrapping_add(counter.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a REQ's session accepts from its peer: the empty delimiter (or a 4-byte request id for
/// `ZMQ_REQ_CORRELATE`, then the delimiter), with more frames after it.
fn is_reply_envelope(frames: &Frames) -> bool {
    match frames.as_slice() {
        [first, _, ..] if first.is_empty() => true,
        [id, delimiter, _, ..] => id.len() == 4 && delimiter.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
