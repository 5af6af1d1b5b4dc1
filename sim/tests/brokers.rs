//! Several brokers (issue 12 item 3), worker slots (issue 15 item 5), and a try the client gave
//! up on (issue 12 item 6), in the simulation: each scenario runs with 2 and with 3 brokers over
//! a few seeds, under load, with the broker faults scripted at fixed times, and every run keeps
//! all the rules `sim::world` checks: every request answered or failed exactly once and with a
//! reason (so the asynchronous client reports every request it could not get answered, and no
//! reply reaches the application twice), the right reply for the right request, queues within
//! their limits, silent workers purged in time, workers registered again after a restart; and,
//! with `check_sync_availability`, no synchronous request fails while a broker its client knows
//! and reaches is fit to serve it.
//!
//! Every scenario runs with the workers in both modes: all (`worker -c A -c B ...`, registered
//! with every broker) and failover (`--failover`, on one broker at a time; worker `n` is given the
//! brokers starting from `n % brokers`, so they start spread over the brokers). The clients know
//! every broker (`client -c A -c B ...`; client `n`'s list starts at broker `n % brokers`): the
//! synchronous client, with as many tries as brokers, must lose no request while one broker it
//! reaches is fit to serve (checked by the world on every seed, and asserted as "no synchronous
//! failure" where a broker always is).
//!
//! `SIM_BROKER_SEEDS=N` runs N seeds per scenario and system (default 1, which with 4 systems
//! makes 4 runs per scenario); `SIM_SEED=S` runs only seed S
//! (with `--nocapture`, each run prints its figures).

use std::time::Duration;

use client::{AsyncClientConfig, ClientConfig, Matching};
use sim::scenario::{ClientMode, WorkerMode};
use sim::{Coverage, FaultKind, Report, Scenario, ScriptedFault};
use worker::WorkerConfig;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("SIM_BROKER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    (0..count).collect()
}

/// Heartbeats every 500 ms, liveness 3, on both sides: a dead broker or worker is given up after
/// 1.5 s.
const INTERVAL: Duration = Duration::from_millis(500);

/// `brokers` brokers, two echo workers for each (in `mode`, 5-15 ms a request), one synchronous
/// client for each broker (timeout 1 s, as many tries as brokers, 250 requests, up to 40 ms
/// apart) and one asynchronous client (2,500 tagged requests, 5 in flight, timeout 2 s, two
/// tries): a load of about 8 s, under which the faults strike at 2 s.
fn system(brokers: usize, mode: WorkerMode) -> Scenario {
    placed_system(brokers, mode, ClientMode::EveryBroker)
}

fn placed_system(brokers: usize, mode: WorkerMode, clients: ClientMode) -> Scenario {
    let worker = WorkerConfig {
        heartbeat_interval: INTERVAL,
        liveness: 3,
        reconnect_initial: ms(100),
        reconnect_max: ms(1000),
    };
    Scenario {
        broker: broker::Config {
            heartbeat_interval: INTERVAL,
            liveness: 3,
            ..broker::Config::default()
        },
        brokers,
        worker,
        workers: 2 * brokers,
        worker_mode: mode,
        slots: 1,
        workers_start_at: Duration::ZERO,
        client_mode: clients,
        services: 1,
        sync_clients: brokers,
        sync: ClientConfig {
            timeout: ms(1000),
            retries: brokers as u32,
        },
        sync_requests: 250,
        async_clients: 1,
        async_config: AsyncClientConfig {
            timeout: ms(2000),
            matching: Matching::ByTag,
            retries: 2,
        },
        async_requests: 2_500,
        window: 5,
        service_time: (ms(5), ms(15)),
        think_time: ms(40),
        random_faults: None,
        scripted_faults: Vec::new(),
        net: sim::net::NetConfig::default(),
        // A placed client whose broker lost its failover workers for good fails every request
        // after: the load stops issuing at 20 s, so that such runs do not go on for minutes.
        issue_until: Duration::from_secs(20),
        end_by: Duration::from_secs(60),
        run_at_least: Duration::ZERO,
        check_sync_availability: true,
        given_up_runs_at_most_once: false,
    }
}

