//! The worker core's rules, in virtual time: a base `Instant` and offsets in milliseconds, never
//! a sleep. Each test says one rule; the frames are built and read with `mdp`'s codecs.

use std::time::{Duration, Instant};

use mdp::worker::{FromWorker, Inbound, ToWorker};

use super::*;

/// One heartbeat a second, liveness 3, backoff 100 ms doubling to 5 s.
fn config() -> WorkerConfig {
    WorkerConfig {
        heartbeat_interval: Duration::from_millis(1000),
        liveness: 3,
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(5000),
    }
}

/// What an action did, in a form a test can compare and read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Did {
    Open(usize),
    Ready(usize, String),
    Heartbeat(usize),
    /// The link, the client address and the body.
    Reply(usize, Vec<u8>, Vec<Vec<u8>>),
    Disconnect(usize),
    Close(usize),
    /// The link, the client address and the body.
    Deliver(usize, Vec<u8>, Vec<Vec<u8>>),
}

fn bytes(frames: &[zmq::Message]) -> Vec<Vec<u8>> {
    frames.iter().map(|frame| frame.to_vec()).collect()
}

fn did(action: &Action) -> Did {
    match action {
        Action::Open { link } => Did::Open(link.0),
        Action::Close { link } => Did::Close(link.0),
        Action::Deliver(request) => Did::Deliver(
            request.reply_to.link().0,
            request.reply_to.client_address().to_vec(),
            bytes(&request.body),
        ),
        Action::Send { link, frames } => {
            let copy: Frames = frames
                .iter()
                .map(|frame| zmq::Message::from(&frame[..]))
                .collect();
            match Inbound::parse(copy) {
                Ok(Inbound::Worker(FromWorker::Ready { service })) => {
                    Did::Ready(link.0, service.to_string())
                }
                Ok(Inbound::Worker(FromWorker::Heartbeat)) => Did::Heartbeat(link.0),
                Ok(Inbound::Worker(FromWorker::Disconnect)) => Did::Disconnect(link.0),
                Ok(Inbound::Worker(FromWorker::Reply { client, body })) => {
                    Did::Reply(link.0, client, bytes(&body))
                }
                other => panic!("the worker sent {other:?}"),
            }
        }
    }
}

/// A core under test, its base time, and the requests it delivered and the test has not
/// answered yet.
struct Harness {
    core: WorkerCore,
    base: Instant,
    delivered: Vec<Request>,
}

impl Harness {
    /// A started core with `links` links, and what the start did.
    fn started(links: usize) -> (Harness, Vec<Did>) {
        Harness::started_with(config(), links)
    }

    fn started_with(config: WorkerConfig, links: usize) -> (Harness, Vec<Did>) {
        Harness::started_on(config, Topology::single(links))
    }

    /// A started core with `brokers x slots` links in `mode`, and what the start did.
    fn topology(brokers: usize, slots: usize, mode: Mode) -> (Harness, Vec<Did>) {
        let topology = Topology {
            brokers,
            slots,
            mode,
        };
        Harness::started_on(config(), topology)
    }

