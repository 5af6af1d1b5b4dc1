//! Unit tests of the broker core: every command and every error path, with a fake clock.
//!
//! Each test drives a [`Broker`] through a [`Harness`] that hands it frames written out byte by byte
//! as spec 7 shows them, at times given in milliseconds after a fixed `t0`, and returns what the
//! broker would send, also as bytes. [`Broker::check_invariants`] runs after every step. Unless a
//! test says otherwise the configuration is the default one: heartbeat every 2500 ms, liveness 3,
//! so a worker silent for 7500 ms is purged.

use super::*;

/// One message as bytes, identity first for messages the broker sends.
type Wire = Vec<Vec<u8>>;

fn frames(parts: &[&[u8]]) -> Frames {
    parts.iter().map(|part| zmq::Message::from(*part)).collect()
}

fn wire(parts: &[&[u8]]) -> Wire {
    parts.iter().map(|part| part.to_vec()).collect()
}

/// What the broker sends a worker with a client's request: `[worker, "", MDPW01, 0x02, client, "",
/// body...]`.
fn request_to(worker: &[u8], client: &[u8], body: &[&[u8]]) -> Wire {
    let mut parts: Vec<&[u8]> = vec![worker, b"", b"MDPW01", b"\x02", client, b""];
    parts.extend(body);
    wire(&parts)
}

/// What the broker sends a client with a reply: `[client, "", MDPC01, service, body...]`.
fn reply_to(client: &[u8], service: &[u8], body: &[&[u8]]) -> Wire {
    let mut parts: Vec<&[u8]> = vec![client, b"", b"MDPC01", service];
    parts.extend(body);
    wire(&parts)
}

fn heartbeat_to(worker: &[u8]) -> Wire {
    wire(&[worker, b"", b"MDPW01", b"\x04"])
}

fn disconnect_to(worker: &[u8]) -> Wire {
    wire(&[worker, b"", b"MDPW01", b"\x05"])
}

/// The messages in a stable order, for steps whose output order depends on hash-map order
/// (heartbeats, shutdown).
fn sorted(mut messages: Vec<Wire>) -> Vec<Wire> {
    messages.sort();
    messages
}

/// The messages other than heartbeats, for ticks that also purge or redeliver.
fn without_heartbeats(messages: Vec<Wire>) -> Vec<Wire> {
    messages
        .into_iter()
        .filter(|message| message.get(3).map(Vec::as_slice) != Some(b"\x04"))
        .collect()
}

/// A broker with a fake clock: every step is at `t0 + ms`, and checks the invariants after.
struct Harness {
    broker: Broker,
    t0: Instant,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Config::default())
    }

    fn with(config: Config) -> Harness {
        let t0 = Instant::now();
        let broker = Broker::new(config, t0);
        broker.check_invariants();
        Harness { broker, t0 }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn finish(&self, out: Vec<Outgoing>) -> Vec<Wire> {
        self.broker.check_invariants();
        out.into_iter()
            .map(|message| message.frames.iter().map(|frame| frame.to_vec()).collect())
            .collect()
    }

    /// `sender` sends `parts` (the frames after the identity) at `ms`.
    fn send(&mut self, ms: u64, sender: &[u8], parts: &[&[u8]]) -> Vec<Wire> {
        let mut out = Vec::new();
        self.broker
            .handle(self.at(ms), sender, frames(parts), &mut out);
        self.finish(out)
    }

    /// `sender`, authenticated as `principal`, sends `parts` at `ms`.
    fn send_as(&mut self, ms: u64, sender: &[u8], principal: &str, parts: &[&[u8]]) -> Vec<Wire> {
        let mut out = Vec::new();
        self.broker.handle_as(
            self.at(ms),
            sender,
            Some(principal),
            frames(parts),
            &mut out,
        );
        self.finish(out)
    }

    fn tick(&mut self, ms: u64) -> Vec<Wire> {
        let mut out = Vec::new();
        self.broker.tick(self.at(ms), &mut out);
        self.finish(out)
    }

    fn undeliverable(&mut self, recipient: &[u8]) -> Vec<Wire> {
        let mut out = Vec::new();
        self.broker.undeliverable(recipient, &mut out);
        self.finish(out)
    }

    /// The socket refused `message` (identity first) whole.
    fn refused(&mut self, message: &Wire) -> Vec<Wire> {
        let mut out = Vec::new();
        let frames = message
            .iter()
            .map(|part| zmq::Message::from(&part[..]))
            .collect();
        self.broker.refused(frames, &mut out);
        self.finish(out)
    }

    /// The driver found the client of `message` (a REQUEST with `if_connected`) gone.
    fn client_gone(&mut self, message: &Wire) -> Vec<Wire> {
        let mut out = Vec::new();
        let frames = message
            .iter()
            .map(|part| zmq::Message::from(&part[..]))
            .collect();
        self.broker.client_gone(frames, &mut out);
        self.finish(out)
    }

    /// Like [`Harness::request`], but returns whom each message may go to only if still
    /// connected ([`Outgoing::if_connected`]), beside the message.
    fn request_checked(
        &mut self,
        ms: u64,
        client: &[u8],
        service: &[u8],
        body: &[u8],
    ) -> Vec<(Wire, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        self.broker.handle(
            self.at(ms),
            client,
            frames(&[b"", b"MDPC01", service, body]),
            &mut out,
        );
        self.broker.check_invariants();
        out.into_iter()
            .map(|message| {
                let wire = message.frames.iter().map(|frame| frame.to_vec()).collect();
                (wire, message.if_connected)
            })
            .collect()
    }

    fn shutdown(&mut self) -> Vec<Wire> {
        let mut out = Vec::new();
        self.broker.shutdown(&mut out);
        self.finish(out)
    }

    fn ready(&mut self, ms: u64, worker: &[u8], service: &[u8]) -> Vec<Wire> {
        self.send(ms, worker, &[b"", b"MDPW01", b"\x01", service])
    }

    fn request(&mut self, ms: u64, client: &[u8], service: &[u8], body: &[u8]) -> Vec<Wire> {
        self.send(ms, client, &[b"", b"MDPC01", service, body])
    }

    fn reply(&mut self, ms: u64, worker: &[u8], client: &[u8], body: &[u8]) -> Vec<Wire> {
        self.send(ms, worker, &[b"", b"MDPW01", b"\x03", client, b"", body])
    }

    fn heartbeat(&mut self, ms: u64, worker: &[u8]) -> Vec<Wire> {
        self.send(ms, worker, &[b"", b"MDPW01", b"\x04"])
    }

    fn disconnect(&mut self, ms: u64, worker: &[u8]) -> Vec<Wire> {
        self.send(ms, worker, &[b"", b"MDPW01", b"\x05"])
    }

    /// `Some(true)` if the worker is registered and idle, `Some(false)` if busy, `None` if unknown.
    fn is_idle(&self, worker: &[u8]) -> Option<bool> {
        self.broker
            .workers
            .get(worker)
            .map(|worker| matches!(worker.state, WorkerState::Idle { .. }))
    }

    fn stats(&self) -> &Stats {
        self.broker.stats()
    }

    /// The client whose request `worker` holds.
    fn busy_client(&self, worker: &[u8]) -> Vec<u8> {
        match &self.broker.workers[worker].state {
            WorkerState::Busy { client, .. } => client.clone(),
            WorkerState::Idle { .. } => panic!("worker is idle"),
        }
    }
}

fn config(change: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    change(&mut config);
    config
}

// READY, REQUEST, REPLY: the request dialog.

#[test]
fn ready_registers_the_worker_and_sends_nothing() {
    let mut broker = Harness::new();
    assert_eq!(broker.ready(0, b"W1", b"echo"), Vec::<Wire>::new());
    assert_eq!(broker.broker.worker_count(), 1);
    assert_eq!(broker.broker.service_count(), 1);
    assert_eq!(broker.is_idle(b"W1"), Some(true));
    assert_eq!(broker.stats().workers_registered, 1);
}

