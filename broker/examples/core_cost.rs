//! What the broker's bookkeeping costs, without sockets: the sans-IO core alone, fed the messages
//! a client and its workers would send, as fast as it takes them.
//!
//! `cargo run --release -p broker --example core_cost -- [REQUESTS] [WORKERS]`
//!
//! Each round: every worker is idle, the client sends one request per worker, the core dispatches
//! each to a worker, every worker replies, the core forwards the replies. What is timed is the
//! parsing, the service and worker lookups, the idle lists, the queue, and the encoding of the
//! outgoing frames: everything `scripts/bench.sh` measures except libzmq and the kernel. Building
//! the incoming frames (the zmq messages libzmq would have delivered) is done before the clock
//! starts. Prints figures, asserts nothing about them.

use std::time::{Duration, Instant};

use broker::{Broker, Config};

fn frames(parts: &[&[u8]]) -> Vec<zmq::Message> {
    parts.iter().map(|part| zmq::Message::from(*part)).collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let requests: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4).max(1);
    let rounds = requests.div_ceil(workers);

    let start = Instant::now();
    let mut broker = Broker::new(Config::default(), start);
    let mut out = Vec::new();
    let identities: Vec<Vec<u8>> = (0..workers)
        .map(|n| format!("\0worker{n}").into_bytes())
        .collect();
    for identity in &identities {
        broker.handle(
            start,
            identity,
            frames(&[b"", b"MDPW01", b"\x01", b"echo"]),
            &mut out,
        );
    }
    out.clear();
    let client: &[u8] = b"\0\x6b\x8b\x45\x67";
    let body = [0u8; 16];

    let mut busy = Duration::ZERO;
    let mut sent_out = 0usize;
    for _ in 0..rounds {
        // What libzmq would hand the broker: made outside the timed part.
        let incoming_requests: Vec<_> = (0..workers)
            .map(|_| frames(&[b"", b"MDPC01", b"echo", &body]))
            .collect();
        let incoming_replies: Vec<_> = identities
            .iter()
            .map(|identity| {
                (
                    identity,
                    frames(&[b"", b"MDPW01", b"\x03", client, b"", &body]),
                )
            })
            .collect();
        // The heartbeat timer never fires: `now` stays at `start`.
        let begun = Instant::now();
        for request in incoming_requests {
            broker.handle(start, client, request, &mut out);
        }
        for (identity, reply) in incoming_replies {
            broker.handle(start, identity, reply, &mut out);
        }
        sent_out += out.len();
        out.clear();
        busy += begun.elapsed();
    }
    let handled = rounds * workers;
    let stats = broker.stats();
    assert_eq!(
        stats.replies_forwarded as usize, handled,
        "every reply forwarded"
    );
    println!(
        "requests={handled} workers={workers} messages_out={sent_out} ns_per_request={:.0} \
         (two messages in, two out, including dropping the frames sent)",
        busy.as_nanos() as f64 / handled as f64
    );
}