fn fault(at: u64, kind: FaultKind, target: usize, lasting: u64) -> ScriptedFault {
    ScriptedFault {
        at: ms(at),
        kind,
        target,
        lasting: ms(lasting),
    }
}

/// Runs every seed of `scenario`, fails on the first broken rule (with the seed), prints each
/// run's figures, and hands each report to `expect` for the scenario's own checks.
fn run_all(name: &str, scenario: &Scenario, covered: &mut Coverage, expect: impl Fn(&Report)) {
    for seed in seeds() {
        let report = sim::run(scenario.clone(), seed);
        if let Some(violation) = &report.violation {
            panic!(
                "{name}, {} brokers, {:?}, seed {seed}: {violation}\n  replay: SIM_SEED={seed} \
                 cargo test -p sim --test brokers -- --nocapture",
                scenario.brokers, scenario.worker_mode
            );
        }
        let sync_failed = report.failed_requests(|client| is_sync(scenario, client));
        let async_failed = report.failed_requests(|client| !is_sync(scenario, client));
        let faults: u64 = report.coverage.faults.values().sum();
        println!(
            "{name}, {} brokers, {:?}, seed {seed}: {} requests, failed sync {sync_failed} \
             async {async_failed}, resends {}, faults {faults}, kills {} ({} busy), lost {}, \
             purged {}, runs after give-up {}, {:.0} s virtual",
            scenario.brokers,
            scenario.worker_mode,
            report.ledger.requests.len(),
            report.coverage.client_resends,
            report.kills,
            report.kills_of_busy_workers,
            report.broker.requests_lost_with_worker,
            report.broker.workers_purged,
            report.runs_after_give_up,
            report.coverage.virtual_time.as_secs_f64()
        );
        covered.add(&report.coverage);
        expect(&report);
    }
}

/// Prints what a scenario's runs covered, as the seeds test does.
fn print_coverage(name: &str, covered: &Coverage) {
    println!("{name}: {covered}");
}

/// Parties are numbered brokers first, then workers, then synchronous and asynchronous clients.
fn is_sync(scenario: &Scenario, client: usize) -> bool {
    let first = scenario.brokers + scenario.workers;
    (first..first + scenario.sync_clients).contains(&client)
}

/// Every system the broker scenarios run on: 2 and 3 brokers, workers in both modes.
fn systems() -> Vec<Scenario> {
    let mut systems = Vec::new();
    for brokers in [2, 3] {
        for mode in [WorkerMode::All, WorkerMode::Failover] {
            systems.push(system(brokers, mode));
        }
    }
    systems
}

/// The synchronous requests that failed.
fn sync_failed(report: &Report, scenario: &Scenario) -> usize {
    report.failed_requests(|client| is_sync(scenario, client))
}

#[test]
fn a_broker_killed_under_load() {
    let mut covered = Coverage::default();
    for mut scenario in systems() {
        // Broker 0 dies 2 s into the load and comes back 6 s later, with nothing remembered.
        scenario.scripted_faults = vec![fault(2000, FaultKind::RestartBroker, 0, 6000)];
        run_all("broker killed", &scenario, &mut covered, |report| {
            assert_eq!(report.coverage.fault_count(FaultKind::RestartBroker), 1);
            // A dead broker costs its clients a timeout, not a failure.
            assert_eq!(sync_failed(report, &scenario), 0);
            assert!(report.coverage.client_resends > 0, "nobody noticed");
        });
    }
    print_coverage("broker killed", &covered);
}