    fn started_on(config: WorkerConfig, topology: Topology) -> (Harness, Vec<Did>) {
        let base = Instant::now();
        let service = "echo".parse().expect("a service name");
        let mut harness = Harness {
            core: WorkerCore::with_topology(service, config, topology, base),
            base,
            delivered: Vec::new(),
        };
        let mut out = Vec::new();
        harness.core.start(base, &mut out);
        let started = harness.collect(out);
        (harness, started)
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// The time of `instant`, in milliseconds since the base.
    fn ms(&self, instant: Instant) -> u64 {
        u64::try_from(instant.duration_since(self.base).as_millis()).expect("a short test")
    }

    fn collect(&mut self, out: Vec<Action>) -> Vec<Did> {
        let described = out.iter().map(did).collect();
        for action in out {
            if let Action::Deliver(request) = action {
                self.delivered.push(request);
            }
        }
        described
    }

    fn tick(&mut self, ms: u64) -> Vec<Did> {
        let mut out = Vec::new();
        self.core.tick(self.at(ms), &mut out);
        self.collect(out)
    }

    fn handle(&mut self, ms: u64, link: usize, frames: Frames) -> Vec<Did> {
        self.handle_registering(ms, link, frames).1
    }

    /// The same, with what `handle` returned: whether the message registered the link.
    fn handle_registering(&mut self, ms: u64, link: usize, frames: Frames) -> (bool, Vec<Did>) {
        let mut out = Vec::new();
        let registered = self
            .core
            .handle(self.at(ms), LinkId(link), frames, &mut out);
        (registered, self.collect(out))
    }

    /// The driver reports `broker`'s connection refused.
    fn unreachable(&mut self, ms: u64, broker: usize) -> Vec<Did> {
        let mut out = Vec::new();
        self.core.unreachable(self.at(ms), broker, &mut out);
        self.collect(out)
    }

    /// The broker heartbeats every link in `links` at `ms`.
    fn heartbeats_from(&mut self, ms: u64, links: &[usize]) {
        for &link in links {
            self.handle(ms, link, heartbeat());
        }
    }

    /// Answers the request delivered on `link` (the oldest there) with `body`.
    fn reply_on(&mut self, ms: u64, link: usize, body: &[&[u8]]) -> Vec<Did> {
        let position = self
            .delivered
            .iter()
            .position(|request| request.reply_to.link() == LinkId(link))
            .expect("a request on that link");
        let request = self.delivered.remove(position);
        let mut out = Vec::new();
        self.core
            .reply(self.at(ms), request.reply_to, frames(body), &mut out);
        self.collect(out)
    }

    /// Answers the oldest request not answered yet with `body`.
    fn reply(&mut self, ms: u64, body: &[&[u8]]) -> Vec<Did> {
        let request = self.delivered.remove(0);
        let mut out = Vec::new();
        self.core
            .reply(self.at(ms), request.reply_to, frames(body), &mut out);
        self.collect(out)
    }

    fn next_deadline(&self) -> u64 {
        self.ms(self.core.next_deadline())
    }
}

fn frames(parts: &[&[u8]]) -> Frames {
    parts.iter().map(|part| zmq::Message::from(*part)).collect()
}

/// What the worker's DEALER receives when a broker sends `command`: everything after the
/// identity the broker's ROUTER routes on.
fn from_broker(command: ToWorker) -> Frames {
    let mut wire = command.encode_for_router(b"W");
    wire.remove(0);
    wire
}

fn heartbeat() -> Frames {
    from_broker(ToWorker::Heartbeat)
}

fn disconnect() -> Frames {
    from_broker(ToWorker::Disconnect)
}

fn request(client: &[u8], body: &[&[u8]]) -> Frames {
    from_broker(ToWorker::Request {
        client: zmq::Message::from(client),
        body: frames(body),
    })
}

fn ready(link: usize) -> Did {
    Did::Ready(link, "echo".into())
}

fn deliver(link: usize, client: &[u8], body: &[&[u8]]) -> Did {
    Did::Deliver(
        link,
        client.to_vec(),
        body.iter().map(|b| b.to_vec()).collect(),
    )
}

fn reply(link: usize, client: &[u8], body: &[&[u8]]) -> Did {
    Did::Reply(
        link,
        client.to_vec(),
        body.iter().map(|b| b.to_vec()).collect(),
    )
}

#[test]
fn start_opens_every_link_and_says_ready_on_each() {
    let (harness, started) = Harness::started(1);
    assert_eq!(started, [Did::Open(0), ready(0)]);
    assert!(harness.core.is_open(LinkId(0)));
    assert_eq!(harness.core.generation(LinkId(0)), 1);

    let (_, started) = Harness::started(3);
    assert_eq!(
        started,
        [
            Did::Open(0),
            ready(0),
            Did::Open(1),
            ready(1),
            Did::Open(2),
            ready(2)
        ]
    );
}

#[test]
fn ready_is_spec_7s_four_frames() {
    let service = "echo".parse().expect("a service name");
    let mut core = WorkerCore::new(service, config(), 1, Instant::now());
    let mut out = Vec::new();
    core.start(Instant::now(), &mut out);
    let Some(Action::Send { frames, .. }) = out.get(1) else {
        panic!("READY after Open: {out:?}");
    };
    assert_eq!(
        bytes(frames),
        [
            b"".to_vec(),
            b"MDPW01".to_vec(),
            b"\x01".to_vec(),
            b"echo".to_vec()
        ]
    );
}

#[test]
fn a_heartbeat_is_due_one_interval_after_ready() {
    let (mut harness, _) = Harness::started(1);
    assert_eq!(harness.next_deadline(), 1000);
    assert_eq!(harness.tick(999), []);
    assert_eq!(harness.tick(1000), [Did::Heartbeat(0)]);
    assert_eq!(harness.next_deadline(), 2000);
    assert_eq!(harness.tick(1500), []);
    assert_eq!(harness.tick(2000), [Did::Heartbeat(0)]);
}

#[test]
fn a_late_tick_sends_one_heartbeat_and_counts_the_interval_from_then() {
    let (mut harness, _) = Harness::started(1);
    harness.handle(2400, 0, heartbeat());
    assert_eq!(harness.tick(2500), [Did::Heartbeat(0)]);
    assert_eq!(harness.next_deadline(), 3500);
}

#[test]
fn a_reply_counts_as_a_heartbeat_and_pushes_the_next_one_back() {
    let (mut harness, _) = Harness::started(1);
    assert_eq!(
        harness.handle(500, 0, request(b"C", &[b"x"])),
        [deliver(0, b"C", &[b"x"])]
    );
    assert_eq!(harness.reply(700, &[b"x"]), [reply(0, b"C", &[b"x"])]);
    assert_eq!(harness.tick(1000), [], "the REPLY was the sign of life");
    assert_eq!(harness.next_deadline(), 1700);
    assert_eq!(harness.tick(1700), [Did::Heartbeat(0)]);
}

#[test]
fn heartbeats_go_out_every_interval_while_a_request_is_in_hand() {
    let (mut harness, _) = Harness::started(1);
    harness.handle(500, 0, request(b"C", &[b"long"]));
    assert!(harness.core.holds_request(LinkId(0)));
    // Twenty intervals, far past the broker's liveness: heartbeats, and no giving up on a
    // broker that does not heartbeat a busy worker.
    for second in 1..=20 {
        assert_eq!(harness.next_deadline(), second * 1000);
        assert_eq!(
            harness.tick(second * 1000),
            [Did::Heartbeat(0)],
            "at {second} s"
        );
    }
    assert_eq!(
        harness.reply(20_500, &[b"done"]),
        [reply(0, b"C", &[b"done"])]
    );
    assert!(!harness.core.holds_request(LinkId(0)));
    // Ready to listen again: the broker's countdown starts from the REPLY.
    assert_eq!(harness.tick(21_500), [Did::Heartbeat(0)]);
    assert_eq!(harness.tick(22_500), [Did::Heartbeat(0)]);
    assert_eq!(harness.tick(23_499), []);
    assert_eq!(harness.next_deadline(), 23_500);
    assert_eq!(harness.tick(23_500), [Did::Close(0)]);
}

#[test]
fn the_broker_is_dead_after_exactly_interval_times_liveness_of_silence() {
    let (mut harness, _) = Harness::started(1);
    assert_eq!(harness.tick(1000), [Did::Heartbeat(0)]);
    assert_eq!(harness.tick(2000), [Did::Heartbeat(0)]);
    assert_eq!(harness.tick(2999), []);
    assert_eq!(harness.next_deadline(), 3000);
    // The heartbeat due at 3000 is not sent: nobody is listening.
    assert_eq!(harness.tick(3000), [Did::Close(0)]);
    assert!(!harness.core.is_open(LinkId(0)));
}

#[test]
fn a_heartbeat_or_a_request_from_the_broker_restarts_its_countdown() {
    let (mut harness, _) = Harness::started(1);
    assert_eq!(harness.handle(2500, 0, heartbeat()), []);
    harness.tick(1000);
    harness.tick(2000);
    harness.tick(3000);
    harness.tick(4000);
    harness.tick(5000);
    assert_eq!(harness.tick(5499), []);
    assert_eq!(harness.tick(5500), [Did::Close(0)]);

    let (mut harness, _) = Harness::started(1);
    harness.handle(2500, 0, request(b"C", &[b"x"]));
    harness.reply(2500, &[b"x"]);
    assert_eq!(harness.tick(5499), [Did::Heartbeat(0)]);
    assert_eq!(harness.tick(5500), [Did::Close(0)]);
}

#[test]
fn disconnect_closes_at_once_and_registers_again_on_a_new_socket_after_the_backoff() {
    let (mut harness, _) = Harness::started(1);
    assert_eq!(
        harness.handle(500, 0, disconnect()),
        [Did::Close(0)],
        "not a word back"
    );
    assert_eq!(harness.next_deadline(), 600);
    assert_eq!(harness.tick(599), []);
    assert_eq!(harness.tick(600), [Did::Open(0), ready(0)]);
    assert_eq!(harness.core.generation(LinkId(0)), 2);
    // A fresh conversation: fresh clocks.
    assert_eq!(harness.next_deadline(), 1600);
    assert_eq!(harness.tick(3599), [Did::Heartbeat(0)]);
    assert_eq!(harness.tick(3600), [Did::Close(0)]);
}

#[test]
fn the_backoff_doubles_up_to_the_cap_and_falls_back_once_the_broker_speaks() {
    let (mut harness, _) = Harness::started(1);
    // A broker that never says anything: record how long each closed link waits to reopen.
    let mut waits = Vec::new();
    let mut closed_at = None;
    while waits.len() < 9 {
        let now = harness.next_deadline();
        for action in harness.tick(now) {
            match action {
                Did::Close(0) => closed_at = Some(now),
                Did::Open(0) => waits.push(now - closed_at.take().expect("closed first")),
                _ => {}
            }
        }
    }
    assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);

