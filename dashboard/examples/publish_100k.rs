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
//! scrape rendered from the 100,000-service snapshot. Figures only; nothing is asserted.

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

/// The median of `runs` timings of `publish_once`, as a duration.
fn median(runs: usize, mut publish_once: impl FnMut(u64)) -> Duration {
    let mut timings: Vec<Duration> = (0..runs as u64)
        .map(|generation| {
            let started = Instant::now();
            publish_once(generation);
            started.elapsed()
        })
        .collect();
    timings.sort();
    timings[timings.len() / 2]
}

fn report(what: &str, cost: Duration) {
    let share = cost.as_secs_f64() / PUBLISH_INTERVAL.as_secs_f64() * 100.0;
    println!(
        "{what:<28} {:>9.3} ms per publish   {share:>6.2} % of the broker loop at one publish per {} ms",
        cost.as_secs_f64() * 1000.0,
        PUBLISH_INTERVAL.as_millis()
    );
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(100_000);
    println!("{count} services, median of 21 publishes each\n");
    let board = Arc::new(Board::new("broker"));
    let mut publisher = Publisher::new(Arc::clone(&board), Instant::now());

    let rebuild = median(21, |generation| {
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
        let cost = median(21, |generation| {
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
    let status = median(11, |_| {
        std::hint::black_box(render::status_json(&snapshot, &StatusQuery::default()));
    });
    let metrics = median(11, |_| {
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
