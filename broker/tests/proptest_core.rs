//! Property test of the broker core: arbitrary sequences of messages, clock jumps, ticks,
//! undeliverable reports and shutdowns, with every rule of [`broker::testing::Driver`] checked
//! after each event (the core's own invariants, who may be sent what, that every message sent
//! parses back, that the counters add up, that memory stays bounded).
//!
//! Messages come from six peer identities and a handful of service names, so that a sequence
//! meets the same workers and services again and again. Most are well-formed MDP/0.1 messages:
//! clients send requests and MMI queries, workers mostly behave (READY once, the REPLY to the
//! request they hold, HEARTBEAT) so that requests make the whole trip, and sometimes send a
//! command out of turn. About one message in seven is mutated (a frame dropped, inserted,
//! replaced, the message cut short), and some are random frames. The configuration is random
//! too, with small queue limits and short timers so that the limits and expiries are reached
//! within sixty events.
//!
//! The same events and checks are run by the fuzz target `fuzz/fuzz_targets/broker_core.rs`,
//! which goes further in time; this test keeps to a few seconds so that it can run in CI.

use std::time::Duration;

use broker::testing::{Driver, Event, Mutation, Shape, PEERS, SERVICES};
use broker::Config;
use proptest::collection::vec;
use proptest::prelude::*;

fn config() -> impl Strategy<Value = Config> {
    (
        1u64..=20,
        1u32..=4,
        0usize..=4,
        0usize..=8,
        0u64..=100,
        any::<bool>(),
        // A byte limit of a few requests (each costs 256 bytes and more), or the default.
        prop_oneof![Just(Config::default().max_queued_bytes), 0usize..=2_000],
        prop_oneof![Just(Config::default().max_absent_services), 0usize..=3],
    )
        .prop_map(
            |(
                interval,
                liveness,
                max_queue,
                max_queued_total,
                ttl,
                redeliver,
                max_queued_bytes,
                max_absent_services,
            )| Config {
                heartbeat_interval: Duration::from_millis(interval * 100),
                liveness,
                max_queue,
                max_queued_total,
                max_queued_bytes,
                max_absent_services,
                request_ttl: Duration::from_millis(ttl * 100),
                redeliver,
            },
        )
}

/// Any of the six peers.
fn peer() -> impl Strategy<Value = u8> {
    0..PEERS.len() as u8
}

/// C1, C2 or the peer with a libzmq-style identity: the peers that mostly play clients.
fn client_peer() -> impl Strategy<Value = u8> {
    prop_oneof![3 => 0u8..2, 1 => Just(5)]
}

/// W1, W2 or W3: the peers that mostly play workers.
fn worker_peer() -> impl Strategy<Value = u8> {
    2u8..5
}

/// Mostly the two ordinary services, sometimes a reserved or invalid name.
fn service() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => 0u8..2,
        1 => 2..SERVICES.len() as u8,
    ]
}

/// A frame: empty, a header, a command byte, or a few random bytes.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        1 => Just(b"MDPC01".to_vec()),
        1 => Just(b"MDPW01".to_vec()),
        1 => (0u8..=6).prop_map(|byte| vec![byte]),
        1 => prop::sample::select(PEERS.to_vec()).prop_map(<[u8]>::to_vec),
        2 => vec(any::<u8>(), 0..8),
    ]
}

/// A body: usually one or two frames, sometimes none (which makes the message malformed).
fn body() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop_oneof![
        8 => vec(vec(any::<u8>(), 0..6), 1..3),
        1 => Just(Vec::new()),
    ]
}

/// A client's message, from a client.
fn client_send() -> impl Strategy<Value = (u8, Shape)> {
    let shape = prop_oneof![
        6 => (service(), body()).prop_map(|(service, body)| Shape::Request { service, body }),
        1 => any::<u8>().prop_map(|asked| Shape::MmiService { asked }),
    ];
    (client_peer(), shape)
}

/// A worker's message, from a worker: mostly what a well-behaved worker sends next, sometimes a
/// command out of turn.
fn worker_send() -> impl Strategy<Value = (u8, Shape)> {
    let shape = prop_oneof![
        8 => service().prop_map(|service| Shape::WorkerStep { service }),
        1 => service().prop_map(|service| Shape::Ready { service }),
        2 => body().prop_map(|body| Shape::ReplyToHeld { body }),
        1 => (peer(), body()).prop_map(|(client, body)| Shape::Reply { client, body }),
        2 => Just(Shape::Heartbeat),
        1 => Just(Shape::Disconnect),
    ];
    (worker_peer(), shape)
}

