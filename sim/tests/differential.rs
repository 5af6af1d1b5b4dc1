//! The socket model checked against libzmq: each scripted scenario runs once over real ZeroMQ
//! sockets (the `zmq` crate, libzmq 4.3.4) and once over [`sim::net::Network`], and what every
//! party observed (each message received, each send refused and why) must be the same.
//!
//! A scenario is written once, against the [`Sockets`] trait, and never looks at the clock: it
//! does something, then lets the network settle ([`Sockets::settle`]: 100 ms of real time, long
//! enough on loopback for connections, messages and disconnections to arrive; 100 ms of virtual
//! time for the model), then reads whatever arrived without waiting. Routing identities that a
//! ROUTER makes up are random, so the log names them in order of first sight (`gen1`, `gen2`,
//! ...) after checking they have libzmq's shape (five bytes, the first zero); identities a peer
//! set are logged as they are.
//!
//! Real sockets bind `tcp://127.0.0.1:*`, except for the high-water-mark scenario, which uses
//! `inproc://`: over TCP the kernel's socket buffers hold an unknown number of messages besides
//! ZeroMQ's pipes, so only over `inproc://` is the number of messages a full peer takes exact.
//!
//! What this found, and the model now does as libzmq does: a reader tells the writer about its
//! reads only every low-water mark's worth of messages, so one read makes no room at a full peer;
//! and a REQ that is sent a message without the empty delimiter does not skip it (as
//! `req_t::xrecv` alone would suggest) but drops the connection as a protocol error
//! (`req_session_t::push_msg`), never to reconnect.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use sim::net::{NetConfig, Network, SocketId, SocketKind, SocketOptions};

/// How long a real scenario waits for the network to settle.
const SETTLE: Duration = Duration::from_millis(100);

/// What a scenario needs from a set of sockets: real ones or modelled ones.
trait Sockets {
    /// A ROUTER bound to a fresh endpoint (the same endpoint again with `rebind`).
    fn router(&mut self, options: &SocketOptions, rebind: bool) -> usize;
    /// A DEALER or REQ connected to the last ROUTER's endpoint.
    fn connect(&mut self, kind: SocketKind, options: &SocketOptions) -> usize;
    fn send(&mut self, socket: usize, frames: &[&[u8]]) -> Result<(), zmq::Error>;
    /// The next message waiting, without waiting for one.
    fn recv(&mut self, socket: usize) -> Result<Option<Vec<Vec<u8>>>, zmq::Error>;
    fn close(&mut self, socket: usize);
    fn settle(&mut self);
}

/// What the parties of a scenario observed, in order, with generated identities named by order
/// of first sight.
#[derive(Default)]
struct Log {
    lines: Vec<String>,
    names: HashMap<Vec<u8>, String>,
}

impl Log {
    fn name(&mut self, identity: &[u8]) -> String {
        if let Some(name) = self.names.get(identity) {
            return name.clone();
        }
        let generated = identity.len() == 5 && identity[0] == 0;
        let name = if generated {
            format!("gen{}", self.names.len() + 1)
        } else {
            String::from_utf8_lossy(identity).into_owned()
        };
        self.names.insert(identity.to_vec(), name.clone());
        name
    }

    fn show(frames: &[Vec<u8>]) -> String {
        let parts: Vec<String> = frames
            .iter()
            .map(|frame| format!("{:?}", String::from_utf8_lossy(frame)))
            .collect();
        format!("[{}]", parts.join(" "))
    }

    fn sent(&mut self, who: &str, what: &str, result: Result<(), zmq::Error>) {
        let outcome = match result {
            Ok(()) => "ok".to_owned(),
            Err(error) => format!("{error:?}"),
        };
        self.lines.push(format!("{who} sends {what}: {outcome}"));
    }

