//! What a run is made of, but the seed: the system (how many workers and clients, the broker's
//! and the cores' settings, the load) and the faults, drawn at random or scripted at fixed times.
//! [`Scenario::random`] is the shape of the seeds test; the drills' twins build theirs by hand.

use std::time::Duration;

use client::{AsyncClientConfig, ClientConfig, Matching};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use worker::WorkerConfig;

use crate::net::NetConfig;

/// The kinds of fault, for the plan and the coverage report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// A worker is SIGKILLed and a new one started after a pause.
    KillWorker,
    /// A worker hangs for a while: it reads and sends nothing, its connection stays up.
    FreezeWorker,
    /// A process is cut off from the network, then healed.
    Partition,
    /// A process's traffic is held up (one message delayed, and what follows it).
    Delay,
    /// The broker is killed, and restarted with its state lost.
    RestartBroker,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::KillWorker,
        FaultKind::FreezeWorker,
        FaultKind::Partition,
        FaultKind::Delay,
        FaultKind::RestartBroker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillWorker => "worker killed",
            FaultKind::FreezeWorker => "worker frozen",
            FaultKind::Partition => "partition",
            FaultKind::Delay => "delay",
            FaultKind::RestartBroker => "broker restart",
        }
    }
}

/// Faults at random: from `start` to `until`, one every `mean_gap` on average, of the kinds
/// with a weight above 0.
#[derive(Debug, Clone)]
pub struct RandomFaults {
    pub start: Duration,
    pub until: Duration,
    pub mean_gap: Duration,
    pub weights: Vec<(FaultKind, u32)>,
}

/// One fault at a fixed time, for the drills' twins.
#[derive(Debug, Clone, Copy)]
pub struct ScriptedFault {
    pub at: Duration,
    pub kind: FaultKind,
    /// Which worker (modulo the count) for worker faults; ignored for the broker.
    pub target: usize,
    /// How long the worker or broker stays down, the freeze or partition lasts, or the delay is.
    pub lasting: Duration,
}

/// Everything a run is made of, but the seed.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub broker: broker::Config,
    pub worker: WorkerConfig,
    pub workers: usize,
    /// How many services the workers share out (1 or 2).
    pub services: usize,
    pub sync_clients: usize,
    pub sync: ClientConfig,
    /// Requests per synchronous client.
    pub sync_requests: u32,
    pub async_clients: usize,
    pub async_config: AsyncClientConfig,
    /// Requests per asynchronous client, and how many it keeps in flight.
    pub async_requests: u32,
    pub window: usize,
    /// A worker takes between `service_time.0` and `service_time.1` per request.
    pub service_time: (Duration, Duration),
    /// A synchronous client waits up to this long between two requests.
    pub think_time: Duration,
    pub random_faults: Option<RandomFaults>,
    pub scripted_faults: Vec<ScriptedFault>,
    pub net: NetConfig,
    /// No client issues a request after this.
    pub issue_until: Duration,
    /// The run stops here even if requests are still open (which is then a failure); long
    /// enough after `issue_until` for every client to give up on every try.
    pub end_by: Duration,
}

impl Scenario {
    /// A small system with every kind of fault: the shape of the seeds test.
    pub fn random(seed: u64) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5ce7_a210);
        let ms = Duration::from_millis;
        let interval = ms(rng.random_range(2..=10) * 100);
        let liveness = rng.random_range(2..=4);
        let tight_limits = rng.random_bool(0.3);
        let broker = broker::Config {
            heartbeat_interval: interval,
            liveness,
            max_queue: if tight_limits {
                rng.random_range(1..=6)
            } else {
                10_000
            },
            max_queued_total: if tight_limits {
                rng.random_range(1..=4)
            } else {
                1_000_000
            },
            request_ttl: ms(rng.random_range(5..=60) * 100),
            redeliver: rng.random_bool(0.5),
            ..broker::Config::default()
        };
        let worker = WorkerConfig {
            heartbeat_interval: interval,
            liveness,
            reconnect_initial: ms(100),
            reconnect_max: ms(rng.random_range(5..=20) * 100),
        };
        let timeout = ms(rng.random_range(5..=30) * 100);
        let workers = rng.random_range(1..=4);
        let matching = if rng.random_bool(0.7) {
            Matching::ByTag
        } else {
            Matching::ByService
        };
        Scenario {
            broker,
            worker,
            workers,
            // Every service has a worker, when none is down.
            services: rng.random_range(1..=2).min(workers),
            sync_clients: rng.random_range(0..=2),
            sync: ClientConfig {
                timeout,
                retries: rng.random_range(1..=4),
            },
            sync_requests: rng.random_range(5..=25),
            async_clients: rng.random_range(0..=2),
            async_config: AsyncClientConfig {
                timeout,
                matching,
                retries: rng.random_range(1..=3),
            },
            async_requests: rng.random_range(10..=60),
            window: rng.random_range(1..=10),
            service_time: (ms(0), ms(rng.random_range(1..=50))),
            think_time: ms(rng.random_range(0..=500)),
            random_faults: Some(RandomFaults {
                start: ms(200),
                until: ms(8_000),
                mean_gap: ms(rng.random_range(3..=15) * 100),
                weights: vec![
                    (FaultKind::KillWorker, 3),
                    (FaultKind::FreezeWorker, 2),
                    (FaultKind::Partition, 2),
                    (FaultKind::Delay, 2),
                    (FaultKind::RestartBroker, 1),
                ],
            }),
            scripted_faults: Vec::new(),
            net: NetConfig::default(),
            issue_until: Duration::from_secs(60),
            end_by: Duration::from_secs(60) + timeout * 4 + Duration::from_secs(20),
        }
    }
}
