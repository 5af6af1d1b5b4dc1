//! Test support, not part of the broker's API: the event language that the property test
//! (`tests/proptest_core.rs`) and the fuzz target (`fuzz/fuzz_targets/broker_core.rs`) both feed to
//! the core, and the [`Driver`] that applies events one by one and checks, after each, every rule
//! that can be seen from outside the core.
//!
//! An [`Event`] is something that can happen to a broker: a peer sends a message, time passes, the
//! timers fire, the socket reports a message it could not deliver, the broker shuts down. Messages
//! are built from a few peer identities and service names, so that random sequences meet the same
//! workers and services again and again; most are well-formed MDP/0.1 messages, some are mutated
//! (a frame dropped, inserted, replaced, the message cut short) and some are random frames.
//!
//! The fuzz target gets bytes, not events: [`decode`] turns any byte string into a [`Config`] and
//! events, in a format simple enough to write seeds by hand (described on [`decode`]).
//!
//! It lives in `src/` (and is compiled in every build, behind no feature) only so that an
//! integration test and the separate fuzz crate can share it; it is `#[doc(hidden)]` and nothing in
//! the broker uses it.
//!
//! [`TestBroker`] is the other kind of test support: a broker in a thread of the test, and
//! [`auth`] starts it with `--auth`, with the auth
//! files and password files of the tests that log in to it (the client's, the worker's and
//! Titanic's as well as the broker's own).

pub mod auth;
mod running;

pub use running::TestBroker;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mdp::worker::ToWorker;
use mdp::{client, mmi, Command, Frames, ServiceName, CLIENT_HEADER, WORKER_HEADER};

use crate::core::{Broker, Config, Outgoing};

/// A service name longer than [`ServiceName::MAX_LEN`], which no parser may accept.
const TOO_LONG: [u8; ServiceName::MAX_LEN + 1] = [b's'; ServiceName::MAX_LEN + 1];

/// The identities peers send from. Few, so that random sequences reuse them: the same peer
/// registers, replies, disconnects and comes back. The last is shaped like a libzmq identity.
pub const PEERS: [&[u8]; 6] = [b"C1", b"C2", b"W1", b"W2", b"W3", b"\x00\x6b\x8b\x45\x67"];

/// The service names messages use: two ordinary ones, the MMI service, another reserved `mmi.*`
/// name, and two a parser must refuse (empty, too long).
pub const SERVICES: [&[u8]; 6] = [b"echo", b"time", mmi::SERVICE, b"mmi.nope", b"", &TOO_LONG];

/// The peer with a given index (taken modulo the number of peers).
pub fn peer(index: u8) -> &'static [u8] {
    PEERS[usize::from(index) % PEERS.len()]
}

/// The service name with a given index (taken modulo the number of names).
pub fn service(index: u8) -> &'static [u8] {
    SERVICES[usize::from(index) % SERVICES.len()]
}

/// The shape of a message before it is mutated: the MDP/0.1 messages a broker receives, the
/// commands it should never receive, and raw frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Client REQUEST: `"" MDPC01 service body...`.
    Request { service: u8, body: Vec<Vec<u8>> },
    /// Client REQUEST to `mmi.service` asking about service `asked`.
    MmiService { asked: u8 },
    /// Worker READY: `"" MDPW01 0x01 service`.
    Ready { service: u8 },
    /// Worker REPLY: `"" MDPW01 0x03 client "" body...`.
    Reply { client: u8, body: Vec<Vec<u8>> },
    /// Worker REPLY to the client whose request the sender holds (as far as the driver can tell
    /// from what the broker sent it), or to C1 if it holds none: the reply a real worker sends,
    /// which random client bytes seldom hit.
    ReplyToHeld { body: Vec<Vec<u8>> },
    /// What a well-behaved worker of `service` sends next: READY if it is not registered (as far
    /// as it can tell: it sent no READY since it last sent or got DISCONNECT), else the REPLY to
    /// the request it holds, else HEARTBEAT. Random sequences of the other shapes seldom keep a
    /// worker alive through a whole request; this one does.
    WorkerStep { service: u8 },
    /// Worker HEARTBEAT.
    Heartbeat,
    /// Worker DISCONNECT.
    Disconnect,
    /// A REQUEST command sent *to* the broker, which only the broker may send.
    WorkerRequest { client: u8 },
    /// `"" MDPW01 byte rest...`: any command byte, valid or not, with any frames after it.
    Command { byte: u8, rest: Vec<Vec<u8>> },
    /// Frames with no particular shape.
    Raw(Vec<Vec<u8>>),
}