    // The broker answers on the new socket: the next failure waits the initial delay again.
    let now = harness.next_deadline();
    assert_eq!(harness.tick(now), [Did::Heartbeat(0)]);
    harness.handle(now, 0, heartbeat());
    assert_eq!(harness.handle(now + 10, 0, disconnect()), [Did::Close(0)]);
    assert_eq!(harness.next_deadline(), now + 10 + 100);
}

#[test]
fn a_disconnect_is_not_a_sign_of_life_so_repeated_ones_back_off_further() {
    let (mut harness, _) = Harness::started(1);
    harness.handle(10, 0, disconnect());
    assert_eq!(harness.tick(110), [Did::Open(0), ready(0)]);
    harness.handle(120, 0, disconnect());
    assert_eq!(harness.next_deadline(), 320);
}

#[test]
fn a_reply_from_an_ended_conversation_is_dropped() {
    let (mut harness, _) = Harness::started(1);
    harness.handle(100, 0, request(b"C", &[b"x"]));
    harness.handle(200, 0, disconnect());
    // During the backoff, and on the new socket: the REPLY would reach a broker that never
    // sent this socket the request.
    assert_eq!(harness.reply(250, &[b"x"]), []);
    harness.handle(260, 0, request(b"C", &[b"y"]));
    assert_eq!(harness.tick(300), [Did::Open(0), ready(0)]);
    harness.handle(400, 0, request(b"D", &[b"z"]));
    harness.handle(500, 0, disconnect());
    harness.tick(700);
    assert_eq!(harness.reply(800, &[b"z"]), []);
    assert!(
        harness.delivered.is_empty(),
        "the message for the closed socket was ignored"
    );
}