    /// Reads everything waiting on `socket`; a ROUTER's first frame is an identity to name.
    fn drain(&mut self, sockets: &mut dyn Sockets, socket: usize, who: &str, router: bool) {
        loop {
            match sockets.recv(socket) {
                Ok(Some(mut frames)) => {
                    let shown = if router && !frames.is_empty() {
                        let identity = frames.remove(0);
                        format!("from {} {}", self.name(&identity), Log::show(&frames))
                    } else {
                        Log::show(&frames)
                    };
                    self.lines.push(format!("{who} got {shown}"));
                }
                Ok(None) => break,
                Err(error) => {
                    self.lines.push(format!("{who} recv: {error:?}"));
                    break;
                }
            }
        }
        self.lines.push(format!("{who} has nothing more"));
    }

    /// The identity a name stands for, to address a ROUTER's send.
    fn identity(&self, name: &str) -> Vec<u8> {
        self.names
            .iter()
            .find(|(_, known)| known.as_str() == name)
            .map(|(identity, _)| identity.clone())
            .unwrap_or_else(|| name.as_bytes().to_vec())
    }

    fn route(&mut self, sockets: &mut dyn Sockets, router: usize, to: &str, body: &[u8]) {
        let identity = self.identity(to);
        let result = sockets.send(router, &[&identity, body]);
        self.sent(
            "router",
            &format!("{:?} to {to}", String::from_utf8_lossy(body)),
            result,
        );
    }
}

fn mandatory() -> SocketOptions {
    SocketOptions {
        router_mandatory: true,
        ..SocketOptions::default()
    }
}

fn named(identity: &[u8]) -> SocketOptions {
    SocketOptions {
        routing_id: Some(identity.to_vec()),
        ..SocketOptions::default()
    }
}

/// A DEALER's request and the ROUTER's reply, and a REQ's turn-taking around them.
fn reply(sockets: &mut dyn Sockets) -> Vec<String> {
    let mut log = Log::default();
    let router = sockets.router(&mandatory(), false);
    let dealer = sockets.connect(SocketKind::Dealer, &SocketOptions::default());
    let result = sockets.send(dealer, &[b"", b"hello"]);
    log.sent("dealer", "hello", result);
    sockets.settle();
    log.drain(sockets, router, "router", true);
    let identity = log.identity("gen1");
    let result = sockets.send(router, &[&identity, b"", b"world"]);
    log.sent("router", "world to gen1", result);
    sockets.settle();
    log.drain(sockets, dealer, "dealer", false);

    let req = sockets.connect(SocketKind::Req, &SocketOptions::default());
    let result = sockets.recv(req).map(|_| ());
    log.sent("req", "(a receive before any send)", result);
    let result = sockets.send(req, &[b"question"]);
    log.sent("req", "question", result);
    let result = sockets.send(req, &[b"too soon"]);
    log.sent("req", "too soon", result);
    sockets.settle();
    log.drain(sockets, router, "router", true);
    let identity = log.identity("gen2");
    let result = sockets.send(router, &[&identity, b"not delimited"]);
    log.sent("router", "an undelimited message to gen2", result);
    let result = sockets.send(router, &[&identity, b"", b"answer"]);
    log.sent("router", "answer to gen2", result);
    sockets.settle();
    log.drain(sockets, req, "req", false);
    let result = sockets.send(req, &[b"next question"]);
    log.sent("req", "next question", result);
    log.lines
}

/// A new socket is a new identity; a ROUTER refuses the old one once it is gone; a DEALER whose
/// ROUTER went away and came back on the same endpoint reconnects by itself, as a new identity,
/// and what it sent meanwhile arrives.
fn reconnect(sockets: &mut dyn Sockets) -> Vec<String> {
    let mut log = Log::default();
    let router = sockets.router(&mandatory(), false);
    let first = sockets.connect(SocketKind::Dealer, &SocketOptions::default());
    let result = sockets.send(first, &[b"one"]);
    log.sent("first", "one", result);
    sockets.settle();
    log.drain(sockets, router, "router", true);
    sockets.close(first);
    let second = sockets.connect(SocketKind::Dealer, &SocketOptions::default());
    let result = sockets.send(second, &[b"two"]);
    log.sent("second", "two", result);
    sockets.settle();
    log.drain(sockets, router, "router", true);
    log.route(sockets, router, "gen1", b"to the first");
    log.route(sockets, router, "gen2", b"to the second");
    sockets.settle();
    log.drain(sockets, second, "second", false);

    // The ROUTER restarts on the same endpoint.
    sockets.close(router);
    sockets.settle();
    let result = sockets.send(second, &[b"while it was away"]);
    log.sent("second", "while it was away", result);
    let router = sockets.router(&mandatory(), true);
    // The DEALER retries every 100 ms; give it two tries' time.
    sockets.settle();
    sockets.settle();
    sockets.settle();
    log.drain(sockets, router, "new router", true);
    log.route(sockets, router, "gen2", b"to the old identity");
    log.route(sockets, router, "gen3", b"to the new identity");
    sockets.settle();
    log.drain(sockets, second, "second", false);
    log.lines
}

