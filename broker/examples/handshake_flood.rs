//! How many bad PLAIN handshakes a second the broker absorbs while a good client keeps its
//! latency (issue 11, item 7).
//!
//! `cargo run --release -p broker --example handshake_flood -- [--seconds S] [--flooders N]
//! [--sources K]` starts a broker in this process with `--auth` (one principal, a real argon2id
//! hash from [`broker::auth::hash_password`], the cost every PLAIN check pays), an echo worker
//! and a client logged in as that principal, all on 127.0.0.1. It measures the client's
//! request-reply latency over its established connection for S seconds without a flood, then
//! for S seconds while N flooder threads each open a fresh socket, try a PLAIN login with a wrong
//! password (a new one each time, so no verdict is reused), wait for the outcome, and close it,
//! as fast as they can (or at `--rate`). The flood comes from K loopback source addresses: with
//! K = 1 from 127.0.0.1, and the per-address limit (5 failures in 10 s) refuses nearly all of it
//! without a hash; with K > 1 from 127.0.0.2, .3, ..., and most attempts cost a hash each, the
//! worst case for the one ZAP thread. The good worker and client connect from 127.0.0.250, an
//! address of their own, so the limit never holds them back. (K = 1 lets the kernel pick the
//! source port, so ports in TIME_WAIT are reused; a socket bound to a source address cannot reuse
//! them, which caps a single bound address at about 28,000 connections a minute.)
//!
//! It prints the bad handshakes offered and refused per second, the good client's p50 and p99
//! (and its request rate), and how long a good client's *new* login takes during the flood
//! (it queues behind the flood's hashes in the ZAP thread).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::auth::AuthConfig;
use broker::server::{Auth, SocketOptions};
use broker::{Config, Server};
use clap::Parser;
use zsocket::monitor::{EventKind, Events, Monitored};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of each phase (without, then with the flood).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Flooder threads, each one handshake at a time.
    #[arg(long, default_value_t = 4)]
    flooders: usize,
    /// Loopback source addresses the flood comes from (1: 127.0.0.1; more: 127.0.0.2 onwards).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=240))]
    sources: u16,
    /// Bad handshakes a second to offer, over all flooders (0: as fast as they go). On a small
    /// machine the flooders' own CPU competes with the broker's; a set rate keeps it known.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Fresh good logins timed during the flood.
    #[arg(long, default_value_t = 5)]
    logins: usize,
}