#[test]
fn a_queued_request_goes_to_the_worker_that_registers_with_the_client_envelope() {
    let mut broker = Harness::new();
    let sent = broker.send(0, b"C1", &[b"", b"MDPC01", b"echo", b"hello", b"world"]);
    assert_eq!(sent, Vec::<Wire>::new());
    assert_eq!(broker.broker.queued_requests(), 1);
    assert_eq!(broker.broker.service_count(), 1);

    let sent = broker.ready(10, b"W1", b"echo");
    assert_eq!(sent, vec![request_to(b"W1", b"C1", &[b"hello", b"world"])]);
    assert_eq!(broker.broker.queued_requests(), 0);
    assert_eq!(broker.is_idle(b"W1"), Some(false));
    assert_eq!(broker.stats().requests_received, 1);
    assert_eq!(broker.stats().requests_dispatched, 1);
}

#[test]
fn a_request_goes_at_once_to_an_idle_worker_of_its_service_only() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.ready(0, b"W2", b"time");
    let sent = broker.request(5, b"C1", b"time", b"now?");
    assert_eq!(sent, vec![request_to(b"W2", b"C1", &[b"now?"])]);
    assert_eq!(broker.is_idle(b"W1"), Some(true));
}

#[test]
fn idle_workers_get_requests_least_recently_used_first() {
    let mut broker = Harness::new();
    for worker in [b"W1", b"W2", b"W3"] {
        broker.ready(0, worker, b"echo");
    }
    // In the order they became idle.
    assert_eq!(broker.request(1, b"C1", b"echo", b"a")[0][0], b"W1");
    assert_eq!(broker.request(2, b"C2", b"echo", b"b")[0][0], b"W2");
    assert_eq!(broker.request(3, b"C3", b"echo", b"c")[0][0], b"W3");
    // They become idle again in the order W2, W3, W1, and are used in that order.
    broker.reply(4, b"W2", b"C2", b"B");
    broker.reply(5, b"W3", b"C3", b"C");
    broker.reply(6, b"W1", b"C1", b"A");
    assert_eq!(broker.request(7, b"C1", b"echo", b"d")[0][0], b"W2");
    assert_eq!(broker.request(8, b"C2", b"echo", b"e")[0][0], b"W3");
    assert_eq!(broker.request(9, b"C3", b"echo", b"f")[0][0], b"W1");
    // Requests that find no idle worker wait, and go in arrival order.
    assert!(broker.request(10, b"C4", b"echo", b"g").is_empty());
    assert!(broker.request(11, b"C5", b"echo", b"h").is_empty());
    // The worker's next request goes out before the reply it just sent: the worker is what
    // requests wait for.
    let sent = broker.reply(12, b"W3", b"C2", b"E");
    assert_eq!(
        sent,
        vec![
            request_to(b"W3", b"C4", &[b"g"]),
            reply_to(b"C2", b"echo", &[b"E"])
        ]
    );
    let sent = broker.reply(13, b"W1", b"C3", b"F");
    assert_eq!(sent[0], request_to(b"W1", b"C5", &[b"h"]));
}

#[test]
fn a_reply_goes_back_to_the_client_and_the_worker_is_idle_again() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.request(1, b"C1", b"echo", b"hello");
    let sent = broker.send(
        2,
        b"W1",
        &[b"", b"MDPW01", b"\x03", b"C1", b"", b"hello", b"again"],
    );
    assert_eq!(sent, vec![reply_to(b"C1", b"echo", &[b"hello", b"again"])]);
    assert_eq!(broker.is_idle(b"W1"), Some(true));
    assert_eq!(broker.stats().replies_forwarded, 1);
    // Idle again: the next request goes straight to it.
    assert_eq!(
        broker.request(3, b"C2", b"echo", b"x"),
        vec![request_to(b"W1", b"C2", &[b"x"])]
    );
}

#[test]
fn client_identities_are_opaque_bytes() {
    let mut broker = Harness::new();
    let client: &[u8] = b"\x00\x80\xff\x00\x01";
    broker.ready(0, b"W1", b"echo");
    assert_eq!(
        broker.request(1, client, b"echo", b"x"),
        vec![request_to(b"W1", client, &[b"x"])]
    );
    assert_eq!(
        broker.reply(2, b"W1", client, b"y"),
        vec![reply_to(client, b"echo", &[b"y"])]
    );
}

// HEARTBEAT and expiry.

#[test]
fn a_worker_that_heartbeats_is_never_purged_idle_or_busy() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.ready(0, b"W2", b"echo");
    broker.request(0, b"C1", b"echo", b"x");
    assert_eq!(broker.is_idle(b"W1"), Some(false));
    for ms in (2500..=60_000).step_by(2500) {
        broker.heartbeat(ms - 1, b"W1");
        broker.heartbeat(ms - 1, b"W2");
        broker.tick(ms);
        assert_eq!(broker.broker.worker_count(), 2, "at {ms} ms");
    }
    assert_eq!(broker.stats().workers_purged, 0);
    assert_eq!(broker.is_idle(b"W1"), Some(false));
}

#[test]
fn a_silent_idle_worker_is_purged_after_interval_times_liveness() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    assert_eq!(broker.tick(2500), vec![heartbeat_to(b"W1")]);
    assert_eq!(broker.tick(5000), vec![heartbeat_to(b"W1")]);
    assert_eq!(broker.tick(7499), Vec::<Wire>::new());
    assert_eq!(broker.broker.worker_count(), 1);
    // Purged without a word: spec 7 says to stop sending to a peer considered disconnected.
    assert_eq!(broker.tick(7500), Vec::<Wire>::new());
    assert_eq!(broker.broker.worker_count(), 0);
    assert_eq!(broker.broker.service_count(), 0);
    assert_eq!(broker.stats().workers_purged, 1);
    assert_eq!(broker.tick(10_000), Vec::<Wire>::new());
}

#[test]
fn expiry_follows_the_configured_interval_and_liveness() {
    let mut broker = Harness::with(config(|c| {
        c.heartbeat_interval = Duration::from_millis(1000);
        c.liveness = 5;
    }));
    broker.ready(0, b"W1", b"echo");
    broker.tick(4999);
    assert_eq!(broker.broker.worker_count(), 1);
    broker.tick(5000);
    assert_eq!(broker.broker.worker_count(), 0);
}

#[test]
fn a_silent_busy_worker_is_purged_too_and_its_request_is_lost() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.request(0, b"C1", b"echo", b"x");
    assert_eq!(broker.is_idle(b"W1"), Some(false));
    broker.tick(7499);
    assert_eq!(broker.broker.worker_count(), 1);
    assert_eq!(broker.tick(7500), Vec::<Wire>::new());
    assert_eq!(broker.broker.worker_count(), 0);
    assert_eq!(broker.broker.service_count(), 0);
    assert_eq!(broker.stats().workers_purged, 1);
    assert_eq!(broker.stats().requests_lost_with_worker, 1);
    // A late reply from the purged worker finds it unknown: DISCONNECT, and the client gets nothing.
    assert_eq!(
        broker.reply(7600, b"W1", b"C1", b"late"),
        vec![disconnect_to(b"W1")]
    );
}

#[test]
fn any_command_from_a_worker_refreshes_its_expiry() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.request(1000, b"C1", b"echo", b"x");
    broker.reply(5000, b"W1", b"C1", b"y");
    broker.tick(7500);
    assert_eq!(broker.broker.worker_count(), 1, "the REPLY at 5000 counts");
    broker.tick(12_499);
    assert_eq!(broker.broker.worker_count(), 1);
    broker.tick(12_500);
    assert_eq!(broker.broker.worker_count(), 0);
}