impl Shape {
    /// The frames this shape stands for, as a ROUTER delivers them after the identity, sent by a
    /// peer in the situation `view`.
    pub fn frames(&self, view: PeerView<'_>) -> Vec<Vec<u8>> {
        let worker =
            |command: Command| vec![Vec::new(), WORKER_HEADER.to_vec(), vec![command.byte()]];
        match self {
            Shape::Request {
                service: index,
                body,
            } => {
                let mut frames = vec![Vec::new(), CLIENT_HEADER.to_vec(), service(*index).to_vec()];
                frames.extend(body.iter().cloned());
                frames
            }
            Shape::MmiService { asked } => vec![
                Vec::new(),
                CLIENT_HEADER.to_vec(),
                mmi::SERVICE.to_vec(),
                service(*asked).to_vec(),
            ],
            Shape::Ready { service: index } => {
                let mut frames = worker(Command::Ready);
                frames.push(service(*index).to_vec());
                frames
            }
            Shape::Reply { client, body } => {
                let mut frames = worker(Command::Reply);
                frames.push(peer(*client).to_vec());
                frames.push(Vec::new());
                frames.extend(body.iter().cloned());
                frames
            }
            Shape::ReplyToHeld { body } => {
                let mut frames = worker(Command::Reply);
                frames.push(view.holding.unwrap_or(peer(0)).to_vec());
                frames.push(Vec::new());
                frames.extend(body.iter().cloned());
                frames
            }
            Shape::WorkerStep { service } => match view {
                PeerView {
                    registered: false, ..
                } => Shape::Ready { service: *service }.frames(view),
                PeerView {
                    holding: Some(_), ..
                } => Shape::ReplyToHeld {
                    body: vec![b"done".to_vec()],
                }
                .frames(view),
                _ => Shape::Heartbeat.frames(view),
            },
            Shape::Heartbeat => worker(Command::Heartbeat),
            Shape::Disconnect => worker(Command::Disconnect),
            Shape::WorkerRequest { client } => {
                let mut frames = worker(Command::Request);
                frames.extend([peer(*client).to_vec(), Vec::new(), b"body".to_vec()]);
                frames
            }
            Shape::Command { byte, rest } => {
                let mut frames = vec![Vec::new(), WORKER_HEADER.to_vec(), vec![*byte]];
                frames.extend(rest.iter().cloned());
                frames
            }
            Shape::Raw(frames) => frames.clone(),
        }
    }
}

/// What a peer knows of its own situation, from what it sent and what the broker sent it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerView<'a> {
    /// It sent READY, and since then neither sent nor got DISCONNECT.
    pub registered: bool,
    /// The client of the REQUEST it was sent and has not answered.
    pub holding: Option<&'a [u8]>,
}

/// A change made to a well-formed message, so that random sequences also hold messages that are
/// *almost* right: those exercise the parser's and the core's error paths best.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Keep,
    /// Remove the frame at this index (modulo the length).
    Drop {
        at: u8,
    },
    /// Insert a frame before this index (modulo the length + 1).
    Insert {
        at: u8,
        frame: Vec<u8>,
    },
    /// Replace the frame at this index (modulo the length).
    Replace {
        at: u8,
        frame: Vec<u8>,
    },
    /// Keep only the first `len` frames.
    Truncate {
        len: u8,
    },
}