const USER: &str = "alice";
const PASSWORD: &str = "alice-pw";
const PATIENCE: Duration = Duration::from_secs(30);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let hash = broker::auth::hash_password(PASSWORD.as_bytes())?;
    let config = AuthConfig::parse(&format!(
        "[[principal]]\nname = \"{USER}\"\npassword_hash = \"{hash}\"\nserve = [\"echo\"]\ncall = [\"echo\"]\n"
    ))?;
    let mut server = Server::bind_with_auth(
        &["tcp://127.0.0.1:*".to_string()],
        Config::default(),
        &SocketOptions::default(),
        Some(Auth {
            config,
            file: None,
            curve: None,
        }),
    )?;
    let endpoint = server.endpoints()[0].clone();
    let port = endpoint
        .rsplit_once(':')
        .map_or("", |(_, port)| port)
        .to_string();
    // The good peers' own source address.
    let good = format!("tcp://127.0.0.250:0;127.0.0.1:{port}");
    let stopper = server.stop_handle();
    let broker = std::thread::spawn(move || server.run());

    let context = zmq::Context::new();
    let worker = login(&context, &good, PASSWORD, None)?.ok_or("the worker was refused")?;
    worker
        .socket()
        .send_multipart([&b""[..], b"MDPW01", b"\x01", b"echo"], 0)?;
    let worker_stop = Arc::new(AtomicBool::new(false));
    let worker_thread = {
        let stop = Arc::clone(&worker_stop);
        std::thread::spawn(move || serve_echo(&worker, &stop))
    };
    let client = login(&context, &good, PASSWORD, None)?.ok_or("the client was refused")?;
    client.socket().set_rcvtimeo(PATIENCE.as_millis() as i32)?;
    // Until the READY has been read, a request would wait; one round trip says it has.
    round_trip(client.socket())?;

    let phase = Duration::from_secs(args.seconds);
    let quiet = measure(client.socket(), phase)?;
    let hash_cost = {
        let start = Instant::now();
        let _ = broker::auth::verify_password(&hash, b"wrong");
        start.elapsed()
    };

    let offered = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let flood_stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..args.flooders)
        .map(|index| {
            let (offered, refused, other, stop) = (
                Arc::clone(&offered),
                Arc::clone(&refused),
                Arc::clone(&other),
                Arc::clone(&flood_stop),
            );
            let (port, sources) = (port.clone(), args.sources as usize);
            // Each flooder's share of the rate, its first slot staggered by its index.
            let every = (args.rate > 0)
                .then(|| Duration::from_secs_f64(args.flooders as f64 / args.rate as f64));
            std::thread::spawn(move || {
                let context = zmq::Context::new();
                let mut attempt = 0usize;
                let mut next = Instant::now() + every.unwrap_or_default() * index as u32 / 8;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(every) = every {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next = next.max(now) + every;
                    }
                    let target = match sources {
                        1 => format!("tcp://127.0.0.1:{port}"),
                        _ => format!(
                            "tcp://127.0.0.{}:0;127.0.0.1:{port}",
                            2 + (index + attempt * 7) % sources
                        ),
                    };
                    let password = format!("wrong-{index}-{attempt}");
                    attempt += 1;
                    offered.fetch_add(1, Ordering::Relaxed);
                    match login(&context, &target, &password, Some(&stop)) {
                        Ok(None) => refused.fetch_add(1, Ordering::Relaxed),
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    // A second to let the flood reach its pace, then the same measurement under it.
    std::thread::sleep(Duration::from_secs(1));
    let (offered_before, refused_before) = (
        offered.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    let flood_start = Instant::now();
    let flooded = measure(client.socket(), phase)?;
    let mut login_times = Vec::new();
    for _ in 0..args.logins {
        let start = Instant::now();
        let fresh = login(&context, &good, PASSWORD, None)?;
        login_times.push((start.elapsed(), fresh.is_some()));
    }
    let flood_seconds = flood_start.elapsed().as_secs_f64();
    let offered_in = offered.load(Ordering::Relaxed) - offered_before;
    let refused_in = refused.load(Ordering::Relaxed) - refused_before;
    flood_stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        let _ = flooder.join();
    }

    println!(
        "flood: {} flooder(s) from {} source address(es), {}, {:.1} s; one argon2 check here takes {:.1} ms",
        args.flooders,
        args.sources,
        match args.rate {
            0 => "as fast as they go".to_string(),
            rate => format!("{rate}/s asked"),
        },
        flood_seconds,
        hash_cost.as_secs_f64() * 1e3
    );
    println!(
        "bad handshakes: {:.0}/s offered, {:.0}/s refused ({} offered, {} refused, {} other outcomes in all)",
        offered_in as f64 / flood_seconds,
        refused_in as f64 / flood_seconds,
        offered.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    println!("good client, no flood:   {quiet}");
    println!("good client, with flood: {flooded}");
    let times: Vec<String> = login_times
        .iter()
        .map(|(time, ok)| {
            format!(
                "{:.0} ms{}",
                time.as_secs_f64() * 1e3,
                if *ok { "" } else { " REFUSED" }
            )
        })
        .collect();
    println!("a new good login during the flood: {}", times.join(", "));

    drop(client);
    worker_stop.store(true, Ordering::Relaxed);
    let _ = worker_thread.join();
    stopper.stop();
    let stats = broker.join().map_err(|_| "the broker thread panicked")??;
    println!("broker: {stats}");
    Ok(())
}

/// A DEALER logged in with PLAIN as alice with `password`: `Some` once the handshake succeeded,
/// `None` if it was refused. Gives up (as refused) when `stop` is raised.
fn login(
    context: &zmq::Context,
    endpoint: &str,
    password: &str,
    stop: Option<&AtomicBool>,
) -> Result<Option<Monitored>, Box<dyn std::error::Error>> {
    let socket = context.socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    socket.set_plain_username(Some(USER))?;
    socket.set_plain_password(Some(password))?;
    let events = Events::of(&[
        EventKind::HandshakeSucceeded,
        EventKind::HandshakeFailedAuth,
        EventKind::HandshakeFailedProtocol,
        EventKind::HandshakeFailedNoDetail,
    ]);
    let monitored = Monitored::connect_socket(context, socket, endpoint, events)?;
    monitored.monitor().socket().set_rcvtimeo(100)?;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            return Ok(None);
        }
        match monitored.monitor().recv() {
            Ok(event) if event.kind == EventKind::HandshakeSucceeded => return Ok(Some(monitored)),
            Ok(_) => return Ok(None),
            Err(_) => continue,
        }
    }
    Err("no handshake outcome within 30 s".into())
}

fn serve_echo(worker: &Monitored, stop: &AtomicBool) {
    let socket = worker.socket();
    let _ = socket.set_rcvtimeo(100);
    while !stop.load(Ordering::Relaxed) {
        let Ok(frames) = socket.recv_multipart(0) else {
            continue;
        };
        // [""][MDPW01][0x02][client][""][body]
        if frames.len() >= 6 && frames[2] == b"\x02" {
            let reply = [&b""[..], b"MDPW01", b"\x03", &frames[3], b"", &frames[5]];
            let _ = socket.send_multipart(reply, 0);
        }
    }
}

fn round_trip(socket: &zmq::Socket) -> Result<Duration, Box<dyn std::error::Error>> {
    let start = Instant::now();
    socket.send_multipart([&b""[..], b"MDPC01", b"echo", b"0123456789abcdef"], 0)?;
    let reply = socket.recv_multipart(0)?;
    if reply.len() != 4 || reply[3] != b"0123456789abcdef" {
        return Err("not the echo".into());
    }
    Ok(start.elapsed())
}

struct Latency {
    count: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "{} requests, {:.0}/s, p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms",
            self.count,
            self.count as f64 / self.seconds,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// One request at a time for `phase`, as an interactive client would.
fn measure(socket: &zmq::Socket, phase: Duration) -> Result<Latency, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut times = Vec::new();
    while start.elapsed() < phase {
        times.push(round_trip(socket)?);
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Ok(Latency {
        count: times.len(),
        seconds: start.elapsed().as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        max: times[times.len() - 1],
    })
}