/// A ROUTER with `ZMQ_ROUTER_MANDATORY` refuses a message for a peer that closed its socket;
/// one without it drops the message and says nothing.
fn gone_peer(sockets: &mut dyn Sockets) -> Vec<String> {
    let mut log = Log::default();
    let router = sockets.router(&mandatory(), false);
    let dealer = sockets.connect(SocketKind::Dealer, &named(b"W"));
    let result = sockets.send(dealer, &[b"ready"]);
    log.sent("dealer", "ready", result);
    sockets.settle();
    log.drain(sockets, router, "router", true);
    sockets.close(dealer);
    sockets.settle();
    log.route(sockets, router, "W", b"for a gone peer");
    log.route(sockets, router, "nobody", b"for a peer never seen");

    let lax = sockets.router(&SocketOptions::default(), false);
    let dealer = sockets.connect(SocketKind::Dealer, &named(b"V"));
    let result = sockets.send(dealer, &[b"ready"]);
    log.sent("dealer", "ready", result);
    sockets.settle();
    log.drain(sockets, lax, "lax router", true);
    sockets.close(dealer);
    sockets.settle();
    log.route(sockets, lax, "V", b"for a gone peer, without mandatory");
    log.lines
}

/// Two peers with the same explicit identity: the second is ignored (never read, never routed
/// to), and stays ignored after the first leaves.
fn duplicate_identity(sockets: &mut dyn Sockets) -> Vec<String> {
    let mut log = Log::default();
    let router = sockets.router(&mandatory(), false);
    let first = sockets.connect(SocketKind::Dealer, &named(b"W"));
    let result = sockets.send(first, &[b"first says hi"]);
    log.sent("first", "hi", result);
    sockets.settle();
    let second = sockets.connect(SocketKind::Dealer, &named(b"W"));
    let result = sockets.send(second, &[b"second says hi"]);
    log.sent("second", "hi", result);
    sockets.settle();
    let result = sockets.send(first, &[b"first again"]);
    log.sent("first", "again", result);
    sockets.settle();
    log.drain(sockets, router, "router", true);
    log.route(sockets, router, "W", b"to W");
    sockets.settle();
    log.drain(sockets, first, "first", false);
    log.drain(sockets, second, "second", false);

    sockets.close(first);
    sockets.settle();
    let result = sockets.send(second, &[b"second, alone now"]);
    log.sent("second", "alone now", result);
    sockets.settle();
    log.drain(sockets, router, "router", true);
    log.route(sockets, router, "W", b"to W, now the first is gone");
    sockets.settle();
    log.drain(sockets, second, "second", false);
    log.lines
}

