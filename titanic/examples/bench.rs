//! Titanic's figures on this machine (scripts/ style: it prints, it asserts nothing). Run it on a
//! release build: `cargo run --release -p titanic --example bench`.
//!
//! Everything runs in this process over loopback TCP: a broker, echo workers, and Titanic on an
//! SQLite database in `--dir` (default `target/titanic-bench`; not /tmp, which may be a tmpfs
//! whose fsync costs nothing).
//!
//! 1. **Durable submissions per second**: C clients submit to `titanic.request` as fast as they
//!    get their 200s, for a service that has no worker (so the dispatcher stays idle and every
//!    commit is a submission's). With the store's counters: commits (each one sync of the WAL)
//!    per request. Run under `strace -f -c -e trace=fsync,fdatasync` to count the syscalls too.
//! 2. **Latency**: one client, one request at a time: through Titanic (submit, poll until 200,
//!    close) and directly to echo, p50 and p99.
//!
//! With `--db postgres://...` the store is PostgreSQL instead (in a schema `titanic_bench`, its
//! table dropped first), and each run also reads the server's `pg_stat_wal` before and after:
//! `wal_sync`, the WAL flushes to disk (fsync/fdatasync) of the whole server, per request. Use a
//! server nothing else writes to (`scripts/titanic-pg.sh start DIR` makes one).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use broker::server::SocketOptions;
use broker::Server;
use clap::Parser;
use client::titanic::{TitanicClient, TitanicConfig};
use client::{Client, ClientConfig, ServiceName};
use titanic::service::Conversations;
use titanic::{Config, Titanic};
use worker::{Worker, WorkerConfig};

#[derive(Debug, Parser)]
struct Args {
    /// Where the database goes (its contents are removed first).
    #[arg(long, default_value = "target/titanic-bench")]
    dir: PathBuf,
    /// Concurrent submitting clients, one run for each value.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    clients: Vec<usize>,
    /// Submissions per run.
    #[arg(long, default_value_t = 4000)]
    submissions: usize,
    /// Requests for the latency comparison.
    #[arg(long, default_value_t = 500)]
    latency_requests: usize,
    /// A PostgreSQL URL: the store is there instead of SQLite in --dir.
    #[arg(long, value_name = "URL")]
    db: Option<String>,
}

/// The server's WAL syncs and writes so far (pg_stat_wal, PostgreSQL 14 and later).
fn wal_counts(client: &mut postgres::Client) -> Result<(i64, i64), Failure> {
    let row = client.query_one("SELECT wal_sync, wal_write FROM pg_stat_wal", &[])?;
    Ok((row.get(0), row.get(1)))
}