/// Anything from anyone: the roles mixed up, unknown commands, random frames.
fn any_send() -> impl Strategy<Value = (u8, Shape)> {
    let shape = prop_oneof![
        1 => (service(), body()).prop_map(|(service, body)| Shape::Request { service, body }),
        1 => service().prop_map(|service| Shape::Ready { service }),
        1 => (peer(), body()).prop_map(|(client, body)| Shape::Reply { client, body }),
        1 => Just(Shape::Heartbeat),
        1 => Just(Shape::Disconnect),
        1 => peer().prop_map(|client| Shape::WorkerRequest { client }),
        2 => (any::<u8>(), vec(frame(), 0..3))
            .prop_map(|(byte, rest)| Shape::Command { byte, rest }),
        2 => vec(frame(), 0..7).prop_map(Shape::Raw),
    ];
    (peer(), shape)
}

fn send() -> impl Strategy<Value = (u8, Shape)> {
    prop_oneof![6 => client_send(), 6 => worker_send(), 1 => any_send()]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        24 => Just(Mutation::Keep),
        1 => any::<u8>().prop_map(|at| Mutation::Drop { at }),
        1 => (any::<u8>(), frame()).prop_map(|(at, frame)| Mutation::Insert { at, frame }),
        1 => (any::<u8>(), frame()).prop_map(|(at, frame)| Mutation::Replace { at, frame }),
        1 => (0u8..8).prop_map(|len| Mutation::Truncate { len }),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        160 => (send(), mutation()).prop_map(|((from, shape), mutation)| Event::Send {
            from,
            shape,
            mutation
        }),
        30 => prop_oneof![0u16..500, 0u16..=u16::MAX].prop_map(|millis| Event::Advance { millis }),
        20 => Just(Event::Tick),
        30 => Just(Event::TickAtDeadline),
        10 => peer().prop_map(|peer| Event::Undeliverable { peer }),
        10 => peer().prop_map(|peer| Event::PeerGone { peer }),
        // Rare: it wipes out the state the other events build up.
        1 => Just(Event::Shutdown),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // A failure prints its minimal sequence; it is not saved, so no file appears in tests/.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever peers send and however time moves, the core keeps every rule the driver checks.
    #[test]
    fn core_keeps_its_rules_under_any_event_sequence(
        config in config(),
        events in vec(event(), 1..60),
    ) {
        Driver::run(config, &events);
    }

    /// The same with only well-formed messages, which get further into the request dialog
    /// (workers busy, replies, redelivery) than sequences where many messages are refused.
    #[test]
    fn core_keeps_its_rules_under_well_formed_traffic(
        config in config(),
        events in vec(
            prop_oneof![
                8 => prop_oneof![client_send(), worker_send()].prop_map(|(from, shape)| Event::Send {
                    from,
                    shape,
                    mutation: Mutation::Keep,
                }),
                1 => (0u16..3000).prop_map(|millis| Event::Advance { millis }),
                1 => Just(Event::TickAtDeadline),
                1 => peer().prop_map(|peer| Event::Undeliverable { peer }),
                1 => peer().prop_map(|peer| Event::PeerGone { peer }),
            ],
            1..60,
        ),
    ) {
        Driver::run(config, &events);
    }
}

/// The fuzz target's committed seeds, replayed through the same driver, so they stay meaningful
/// as the event format grows; the one about a worker that vanished while idle must get its
/// request to the other worker.
#[test]
fn committed_fuzz_seeds_keep_the_rules() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/broker_core");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&seeds).unwrap() {
        let path = entry.unwrap().path();
        let (config, events) = broker::testing::decode(&std::fs::read(&path).unwrap());
        let driver = Driver::run(config, &events);
        replayed += 1;
        if path.ends_with("peer-gone-idle-worker") {
            let stats = driver.broker().stats();
            assert_eq!(stats.requests_dispatched, 1, "{stats}");
            assert_eq!(stats.requests_lost_with_worker, 0, "{stats}");
            assert_eq!(
                driver.broker().worker_count(),
                1,
                "the gone worker is forgotten"
            );
        }
    }
    assert!(
        replayed >= 7,
        "only {replayed} seeds in {}",
        seeds.display()
    );
}