/// A peer that does not read: the ROUTER takes SNDHWM + the peer's RCVHWM messages for it, then
/// refuses with EAGAIN; once the peer has read the low-water mark's worth, there is room again.
fn full_high_water_mark(sockets: &mut dyn Sockets) -> Vec<String> {
    let mut log = Log::default();
    let router_options = SocketOptions {
        sndhwm: 2,
        ..mandatory()
    };
    let router = sockets.router(&router_options, false);
    let dealer_options = SocketOptions {
        rcvhwm: 3,
        ..SocketOptions::default()
    };
    let dealer = sockets.connect(SocketKind::Dealer, &dealer_options);
    let result = sockets.send(dealer, &[b"ready"]);
    log.sent("dealer", "ready", result);
    sockets.settle();
    log.drain(sockets, router, "router", true);
    for n in 1..=7 {
        log.route(sockets, router, "gen1", format!("message {n}").as_bytes());
    }
    sockets.settle();
    // libzmq's reader tells the writer of its reads every low-water mark (here 3 of 5)
    // messages: one read makes no room, three do.
    for read in 1..=3 {
        let frames = sockets
            .recv(dealer)
            .map(|frames| frames.map(|f| Log::show(&f)));
        log.lines.push(format!("dealer reads one: {frames:?}"));
        sockets.settle();
        log.route(
            sockets,
            router,
            "gen1",
            format!("after {read} read").as_bytes(),
        );
    }
    log.route(sockets, router, "gen1", b"one more");
    log.route(sockets, router, "gen1", b"and one more");
    sockets.settle();
    log.drain(sockets, dealer, "dealer", false);
    log.lines
}

/// Real sockets of one context.
struct Real {
    context: zmq::Context,
    sockets: Vec<Option<zmq::Socket>>,
    transport: &'static str,
    endpoint: String,
    inproc_count: usize,
}

impl Real {
    fn new(transport: &'static str) -> Real {
        Real {
            context: zmq::Context::new(),
            sockets: Vec::new(),
            transport,
            endpoint: String::new(),
            inproc_count: 0,
        }
    }

    fn socket(&self, index: usize) -> &zmq::Socket {
        self.sockets[index].as_ref().expect("socket is open")
    }

    fn add(&mut self, socket: zmq::Socket) -> usize {
        self.sockets.push(Some(socket));
        self.sockets.len() - 1
    }
}

fn apply(socket: &zmq::Socket, options: &SocketOptions) {
    socket.set_linger(0).unwrap();
    socket.set_sndhwm(options.sndhwm as i32).unwrap();
    socket.set_rcvhwm(options.rcvhwm as i32).unwrap();
    if let Some(identity) = &options.routing_id {
        socket.set_identity(identity).unwrap();
    }
    socket
        .set_reconnect_ivl(options.reconnect_interval.as_millis() as i32)
        .unwrap();
}

impl Sockets for Real {
    fn router(&mut self, options: &SocketOptions, rebind: bool) -> usize {
        let socket = self.context.socket(zmq::ROUTER).unwrap();
        apply(&socket, options);
        socket
            .set_router_mandatory(options.router_mandatory)
            .unwrap();
        socket.set_router_handover(options.router_handover).unwrap();
        if rebind {
            socket.bind(&self.endpoint).unwrap();
        } else if self.transport == "inproc" {
            self.inproc_count += 1;
            self.endpoint = format!("inproc://differential-{}", self.inproc_count);
            socket.bind(&self.endpoint).unwrap();
        } else {
            socket.bind("tcp://127.0.0.1:*").unwrap();
            self.endpoint = socket.get_last_endpoint().unwrap().unwrap();
        }
        self.add(socket)
    }

    fn connect(&mut self, kind: SocketKind, options: &SocketOptions) -> usize {
        let kind = match kind {
            SocketKind::Router => zmq::ROUTER,
            SocketKind::Dealer => zmq::DEALER,
            SocketKind::Req => zmq::REQ,
        };
        let socket = self.context.socket(kind).unwrap();
        apply(&socket, options);
        socket.connect(&self.endpoint).unwrap();
        self.add(socket)
    }

    fn send(&mut self, socket: usize, frames: &[&[u8]]) -> Result<(), zmq::Error> {
        let frames: Vec<zmq::Message> = frames.iter().map(|f| zmq::Message::from(*f)).collect();
        zsocket::send(self.socket(socket), frames, zmq::DONTWAIT).map_err(|error| match error {
            zsocket::SendError::Refused(refused) => refused.error,
            zsocket::SendError::Failed { error, .. } => error.zmq_error(),
        })
    }

