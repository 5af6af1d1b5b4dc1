//! The simulation twins of the fault drills in `scripts/`: the same systems, loads and faults as
//! `worker-faults.sh`, `broker-restart.sh` and `soak.sh`, with the same checks, in virtual time
//! (a few seconds of real time where the scripts take minutes), each over several seeds. The
//! scripts stay as the end-to-end checks over real sockets and processes.
//!
//! Every run also keeps all the rules `sim::world` checks (every request answered or failed
//! exactly once, the right reply for the right request, queues within their limits, silent
//! workers purged in time, workers registered again after a broker restart).

use std::time::Duration;

use client::{AsyncClientConfig, ClientConfig, Matching};
use sim::scenario::{ClientMode, WorkerMode};
use sim::{FaultKind, ScriptedFault};
use sim::{Report, Scenario};
use worker::WorkerConfig;

/// Seeds per drill: `SIM_DRILL_SEEDS`, by default 2 (the soak runs one fewer), so that the
/// whole of `cargo test -p sim` stays near 20 s in a debug build on a 2-core machine.
fn seeds() -> u64 {
    std::env::var("SIM_DRILL_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2)
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Three echo workers behind a broker with the spec's timers; no clients, no faults yet.
fn three_workers() -> Scenario {
    Scenario {
        broker: broker::Config::default(),
        brokers: 1,
        worker: WorkerConfig::default(),
        workers: 3,
        worker_mode: WorkerMode::Placed,
        slots: 1,
        workers_start_at: Duration::ZERO,
        client_mode: ClientMode::Placed,
        services: 1,
        sync_clients: 0,
        sync: ClientConfig::default(),
        sync_requests: 0,
        async_clients: 0,
        async_config: AsyncClientConfig::default(),
        async_requests: 0,
        window: 1,
        service_time: (ms(0), ms(2)),
        think_time: Duration::ZERO,
        random_faults: None,
        scripted_faults: Vec::new(),
        net: sim::net::NetConfig::default(),
        issue_until: Duration::from_secs(3600),
        end_by: Duration::from_secs(3600),
        run_at_least: Duration::ZERO,
        check_sync_availability: false,
        given_up_runs_at_most_once: false,
    }
}

/// A worker killed every `every`, from `every` to `until`, each replaced after `down`.
fn kill_workers(every: Duration, until: Duration, down: Duration) -> Vec<ScriptedFault> {
    let mut faults = Vec::new();
    let mut at = every;
    let mut target = 0;
    while at < until {
        faults.push(ScriptedFault {
            at,
            kind: FaultKind::KillWorker,
            target,
            lasting: down,
        });
        target += 1;
        at += every;
    }
    faults
}

fn run(scenario: &Scenario, seed: u64) -> Report {
    let report = sim::run(scenario.clone(), seed);
    if let Some(violation) = &report.violation {
        panic!("seed {seed}: {violation}");
    }
    report
}

/// `scripts/worker-faults.sh`: an asynchronous client with 100 tagged requests in flight, one
/// resend, a 4 s timeout; a worker SIGKILLed every 3 s and replaced; once without and once with
/// the broker's redelivery. Checks: answered + failed = count (every request ended), no reply
/// counted twice, failed <= kills, lost or redelivered <= kills; and with redelivery, no more
/// failures or client resends than without.
#[test]
fn worker_faults_under_pipelined_tagged_load() {
    let count = 15_000;
    let mut scenario = three_workers();
    scenario.async_clients = 1;
    scenario.async_requests = count;
    scenario.window = 100;
    scenario.async_config = AsyncClientConfig {
        timeout: ms(4000),
        matching: Matching::ByTag,
        retries: 2,
    };
    scenario.scripted_faults = kill_workers(ms(3000), Duration::from_secs(3600), ms(100));
    for seed in 0..seeds() {
        let mut results = Vec::new();
        for redeliver in [false, true] {
            scenario.broker.redeliver = redeliver;
            let report = run(&scenario, seed);
            let failed = report.failed_requests(|_| true) as u64;
            let broker = &report.broker;
            let lost = broker.requests_lost_with_worker + broker.requests_redelivered;
            println!(
                "seed {seed} redeliver={redeliver}: {count} requests, failed {failed}, resends {}, \
                 kills {} ({} busy), lost {} redelivered {}",
                report.coverage.client_resends,
                report.kills,
                report.kills_of_busy_workers,
                broker.requests_lost_with_worker,
                broker.requests_redelivered
            );
            assert_eq!(report.ledger.requests.len() as u32, count);
            assert!(report.kills >= 2, "the load outlived too few kills");
            assert!(failed <= report.kills, "failed {failed} > kills");
            assert!(lost <= report.kills, "lost or redelivered {lost} > kills");
            if redeliver {
                assert_eq!(
                    broker.requests_lost_with_worker, 0,
                    "lost despite --redeliver"
                );
            }
            results.push((failed, report.coverage.client_resends));
        }
        let (without, with) = (results[0], results[1]);
        assert!(
            with.0 <= without.0,
            "more failures with redelivery: {with:?} {without:?}"
        );
        assert!(
            with.1 <= without.1,
            "more resends with redelivery: {with:?} {without:?}"
        );
    }
}

/// `scripts/broker-restart.sh`: two synchronous clients one request after the other (timeout
/// 1 s, ten sends at most) and an asynchronous client (100 tagged in flight, one send, timeout
/// 2 s); the broker SIGKILLed 2 s into the load and restarted 1 s later. Checks: the workers
/// register again by themselves within the bound (checked by the world); every synchronous
/// request succeeds, some thanks to resends, and they go on after the restart; the asynchronous
/// client ends with every request answered or failed, and some failed.
#[test]
fn broker_restart_under_load() {
    let mut scenario = three_workers();
    scenario.sync_clients = 2;
    scenario.sync_requests = 600;
    scenario.sync = ClientConfig {
        timeout: ms(1000),
        retries: 10,
    };
    scenario.async_clients = 1;
    scenario.async_requests = 8_000;
    scenario.window = 100;
    scenario.async_config = AsyncClientConfig {
        timeout: ms(2000),
        matching: Matching::ByTag,
        retries: 1,
    };
    scenario.scripted_faults = vec![ScriptedFault {
        at: ms(2000),
        kind: FaultKind::RestartBroker,
        target: 0,
        lasting: ms(1000),
    }];
    let is_sync = |client: usize| (4..6).contains(&client);
    for seed in 0..seeds() {
        let report = run(&scenario, seed);
        let sync_failed = report.failed_requests(is_sync);
        let async_failed = report.failed_requests(|client| client == 6);
        let after_restart = report
            .ledger
            .requests
            .iter()
            .filter(|request| is_sync(request.client) && request.issued_at > ms(3000))
            .count();
        println!(
            "seed {seed}: sync failed {sync_failed}, async failed {async_failed}, resends {}, \
             sync requests after the restart {after_restart}, re-registered within {:?}",
            report.coverage.client_resends, report.longest_reregistration
        );
        assert_eq!(report.coverage.fault_count(FaultKind::RestartBroker), 1);
        // A worker finds out when its next HEARTBEAT reaches the new broker, which answers
        // DISCONNECT; then it registers after its backoff: about one interval.
        assert!(
            report.longest_reregistration > Duration::ZERO
                && report.longest_reregistration <= ms(2500 + 500),
            "workers registered again after {:?}",
            report.longest_reregistration
        );
        assert_eq!(sync_failed, 0, "a synchronous request failed");
        assert!(report.coverage.client_resends > 0, "nothing was resent");
        assert!(
            after_restart > 0,
            "the synchronous load stopped at the restart"
        );
        assert!(
            async_failed > 0,
            "the asynchronous client lost nothing to the restart"
        );
    }
}

/// `scripts/soak.sh`: a long steady load (an asynchronous client, 50 tagged in flight, timeout
/// 4 s, one send; two synchronous clients, timeout 1 s, five sends) with a worker killed every
/// 10 s and replaced. Checks: the broker's memory stays bounded (waiting requests never more
/// than the clients keep in flight, registered workers never more than the live ones plus those
/// killed within one expiry), every request ended, no more asynchronous failures than kills,
/// and no synchronous failure.
#[test]
fn soak_with_worker_churn() {
    let mut scenario = three_workers();
    scenario.service_time = (ms(2), ms(20));
    scenario.async_clients = 1;
    scenario.async_requests = 12_000;
    scenario.window = 50;
    scenario.async_config = AsyncClientConfig {
        timeout: ms(4000),
        matching: Matching::ByTag,
        retries: 1,
    };
    scenario.sync_clients = 2;
    scenario.sync_requests = 1_000;
    scenario.think_time = ms(40);
    scenario.sync = ClientConfig {
        timeout: ms(1000),
        retries: 5,
    };
    scenario.scripted_faults = kill_workers(ms(10_000), Duration::from_secs(3600), ms(100));
    let is_sync = |client: usize| (4..6).contains(&client);
    for seed in 0..seeds().saturating_sub(1).max(1) {
        let report = run(&scenario, seed);
        let async_failed = report.failed_requests(|client| client == 6) as u64;
        let sync_failed = report.failed_requests(is_sync);
        let lost = report.broker.requests_lost_with_worker;
        println!(
            "seed {seed}: {:.0} s virtual, kills {}, async failed {async_failed}, sync failed \
             {sync_failed}, lost {lost}, peak waiting {}, peak workers {}",
            report.coverage.virtual_time.as_secs_f64(),
            report.kills,
            report.peak_queued,
            report.peak_workers
        );
        assert!(report.coverage.virtual_time > Duration::from_secs(40));
        assert!(report.kills >= 4, "too few kills for a soak");
        assert!(report.peak_queued <= 50 + 2, "waiting requests grew");
        assert!(report.peak_workers <= 3 + 1, "dead workers piled up");
        assert!(
            async_failed <= report.kills,
            "failed {async_failed} > kills"
        );
        assert!(lost <= report.kills, "lost {lost} > kills");
        assert_eq!(sync_failed, 0, "a synchronous request failed");
    }
}