impl Mutation {
    pub fn apply(&self, frames: &mut Vec<Vec<u8>>) {
        let index = |at: u8, len: usize| usize::from(at) % len.max(1);
        match self {
            Mutation::Keep => {}
            Mutation::Drop { at } => {
                if !frames.is_empty() {
                    frames.remove(index(*at, frames.len()));
                }
            }
            Mutation::Insert { at, frame } => {
                let at = index(*at, frames.len() + 1);
                frames.insert(at, frame.clone());
            }
            Mutation::Replace { at, frame } => {
                let at = index(*at, frames.len());
                if let Some(slot) = frames.get_mut(at) {
                    *slot = frame.clone();
                }
            }
            Mutation::Truncate { len } => frames.truncate(usize::from(*len)),
        }
    }
}

/// Something that happens to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Peer `from` (an index into [`PEERS`]) sends a message.
    Send {
        from: u8,
        shape: Shape,
        mutation: Mutation,
    },
    /// The clock moves on.
    Advance { millis: u16 },
    /// The socket loop calls [`Broker::tick`] now, whether or not a deadline has passed.
    Tick,
    /// The clock jumps to [`Broker::next_deadline`] and the loop calls [`Broker::tick`], as the
    /// real loop does when nothing arrives: the quickest way to reach expiries.
    TickAtDeadline,
    /// The socket could not deliver a message to this peer.
    Undeliverable { peer: u8 },
    /// The peer's connection is gone: from now on the socket refuses every message to it, whole,
    /// and the loop hands it back with [`Broker::refused`], until the peer sends again (it
    /// reconnected). A worker that dies while idle looks like this until a message to it bounces.
    PeerGone { peer: u8 },
    /// The broker stops (and, in this game, goes on afterwards with empty state).
    Shutdown,
}

/// Reads bytes one at a time; past the end every byte reads as 0, so any input decodes.
#[derive(Debug)]
struct Bytes<'a>(std::slice::Iter<'a, u8>);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// A length byte, then that many bytes (fewer if the input ends).
    fn blob(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte());
        self.0.by_ref().take(len).copied().collect()
    }

    /// A count byte (modulo `max + 1`), then that many blobs.
    fn frames(&mut self, max: u8) -> Vec<Vec<u8>> {
        let count = self.byte() % (max + 1);
        (0..count).map(|_| self.blob()).collect()
    }
}