#[test]
fn the_broker_heartbeats_every_worker_idle_or_busy_every_interval() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.ready(0, b"W2", b"echo");
    broker.request(0, b"C1", b"echo", b"x");
    assert_eq!(broker.is_idle(b"W1"), Some(false));
    assert_eq!(broker.is_idle(b"W2"), Some(true));
    assert_eq!(broker.tick(2499), Vec::<Wire>::new());
    let both = vec![heartbeat_to(b"W1"), heartbeat_to(b"W2")];
    assert_eq!(sorted(broker.tick(2500)), both);
    assert_eq!(broker.tick(2600), Vec::<Wire>::new(), "once per interval");
    broker.heartbeat(4000, b"W1");
    broker.heartbeat(4000, b"W2");
    assert_eq!(sorted(broker.tick(5000)), both);
    // A client never gets a heartbeat.
    assert!(broker.tick(7500).iter().all(|message| message[0] != b"C1"));
}

#[test]
fn next_deadline_is_the_next_heartbeat_or_the_earliest_expiry() {
    let mut broker = Harness::with(config(|c| {
        c.heartbeat_interval = Duration::from_millis(1000);
        c.liveness = 1;
    }));
    assert_eq!(broker.broker.next_deadline(), broker.at(1000));
    broker.ready(300, b"W1", b"echo");
    assert_eq!(broker.broker.next_deadline(), broker.at(1000));
    assert_eq!(broker.tick(1000), vec![heartbeat_to(b"W1")]);
    // W1 expires at 1300, before the next heartbeat at 2000.
    assert_eq!(broker.broker.next_deadline(), broker.at(1300));
    broker.tick(1300);
    assert_eq!(broker.broker.worker_count(), 0);
    assert_eq!(broker.broker.next_deadline(), broker.at(2000));
}

// DISCONNECT.

#[test]
fn disconnect_removes_the_worker_and_nothing_more_is_sent_to_it() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    assert_eq!(broker.disconnect(100, b"W1"), Vec::<Wire>::new());
    assert_eq!(broker.broker.worker_count(), 0);
    assert_eq!(broker.broker.service_count(), 0);
    assert_eq!(broker.tick(2500), Vec::<Wire>::new(), "no heartbeat");
    assert_eq!(
        broker.request(2600, b"C1", b"echo", b"x"),
        Vec::<Wire>::new()
    );
    assert_eq!(broker.broker.queued_requests(), 1);
}

#[test]
fn disconnect_from_a_busy_worker_loses_its_request_without_redelivery() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.ready(0, b"W2", b"echo");
    broker.request(1, b"C1", b"echo", b"x");
    assert_eq!(broker.disconnect(2, b"W1"), Vec::<Wire>::new());
    assert_eq!(broker.stats().requests_lost_with_worker, 1);
    assert_eq!(broker.is_idle(b"W2"), Some(true));
}

#[test]
fn disconnect_from_an_unknown_peer_is_ignored() {
    let mut broker = Harness::new();
    // Spec 7: a worker MAY send DISCONNECT at any time, including before READY.
    assert_eq!(broker.disconnect(0, b"W1"), Vec::<Wire>::new());
    assert_eq!(broker.broker.worker_count(), 0);
    assert_eq!(broker.stats().workers_disconnected, 0);
}

#[test]
fn a_disconnected_worker_may_register_again() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.disconnect(1, b"W1");
    broker.request(2, b"C1", b"echo", b"x");
    assert_eq!(
        broker.ready(3, b"W1", b"time"),
        Vec::<Wire>::new(),
        "a different service now"
    );
    assert_eq!(
        broker.ready(4, b"W2", b"echo"),
        vec![request_to(b"W2", b"C1", &[b"x"])]
    );
}

// Protocol errors: DISCONNECT, and the worker is forgotten.

#[test]
fn ready_twice_gets_disconnect_and_the_worker_is_forgotten() {
    for second in [&b"echo"[..], b"time"] {
        let mut broker = Harness::new();
        broker.ready(0, b"W1", b"echo");
        assert_eq!(broker.ready(1, b"W1", second), vec![disconnect_to(b"W1")]);
        assert_eq!(broker.broker.worker_count(), 0);
        assert_eq!(broker.broker.service_count(), 0);
        assert_eq!(broker.stats().workers_disconnected, 1);
        assert_eq!(broker.tick(2500), Vec::<Wire>::new());
    }
}

#[test]
fn ready_for_a_reserved_mmi_name_gets_disconnect_and_creates_no_service() {
    let mut broker = Harness::new();
    for name in [&b"mmi.service"[..], b"mmi.echo", b"mmi."] {
        assert_eq!(broker.ready(0, b"W1", name), vec![disconnect_to(b"W1")]);
        assert_eq!(broker.broker.worker_count(), 0);
        assert_eq!(broker.broker.service_count(), 0);
    }
    // The broker still answers mmi.service itself.
    assert_eq!(
        broker.request(1, b"C1", b"mmi.service", b"mmi.service"),
        vec![reply_to(b"C1", b"mmi.service", &[b"404"])]
    );
}

#[test]
fn reply_or_heartbeat_from_an_unknown_peer_gets_disconnect() {
    let mut broker = Harness::new();
    assert_eq!(broker.heartbeat(0, b"W1"), vec![disconnect_to(b"W1")]);
    assert_eq!(
        broker.reply(0, b"W2", b"C1", b"x"),
        vec![disconnect_to(b"W2")]
    );
    assert_eq!(broker.broker.worker_count(), 0);
    assert_eq!(broker.broker.service_count(), 0);
    assert_eq!(broker.stats().replies_forwarded, 0);
}

#[test]
fn reply_while_idle_gets_disconnect_and_the_worker_is_forgotten() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    assert_eq!(
        broker.reply(1, b"W1", b"C1", b"x"),
        vec![disconnect_to(b"W1")]
    );
    assert_eq!(broker.broker.worker_count(), 0);
    assert_eq!(broker.broker.service_count(), 0);
    assert_eq!(broker.stats().replies_forwarded, 0);
}

#[test]
fn a_second_reply_to_the_same_request_gets_disconnect() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.request(1, b"C1", b"echo", b"x");
    broker.reply(2, b"W1", b"C1", b"y");
    assert_eq!(
        broker.reply(3, b"W1", b"C1", b"y"),
        vec![disconnect_to(b"W1")]
    );
    assert_eq!(broker.stats().replies_forwarded, 1);
}

#[test]
fn reply_for_a_different_client_gets_disconnect_and_reaches_no_one() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.request(1, b"C1", b"echo", b"x");
    assert_eq!(
        broker.reply(2, b"W1", b"C2", b"y"),
        vec![disconnect_to(b"W1")]
    );
    assert_eq!(broker.broker.worker_count(), 0);
    assert_eq!(broker.stats().replies_forwarded, 0);
    assert_eq!(broker.stats().requests_lost_with_worker, 1);
}

#[test]
fn a_request_command_sent_by_a_worker_gets_disconnect() {
    let mut broker = Harness::new();
    let worker_request: &[&[u8]] = &[b"", b"MDPW01", b"\x02", b"C1", b"", b"x"];
    broker.ready(0, b"W1", b"echo");
    assert_eq!(
        broker.send(1, b"W1", worker_request),
        vec![disconnect_to(b"W1")]
    );
    assert_eq!(broker.broker.worker_count(), 0);
    assert_eq!(broker.broker.service_count(), 0);
    // From a peer that never registered it is just as unexpected.
    assert_eq!(
        broker.send(2, b"X", worker_request),
        vec![disconnect_to(b"X")]
    );
}

