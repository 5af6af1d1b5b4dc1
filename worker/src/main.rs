//! `worker`: an MDP/0.1 worker program. It registers one service with a broker and serves it,
//! either as `echo` (the reply is the request) or by running a shell command per request
//! (`--exec`; see the `worker::exec` module for how bodies map to stdin and stdout).
//!
//! SIGINT or SIGTERM make it send DISCONNECT to the broker and exit 0. Exit status 2 means a usage
//! error (a bad flag, service name or endpoint), 1 any other failure.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use worker::{ServiceName, Worker, WorkerConfig};

/// Serve one MDP/0.1 service for a broker: echo each request, or run a command per request.
#[derive(Debug, Parser)]
#[command(version, after_help = AFTER_HELP)]
struct Args {
    /// The broker's endpoint.
    #[arg(
        short = 'c',
        long = "connect",
        value_name = "ENDPOINT",
        default_value = "tcp://localhost:5555"
    )]
    endpoint: String,
    /// The service to register (not mmi.*, which belongs to the broker).
    #[arg(short, long, value_name = "SERVICE", default_value = "echo", value_parser = parse_service)]
    service: ServiceName,
    /// Run `sh -c CMD` per request, with the body on stdin; reply with its stdout.
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// Heartbeat interval in milliseconds; must match the broker's.
    #[arg(long, value_name = "MS", default_value_t = mdp::DEFAULT_HEARTBEAT_INTERVAL_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_ms: u64,
    /// Missed heartbeats after which the broker counts as gone; must match the broker's.
    #[arg(long, value_name = "N", default_value_t = mdp::DEFAULT_HEARTBEAT_LIVENESS,
          value_parser = clap::value_parser!(u32).range(1..))]
    liveness: u32,
    /// Log every frame sent and received (to stderr).
    #[arg(short, long)]
    verbose: bool,
}

const AFTER_HELP: &str = "\
With --exec, each request body frame is written to the command's stdin followed by a newline.
Exit status 0: the reply is one frame, its stdout minus one trailing newline.
Otherwise: the reply is three frames: ERROR, the reason (e.g. \"exit status 3\"), its stderr.";

fn parse_service(name: &str) -> Result<ServiceName, String> {
    let service: ServiceName = name.parse().map_err(|error| format!("{error}"))?;
    if service.is_mmi() {
        return Err("mmi.* services belong to the broker (spec 8)".into());
    }
    Ok(service)
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("worker: {}", error_chain(error.as_ref()));
            match error.downcast_ref::<worker::Error>() {
                // A malformed endpoint is a typo on the command line: a usage error, as clap's.
                Some(worker::Error::Connect(_)) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = WorkerConfig {
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        liveness: args.liveness,
        ..WorkerConfig::default()
    };
    let mut worker = Worker::connect(&args.endpoint, args.service, config)?;
    let stop = worker.stop_handle();
    ctrlc::set_handler(move || stop.stop())?;
    match args.exec {
        // Echo: the request frames go back as they came, without a copy.
        None => worker.serve(|body| body)?,
        Some(command) => worker.serve(|body| worker::exec::run(&command, &body))?,
    }
    log::info!("stopping: sending DISCONNECT to the broker");
    // Dropping the worker sends DISCONNECT.
    Ok(())
}

/// `-v` shows frame dumps (debug); otherwise connection events (info). RUST_LOG overrides both.
fn init_logging(verbose: bool) {
    let level = if verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_default_env()
        .init();
}

/// `outer: cause: root cause`, so the user sees why, not only what.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
