//! The load and the checks of scripts/titanic-crash.sh, as one program with three roles:
//!
//! * `drill worker`: an echo worker for `echo` that appends each request's nonce (its first
//!   frame) to a file, one `write` per request, so that a count survives its own SIGKILL: the
//!   script counts from it how often a request ran more than once.
//! * `drill submit`: clients that submit COUNT requests through `titanic.request`, each body
//!   `[nonce, payload, checksum]`, and append `ID NONCE` to a file as soon as the 200 comes.
//! * `drill collect`: for every `ID NONCE` line, waits for the reply through `titanic.reply` and
//!   checks it: the checksum holds and the nonce is the request's own (an echo); writes
//!   `ID HASH-OF-REPLY` lines, so that two passes can be compared (no id answered two ways).
//!
//! Each prints one line of `name=value` counts at the end.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use client::titanic::{TitanicClient, TitanicConfig, TitanicError};
use client::{ClientConfig, ServiceName};
use rand::Rng;
use worker::{Worker, WorkerConfig};

#[derive(Debug, Parser)]
struct Args {
    #[arg(short = 'c', long = "connect", value_name = "ENDPOINT")]
    endpoint: String,
    #[arg(long, default_value_t = 250)]
    heartbeat_ms: u64,
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    Worker {
        #[arg(long)]
        runs: PathBuf,
    },
    Submit {
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long)]
        acked: PathBuf,
        /// Nonce prefix, so that several runs never share a nonce.
        #[arg(long, default_value = "n")]
        prefix: String,
    },
    Collect {
        #[arg(long)]
        acked: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Seconds to wait for all the replies.
        #[arg(long, default_value_t = 300)]
        patience: u64,
    },
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    cli::Verbosity::default().init_logging(log::LevelFilter::Warn);
    let result = match args.role {
        Role::Worker { ref runs } => serve(&args, runs),
        Role::Submit {
            count,
            clients,
            ref acked,
            ref prefix,
        } => submit(&args, count, clients, acked, prefix),
        Role::Collect {
            ref acked,
            ref out,
            clients,
            patience,
        } => collect(&args, acked, out, clients, patience),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("drill: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args, runs: &PathBuf) -> Result<(), Failure> {
    let mut log = OpenOptions::new().create(true).append(true).open(runs)?;
    let config = WorkerConfig {
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        ..WorkerConfig::default()
    };
    let mut worker = Worker::connect(&args.endpoint, "echo".parse()?, config)?;
    loop {
        let request = worker.recv()?;
        let mut line = request.body.first().map(|f| f.to_vec()).unwrap_or_default();
        line.push(b'\n');
        // One write per line, straight to the kernel: it outlives our own SIGKILL.
        log.write_all(&line)?;
        worker.reply(request.reply_to, request.body)?;
    }
}

fn titanic_client(args: &Args) -> Result<TitanicClient, TitanicError> {
    TitanicClient::connect(
        &args.endpoint,
        TitanicConfig {
            client: ClientConfig {
                timeout: Duration::from_millis(1000),
                retries: 60,
            },
            poll_initial: Duration::from_millis(20),
            poll_max: Duration::from_millis(500),
        },
    )
}

fn submit(
    args: &Args,
    count: usize,
    clients: usize,
    acked: &PathBuf,
    prefix: &str,
) -> Result<(), Failure> {
    let out = Arc::new(Mutex::new(
        OpenOptions::new().create(true).append(true).open(acked)?,
    ));
    let failed = Arc::new(AtomicU64::new(0));
    let resends = Arc::new(AtomicU64::new(0));
    let echo: ServiceName = "echo".parse()?;
    std::thread::scope(|scope| {
        for client_number in 0..clients.max(1) {
            let (out, failed, resends, echo) = (&out, &failed, &resends, &echo);
            scope.spawn(move || {
                let Ok(mut client) = titanic_client(args) else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let mut rng = rand::rng();
                for n in (client_number..count).step_by(clients.max(1)) {
                    let nonce = format!("{prefix}-{n}");
                    let size = rng.random_range(16..512);
                    let payload: Vec<u8> = (0..size).map(|_| rng.random()).collect();
                    match client.submit(echo, &checked_body(&nonce, &payload)) {
                        Ok(id) => {
                            let line = format!("{id} {nonce}\n");
                            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                            if out.write_all(line.as_bytes()).is_err() {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(error) => {
                            eprintln!("drill: submission {nonce} failed: {error}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                resends.fetch_add(client.resends(), Ordering::Relaxed);
            });
        }
    });
    println!(
        "requests={count} failed={} resends={}",
        failed.load(Ordering::Relaxed),
        resends.load(Ordering::Relaxed)
    );
    Ok(())
}

fn collect(
    args: &Args,
    acked: &PathBuf,
    out: &PathBuf,
    clients: usize,
    patience: u64,
) -> Result<(), Failure> {
    let mut lines = Vec::new();
    for line in BufReader::new(File::open(acked)?).lines() {
        let line = line?;
        if let Some((id, nonce)) = line.split_once(' ') {
            lines.push((id.to_owned(), nonce.to_owned()));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(patience);
    let counts: Mutex<HashMap<&'static str, u64>> = Mutex::new(HashMap::new());
    let hashes = Mutex::new(Vec::new());
    let count = |what| {
        *counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what)
            .or_insert(0) += 1
    };
    let chunk = lines.len().div_ceil(clients.max(1)).max(1);
    std::thread::scope(|scope| {
        for part in lines.chunks(chunk) {
            let (count, hashes) = (&count, &hashes);
            scope.spawn(move || {
                let Ok(mut client) = titanic_client(args) else {
                    return;
                };
                for (id, nonce) in part {
                    match client.wait_until(id, Some(deadline)) {
                        Ok(reply) => {
                            let reply: Vec<Vec<u8>> = reply.iter().map(|f| f.to_vec()).collect();
                            if !checksum_holds(&reply) {
                                count("corrupt");
                            } else if reply[0] != nonce.as_bytes() {
                                count("wrong");
                            } else {
                                count("answered");
                            }
                            let parts: Vec<&[u8]> = reply.iter().map(Vec::as_slice).collect();
                            hashes
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("{id} {:016x}\n", fnv1a(&parts)));
                        }
                        Err(TitanicError::Unknown(_)) => count("unknown"),
                        Err(TitanicError::StillPending(_)) => count("pending"),
                        Err(error) => {
                            eprintln!("drill: {id}: {error}");
                            count("errors");
                        }
                    }
                }
            });
        }
    });
    let mut file = File::create(out)?;
    for line in hashes.into_inner().unwrap_or_else(|p| p.into_inner()) {
        file.write_all(line.as_bytes())?;
    }
    let counts = counts.into_inner().unwrap_or_else(|p| p.into_inner());
    let get = |what| counts.get(what).copied().unwrap_or(0);
    println!(
        "acked={} answered={} corrupt={} wrong={} unknown={} pending={} errors={}",
        lines.len(),
        get("answered"),
        get("corrupt"),
        get("wrong"),
        get("unknown"),
        get("pending"),
        get("errors")
    );
    Ok(())
}

// The checksummed bodies, the same as the titanic tests'.
#[path = "../tests/support/checked_body.rs"]
mod checked_body;
use checked_body::{checked_body, checksum_holds, fnv1a};