#[test]
fn a_malformed_message_from_a_registered_worker_gets_disconnect_and_it_is_forgotten() {
    let malformed: &[&[&[u8]]] = &[
        &[b"", b"MDPW01", b"\x04", b"extra"],
        &[b"", b"MDPW01", b"\x09"],
        &[b"", b"MDPW01", b"\x03", b"C1", b"not empty", b"x"],
        &[b"", b"MDPW01", b"\x03", b"C1", b""],
        &[b"", b"MDPW01", b"\x01"],
        &[b"", b"MDPW02", b"\x04"],
        &[b"", b"MDPC01", b"echo"],
        &[b"MDPW01", b"\x04"],
        &[],
    ];
    for message in malformed {
        let mut broker = Harness::new();
        broker.ready(0, b"W1", b"echo");
        broker.request(1, b"C1", b"echo", b"x");
        assert_eq!(
            broker.send(2, b"W1", message),
            vec![disconnect_to(b"W1")],
            "{message:?}"
        );
        assert_eq!(broker.broker.worker_count(), 0, "{message:?}");
        assert_eq!(broker.broker.service_count(), 0, "{message:?}");
        assert_eq!(broker.stats().malformed_messages, 1);
        assert_eq!(broker.stats().requests_lost_with_worker, 1);
        assert_eq!(broker.tick(2500), Vec::<Wire>::new(), "{message:?}");
    }
}

#[test]
fn a_malformed_message_from_any_other_peer_is_dropped_and_changes_nothing() {
    let malformed: &[&[&[u8]]] = &[
        &[b"", b"MDPC01", b"echo"],
        &[b"", b"MDPC01", b"", b"x"],
        &[b"", b"MDPC02", b"echo", b"x"],
        &[b"", b"MDPW01", b"\x04", b"extra"],
        &[b"", b"MDPW01", b"\x00"],
        &[b"", b"MDPW01", b"\x01\x01"],
        &[b"", b"MDPW01", b"\x01", b"echo", b"extra"],
        &[b"x", b"MDPC01", b"echo", b"x"],
    ];
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.ready(0, b"W2", b"echo");
    broker.request(1, b"C1", b"echo", b"x");
    broker.request(1, b"C2", b"time", b"x");
    for (count, message) in malformed.iter().enumerate() {
        assert_eq!(
            broker.send(2, b"C1", message),
            Vec::<Wire>::new(),
            "{message:?}"
        );
        assert_eq!(broker.broker.worker_count(), 2);
        assert_eq!(broker.broker.service_count(), 2);
        assert_eq!(broker.broker.queued_requests(), 1);
        assert_eq!(broker.is_idle(b"W1"), Some(false));
        assert_eq!(broker.is_idle(b"W2"), Some(true));
        assert_eq!(broker.stats().malformed_messages, count as u64 + 1);
    }
    assert_eq!(broker.stats().requests_received, 2);
    assert_eq!(broker.stats().workers_disconnected, 0);
}

/// The eight malformed messages that each crash the Go or the C reference broker (issue 3), each
/// followed by a normal request that must still be served.
#[test]
fn the_eight_messages_that_crash_the_reference_brokers_are_dropped_and_service_goes_on() {
    let crashers: [(&str, &[&[u8]]); 8] = [
        ("empty message", &[]),
        ("no delimiter frame", &[b"MDPC01", b"echo", b"x"]),
        ("MDPC01 with no service", &[b"", b"MDPC01"]),
        ("MDPC01 with no body", &[b"", b"MDPC01", b"echo"]),
        (
            "mmi.service with no body",
            &[b"", b"MDPC01", b"mmi.service"],
        ),
        ("MDPW01 with no command", &[b"", b"MDPW01"]),
        ("READY with no service", &[b"", b"MDPW01", b"\x01"]),
        ("REPLY with no client envelope", &[b"", b"MDPW01", b"\x03"]),
    ];
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    for (ms, (what, message)) in (1..).zip(crashers) {
        assert_eq!(broker.send(ms, b"X", message), Vec::<Wire>::new(), "{what}");
        assert_eq!(
            broker.request(ms, b"C1", b"echo", what.as_bytes()),
            vec![request_to(b"W1", b"C1", &[what.as_bytes()])],
            "after {what}"
        );
        assert_eq!(
            broker.reply(ms, b"W1", b"C1", b"ok"),
            vec![reply_to(b"C1", b"echo", &[b"ok"])],
            "after {what}"
        );
    }
    assert_eq!(broker.stats().malformed_messages, 8);
    assert_eq!(broker.stats().replies_forwarded, 8);
}

// MMI (spec 8).

#[test]
fn mmi_service_answers_200_while_every_worker_of_the_service_is_busy() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.request(1, b"C1", b"echo", b"x");
    assert_eq!(broker.is_idle(b"W1"), Some(false));
    assert_eq!(
        broker.request(2, b"C2", b"mmi.service", b"echo"),
        vec![reply_to(b"C2", b"mmi.service", &[b"200"])]
    );
}

#[test]
fn mmi_service_answers_404_for_a_service_without_workers() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    // A service that only has waiting requests has no worker.
    broker.request(0, b"C1", b"time", b"x");
    for asked in [&b"time"[..], b"nothing", b"", b"mmi.service", b"ECHO"] {
        assert_eq!(
            broker.request(1, b"C2", b"mmi.service", asked),
            vec![reply_to(b"C2", b"mmi.service", &[b"404"])],
            "{asked:?}"
        );
    }
    assert_eq!(broker.stats().mmi_answered, 5);
}

#[test]
fn other_mmi_names_answer_501() {
    let mut broker = Harness::new();
    for name in [&b"mmi.echo"[..], b"mmi.", b"mmi.services"] {
        assert_eq!(
            broker.request(0, b"C1", name, b"echo"),
            vec![reply_to(b"C1", name, &[b"501"])]
        );
    }
}

#[test]
fn mmi_requests_never_create_a_service() {
    let mut broker = Harness::new();
    broker.request(0, b"C1", b"mmi.service", b"echo");
    broker.request(0, b"C1", b"mmi.nothing", b"echo");
    broker.send(0, b"C1", &[b"", b"MDPC01", b"mmi.service", b"a", b"b"]);
    assert_eq!(broker.broker.service_count(), 0);
    assert_eq!(broker.broker.queued_requests(), 0);
    assert_eq!(broker.stats().mmi_answered, 3);
    // Asking about a service does not create it either.
    assert_eq!(
        broker.request(1, b"C1", b"mmi.service", b"echo"),
        vec![reply_to(b"C1", b"mmi.service", &[b"404"])]
    );
    assert_eq!(broker.broker.service_count(), 0);
}

// Bounded memory: queue limits, TTL, forgetting services.

#[test]
fn the_per_service_queue_limit_refuses_requests_and_counts_them() {
    let mut broker = Harness::with(config(|c| c.max_queue = 2));
    broker.request(0, b"C1", b"echo", b"1");
    broker.request(0, b"C2", b"echo", b"2");
    assert_eq!(broker.request(0, b"C3", b"echo", b"3"), Vec::<Wire>::new());
    assert_eq!(broker.broker.queued_requests(), 2);
    assert_eq!(broker.stats().requests_refused_queue_full, 1);
    // Another service has its own room.
    broker.request(0, b"C3", b"time", b"3");
    assert_eq!(broker.broker.queued_requests(), 3);
    // The two that waited are served in order; the refused one never is.
    assert_eq!(
        broker.ready(1, b"W1", b"echo"),
        vec![request_to(b"W1", b"C1", &[b"1"])]
    );
    assert_eq!(
        broker.reply(2, b"W1", b"C1", b"ok")[0],
        request_to(b"W1", b"C2", &[b"2"])
    );
    assert_eq!(broker.reply(3, b"W1", b"C2", b"ok").len(), 1);
}

#[test]
fn the_total_queue_limit_refuses_requests_and_counts_them() {
    let mut broker = Harness::with(config(|c| c.max_queued_total = 3));
    broker.request(0, b"C1", b"a", b"x");
    broker.request(0, b"C1", b"b", b"x");
    broker.request(0, b"C1", b"b", b"x");
    assert_eq!(broker.request(0, b"C1", b"c", b"x"), Vec::<Wire>::new());
    assert_eq!(broker.request(0, b"C1", b"a", b"x"), Vec::<Wire>::new());
    assert_eq!(broker.broker.queued_requests(), 3);
    assert_eq!(broker.stats().requests_refused_queue_full, 2);
    // The refused request for "c" left no service behind.
    assert_eq!(broker.broker.service_count(), 2);
}