#[test]
fn a_broker_restarted_under_load() {
    let mut covered = Coverage::default();
    for mut scenario in systems() {
        scenario.scripted_faults = vec![fault(2000, FaultKind::RestartBroker, 1, 500)];
        let all = scenario.worker_mode == WorkerMode::All;
        run_all("broker restarted", &scenario, &mut covered, |report| {
            // In all mode its workers register again within the bound the world checks; in
            // failover mode the refused connection moved them on to the next broker for good.
            if all {
                assert!(report.longest_reregistration > Duration::ZERO);
            }
            assert_eq!(sync_failed(report, &scenario), 0);
        });
    }
    print_coverage("broker restarted", &covered);
}

#[test]
fn a_broker_cut_from_its_workers() {
    let mut covered = Coverage::default();
    for mut scenario in systems() {
        // 4 s: longer than the 1.5 s both sides wait before they give up on each other.
        scenario.scripted_faults = vec![fault(2000, FaultKind::BrokerCutFromWorkers, 0, 4000)];
        run_all(
            "broker cut from workers",
            &scenario,
            &mut covered,
            |report| {
                assert!(
                    report.broker.workers_purged >= 2,
                    "the cut workers were not purged"
                );
                assert_eq!(sync_failed(report, &scenario), 0);
            },
        );
    }
    print_coverage("broker cut from workers", &covered);
}

#[test]
fn a_broker_cut_from_its_clients() {
    let mut covered = Coverage::default();
    for mut scenario in systems() {
        scenario.scripted_faults = vec![fault(2000, FaultKind::BrokerCutFromClients, 0, 4000)];
        run_all(
            "broker cut from clients",
            &scenario,
            &mut covered,
            |report| {
                // The workers still reach it: none is purged; the clients go around it.
                assert_eq!(report.broker.workers_purged, 0);
                assert_eq!(sync_failed(report, &scenario), 0);
            },
        );
    }
    print_coverage("broker cut from clients", &covered);
}

#[test]
fn all_brokers_down_and_back() {
    let mut covered = Coverage::default();
    for mut scenario in systems() {
        let brokers = scenario.brokers;
        scenario.scripted_faults = (0..brokers)
            .map(|broker| fault(2000, FaultKind::RestartBroker, broker, 3000))
            .collect();
        let all = scenario.worker_mode == WorkerMode::All;
        run_all("all brokers down", &scenario, &mut covered, |report| {
            assert_eq!(
                report.coverage.fault_count(FaultKind::RestartBroker),
                brokers as u64
            );
            // Every broker's workers come back by themselves, and the load goes on after.
            if all {
                assert!(report.longest_reregistration > Duration::ZERO);
            }
            let after = report
                .ledger
                .requests
                .iter()
                .filter(|request| request.issued_at > ms(5000))
                .filter(|request| matches!(request.ended, Some(sim::report::Ended::Answered)))
                .count();
            assert!(
                after > 0,
                "nothing was answered after the brokers came back"
            );
        });
    }
    print_coverage("all brokers down", &covered);
}

/// Issue 15 item 5: worker programs with 4 slots to each broker (4 DEALER sockets, 4 requests in
/// hand at most per broker), one killed every 0.6 s under a pipelined load and replaced: every
/// request answered or reported, none twice (the world's checks), and no more lost than the
/// slots of the killed workers held. One broker, and two with the workers in all mode.
#[test]
fn slotted_workers_killed_under_load() {
    let mut covered = Coverage::default();
    for (brokers, mode) in [(1, WorkerMode::Placed), (2, WorkerMode::All)] {
        let mut scenario = system(brokers, mode);
        scenario.slots = 4;
        scenario.workers = 3 * brokers;
        scenario.window = 50;
        scenario.async_requests = 3_000;
        scenario.service_time = (ms(1), ms(20));
        scenario.scripted_faults = (1..=10)
            .map(|n| fault(600 * n, FaultKind::KillWorker, n as usize, 200))
            .collect();
        run_all(
            "slotted workers killed",
            &scenario,
            &mut covered,
            |report| {
                assert!(report.kills >= 3, "the load outlived too few kills");
                assert!(
                    report.kills_of_busy_workers > 0,
                    "no kill hit a busy worker"
                );
                let failed = report.failed_requests(|_| true) as u64;
                let links = 4 * brokers as u64;
                assert!(
                    failed <= report.kills * links,
                    "failed {failed} > kills x links"
                );
                assert!(report.peak_workers >= 3 * 4, "not every slot registered");
            },
        );
    }
    print_coverage("slotted workers killed", &covered);
}