#[test]
fn the_reply_carries_the_clients_address_and_the_body_as_spec_7_says() {
    let (mut harness, _) = Harness::started(1);
    harness.handle(
        100,
        0,
        request(b"\x00\x80\x00\x00\x01", &[b"hello", b"world"]),
    );
    let request = harness.delivered.remove(0);
    let mut out = Vec::new();
    harness
        .core
        .reply(harness.at(200), request.reply_to, request.body, &mut out);
    let [Action::Send { link, frames }] = &out[..] else {
        panic!("one REPLY: {out:?}");
    };
    assert_eq!(*link, LinkId(0));
    let expected: [&[u8]; 7] = [
        b"",
        b"MDPW01",
        b"\x03",
        b"\x00\x80\x00\x00\x01",
        b"",
        b"hello",
        b"world",
    ];
    assert_eq!(bytes(frames), expected.map(<[u8]>::to_vec));
}

#[test]
fn an_empty_reply_body_goes_out_as_one_empty_frame() {
    let (mut harness, _) = Harness::started(1);
    harness.handle(100, 0, request(b"C", &[b"x"]));
    assert_eq!(harness.reply(200, &[]), [reply(0, b"C", &[b""])]);
}

#[test]
fn malformed_messages_are_dropped_counted_and_change_nothing() {
    let (mut harness, _) = Harness::started(1);
    let garbage: Vec<Vec<&[u8]>> = vec![
        vec![],
        vec![b"no delimiter"],
        vec![b"", b"MDPC01", b"echo", b"x"],
        vec![b"", b"MDPW01"],
        vec![b"", b"MDPW01", b"\x09"],
        vec![b"", b"MDPW01", b"\x02"],
        vec![b"", b"MDPW01", b"\x02", b"C"],
        vec![b"", b"MDPW01", b"\x02", b"C", b"not empty", b"x"],
        vec![b"", b"MDPW01", b"\x02", b"C", b""],
        vec![b"", b"MDPW01", b"\x04", b"extra"],
        vec![b"", b"MDPW01", b"\x05", b"extra"],
        vec![b"", b"MDPW01", b"\x01", b"echo"],
        vec![b"", b"MDPW01", b"\x03", b"C", b"", b"x"],
    ];
    for (index, message) in garbage.iter().enumerate() {
        let ms = 100 + u64::try_from(index).expect("few");
        assert_eq!(harness.handle(ms, 0, frames(message)), [], "{message:?}");
    }
    assert_eq!(harness.core.malformed_messages(), 13);
    assert!(!harness.core.holds_request(LinkId(0)));
    // Not signs of life: the broker still expires 3 s after the start.
    harness.tick(1000);
    harness.tick(2000);
    assert_eq!(harness.tick(3000), [Did::Close(0)]);
}

#[test]
fn next_deadline_is_always_the_next_moment_something_is_due() {
    // Two links, one of them busy for a while and one whose broker heartbeats now and then: at
    // every deadline something happens, and a moment before it nothing does.
    let (mut harness, _) = Harness::started(2);
    harness.handle(50, 1, request(b"C", &[b"x"]));
    let mut now = 0;
    let mut happened = 0;
    for step in 0..300 {
        if step % 7 == 3 {
            harness.handle(now, 0, heartbeat());
        }
        if step == 40 {
            harness.reply(now, &[b"x"]);
        }
        let deadline = harness.next_deadline();
        assert!(deadline >= now, "a deadline in the past at step {step}");
        let mut probe = harness.core.clone();
        let mut out = Vec::new();
        let just_before = harness.at(deadline) - Duration::from_micros(1);
        probe.tick(just_before, &mut out);
        assert!(out.is_empty(), "early at step {step}: {out:?}");
        let done = harness.tick(deadline);
        assert!(
            !done.is_empty(),
            "nothing due at {deadline} ms, step {step}"
        );
        happened += done.len();
        now = deadline;
    }
    assert!(happened >= 300);
}