#[test]
fn full_queues_do_not_refuse_a_request_that_an_idle_worker_takes_at_once() {
    // Requests flooding a service nobody serves fill the total limit; a service with an idle
    // worker must still be served, since its requests do not wait.
    let mut broker = Harness::with(config(|c| c.max_queued_total = 2));
    broker.request(0, b"C1", b"absent", b"x");
    broker.request(0, b"C1", b"absent", b"x");
    broker.ready(1, b"W1", b"echo");
    assert_eq!(
        broker.request(2, b"C2", b"echo", b"y"),
        vec![request_to(b"W1", b"C2", &[b"y"])]
    );
    assert_eq!(broker.stats().requests_refused_queue_full, 0);
    // With W1 busy, the next one would wait, and there is no room.
    assert_eq!(broker.request(3, b"C2", b"echo", b"z"), Vec::<Wire>::new());
    assert_eq!(broker.stats().requests_refused_queue_full, 1);

    // The same with a per-service limit of 0: nothing ever waits, idle workers still serve.
    let mut broker = Harness::with(config(|c| c.max_queue = 0));
    assert_eq!(broker.request(0, b"C1", b"echo", b"x"), Vec::<Wire>::new());
    assert_eq!(broker.broker.service_count(), 0);
    broker.ready(1, b"W1", b"echo");
    assert_eq!(
        broker.request(2, b"C1", b"echo", b"y"),
        vec![request_to(b"W1", b"C1", &[b"y"])]
    );
    assert_eq!(broker.stats().requests_refused_queue_full, 1);
}

#[test]
fn requests_that_waited_longer_than_their_ttl_are_dropped() {
    let mut broker = Harness::with(config(|c| c.request_ttl = Duration::from_millis(5000)));
    broker.request(0, b"C1", b"echo", b"old");
    broker.request(3000, b"C2", b"echo", b"newer");
    broker.tick(2500);
    assert_eq!(broker.broker.queued_requests(), 2);
    broker.tick(5000);
    assert_eq!(broker.broker.queued_requests(), 1);
    assert_eq!(broker.stats().requests_expired, 1);
    assert_eq!(broker.broker.service_count(), 1);
    // The one left is the newer one.
    assert_eq!(
        broker.ready(6000, b"W1", b"echo"),
        vec![request_to(b"W1", b"C2", &[b"newer"])]
    );

    let mut broker = Harness::with(config(|c| c.request_ttl = Duration::from_millis(5000)));
    broker.request(0, b"C1", b"echo", b"x");
    broker.tick(5000);
    assert_eq!(broker.broker.queued_requests(), 0);
    assert_eq!(
        broker.broker.service_count(),
        0,
        "nothing left of the service"
    );
    assert_eq!(broker.ready(5001, b"W1", b"echo"), Vec::<Wire>::new());
}

#[test]
fn request_expiry_is_checked_once_per_heartbeat_interval() {
    // The purge that drops old requests runs with the heartbeat, so a request may outlive its TTL
    // by up to one interval; the loop is never woken for one request's expiry.
    let mut broker = Harness::with(config(|c| c.request_ttl = Duration::from_millis(5000)));
    broker.request(0, b"C1", b"echo", b"x");
    broker.tick(4999);
    assert_eq!(broker.broker.next_deadline(), broker.at(7499));
    broker.tick(5000);
    assert_eq!(broker.broker.queued_requests(), 1);
    broker.tick(7499);
    assert_eq!(broker.broker.queued_requests(), 0);
    assert_eq!(broker.stats().requests_expired, 1);
}

#[test]
fn a_service_with_no_workers_and_no_requests_is_forgotten() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.request(1, b"C1", b"echo", b"x");
    broker.reply(2, b"W1", b"C1", b"y");
    assert_eq!(broker.broker.service_count(), 1);
    broker.disconnect(3, b"W1");
    assert_eq!(broker.broker.service_count(), 0);

    // Many services, each used once, leave nothing behind once their requests expired.
    for index in 0..1000u32 {
        broker.request(10, b"C1", &index.to_be_bytes(), b"x");
    }
    assert_eq!(broker.broker.service_count(), 1000);
    broker.tick(60_010);
    assert_eq!(broker.broker.service_count(), 0);
    assert_eq!(broker.broker.queued_requests(), 0);
    assert_eq!(broker.stats().requests_expired, 1000);
}

// Redelivery of a dead worker's request.

#[test]
fn with_redelivery_a_dead_busy_workers_request_goes_to_another_worker_only_once() {
    let mut broker = Harness::with(config(|c| c.redeliver = true));
    broker.ready(0, b"W1", b"echo");
    broker.ready(0, b"W2", b"echo");
    broker.request(0, b"C1", b"echo", b"x");
    assert_eq!(broker.is_idle(b"W1"), Some(false));
    // W2 heartbeats, W1 falls silent and is purged: its request goes to W2.
    broker.heartbeat(7000, b"W2");
    let sent = broker.tick(7500);
    assert_eq!(
        without_heartbeats(sent),
        vec![request_to(b"W2", b"C1", &[b"x"])]
    );
    assert_eq!(broker.stats().requests_redelivered, 1);
    assert_eq!(broker.broker.worker_count(), 1);
    // W2 dies with it too: it is not redelivered a second time.
    broker.ready(8000, b"W3", b"echo");
    broker.disconnect(8000, b"W2");
    assert_eq!(broker.stats().requests_lost_with_worker, 1);
    assert_eq!(broker.stats().requests_redelivered, 1);
    assert_eq!(broker.is_idle(b"W3"), Some(true));
    assert_eq!(broker.broker.queued_requests(), 0);
}

#[test]
fn with_redelivery_the_request_waits_for_a_worker_if_none_is_idle() {
    let mut broker = Harness::with(config(|c| c.redeliver = true));
    broker.ready(0, b"W1", b"echo");
    broker.request(0, b"C1", b"echo", b"x");
    assert_eq!(broker.undeliverable(b"W1"), Vec::<Wire>::new());
    assert_eq!(broker.broker.queued_requests(), 1);
    assert_eq!(broker.broker.service_count(), 1);
    assert_eq!(
        broker.ready(1, b"W2", b"echo"),
        vec![request_to(b"W2", b"C1", &[b"x"])]
    );
}

#[test]
fn without_redelivery_a_dead_busy_workers_request_is_counted_lost() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.ready(0, b"W2", b"echo");
    broker.request(0, b"C1", b"echo", b"x");
    broker.heartbeat(7000, b"W2");
    assert_eq!(without_heartbeats(broker.tick(7500)), Vec::<Wire>::new());
    assert_eq!(broker.stats().requests_lost_with_worker, 1);
    assert_eq!(broker.stats().requests_redelivered, 0);
    assert_eq!(broker.is_idle(b"W2"), Some(true));
}

#[test]
fn a_redelivered_request_keeps_to_the_queue_limits() {
    // W1 holds a request while another waits: the total limit (1) is reached when W1 dies.
    let mut broker = Harness::with(config(|c| {
        c.redeliver = true;
        c.max_queued_total = 1;
    }));
    broker.ready(0, b"W1", b"echo");
    broker.request(0, b"C1", b"echo", b"held");
    broker.request(0, b"C2", b"other", b"waiting");
    assert_eq!(broker.broker.queued_requests(), 1);
    broker.undeliverable(b"W1");
    assert_eq!(broker.broker.queued_requests(), 1);
    assert_eq!(broker.stats().requests_lost_with_worker, 1);
    assert_eq!(broker.stats().requests_redelivered, 0);

    // The same for the per-service limit.
    let mut broker = Harness::with(config(|c| {
        c.redeliver = true;
        c.max_queue = 1;
    }));
    broker.ready(0, b"W1", b"echo");
    broker.request(0, b"C1", b"echo", b"held");
    broker.request(0, b"C2", b"echo", b"waiting");
    broker.undeliverable(b"W1");
    assert_eq!(broker.broker.queued_requests(), 1);
    assert_eq!(broker.stats().requests_lost_with_worker, 1);
}