/// A schema of the bench's own, its table dropped: the URL to give Titanic.
fn bench_schema(url: &str) -> Result<String, Failure> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS titanic_bench;
         DROP TABLE IF EXISTS titanic_bench.titanic_requests",
    )?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{url}{separator}options=-csearch_path%3Dtitanic_bench"
    ))
}

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let mut server = Server::bind(
        &["tcp://127.0.0.1:*".to_string()],
        broker::Config::default(),
        &SocketOptions::default(),
    )?;
    let endpoint = server.endpoints()[0].clone();
    let stopper = server.stop_handle();
    let broker = std::thread::spawn(move || server.run());

    for _ in 0..4 {
        let mut worker = Worker::connect(&endpoint, "echo".parse()?, WorkerConfig::default())?;
        std::thread::spawn(move || worker.serve(|body| body));
    }

    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let mut wal = match &args.db {
        Some(url) => Some(postgres::Client::connect(url, postgres::NoTls)?),
        None => None,
    };
    let mut config = match &args.db {
        Some(url) => Config::new(&endpoint, titanic::Db::Postgres(bench_schema(url)?)),
        None => Config::new(&endpoint, args.dir.join("bench.db")),
    };
    println!("store: {}", config.db);
    config.conversations = Conversations {
        request: max_clients,
        reply: 2,
        close: 2,
    };
    let titanic = Titanic::start(&config)?;
    wait_for_service(&endpoint, "titanic.request")?;
    wait_for_service(&endpoint, "echo")?;

    println!("durable submissions (service without a worker, nothing dispatched):");
    if wal.is_some() {
        println!("  clients  requests/s  commits  commits/request  wal_syncs/request  wal_writes/request");
    } else {
        println!("  clients  requests/s  commits  commits/request");
    }
    let absent: ServiceName = "bench.absent".parse()?;
    for &clients in &args.clients {
        let before = titanic.store_stats();
        let wal_before = wal.as_mut().map(wal_counts).transpose()?;
        let per_client = args.submissions / clients.max(1);
        let started = Instant::now();
        std::thread::scope(|scope| -> Result<(), String> {
            let handles: Vec<_> = (0..clients)
                .map(|_| {
                    let endpoint = endpoint.clone();
                    let absent = absent.clone();
                    scope.spawn(move || -> Result<(), String> {
                        let mut client =
                            TitanicClient::connect(&endpoint, TitanicConfig::default())
                                .map_err(|e| e.to_string())?;
                        for n in 0..per_client {
                            client
                                .submit(&absent, &[format!("{n:0100}")])
                                .map_err(|e| e.to_string())?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for handle in handles {
                handle
                    .join()
                    .map_err(|_| "a client panicked".to_string())??;
            }
            Ok(())
        })?;
        let elapsed = started.elapsed();
        let after = titanic.store_stats();
        let requests = (after.submitted - before.submitted) as f64;
        let commits = after.commits - before.commits;
        let wal_line = match (wal.as_mut(), wal_before) {
            (Some(client), Some((syncs, writes))) => {
                let (syncs_after, writes_after) = wal_counts(client)?;
                format!(
                    "  {:>17.3}  {:>18.3}",
                    (syncs_after - syncs) as f64 / requests,
                    (writes_after - writes) as f64 / requests
                )
            }
            _ => String::new(),
        };
        println!(
            "  {clients:>7}  {:>10.0}  {commits:>7}  {:>15.3}{wal_line}",
            requests / elapsed.as_secs_f64(),
            commits as f64 / requests
        );
    }

    println!(
        "latency, one request at a time ({} requests):",
        args.latency_requests
    );
    let echo: ServiceName = "echo".parse()?;
    let mut direct = Client::connect(&endpoint, ClientConfig::default())?;
    let mut through = TitanicClient::connect(
        &endpoint,
        TitanicConfig {
            poll_initial: Duration::from_millis(1),
            poll_max: Duration::from_millis(1),
            ..TitanicConfig::default()
        },
    )?;
    let mut direct_times = Vec::new();
    let mut titanic_times = Vec::new();
    let mut polls_before = through.polls();
    let mut polls = 0;
    for n in 0..args.latency_requests {
        let body = [format!("{n:0100}")];
        let started = Instant::now();
        direct.send(&echo, &body)?;
        direct_times.push(started.elapsed());
        let started = Instant::now();
        through.request(&echo, &body)?;
        titanic_times.push(started.elapsed());
        polls += through.polls() - polls_before;
        polls_before = through.polls();
    }
    for (label, times) in [
        ("direct", &mut direct_times),
        ("through titanic", &mut titanic_times),
    ] {
        times.sort_unstable();
        println!(
            "  {label:>16}: p50 {:>8.2} ms  p99 {:>8.2} ms",
            ms(times[times.len() / 2]),
            ms(times[times.len() * 99 / 100])
        );
    }
    println!(
        "  (through titanic: submit + polls of titanic.reply every 1 ms, {:.1} polls a request, + close)",
        polls as f64 / args.latency_requests as f64
    );

    titanic.stop();
    stopper.stop();
    let _ = broker.join();
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn wait_for_service(endpoint: &str, service: &str) -> Result<(), Failure> {
    let mut client = Client::connect(endpoint, ClientConfig::default())?;
    let service: ServiceName = service.parse()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.has_service(&service)? {
        if Instant::now() > deadline {
            return Err(format!("{service} never registered").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