/// Turns any bytes into a broker configuration and a sequence of events, for the fuzz target.
///
/// Format (a missing byte reads as 0; "blob" is a length byte then that many bytes; "frames" is a
/// count byte, modulo the maximum + 1, then that many blobs):
///
/// * six configuration bytes: heartbeat interval `(b % 16 + 1) * 100` ms, liveness `b % 4 + 1`,
///   `max_queue` `b % 5`, `max_queued_total` `b % 9`, request TTL `b * 50` ms, redeliver `b & 1`;
/// * then events, each an opcode byte `op % 16` and its operands:
///   * `0..=7` send: peer byte, message kind byte `k % 11`, its operands, then a mutation byte;
///     kinds: 0 request (service byte, frames max 3), 1 `mmi.service` (asked-service byte),
///     2 READY (service byte), 3 REPLY (client peer byte, frames max 3), 4 HEARTBEAT,
///     5 DISCONNECT, 6 REQUEST from a worker (client peer byte), 7 command (command byte,
///     frames max 3), 8 raw (frames max 7), 9 REPLY to the client the sender holds (frames
///     max 3), 10 a well-behaved worker's next message (service byte); mutation `m % 8`: 0-3
///     keep, 4 drop (index byte),
///     5 insert (index byte, blob), 6 replace (index byte, blob), 7 truncate (length byte);
///   * `8..=9` advance the clock (two bytes, little-endian milliseconds); `10` tick;
///     `11..=12` tick at the next deadline; `13` undeliverable (peer byte; with its high bit
///     set, the peer is gone instead: messages to it are refused from then on); `14` shutdown;
///     `15` send raw frames (peer byte, frames max 7).
///
/// Peer bytes index [`PEERS`] and service bytes index [`SERVICES`], modulo their length. So
/// `0f 02 04 08 c8 00  00 02 02 00 00  00 00 00 00 01 02 68 69 00` is: heartbeat every 1600 ms,
/// liveness 3, at most 4 requests waiting per service and 8 in all, TTL 10 s, no redelivery; then
/// W1 sends READY for `echo`; then C1 sends a request for `echo` with the body `hi`.
pub fn decode(bytes: &[u8]) -> (Config, Vec<Event>) {
    let mut input = Bytes(bytes.iter());
    let config = Config {
        heartbeat_interval: Duration::from_millis((u64::from(input.byte()) % 16 + 1) * 100),
        liveness: u32::from(input.byte()) % 4 + 1,
        max_queue: usize::from(input.byte() % 5),
        max_queued_total: usize::from(input.byte() % 9),
        request_ttl: Duration::from_millis(u64::from(input.byte()) * 50),
        redeliver: input.byte() & 1 == 1,
        // Room for the counts above whatever the bodies: the byte limits have tests of their own.
        ..Config::default()
    };
    let mut events = Vec::new();
    while !input.is_empty() {
        let event = match input.byte() % 16 {
            0..=7 => {
                let from = input.byte();
                let shape = match input.byte() % 11 {
                    0 => Shape::Request {
                        service: input.byte(),
                        body: input.frames(3),
                    },
                    1 => Shape::MmiService {
                        asked: input.byte(),
                    },
                    2 => Shape::Ready {
                        service: input.byte(),
                    },
                    3 => Shape::Reply {
                        client: input.byte(),
                        body: input.frames(3),
                    },
                    4 => Shape::Heartbeat,
                    5 => Shape::Disconnect,
                    6 => Shape::WorkerRequest {
                        client: input.byte(),
                    },
                    7 => Shape::Command {
                        byte: input.byte(),
                        rest: input.frames(3),
                    },
                    8 => Shape::Raw(input.frames(7)),
                    9 => Shape::ReplyToHeld {
                        body: input.frames(3),
                    },
                    _ => Shape::WorkerStep {
                        service: input.byte(),
                    },
                };
                let mutation = match input.byte() % 8 {
                    0..=3 => Mutation::Keep,
                    4 => Mutation::Drop { at: input.byte() },
                    5 => Mutation::Insert {
                        at: input.byte(),
                        frame: input.blob(),
                    },
                    6 => Mutation::Replace {
                        at: input.byte(),
                        frame: input.blob(),
                    },
                    _ => Mutation::Truncate { len: input.byte() },
                };
                Event::Send {
                    from,
                    shape,
                    mutation,
                }
            }
            8..=9 => Event::Advance {
                millis: u16::from_le_bytes([input.byte(), input.byte()]),
            },
            10 => Event::Tick,
            11..=12 => Event::TickAtDeadline,
            13 => match input.byte() {
                peer if peer & 0x80 == 0 => Event::Undeliverable { peer },
                peer => Event::PeerGone { peer },
            },
            14 => Event::Shutdown,
            _ => Event::Send {
                from: input.byte(),
                shape: Shape::Raw(input.frames(7)),
                mutation: Mutation::Keep,
            },
        };
        events.push(event);
    }
    (config, events)
}