#[test]
fn a_redelivered_request_never_goes_to_a_worker_purged_in_the_same_tick() {
    // W1 is busy, W2..W6 idle, all silent: one tick purges them all. W1's request must not be
    // sent to one of the others just before it, too, is purged; it waits for a live worker.
    let mut broker = Harness::with(config(|c| c.redeliver = true));
    broker.ready(0, b"W1", b"echo");
    for worker in [b"W2", b"W3", b"W4", b"W5", b"W6"] {
        broker.ready(0, worker, b"echo");
    }
    broker.request(0, b"C1", b"echo", b"x");
    assert_eq!(broker.is_idle(b"W1"), Some(false));
    assert_eq!(broker.tick(7500), Vec::<Wire>::new());
    assert_eq!(broker.broker.worker_count(), 0);
    assert_eq!(broker.broker.queued_requests(), 1);
    assert_eq!(broker.stats().requests_lost_with_worker, 0);
    assert_eq!(
        broker.ready(7600, b"W7", b"echo"),
        vec![request_to(b"W7", b"C1", &[b"x"])]
    );
}

// Undeliverable messages and shutdown.

#[test]
fn an_undeliverable_worker_is_forgotten_without_a_disconnect() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.ready(0, b"W2", b"echo");
    assert_eq!(broker.undeliverable(b"W1"), Vec::<Wire>::new());
    assert_eq!(broker.broker.worker_count(), 1);
    assert_eq!(broker.is_idle(b"W1"), None);
    assert_eq!(broker.tick(2500), vec![heartbeat_to(b"W2")]);
    assert_eq!(
        broker.request(2600, b"C1", b"echo", b"x"),
        vec![request_to(b"W2", b"C1", &[b"x"])]
    );
}

#[test]
fn an_undeliverable_client_changes_nothing() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.request(0, b"C1", b"echo", b"x");
    assert_eq!(broker.undeliverable(b"C1"), Vec::<Wire>::new());
    assert_eq!(broker.undeliverable(b"nobody"), Vec::<Wire>::new());
    assert_eq!(broker.broker.worker_count(), 1);
    assert_eq!(broker.is_idle(b"W1"), Some(false));
}

#[test]
fn shutdown_sends_disconnect_to_every_worker_and_forgets_everything() {
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.ready(0, b"W2", b"time");
    broker.request(0, b"C1", b"echo", b"x");
    broker.request(0, b"C1", b"absent", b"x");
    assert_eq!(
        sorted(broker.shutdown()),
        vec![disconnect_to(b"W1"), disconnect_to(b"W2")]
    );
    assert_eq!(broker.broker.worker_count(), 0);
    assert_eq!(broker.broker.service_count(), 0);
    assert_eq!(broker.broker.queued_requests(), 0);
    assert_eq!(broker.tick(2500), Vec::<Wire>::new());
}

// The lazy idle list.

#[test]
fn workers_that_leave_while_idle_are_skipped_and_their_entries_swept() {
    let mut broker = Harness::new();
    let workers: Vec<Vec<u8>> = (0..10u8).map(|index| vec![b'W', index]).collect();
    for worker in &workers {
        broker.ready(0, worker, b"echo");
    }
    // Six leave while idle, in three different ways.
    for worker in &workers[..2] {
        broker.disconnect(1, worker);
    }
    for worker in &workers[2..4] {
        broker.undeliverable(worker);
    }
    for worker in &workers[4..6] {
        broker.heartbeat(1, worker);
        broker.ready(1, worker, b"echo");
    }
    assert_eq!(broker.broker.worker_count(), 4);
    let service = &broker.broker.services[&ServiceName::new(b"echo").unwrap()];
    assert!(service.idle_entries().count() < 10, "dead entries swept");
    // The four left are used least recently used first.
    for worker in &workers[6..] {
        assert_eq!(broker.request(2, b"C1", b"echo", b"x")[0][0], *worker);
    }
    assert!(broker.request(3, b"C1", b"echo", b"x").is_empty());
}

#[test]
fn a_request_refused_by_a_gone_idle_worker_goes_to_the_next_one_even_without_redelivery() {
    // W1 died while idle: the broker has not noticed, and dispatches to it (LRU) first.
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.ready(0, b"W2", b"echo");
    let dispatched = broker.request(1, b"C1", b"echo", b"x");
    assert_eq!(dispatched, vec![request_to(b"W1", b"C1", &[b"x"])]);
    // The ROUTER refuses it whole: it never left, so W2 gets it and nothing is lost.
    assert_eq!(
        broker.refused(&dispatched[0]),
        vec![request_to(b"W2", b"C1", &[b"x"])]
    );
    assert_eq!(broker.broker.worker_count(), 1);
    assert_eq!(broker.stats().requests_lost_with_worker, 0);
    assert_eq!(broker.stats().requests_redelivered, 0);
    assert_eq!(
        broker.stats().requests_dispatched,
        1,
        "the refused dispatch is not counted"
    );
    assert_eq!(
        broker.reply(2, b"W2", b"C1", b"x"),
        vec![reply_to(b"C1", b"echo", &[b"x"])]
    );
}

#[test]
fn a_refused_request_waits_for_a_worker_and_keeps_its_one_redelivery() {
    let mut broker = Harness::with(config(|c| c.redeliver = true));
    broker.ready(0, b"W1", b"echo");
    let dispatched = broker.request(0, b"C1", b"echo", b"x");
    // No other worker: it waits at the front of the queue.
    assert_eq!(broker.refused(&dispatched[0]), Vec::<Wire>::new());
    assert_eq!(broker.broker.queued_requests(), 1);
    assert_eq!(
        broker.ready(1, b"W2", b"echo"),
        vec![request_to(b"W2", b"C1", &[b"x"])]
    );
    // W2 dies holding it (it was sent): the one redelivery is still there, W3 gets it.
    broker.ready(1, b"W3", b"echo");
    assert_eq!(
        broker.undeliverable(b"W2"),
        vec![request_to(b"W3", b"C1", &[b"x"])]
    );
    assert_eq!(broker.stats().requests_redelivered, 1);
    assert_eq!(broker.stats().requests_lost_with_worker, 0);
}

#[test]
fn a_refused_heartbeat_is_no_proof_the_held_request_did_not_arrive() {
    // W1 got the request, then a heartbeat to it bounced: the request may have run, so without
    // redelivery it is lost, as with any undeliverable message.
    let mut broker = Harness::new();
    broker.ready(0, b"W1", b"echo");
    broker.ready(0, b"W2", b"echo");
    broker.request(1, b"C1", b"echo", b"x");
    assert_eq!(broker.refused(&heartbeat_to(b"W1")), Vec::<Wire>::new());
    assert_eq!(broker.stats().requests_lost_with_worker, 1);
    assert_eq!(broker.broker.worker_count(), 1);
    // A refused message for a peer that is not a worker (a client's reply) changes nothing.
    assert_eq!(
        broker.refused(&reply_to(b"C9", b"echo", &[b"y"])),
        Vec::<Wire>::new()
    );
    assert_eq!(broker.broker.worker_count(), 1);
}

// Bytes, fair shares, absent services (issue 11 item 5).

#[test]
fn a_request_is_counted_as_its_bytes_plus_fixed_overheads() {
    let body = [zmq::Message::from(&b"abc"[..]), zmq::Message::new()];
    assert_eq!(
        request_cost(b"C1", &body),
        REQUEST_OVERHEAD + 2 + FRAME_OVERHEAD + 3 + FRAME_OVERHEAD
    );
    let mut broker = Harness::new();
    broker.request(0, b"C1", b"absent", b"abc");
    assert_eq!(
        broker.broker.queued_bytes(),
        REQUEST_OVERHEAD + 2 + FRAME_OVERHEAD + 3
    );
    // Dispatching gives the bytes back.
    broker.ready(1, b"W1", b"absent");
    assert_eq!(broker.broker.queued_bytes(), 0);
}