/// Issue 12 item 6: a synchronous client asks for a service nobody serves yet, with three tries
/// of 500 ms, and gives up; a worker for the service starts 10 s later, while the broker still
/// holds the tries (its request TTL is 60 s). How often does the late worker run the request?
fn late_worker(brokers: usize) -> Scenario {
    let mode = if brokers == 1 {
        WorkerMode::Placed
    } else {
        WorkerMode::All
    };
    let mut scenario = system(brokers, mode);
    scenario.workers = 1;
    scenario.workers_start_at = ms(10_000);
    scenario.sync_clients = 1;
    scenario.sync_requests = 1;
    scenario.sync = ClientConfig {
        timeout: ms(500),
        retries: 3,
    };
    scenario.async_clients = 0;
    scenario.run_at_least = ms(15_000);
    scenario.check_sync_availability = false;
    scenario
}

/// Issue 12 item 6: `client -s late -t 500 "order #1"` gives up after three tries, and a worker
/// for `late` starts later. Before the fix every try waited in the queue and all three ran. Now
/// each try's socket has its own `req:` identity (`mdp::tries`): try 2 supersedes try 1, try 3
/// try 2, and the last try's socket is closed when the client gives up, so the broker's probe
/// finds it gone: the request never runs.
#[test]
fn a_request_given_up_on_never_runs() {
    let mut covered = Coverage::default();
    for brokers in [1, 2] {
        let mut scenario = late_worker(brokers);
        scenario.given_up_runs_at_most_once = true;
        run_all("late worker", &scenario, &mut covered, |report| {
            let request = &report.ledger.requests[0];
            assert!(matches!(request.ended, Some(sim::report::Ended::Failed(_))));
            println!(
                "  the late worker ran the given-up request {} times ({} tries): {} superseded, \
                 {} dropped with their client gone",
                request.runs,
                scenario.sync.retries,
                report.broker.requests_superseded,
                report.broker.requests_abandoned
            );
            assert_eq!(request.runs, 0, "a try given up on ran");
            assert_eq!(
                report.broker.requests_superseded + report.broker.requests_abandoned,
                u64::from(scenario.sync.retries),
                "every try was dropped unsent"
            );
        });
    }
    print_coverage("late worker", &covered);
}

/// Issue 12 item 6, the several-broker case: "try 1 queued at A, try 2 served by B, then A
/// serves try 1 too". A synchronous client of two brokers (three tries of 1 s) asks for a service
/// whose worker (all mode) starts 1.5 s in: try 1 waited at broker A, try 2 went to broker B;
/// when the worker registers with both, B hands it try 2 and A finds try 1's socket closed (the
/// client opened a new one for try 2), so it drops try 1 unsent. Before the fix: answered once,
/// run twice.
#[test]
fn a_request_answered_through_another_broker_does_not_run_at_the_first() {
    let mut covered = Coverage::default();
    let mut scenario = late_worker(2);
    scenario.workers_start_at = ms(1500);
    scenario.sync.timeout = ms(1000);
    scenario.run_at_least = ms(10_000);
    run_all(
        "late worker, two brokers",
        &scenario,
        &mut covered,
        |report| {
            let request = &report.ledger.requests[0];
            assert!(matches!(request.ended, Some(sim::report::Ended::Answered)));
            println!(
                "  the request was answered, and ran {} times ({} tries sent)",
                request.runs,
                report.coverage.client_resends + 1
            );
            assert_eq!(request.runs, 1, "the request ran at both brokers");
        },
    );
    print_coverage("late worker, two brokers", &covered);
}
