//! What publishing costs a broker with 100,000 services, and what answering costs the HTTP side.
//!
//! ```sh
//! cargo run --release -p dashboard --example publish_100k            # 100,000 services
//! cargo run --release -p dashboard --example publish_100k -- 10000    # another count
//! ```
//!
//! The broker loop publishes at most every 100 ms ([`dashboard::PUBLISH_INTERVAL`]), so the
//! share of its time that publishing takes is (cost of one publish) / 100 ms; that is the most
//! it can take off the broker's throughput. Printed for three ways of building a snapshot:
//!
//! - **rebuild all**: every service's snapshot built anew (names and worker lists copied);
//! - **table, 100 changed**: a [`dashboard::ServiceTable`] where 100 services changed since the
//!   last snapshot (the rest are shared `Arc`s);
//! - **table, none changed**: only the pointers copied.
//!
//! Each publish includes freeing the snapshot it replaces (on the broker's thread, as in a
//! broker where no page is reading). Then the HTTP side: one `/status` page and one `/metrics`
//! scrape rendered from the 100,000-service snapshot (wall time). Figures only; nothing is
//! asserted. The share of the loop is computed from the thread's CPU time (Linux's
//! `/proc/thread-self/schedstat`), which a busy machine does not inflate as it does wall time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashboard::render::{self, StatusQuery};
use dashboard::{Board, Publisher, ServiceSnapshot, ServiceTable, Snapshot, PUBLISH_INTERVAL};

/// A service as a busy broker would show it: a queue, a few workers, some counts.
fn service(n: usize, generation: u64) -> ServiceSnapshot {
    let mut service = ServiceSnapshot::named(format!("service.{n:06}"));
    service.requests_waiting = generation % 7;
    service.set_idle(2, (0..2).map(|w| format!("worker-{n}-{w}")));
    service.set_busy(1, [format!("worker-{n}-busy")]);
    service.counters.received = generation;
    service.counters.answered = generation;
    service
        .latency
        .observe(Duration::from_micros(300 + generation % 1000));
    service
}

/// The CPU time this thread has used, from Linux's `/proc/thread-self/schedstat` (nanoseconds
/// on the CPU): unlike the wall clock, it does not count the time other programs had the CPU.
fn thread_cpu() -> Option<Duration> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The cost of one `publish_once`: the median of its wall times over `runs`, and the mean CPU
/// time of this thread over all of them (where Linux says it). The kernel brings a running
/// thread's CPU time up to date only at ticks and switches, so it is read once around the whole
/// series, not around each publish.
fn measure(runs: usize, mut publish_once: impl FnMut(u64)) -> (Duration, Option<Duration>) {
    let cpu_before = thread_cpu();
    let mut walls: Vec<Duration> = (0..runs as u64)
        .map(|generation| {
            let started = Instant::now();
            publish_once(generation);
            started.elapsed()
        })
        .collect();
    let cpu = thread_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before) / runs as u32);
    walls.sort();
    (walls[runs / 2], cpu)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn report(what: &str, (wall, cpu): (Duration, Option<Duration>)) {
    // The share of the loop's time is the CPU it spends, if known, else the wall time.
    let cost = cpu.unwrap_or(wall);
    let share = cost.as_secs_f64() / PUBLISH_INTERVAL.as_secs_f64() * 100.0;
    let cpu = cpu.map_or("?".to_owned(), |cpu| format!("{:.3}", millis(cpu)));
    println!(
        "{what:<22} CPU {cpu:>8} ms, wall {:>8.3} ms per publish: {share:>6.2} % of the loop at one publish per {} ms",
        millis(wall),
        PUBLISH_INTERVAL.as_millis()
    );
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(100_000);
    println!(
        "{count} services; wall: median, CPU: mean; 21 full rebuilds, 201 publishes from the table\n"
    );
    let board = Arc::new(Board::new("broker"));
    let mut publisher = Publisher::new(Arc::clone(&board), Instant::now());

    let rebuild = measure(21, |generation| {
        let services = (0..count)
            .map(|n| Arc::new(service(n, generation)))
            .collect();
        publisher.publish(
            Instant::now(),
            Snapshot {
                program: "broker".to_owned(),
                services,
                ..Snapshot::default()
            },
        );
    });
    report("rebuild all", rebuild);

    let mut table = ServiceTable::new();
    for n in 0..count {
        table.update(service(n, 0));
    }
    for changed in [100, 0] {
        let cost = measure(201, |generation| {
            for k in 0..changed {
                // A different 100 each time, spread over the table.
                let n = (generation as usize * 7919 + k * 997) % count;
                table.update(service(n, generation));
            }
            publisher.publish(
                Instant::now(),
                Snapshot {
                    program: "broker".to_owned(),
                    services: table.services(),
                    ..Snapshot::default()
                },
            );
        });
        report(&format!("table, {changed} changed"), cost);
    }

    let snapshot = board.latest();
    let (status, _) = measure(11, |_| {
        std::hint::black_box(render::status_json(&snapshot, &StatusQuery::default()));
    });
    let (metrics, _) = measure(11, |_| {
        std::hint::black_box(render::prometheus(&snapshot));
    });
    let status_bytes = render::status_json(&snapshot, &StatusQuery::default()).len();
    let metrics_bytes = render::prometheus(&snapshot).len();
    println!(
        "\nHTTP thread: /status (first page of {}) {:.3} ms, {status_bytes} bytes; \
         /metrics ({} services listed) {:.3} ms, {metrics_bytes} bytes",
        render::STATUS_MAX_SERVICES,
        status.as_secs_f64() * 1000.0,
        render::METRICS_MAX_SERVICES.min(count),
        metrics.as_secs_f64() * 1000.0,
    );
}