    fn recv(&mut self, socket: usize) -> Result<Option<Vec<Vec<u8>>>, zmq::Error> {
        let mut first = zmq::Message::new();
        match self.socket(socket).recv(&mut first, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(None),
            Err(error) => return Err(error),
        }
        let mut frames = vec![first.to_vec()];
        let mut more = first.get_more();
        while more {
            let mut frame = zmq::Message::new();
            self.socket(socket).recv(&mut frame, 0)?;
            more = frame.get_more();
            frames.push(frame.to_vec());
        }
        Ok(Some(frames))
    }

    fn close(&mut self, socket: usize) {
        self.sockets[socket] = None;
    }

    fn settle(&mut self) {
        std::thread::sleep(SETTLE);
    }
}

/// The model, with its own virtual clock.
struct Model {
    net: Network,
    sockets: Vec<SocketId>,
    now: Duration,
    endpoint: String,
    endpoint_count: usize,
}

impl Model {
    fn new() -> Model {
        Model {
            net: Network::new(NetConfig::default(), 7),
            sockets: Vec::new(),
            now: Duration::ZERO,
            endpoint: String::new(),
            endpoint_count: 0,
        }
    }
}

impl Sockets for Model {
    fn router(&mut self, options: &SocketOptions, rebind: bool) -> usize {
        let socket = self.net.socket(SocketKind::Router, options.clone(), 0);
        if !rebind {
            self.endpoint_count += 1;
            self.endpoint = format!("tcp://model:{}", self.endpoint_count);
        }
        self.net.bind(socket, &self.endpoint).unwrap();
        self.sockets.push(socket);
        self.sockets.len() - 1
    }

    fn connect(&mut self, kind: SocketKind, options: &SocketOptions) -> usize {
        let socket = self.net.socket(kind, options.clone(), 0);
        self.net.connect(socket, &self.endpoint);
        self.sockets.push(socket);
        self.sockets.len() - 1
    }

    fn send(&mut self, socket: usize, frames: &[&[u8]]) -> Result<(), zmq::Error> {
        let frames = frames.iter().map(|f| zmq::Message::from(*f)).collect();
        self.net
            .send(self.sockets[socket], frames)
            .map_err(|refused| refused.error)
    }

    fn recv(&mut self, socket: usize) -> Result<Option<Vec<Vec<u8>>>, zmq::Error> {
        Ok(self
            .net
            .recv(self.sockets[socket])?
            .map(|frames| frames.iter().map(|f| f.to_vec()).collect()))
    }

    fn close(&mut self, socket: usize) {
        self.net.close(self.sockets[socket]);
    }

    fn settle(&mut self) {
        let until = self.now + SETTLE;
        while self.net.next_at().is_some_and(|at| at <= until) {
            self.net.step();
        }
        self.now = until;
        self.net.set_now(until);
    }
}

/// Runs a scenario both ways and compares the logs line by line.
fn compare(name: &str, transport: &'static str, scenario: fn(&mut dyn Sockets) -> Vec<String>) {
    let real = scenario(&mut Real::new(transport));
    let model = scenario(&mut Model::new());
    println!("--- {name} over {transport} (libzmq | model)");
    for index in 0..real.len().max(model.len()) {
        let left = real.get(index).map_or("", String::as_str);
        let right = model.get(index).map_or("", String::as_str);
        let mark = if left == right { " " } else { "!" };
        println!("{mark} {left:<60} | {right}");
    }
    assert_eq!(real, model, "{name}: the model differs from libzmq");
}

#[test]
fn a_reply_matches_libzmq() {
    compare("a reply", "tcp", reply);
}

#[test]
fn a_reconnect_matches_libzmq() {
    compare("a reconnect", "tcp", reconnect);
}

#[test]
fn a_gone_peer_matches_libzmq() {
    compare("a gone peer", "tcp", gone_peer);
}

#[test]
fn a_duplicate_identity_matches_libzmq() {
    compare("a duplicate identity", "tcp", duplicate_identity);
}

#[test]
fn a_full_high_water_mark_matches_libzmq() {
    compare("a full high-water mark", "inproc", full_high_water_mark);
}