#[test]
fn shutdown_disconnects_every_open_link_and_nothing_happens_after() {
    let (mut harness, _) = Harness::started(3);
    harness.handle(100, 1, disconnect());
    harness.handle(100, 2, request(b"C", &[b"x"]));
    let mut out = Vec::new();
    harness.core.shutdown(&mut out);
    assert_eq!(
        harness.collect(out),
        [
            Did::Disconnect(0),
            Did::Close(0),
            Did::Disconnect(2),
            Did::Close(2)
        ]
    );
    assert_eq!(harness.tick(60_000), []);
    assert_eq!(
        harness.reply(60_000, &[b"x"]),
        [],
        "the conversation has ended"
    );
    assert_eq!(harness.handle(60_000, 0, heartbeat()), []);
    assert_eq!(
        harness.next_deadline(),
        61_000,
        "a wake-up with nothing to do"
    );
}

#[test]
fn two_links_are_independent() {
    let (mut harness, _) = Harness::started(2);
    // Link 1's broker heartbeats; link 0's is silent.
    for second in 1..=2 {
        harness.handle(second * 1000 - 1, 1, heartbeat());
        assert_eq!(
            harness.tick(second * 1000),
            [Did::Heartbeat(0), Did::Heartbeat(1)]
        );
    }
    harness.handle(2999, 1, heartbeat());
    assert_eq!(harness.tick(3000), [Did::Close(0), Did::Heartbeat(1)]);
    assert!(harness.core.is_open(LinkId(1)));

    // Link 1 serves a request while link 0 waits out its backoff.
    harness.handle(3050, 1, request(b"C", &[b"x"]));
    assert_eq!(harness.tick(3100), [Did::Open(0), ready(0)]);
    assert_eq!(
        harness.core.generation(LinkId(1)),
        1,
        "link 1 kept its socket"
    );
    assert_eq!(harness.reply(3200, &[b"x"]), [reply(1, b"C", &[b"x"])]);

    // A DISCONNECT on link 1 does not touch link 0, and each link backs off on its own.
    assert_eq!(harness.handle(3300, 1, disconnect()), [Did::Close(1)]);
    assert!(harness.core.is_open(LinkId(0)));
    assert_eq!(
        harness.next_deadline(),
        3400,
        "link 1 waits the initial backoff"
    );
    assert_eq!(harness.tick(3400), [Did::Open(1), ready(1)]);
    // Both brokers are silent now; each link keeps its own clocks.
    assert_eq!(harness.tick(4100), [Did::Heartbeat(0)]);
    assert_eq!(harness.tick(4400), [Did::Heartbeat(1)]);
    assert_eq!(harness.tick(5100), [Did::Heartbeat(0)]);
    assert_eq!(harness.tick(5400), [Did::Heartbeat(1)]);
    assert_eq!(harness.tick(6100), [Did::Close(0)]);
    assert_eq!(
        harness.next_deadline(),
        6300,
        "link 0's second wait is doubled"
    );
    assert_eq!(harness.tick(6300), [Did::Open(0), ready(0)]);
    assert_eq!(harness.tick(6400), [Did::Close(1)]);
    assert_eq!(
        harness.next_deadline(),
        6600,
        "so is link 1's, after its DISCONNECT"
    );
}

#[test]
fn messages_for_a_closed_or_unknown_link_are_ignored() {
    let (mut harness, _) = Harness::started(1);
    harness.handle(100, 0, disconnect());
    assert_eq!(harness.handle(150, 0, request(b"C", &[b"x"])), []);
    assert_eq!(harness.handle(150, 7, request(b"C", &[b"x"])), []);
    assert!(harness.delivered.is_empty());
    assert_eq!(harness.core.malformed_messages(), 0);
}

#[test]
fn a_second_request_before_the_reply_keeps_the_countdown_suspended_until_both_are_answered() {
    // Spec 7 brokers send one request at a time; one that sends two still gets both served, and
    // the worker does not time it out while either is in hand.
    let (mut harness, _) = Harness::started(1);
    harness.handle(100, 0, request(b"A", &[b"1"]));
    harness.handle(200, 0, request(b"B", &[b"2"]));
    assert_eq!(harness.reply(300, &[b"1"]), [reply(0, b"A", &[b"1"])]);
    assert!(harness.core.holds_request(LinkId(0)));
    assert_eq!(
        harness.tick(10_000),
        [Did::Heartbeat(0)],
        "no expiry while B is in hand"
    );
    assert_eq!(harness.reply(10_100, &[b"2"]), [reply(0, b"B", &[b"2"])]);
    assert!(!harness.core.holds_request(LinkId(0)));
    assert_eq!(harness.next_deadline(), 11_100);
    assert_eq!(harness.tick(13_099), [Did::Heartbeat(0)]);
    assert_eq!(harness.tick(13_100), [Did::Close(0)]);
}

#[test]
fn start_again_leaves_open_links_alone() {
    let (mut harness, _) = Harness::started(2);
    harness.handle(100, 1, disconnect());
    let mut out = Vec::new();
    harness.core.start(harness.at(150), &mut out);
    assert!(
        out.is_empty(),
        "link 0 is open and link 1 waits out its backoff: {out:?}"
    );
    assert_eq!(harness.core.generation(LinkId(0)), 1);
}

// Topologies: brokers x slots, all and failover.