#[test]
fn the_byte_limit_refuses_what_would_pass_it_and_counts_it() {
    let one = request_cost(b"C1", &[zmq::Message::from(&[0u8; 100][..])]);
    // Room for three such requests in all; each client may hold half (one and a half of them).
    let mut broker = Harness::with(config(|c| c.max_queued_bytes = 3 * one));
    broker.request(0, b"C1", b"a", &[0; 100]);
    broker.request(0, b"C2", b"b", &[0; 100]);
    broker.request(0, b"C3", b"a", &[0; 100]);
    assert_eq!(broker.broker.queued_requests(), 3);
    assert_eq!(
        broker.request(0, b"C4", b"a", &[0; 100]),
        Vec::<Wire>::new()
    );
    assert_eq!(broker.stats().requests_refused_bytes, 1);
    assert_eq!(broker.broker.queued_bytes(), 3 * one);
    // A request an idle worker takes at once is never refused, whatever waits.
    broker.ready(1, b"W1", b"idle");
    assert_eq!(
        broker.request(2, b"C4", b"idle", &[0; 100]),
        vec![request_to(b"W1", b"C4", &[&[0; 100]])]
    );
}

#[test]
fn empty_frames_are_not_free() {
    let mut broker = Harness::with(config(|c| c.max_queued_bytes = 10_000));
    let mut parts: Vec<&[u8]> = vec![b"", b"MDPC01", b"absent"];
    parts.extend(std::iter::repeat_n(&b""[..], 1000));
    broker.send(0, b"C1", &parts);
    assert_eq!(broker.broker.queued_requests(), 0);
    assert_eq!(broker.stats().requests_refused_bytes, 1);
}

#[test]
fn one_connection_holds_at_most_half_the_bytes() {
    let one = request_cost(b"C1", &[zmq::Message::from(&[0u8; 100][..])]);
    let mut broker = Harness::with(config(|c| c.max_queued_bytes = 4 * one));
    broker.request(0, b"C1", b"a", &[0; 100]);
    broker.request(0, b"C1", b"b", &[0; 100]);
    assert_eq!(
        broker.request(0, b"C1", b"c", &[0; 100]),
        Vec::<Wire>::new()
    );
    assert_eq!(broker.stats().requests_refused_fair_share, 1);
    // Another connection has its own half.
    broker.request(0, b"C2", b"c", &[0; 100]);
    broker.request(0, b"C2", b"c", &[0; 100]);
    assert_eq!(broker.broker.queued_requests(), 4);
    // Once C1's requests are served, it has room again.
    broker.ready(1, b"W1", b"a");
    broker.request(2, b"C1", b"d", &[0; 100]);
    assert_eq!(broker.broker.queued_requests(), 4);
    assert_eq!(broker.stats().requests_refused(), 1);
}

#[test]
fn with_a_principal_the_share_is_the_principals_whatever_the_connection() {
    let mut broker = Harness::with(config(|c| c.max_queue = 4));
    let request: &[&[u8]] = &[b"", b"MDPC01", b"absent", b"x"];
    broker.send_as(0, b"SOCKET-1", "alice", request);
    broker.send_as(0, b"SOCKET-2", "alice", request);
    // A third socket does not buy alice more than half the queue.
    assert_eq!(
        broker.send_as(0, b"SOCKET-3", "alice", request),
        Vec::<Wire>::new()
    );
    assert_eq!(broker.stats().requests_refused_fair_share, 1);
    broker.send_as(0, b"SOCKET-4", "bob", request);
    assert_eq!(broker.broker.queued_requests(), 3);
    // Replies still go to each connection.
    assert_eq!(
        broker.ready(1, b"W1", b"absent"),
        vec![request_to(b"W1", b"SOCKET-1", &[b"x"])]
    );
}

#[test]
fn requests_for_absent_services_create_at_most_max_absent_services() {
    let mut broker = Harness::with(config(|c| c.max_absent_services = 2));
    broker.request(0, b"C1", b"made-up-1", b"x");
    broker.request(0, b"C1", b"made-up-2", b"x");
    assert_eq!(
        broker.request(0, b"C1", b"made-up-3", b"x"),
        Vec::<Wire>::new()
    );
    assert_eq!(broker.stats().requests_refused_services, 1);
    assert_eq!(broker.broker.service_count(), 2);
    // A service that exists takes more requests, and a service with a worker is not absent.
    broker.request(0, b"C1", b"made-up-1", b"y");
    broker.ready(1, b"W1", b"real");
    broker.request(2, b"C2", b"real", b"x");
    broker.request(2, b"C2", b"real", b"y");
    assert_eq!(broker.broker.queued_requests(), 4);
    // Once a worker serves made-up-2, it no longer counts: one more absent name fits.
    broker.ready(3, b"W2", b"made-up-2");
    broker.request(4, b"C1", b"made-up-3", b"x");
    assert_eq!(broker.broker.service_count(), 4);
    assert_eq!(broker.stats().requests_refused_services, 1);
}

// Authorization (issue 11 item 2): the principal ZAP gave decides.

fn rules() -> Access {
    use crate::access::{Grants, Pattern};
    let patterns = |list: &[&str]| -> Vec<Pattern> {
        list.iter()
            .map(|text| Pattern::parse(text).expect("a valid pattern"))
            .collect()
    };
    Access::new([
        (
            "alice".to_string(),
            Grants {
                serve: patterns(&["echo", "db.*"]),
                call: patterns(&["echo", "mmi.*"]),
            },
        ),
        (
            "bob".to_string(),
            Grants {
                serve: vec![],
                call: patterns(&["db.*"]),
            },
        ),
    ])
}

fn guarded() -> Harness {
    let t0 = Instant::now();
    Harness {
        broker: Broker::with_access(Config::default(), rules(), t0),
        t0,
    }
}

const READY_ECHO: &[&[u8]] = &[b"", b"MDPW01", b"\x01", b"echo"];

#[test]
fn a_worker_may_register_only_for_what_its_principal_may_serve() {
    let mut broker = guarded();
    assert_eq!(
        broker.send_as(0, b"W1", "alice", READY_ECHO),
        Vec::<Wire>::new()
    );
    assert!(broker.broker.has_worker(b"W1"));
    assert_eq!(
        broker.send_as(0, b"W2", "alice", &[b"", b"MDPW01", b"\x01", b"db.read"]),
        Vec::<Wire>::new()
    );
    // bob may call db.* but serve nothing; a peer without a principal may do nothing.
    assert_eq!(
        broker.send_as(0, b"W3", "bob", &[b"", b"MDPW01", b"\x01", b"db.read"]),
        vec![disconnect_to(b"W3")]
    );
    assert_eq!(broker.ready(0, b"W4", b"echo"), vec![disconnect_to(b"W4")]);
    assert_eq!(
        broker.send_as(0, b"W5", "mallory", READY_ECHO),
        vec![disconnect_to(b"W5")]
    );
    assert!(!broker.broker.has_worker(b"W3"));
    assert_eq!(broker.broker.worker_count(), 2);
    assert_eq!(broker.stats().workers_refused_unauthorized, 3);
    // The refused worker never gets a request: bob's request for db.read goes to W2.
    assert_eq!(
        broker.send_as(1, b"C1", "bob", &[b"", b"MDPC01", b"db.read", b"q"]),
        vec![request_to(b"W2", b"C1", &[b"q"])]
    );
}

#[test]
fn a_request_the_principal_may_not_call_is_dropped_and_reaches_no_worker() {
    let mut broker = guarded();
    broker.send_as(0, b"W1", "alice", READY_ECHO);
    let echo: &[&[u8]] = &[b"", b"MDPC01", b"echo", b"hi"];
    assert_eq!(broker.send_as(1, b"C1", "bob", echo), Vec::<Wire>::new());
    assert_eq!(broker.send(1, b"C2", echo), Vec::<Wire>::new());
    assert_eq!(broker.stats().requests_refused_unauthorized, 2);
    assert_eq!(broker.broker.queued_requests(), 0);
    assert_eq!(broker.is_idle(b"W1"), Some(true));
    assert_eq!(
        broker.send_as(2, b"C3", "alice", echo),
        vec![request_to(b"W1", b"C3", &[b"hi"])]
    );
}