/// Drives a [`Broker`] with a fake clock and checks, after every event, what can be checked from
/// outside the core; any broken rule panics with a description of it.
///
/// After each event:
/// * [`Broker::check_invariants`] holds;
/// * every message sent goes to an identity the broker has heard from, and parses back: a message
///   with the `MDPW01` header with [`ToWorker::parse`], any other with [`client::Reply::parse`]
///   (after the empty delimiter, which must be there), and a REQUEST names a client the broker
///   heard from;
/// * nothing but a DISCONNECT in answer to its own message goes to a peer that was sent a
///   DISCONNECT, sent one, or was reported undeliverable, until it sends READY again;
/// * an `mmi.*` reply carries one frame: 200 or 404 for `mmi.service`, 501 for any other name;
/// * what was sent agrees with the counters: REQUESTs sent = requests dispatched, MMI replies =
///   MMI requests answered, other client replies = replies forwarded;
/// * no request is unaccounted for: every accepted request (or redelivered one) was dispatched,
///   expired, is waiting, or was dropped by a shutdown; every dispatched request was answered,
///   lost with its worker, redelivered, dropped by a shutdown, or is held by one of the workers;
/// * memory stays bounded: waiting requests <= `max_queued_total`, services <= workers + waiting
///   requests, workers <= peers heard from;
/// * after a tick, the next deadline is in the future (the socket loop cannot spin).
#[derive(Debug)]
pub struct Driver {
    broker: Broker,
    now: Instant,
    heard_from: HashSet<Vec<u8>>,
    /// Peers that must get no MDPW01 command other than a DISCONNECT answering their own message.
    silenced: HashSet<Vec<u8>>,
    /// Peers that sent READY and since then neither sent nor got DISCONNECT.
    registered: HashSet<Vec<u8>>,
    /// The client of the REQUEST each peer was sent and has not answered.
    holding: HashMap<Vec<u8>, Vec<u8>>,
    /// Peers whose connection is gone: the socket refuses messages to them.
    gone: HashSet<Vec<u8>>,
    requests_sent: u64,
    mmi_replies_sent: u64,
    worker_replies_sent: u64,
    /// Requests that were waiting when the broker shut down.
    waiting_at_shutdown: u64,
    /// Requests that workers held when the broker shut down.
    held_at_shutdown: i128,
    /// How many messages the broker sent in all.
    pub messages_sent: u64,
}