#[test]
fn links_are_laid_out_broker_by_broker_and_know_their_broker_and_slot() {
    let (harness, started) = Harness::topology(2, 3, Mode::All);
    let core = &harness.core;
    assert_eq!(core.link_count(), 6);
    let layout: Vec<(usize, usize)> = (0..6)
        .map(|index| (core.broker_of(LinkId(index)), core.slot_of(LinkId(index))))
        .collect();
    assert_eq!(layout, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
    assert_eq!(
        core.links_of(1).collect::<Vec<_>>(),
        [LinkId(3), LinkId(4), LinkId(5)]
    );
    assert_eq!(core.active_broker(), None, "all mode has no active broker");
    // All mode: every slot of every broker opens at once, each with its own READY.
    let expected: Vec<Did> = (0..6)
        .flat_map(|link| [Did::Open(link), ready(link)])
        .collect();
    assert_eq!(started, expected);
}

#[test]
fn each_slot_heartbeats_on_its_own_clock() {
    let (mut harness, _) = Harness::topology(1, 3, Mode::All);
    // A request on slot 1 answered at 600 pushes only slot 1's heartbeat back.
    harness.handle(100, 1, request(b"C", &[b"x"]));
    assert_eq!(harness.reply(600, &[b"x"]), [reply(1, b"C", &[b"x"])]);
    assert_eq!(harness.tick(1000), [Did::Heartbeat(0), Did::Heartbeat(2)]);
    assert_eq!(harness.next_deadline(), 1600);
    assert_eq!(harness.tick(1600), [Did::Heartbeat(1)]);
    // The broker's countdown is per slot too: slots 0 and 2 heard nothing since READY, slot 1
    // was ready to listen again from its REPLY at 600.
    harness.tick(2000);
    harness.tick(2600);
    assert_eq!(harness.tick(3000), [Did::Close(0), Did::Close(2)]);
    assert!(harness.core.is_open(LinkId(1)));
    assert_eq!(
        harness.tick(3100),
        [Did::Open(0), ready(0), Did::Open(2), ready(2)]
    );
    assert_eq!(harness.tick(3600), [Did::Close(1)]);
}

#[test]
fn a_disconnected_slot_reconnects_alone() {
    let (mut harness, _) = Harness::topology(1, 3, Mode::All);
    harness.handle(100, 0, request(b"A", &[b"a"]));
    assert_eq!(harness.handle(200, 1, disconnect()), [Did::Close(1)]);
    assert!(harness.core.is_open(LinkId(0)) && harness.core.is_open(LinkId(2)));
    assert_eq!(harness.tick(300), [Did::Open(1), ready(1)]);
    assert_eq!(harness.core.generation(LinkId(0)), 1);
    assert_eq!(harness.core.generation(LinkId(1)), 2);
    assert_eq!(harness.core.generation(LinkId(2)), 1);
    // Slot 0's request, in hand all along, is answered on its own socket.
    assert_eq!(harness.reply(400, &[b"a"]), [reply(0, b"A", &[b"a"])]);
}

#[test]
fn requests_on_several_slots_are_delivered_in_arrival_order_and_answered_in_any_order() {
    let (mut harness, _) = Harness::topology(1, 3, Mode::All);
    assert_eq!(
        harness.handle(100, 2, request(b"A", &[b"1"])),
        [deliver(2, b"A", &[b"1"])]
    );
    assert_eq!(
        harness.handle(110, 0, request(b"B", &[b"2"])),
        [deliver(0, b"B", &[b"2"])]
    );
    assert_eq!(
        harness.handle(120, 1, request(b"C", &[b"3"])),
        [deliver(1, b"C", &[b"3"])]
    );
    assert!((0..3).all(|link| harness.core.holds_request(LinkId(link))));
    assert_eq!(harness.reply_on(200, 1, &[b"3"]), [reply(1, b"C", &[b"3"])]);
    assert_eq!(harness.reply_on(210, 2, &[b"1"]), [reply(2, b"A", &[b"1"])]);
    assert_eq!(harness.reply_on(220, 0, &[b"2"]), [reply(0, b"B", &[b"2"])]);
    assert!((0..3).all(|link| !harness.core.holds_request(LinkId(link))));
}

#[test]
fn in_all_mode_the_loss_of_one_broker_never_interrupts_the_others() {
    // Brokers 0 and 1, two slots each: links 0 and 1 to broker 0, links 2 and 3 to broker 1.
    let (mut harness, _) = Harness::topology(2, 2, Mode::All);
    harness.heartbeats_from(500, &[0, 1, 2, 3]);
    harness.handle(600, 2, request(b"C", &[b"x"]));
    // Broker 0 dies at 500: refused connections change nothing in all mode...
    assert_eq!(harness.unreachable(700, 0), []);
    // ...and its silence closes only its own links, while broker 1 keeps heartbeating.
    for second in 1..=3 {
        harness.heartbeats_from(second * 1000 - 1, &[3]);
        let done = harness.tick(second * 1000);
        assert!(
            !done.iter().any(|did| matches!(did, Did::Close(2 | 3))),
            "broker 1's links stay open: {done:?}"
        );
    }
    assert_eq!(harness.tick(3500), [Did::Close(0), Did::Close(1)]);
    assert!(harness.core.is_open(LinkId(2)) && harness.core.is_open(LinkId(3)));
    // The request in hand from broker 1 is answered there, on the same socket.
    assert_eq!(harness.reply(3600, &[b"x"]), [reply(2, b"C", &[b"x"])]);
    assert_eq!(harness.core.generation(LinkId(2)), 1);
    // Broker 0's links retry on their own backoff.
    assert_eq!(
        harness.tick(3600),
        [Did::Open(0), ready(0), Did::Open(1), ready(1)]
    );
}

#[test]
fn failover_opens_only_the_first_brokers_slots() {
    let (harness, started) = Harness::topology(3, 2, Mode::Failover);
    assert_eq!(started, [Did::Open(0), ready(0), Did::Open(1), ready(1)]);
    assert_eq!(harness.core.active_broker(), Some(0));
    assert!(!harness.core.is_open(LinkId(2)));
}

#[test]
fn failover_moves_to_the_next_broker_after_interval_times_liveness_of_silence() {
    let (mut harness, _) = Harness::topology(3, 2, Mode::Failover);
    assert_eq!(harness.tick(1000), [Did::Heartbeat(0), Did::Heartbeat(1)]);
    harness.tick(2000);
    assert_eq!(harness.tick(2999), []);
    // Every slot of broker 0 closes at once; broker 1's open after the backoff.
    assert_eq!(harness.tick(3000), [Did::Close(0), Did::Close(1)]);
    assert_eq!(harness.core.active_broker(), Some(1));
    assert_eq!(harness.next_deadline(), 3100);
    assert_eq!(harness.tick(3099), []);
    assert_eq!(
        harness.tick(3100),
        [Did::Open(2), ready(2), Did::Open(3), ready(3)]
    );
    assert!(!harness.core.is_open(LinkId(0)) && !harness.core.is_open(LinkId(1)));
}

#[test]
fn failover_stays_on_the_broker_that_serves_it_and_never_flaps_back() {
    let (mut harness, _) = Harness::topology(3, 1, Mode::Failover);
    harness.tick(1000);
    harness.tick(2000);
    harness.tick(3000);
    harness.tick(3100);
    assert_eq!(harness.core.active_broker(), Some(1));
    // Broker 1 serves for a minute; broker 0 (back, for all we know) is never tried again.
    for second in 4..=60 {
        harness.heartbeats_from(second * 1000, &[1]);
        let done = harness.tick(second * 1000 + 100);
        assert_eq!(done, [Did::Heartbeat(1)], "at {second} s");
    }
    // Broker 1 fails: the next is broker 2, then around to broker 0.
    assert_eq!(harness.unreachable(60_200, 1), [Did::Close(1)]);
    assert_eq!(harness.core.active_broker(), Some(2));
    assert_eq!(
        harness.tick(60_300),
        [Did::Open(2), ready(2)],
        "the backoff started again from 100 ms, broker 1 had answered"
    );
    assert_eq!(harness.unreachable(60_400, 2), [Did::Close(2)]);
    assert_eq!(harness.core.active_broker(), Some(0));
    assert_eq!(
        harness.tick(60_600),
        [Did::Open(0), ready(0)],
        "200 ms: no answer from 2"
    );
}

#[test]
fn failover_on_a_refused_connection_is_at_once_and_only_for_the_active_broker() {
    let (mut harness, _) = Harness::topology(2, 2, Mode::Failover);
    assert_eq!(harness.unreachable(50, 1), [], "broker 1 is not in use");
    assert_eq!(harness.unreachable(60, 0), [Did::Close(0), Did::Close(1)]);
    assert_eq!(harness.core.active_broker(), Some(1));
    assert_eq!(
        harness.unreachable(70, 1),
        [],
        "nothing of broker 1 is open yet: a report about an old socket"
    );
    assert_eq!(
        harness.tick(160),
        [Did::Open(2), ready(2), Did::Open(3), ready(3)]
    );
}

#[test]
fn failover_through_brokers_that_are_all_down_backs_off_and_starts_short_again_after_an_answer() {
    let (mut harness, _) = Harness::topology(2, 1, Mode::Failover);
    let mut waits = Vec::new();
    let mut now = 0;
    for _ in 0..8 {
        let active = harness.core.active_broker().expect("failover");
        assert_eq!(harness.unreachable(now, active), [Did::Close(active)]);
        let reopen = harness.next_deadline();
        waits.push(reopen - now);
        harness.tick(reopen);
        now = reopen + 1;
    }
    assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    let active = harness.core.active_broker().expect("failover");
    harness.handle(now, active, heartbeat());
    harness.unreachable(now + 1, active);
    assert_eq!(harness.next_deadline(), now + 1 + 100);
}

#[test]
fn in_failover_a_disconnect_registers_again_on_the_same_broker() {
    let (mut harness, _) = Harness::topology(2, 2, Mode::Failover);
    harness.heartbeats_from(100, &[0, 1]);
    assert_eq!(harness.handle(200, 1, disconnect()), [Did::Close(1)]);
    assert_eq!(harness.core.active_broker(), Some(0), "a live broker");
    assert_eq!(harness.tick(300), [Did::Open(1), ready(1)]);
    assert!(harness.core.is_open(LinkId(0)), "slot 0 untouched");
}

#[test]
fn a_reply_to_a_request_from_the_failed_broker_is_dropped() {
    let (mut harness, _) = Harness::topology(2, 1, Mode::Failover);
    harness.handle(100, 0, request(b"C", &[b"x"]));
    harness.unreachable(200, 0);
    harness.tick(300);
    assert_eq!(
        harness.reply(400, &[b"x"]),
        [],
        "broker 0's conversation has ended"
    );
}

#[test]
fn the_registered_moment_is_the_first_word_of_the_broker_on_each_new_socket() {
    let (mut harness, _) = Harness::topology(1, 2, Mode::All);
    assert!(!harness.core.is_registered(LinkId(0)));
    let garbage = frames(&[b"", b"MDPW01", b"\x09"]);
    assert!(!harness.handle_registering(50, 0, garbage).0, "malformed");
    assert!(harness.handle_registering(100, 0, heartbeat()).0);
    assert!(harness.core.is_registered(LinkId(0)));
    assert!(!harness.core.is_registered(LinkId(1)), "per slot");
    assert!(!harness.handle_registering(200, 0, heartbeat()).0, "once");
    assert!(!harness.handle_registering(300, 0, request(b"C", &[b"x"])).0);
    // A request is a first word too.
    assert!(harness.handle_registering(300, 1, request(b"D", &[b"y"])).0);
    // After a DISCONNECT (not a first word itself) the new socket registers anew.
    assert!(!harness.handle_registering(400, 1, disconnect()).0);
    assert!(!harness.core.is_registered(LinkId(1)));
    harness.tick(500);
    assert!(harness.handle_registering(600, 1, heartbeat()).0);
}

impl Harness {
    /// The driver reports that the broker refused `link`'s handshake.
    fn handshake_failed(&mut self, ms: u64, link: usize) -> (Option<Duration>, Vec<Did>) {
        let mut out = Vec::new();
        let delay = self
            .core
            .handshake_failed(self.at(ms), LinkId(link), &mut out);
        (delay, self.collect(out))
    }
}

#[test]
fn a_refused_handshake_closes_the_link_and_retries_after_a_doubling_backoff() {
    let (mut harness, _) = Harness::started(1);
    let mut waits = Vec::new();
    let mut now = 10;
    for _ in 0..8 {
        let (delay, did) = harness.handshake_failed(now, 0);
        assert_eq!(did, [Did::Close(0)], "closed without a word");
        let delay = delay.expect("the link was open");
        waits.push(u64::try_from(delay.as_millis()).expect("short"));
        assert_eq!(harness.next_deadline(), now + waits[waits.len() - 1]);
        // Refused again as soon as it reopens.
        now = harness.next_deadline();
        assert_eq!(harness.tick(now), [Did::Open(0), ready(0)]);
        now += 5;
    }
    assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    assert_eq!(harness.core.handshakes_refused(), 8);
    // A report about a link that is not open (its socket already closed) changes nothing.
    harness.handshake_failed(now, 0);
    assert_eq!(harness.handshake_failed(now + 1, 0), (None, vec![]));
    assert_eq!(harness.core.handshakes_refused(), 9);
}

#[test]
fn in_failover_mode_a_refusing_active_broker_counts_as_down() {
    let (mut harness, _) = Harness::topology(2, 1, Mode::Failover);
    let (delay, did) = harness.handshake_failed(20, 0);
    assert_eq!(did, [Did::Close(0)]);
    assert_eq!(delay, Some(Duration::from_millis(100)));
    assert_eq!(harness.core.active_broker(), Some(1));
    assert_eq!(harness.tick(120), [Did::Open(1), ready(1)]);
}

#[test]
fn a_disconnect_right_after_ready_is_a_refused_registration_retried_with_backoff() {
    let (mut harness, _) = Harness::started(1);
    // The broker answers READY with DISCONNECT each time: the waits double as for silence.
    let mut now = 5;
    let mut waits = Vec::new();
    for _ in 0..4 {
        assert_eq!(harness.handle(now, 0, disconnect()), [Did::Close(0)]);
        let reopen = harness.next_deadline();
        waits.push(reopen - now);
        assert_eq!(harness.tick(reopen), [Did::Open(0), ready(0)]);
        now = reopen + 5;
    }
    assert_eq!(waits, [100, 200, 400, 800]);
    assert_eq!(harness.core.serve_refused(), 4);
    // A DISCONNECT after the broker spoke is an ordinary one, not a refusal.
    harness.handle(now, 0, heartbeat());
    harness.handle(now + 1, 0, disconnect());
    assert_eq!(harness.core.serve_refused(), 4);
}