#[test]
fn mmi_follows_call() {
    let mut broker = guarded();
    broker.send_as(0, b"W1", "alice", READY_ECHO);
    let mmi: &[&[u8]] = &[b"", b"MDPC01", b"mmi.service", b"echo"];
    assert_eq!(
        broker.send_as(1, b"C1", "alice", mmi),
        vec![reply_to(b"C1", b"mmi.service", &[b"200"])]
    );
    assert_eq!(broker.send_as(1, b"C2", "bob", mmi), Vec::<Wire>::new());
    assert_eq!(broker.stats().requests_refused_unauthorized, 1);
}

#[test]
fn new_rules_disconnect_the_workers_they_no_longer_allow() {
    use crate::access::{Grants, Pattern};
    let mut broker = guarded();
    broker.send_as(0, b"W1", "alice", READY_ECHO);
    broker.send_as(0, b"W2", "alice", &[b"", b"MDPW01", b"\x01", b"db.read"]);
    let narrower = Access::new([(
        "alice".to_string(),
        Grants {
            serve: vec![Pattern::parse("db.*").expect("valid")],
            call: vec![],
        },
    )]);
    let mut out = Vec::new();
    broker.broker.set_access(Some(narrower), &mut out);
    assert_eq!(broker.finish(out), vec![disconnect_to(b"W1")]);
    assert!(broker.broker.has_worker(b"W2"));
    assert!(!broker.broker.has_worker(b"W1"));
    // Without rules, everyone may do everything again.
    let mut out = Vec::new();
    broker.broker.set_access(None, &mut out);
    assert_eq!(broker.ready(1, b"W3", b"anything"), Vec::<Wire>::new());
}

// One-request-at-a-time clients (`mdp::tries`): resends and clients that are gone.

/// Socket `socket` of the one-request-at-a-time client numbered `client`.
fn try_socket(client: u64, socket: u32) -> Vec<u8> {
    mdp::tries::TryIdentity { client, socket }.encode()
}

#[test]
fn a_resend_from_a_newer_socket_supersedes_the_try_still_waiting() {
    let mut h = Harness::new();
    let (try1, try2, try3) = (try_socket(7, 1), try_socket(7, 2), try_socket(7, 3));
    assert!(h.request(0, &try1, b"late", b"order #1").is_empty());
    assert!(h.request(100, b"C", b"late", b"other").is_empty());
    assert!(h.request(2500, &try2, b"late", b"order #1").is_empty());
    assert!(h.request(5000, &try3, b"late", b"order #1").is_empty());
    // The worker comes: try 1 is dropped at the front, the other client's request goes first,
    // and try 2, at the front now, is dropped too.
    assert_eq!(
        h.ready(6000, b"W", b"late"),
        vec![request_to(b"W", b"C", &[b"other"])]
    );
    assert_eq!(h.stats().requests_superseded, 2);
    // Only the newest try runs.
    assert_eq!(
        h.reply(6100, b"W", b"C", b"done"),
        vec![
            request_to(b"W", &try3, &[b"order #1"]),
            reply_to(b"C", b"late", &[b"done"])
        ]
    );
    assert_eq!(h.stats().requests_superseded, 2);
    assert_eq!(h.stats().requests_dispatched, 2);
    assert_eq!(h.broker.queued_requests(), 0);
    assert_eq!(h.broker.queued_bytes(), 0);
}

#[test]
fn a_newer_socket_asking_another_service_supersedes_the_waiting_try_too() {
    let mut h = Harness::new();
    h.ready(0, b"E", b"echo");
    assert!(h
        .request(10, &try_socket(7, 1), b"late", b"order #1")
        .is_empty());
    // The client gave up on "late" and asked "echo" from its next socket; it is served at once.
    assert_eq!(
        h.request(20, &try_socket(7, 2), b"echo", b"hi"),
        vec![request_to(b"E", &try_socket(7, 2), &[b"hi"])]
    );
    assert!(h.ready(30, b"L", b"late").is_empty());
    assert_eq!(h.stats().requests_superseded, 1);
    assert_eq!(h.is_idle(b"L"), Some(true));
}

#[test]
fn other_clients_and_ordinary_peers_are_never_superseded() {
    let mut h = Harness::new();
    h.request(0, &try_socket(1, 1), b"late", b"a");
    h.request(1, &try_socket(2, 5), b"late", b"b");
    h.request(2, b"req:not-a-try", b"late", b"c");
    h.request(3, b"\0\x01\x02\x03\x04", b"late", b"d");
    h.request(4, b"\0\x01\x02\x03\x05", b"late", b"e");
    h.ready(10, b"W", b"late");
    for (client, body) in [
        (try_socket(2, 5), &b"b"[..]),
        (b"req:not-a-try".to_vec(), b"c"),
        (b"\0\x01\x02\x03\x04".to_vec(), b"d"),
        (b"\0\x01\x02\x03\x05".to_vec(), b"e"),
    ] {
        let previous = h.busy_client(b"W");
        assert_eq!(
            h.reply(20, b"W", &previous, b"ok")[0],
            request_to(b"W", &client, &[body])
        );
    }
    assert_eq!(h.stats().requests_superseded, 0);
    assert_eq!(h.stats().requests_dispatched, 5);
}

#[test]
fn a_request_from_a_try_socket_goes_out_only_if_its_client_is_still_there() {
    let mut h = Harness::new();
    h.ready(0, b"W1", b"echo");
    h.ready(1, b"W2", b"echo");
    let client = try_socket(9, 1);
    let out = h.request_checked(10, &client, b"echo", b"x");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, request_to(b"W1", &client, &[b"x"]));
    assert_eq!(out[0].1.as_deref(), Some(&client[..]));
    // An ordinary client's request needs no check.
    let out = h.request_checked(11, b"C", b"echo", b"y");
    assert_eq!(out, vec![(request_to(b"W2", b"C", &[b"y"]), None)]);
}

#[test]
fn a_request_whose_client_is_gone_is_dropped_and_its_worker_stays_first_in_line() {
    let mut h = Harness::new();
    h.ready(0, b"W1", b"echo");
    h.ready(1, b"W2", b"echo");
    let gone = try_socket(9, 3);
    let out = h.request_checked(10, &gone, b"echo", b"x");
    let (message, check) = &out[0];
    assert_eq!(check.as_deref(), Some(&gone[..]));
    // The driver's probe found the client gone: W1 never got the request, and is idle again,
    // still the least recently used.
    assert!(h.client_gone(message).is_empty());
    assert_eq!(h.is_idle(b"W1"), Some(true));
    assert_eq!(h.stats().requests_abandoned, 1);
    assert_eq!(h.stats().requests_dispatched, 0);
    assert_eq!(
        h.request(20, b"C", b"echo", b"y"),
        vec![request_to(b"W1", b"C", &[b"y"])]
    );
}

#[test]
fn a_worker_freed_by_a_gone_client_takes_the_next_waiting_request() {
    let mut h = Harness::new();
    let gone = try_socket(9, 1);
    h.request(0, &gone, b"echo", b"x");
    h.request(1, b"C", b"echo", b"y");
    let out = h.ready(10, b"W", b"echo");
    assert_eq!(out, vec![request_to(b"W", &gone, &[b"x"])]);
    assert_eq!(
        h.client_gone(&out[0]),
        vec![request_to(b"W", b"C", &[b"y"])]
    );
    assert_eq!(h.stats().requests_abandoned, 1);
    assert_eq!(h.stats().requests_dispatched, 1);
    // A stale report (the worker now holds another client's request) changes nothing.
    assert!(h.client_gone(&out[0]).is_empty());
    assert_eq!(h.stats().requests_abandoned, 1);
    assert_eq!(h.is_idle(b"W"), Some(false));
}
