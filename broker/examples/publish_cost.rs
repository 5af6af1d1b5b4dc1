//! What one dashboard publish costs the broker's loop with 100,000 services, through the real
//! core and [`broker::live::Live`] (the snapshot of each changed service built by
//! `Broker::service_snapshot`, the rest shared with the previous snapshot).
//!
//! ```sh
//! cargo run --release -p broker --example publish_cost            # 100,000 services
//! cargo run --release -p broker --example publish_cost -- 10000   # another count
//! ```
//!
//! Each service gets one worker (READY) and the publish is timed three ways: the first ones (every
//! service new, taken in batches), after 100 services changed (a request in and its reply out for each), and with
//! nothing changed. The loop publishes at most every 100 ms, so a publish's cost over 100 ms is
//! the most it can take from the broker's throughput. Figures only; nothing is asserted.

use std::time::{Duration, Instant};

use broker::live::Live;
use broker::{Broker, Config};

fn frames(parts: &[&[u8]]) -> mdp::Frames {
    parts.iter().map(|part| zmq::Message::from(*part)).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let mut now = Instant::now();
    let mut core = Broker::new(Config::default(), now);
    let mut out = Vec::new();
    for n in 0..count {
        let name = format!("service.{n:06}");
        let worker = format!("W{n}");
        core.handle(
            now,
            worker.as_bytes(),
            frames(&[b"", b"MDPW01", b"\x01", name.as_bytes()]),
            &mut out,
        );
    }
    out.clear();
    let mut live = Live::start("127.0.0.1:0".parse()?, now)?;
    let mut publish = |core: &mut Broker, now: Instant| {
        let started = Instant::now();
        live.publish_if_due(now, core, None);
        started.elapsed()
    };
    // Every service is new: the publishes that follow take them in batches of
    // `broker::live::SERVICES_PER_PUBLISH`.
    let mut first = Vec::new();
    while first.is_empty() || core.has_dashboard_changes() {
        now += Duration::from_millis(200);
        first.push(publish(&mut core, now));
    }
    let mut changed = Vec::new();
    for round in 0..20u32 {
        for n in (0..count).step_by((count / 100).max(1)).take(100) {
            let name = format!("service.{n:06}");
            let client = format!("C{round}");
            core.handle(
                now,
                client.as_bytes(),
                frames(&[b"", b"MDPC01", name.as_bytes(), b"hi"]),
                &mut out,
            );
            let worker = format!("W{n}");
            core.handle(
                now,
                worker.as_bytes(),
                frames(&[b"", b"MDPW01", b"\x03", client.as_bytes(), b"", b"hi"]),
                &mut out,
            );
            out.clear();
        }
        now += Duration::from_millis(200);
        changed.push(publish(&mut core, now));
    }
    changed.sort();
    now += Duration::from_millis(200);
    let unchanged = publish(&mut core, now);
    let median = changed[changed.len() / 2];
    println!("{count} services, one worker each:");
    let total = first.iter().sum::<Duration>();
    first.sort();
    println!(
        "  all new: {} publishes of at most {} services, median {:?}, the longest {:?}, {:?} in all",
        first.len(),
        broker::live::SERVICES_PER_PUBLISH,
        first[first.len() / 2],
        first[first.len() - 1],
        total
    );
    println!(
        "  100 changed (median of 20):  {median:?} = {:.2}% of the 100 ms between publishes",
        median.as_secs_f64() * 1000.0
    );
    println!("  nothing changed:             {unchanged:?}");
    Ok(())
}