impl Driver {
    pub fn new(config: Config) -> Driver {
        let now = Instant::now();
        Driver {
            broker: Broker::new(config, now),
            now,
            heard_from: HashSet::new(),
            silenced: HashSet::new(),
            registered: HashSet::new(),
            holding: HashMap::new(),
            gone: HashSet::new(),
            requests_sent: 0,
            mmi_replies_sent: 0,
            worker_replies_sent: 0,
            waiting_at_shutdown: 0,
            held_at_shutdown: 0,
            messages_sent: 0,
        }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Applies every event in turn, checking after each.
    pub fn run(config: Config, events: &[Event]) -> Driver {
        let mut driver = Driver::new(config);
        for event in events {
            driver.apply(event);
        }
        driver
    }

    /// Applies one event and checks everything listed on [`Driver`]; panics if a rule is broken.
    pub fn apply(&mut self, event: &Event) {
        let mut out = Vec::new();
        let mut answering = None;
        match event {
            Event::Send {
                from,
                shape,
                mutation,
            } => {
                let sender = peer(*from);
                let view = PeerView {
                    registered: self.registered.contains(sender),
                    holding: self.holding.get(sender).map(Vec::as_slice),
                };
                let mut frames = shape.frames(view);
                mutation.apply(&mut frames);
                let parsed = mdp::worker::Inbound::parse(to_frames(&frames));
                let command = match parsed {
                    Ok(mdp::worker::Inbound::Worker(command)) => Some(command.command()),
                    _ => None,
                };
                self.heard_from.insert(sender.to_vec());
                // A peer that sends is connected (again).
                self.gone.remove(sender);
                match command {
                    Some(Command::Ready) => {
                        // It may register and be given work at once.
                        self.silenced.remove(sender);
                        self.registered.insert(sender.to_vec());
                    }
                    Some(Command::Reply) => {
                        self.holding.remove(sender);
                    }
                    Some(Command::Disconnect) => {
                        self.registered.remove(sender);
                        self.holding.remove(sender);
                    }
                    _ => {}
                }
                answering = Some(sender);
                self.broker
                    .handle(self.now, sender, to_frames(&frames), &mut out);
                if command == Some(Command::Disconnect) {
                    self.silenced.insert(sender.to_vec());
                }
            }
            Event::Advance { millis } => {
                self.now += Duration::from_millis(u64::from(*millis));
            }
            Event::Tick => self.tick(&mut out),
            Event::TickAtDeadline => {
                self.now = self.now.max(self.broker.next_deadline());
                self.tick(&mut out);
            }
            Event::Undeliverable { peer: index } => {
                let recipient = peer(*index);
                self.broker.undeliverable(recipient, &mut out);
                self.silenced.insert(recipient.to_vec());
            }
            Event::PeerGone { peer: index } => {
                self.gone.insert(peer(*index).to_vec());
            }
            Event::Shutdown => {
                self.waiting_at_shutdown += self.broker.queued_requests() as u64;
                self.held_at_shutdown += self.held_by_workers();
                self.broker.shutdown(&mut out);
                assert_eq!(self.broker.worker_count(), 0, "workers left after shutdown");
                assert_eq!(
                    self.broker.service_count(),
                    0,
                    "services left after shutdown"
                );
            }
        }
        self.broker.check_invariants();
        self.deliver(out, answering);
        self.check_counts();
    }

    /// Plays the socket loop's part: checks each message, and hands those for gone peers back to
    /// the broker as refused, which may produce more messages (a request queued again goes to the
    /// next idle worker), delivered or refused in turn.
    fn deliver(&mut self, mut out: Vec<Outgoing>, answering: Option<&[u8]>) {
        while !out.is_empty() {
            // The broker made every message of a batch before hearing of any refusal in it, so
            // each is checked against what the broker knew then.
            let mut refused = Vec::new();
            for message in out {
                let delivered = !self.gone.contains(message.recipient());
                self.check_message(&message, answering, delivered);
                if !delivered {
                    refused.push(message);
                }
            }
            let mut more = Vec::new();
            for message in refused {
                let recipient = message.recipient().to_vec();
                let dispatched_before = self.broker.stats().requests_dispatched;
                let first_new = more.len();
                let taken_back = self.broker.refused(message.frames, &mut more);
                // The broker forgets a peer it cannot reach, as for `undeliverable`.
                assert!(
                    !self.broker.has_worker(&recipient),
                    "worker {recipient:?} still registered after a message to it was refused"
                );
                self.silenced.insert(recipient.clone());
                self.registered.remove(&recipient);
                self.holding.remove(&recipient);
                // A REQUEST queued again was never dispatched after all: the counter went down
                // by one, and up by one for each REQUEST the broker sent on in its place.
                let sent_on = more[first_new..]
                    .iter()
                    .filter(|message| is_request(message))
                    .count() as u64;
                let undispatched =
                    dispatched_before + sent_on - self.broker.stats().requests_dispatched;
                assert!(
                    undispatched <= 1 && (undispatched == 0 || taken_back),
                    "refusing one message undid {undispatched} dispatches (taken back: {taken_back})"
                );
                self.requests_sent -= undispatched;
                self.broker.check_invariants();
            }
            out = more;
        }
    }

    fn tick(&mut self, out: &mut Vec<Outgoing>) {
        self.broker.tick(self.now, out);
        assert!(
            self.broker.next_deadline() > self.now,
            "after a tick the next deadline is not in the future"
        );
    }

    /// Checks a message the broker sent; `delivered` is false when the socket refused it.
    fn check_message(&mut self, message: &Outgoing, answering: Option<&[u8]>, delivered: bool) {
        self.messages_sent += 1;
        let recipient = message.recipient();
        assert!(
            self.heard_from.contains(recipient),
            "message to {recipient:?}, a peer the broker never heard from"
        );
        let after_identity: Vec<Vec<u8>> =
            message.frames.iter().skip(1).map(|f| f.to_vec()).collect();
        let is_worker_command = after_identity.get(1).map(Vec::as_slice) == Some(WORKER_HEADER);
        if is_worker_command {
            let command = ToWorker::parse(to_frames(&after_identity))
                .unwrap_or_else(|error| panic!("message to worker does not parse: {error}"));
            let is_disconnect = matches!(command, ToWorker::Disconnect);
            if self.silenced.contains(recipient) {
                assert!(
                    is_disconnect && answering == Some(recipient),
                    "{} sent to {recipient:?}, which was disconnected or is gone",
                    command.command()
                );
            }
            match command {
                ToWorker::Request { client, .. } => {
                    self.requests_sent += 1;
                    if delivered {
                        self.holding.insert(recipient.to_vec(), client.to_vec());
                    }
                    assert!(
                        self.heard_from.contains(&client[..]),
                        "REQUEST carries client {client:?}, a peer the broker never heard from"
                    );
                }
                ToWorker::Disconnect => {
                    self.silenced.insert(recipient.to_vec());
                    self.registered.remove(recipient);
                    self.holding.remove(recipient);
                }
                ToWorker::Heartbeat => {}
            }
        } else {
            assert_eq!(
                after_identity.first().map(Vec::len),
                Some(0),
                "reply to a client without the empty delimiter"
            );
            let reply = client::Reply::parse(to_frames(&after_identity))
                .unwrap_or_else(|error| panic!("reply to client does not parse: {error}"));
            if reply.service.is_mmi() {
                self.mmi_replies_sent += 1;
                let body: Vec<&[u8]> = reply.body.iter().map(|frame| &frame[..]).collect();
                let allowed: &[&[u8]] = if reply.service.as_bytes() == mmi::SERVICE {
                    &[b"200", b"404"]
                } else {
                    &[b"501"]
                };
                assert!(
                    body.len() == 1 && allowed.contains(&body[0]),
                    "MMI reply for {} is {body:?}",
                    reply.service
                );
            } else {
                self.worker_replies_sent += 1;
            }
        }
    }

    /// How many requests workers hold now, by the counters: dispatched and not yet answered, lost,
    /// redelivered or dropped by a shutdown.
    fn held_by_workers(&self) -> i128 {
        let stats = self.broker.stats();
        i128::from(stats.requests_dispatched)
            - i128::from(stats.replies_forwarded)
            - i128::from(stats.requests_lost_with_worker)
            - i128::from(stats.requests_redelivered)
            - self.held_at_shutdown
    }

    fn check_counts(&self) {
        let broker = &self.broker;
        let stats = broker.stats();
        let config = broker.config();
        assert_eq!(
            self.requests_sent, stats.requests_dispatched,
            "REQUESTs sent"
        );
        assert_eq!(
            self.mmi_replies_sent, stats.mmi_answered,
            "MMI replies sent"
        );
        assert_eq!(
            self.worker_replies_sent, stats.replies_forwarded,
            "replies forwarded to clients"
        );

        let accepted = i128::from(stats.requests_received)
            - i128::from(stats.mmi_answered)
            - i128::from(stats.requests_refused());
        assert_eq!(
            accepted + i128::from(stats.requests_redelivered),
            i128::from(stats.requests_dispatched)
                + i128::from(stats.requests_expired)
                + broker.queued_requests() as i128
                + i128::from(self.waiting_at_shutdown),
            "requests unaccounted for: {stats}"
        );
        let held = self.held_by_workers();
        assert!(
            (0..=broker.worker_count() as i128).contains(&held),
            "{held} requests held by {} workers: {stats}",
            broker.worker_count()
        );

        assert!(
            broker.queued_requests() <= config.max_queued_total,
            "{} requests waiting, limit {}",
            broker.queued_requests(),
            config.max_queued_total
        );
        assert!(
            broker.service_count() <= broker.worker_count() + broker.queued_requests(),
            "{} services for {} workers and {} waiting requests",
            broker.service_count(),
            broker.worker_count(),
            broker.queued_requests()
        );
        assert!(
            broker.worker_count() <= self.heard_from.len(),
            "more workers than peers"
        );
    }
}

/// True if `message` is a REQUEST to a worker.
fn is_request(message: &Outgoing) -> bool {
    message
        .frames
        .get(2)
        .is_some_and(|f| &f[..] == WORKER_HEADER)
        && message
            .frames
            .get(3)
            .is_some_and(|f| f[..] == [Command::Request as u8])
}

/// Byte frames as the `zmq::Message`s the core takes.
pub fn to_frames(frames: &[Vec<u8>]) -> Frames {
    frames
        .iter()
        .map(|frame| zmq::Message::from(&frame[..]))
        .collect()
}
