//! `worker`: an MDP/0.1 worker program. It registers one service with a broker and serves it,
//! either as `echo` (the reply is the request) or by running a shell command per request
//! (`--exec`; see the `worker::exec` module for how bodies map to stdin and stdout).
//!
//! SIGINT or SIGTERM stop the `--exec` commands running at the time (SIGTERM to each one's process
//! group, SIGKILL after a grace), send DISCONNECT to the broker and exit 0. Exit status 2 means a
//! usage error (a bad flag, service name or endpoint), 1 any other failure.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use worker::exec::{Exec, Timeout};
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
    /// Stop an --exec command that runs longer than this (500ms, 30s, 5m, or `none` for no
    /// limit): SIGTERM to its process group, SIGKILL 2 s later.
    #[arg(long, value_name = "DURATION", default_value_t = Timeout::default())]
    exec_timeout: Timeout,
    /// Heartbeat interval in milliseconds; must match the broker's.
    #[arg(long, value_name = "MS", default_value_t = mdp::DEFAULT_HEARTBEAT_INTERVAL_MS,
          value_parser = cli::at_least_one_u64)]
    heartbeat_ms: u64,
    /// Missed heartbeats after which the broker counts as gone; must match the broker's.
    #[arg(long, value_name = "N", default_value_t = mdp::DEFAULT_HEARTBEAT_LIVENESS,
          value_parser = cli::at_least_one_u32)]
    liveness: u32,
    #[command(flatten)]
    verbosity: cli::Verbosity,
}

const AFTER_HELP: &str = "\
With --exec, each request body frame is written to the command's stdin followed by a newline, and
the command runs in a process group of its own.
Command exit status 0: the reply is one frame, its stdout minus one trailing newline; its stderr
goes to the worker's stderr.
Otherwise (a non-zero status, a signal, the timeout): the reply is the failure report of mdp::failure,
four frames: MDP-FAILED, the reason (e.g. \"exit status 3\", \"timed out after 60s\"), its stdout,
its stderr; `client` exits 1 on it. The worker logs each failure (at most one line a second).

Exit status: 0 after SIGINT or SIGTERM (running commands stopped as at the timeout, DISCONNECT
sent: the normal end of a server); 1 failed (a socket error); 2 usage error (a bad flag, service
name or endpoint).";

fn parse_service(name: &str) -> Result<ServiceName, String> {
    let service: ServiceName = name.parse().map_err(|error| format!("{error}"))?;
    if service.is_mmi() {
        return Err("mmi.* services belong to the broker (spec 8)".into());
    }
    Ok(service)
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Without -v: connection events (info); -v adds frame dumps, -vv everything.
    args.verbosity.init_logging(log::LevelFilter::Info);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let status = match error.downcast_ref::<worker::Error>() {
                // A malformed endpoint is a typo on the command line: a usage error, as clap's.
                Some(worker::Error::Connect(_)) => cli::exit::USAGE,
                _ => cli::exit::FAILED,
            };
            cli::fail("worker", error.as_ref(), status)
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
    let exec = args
        .exec
        .map(|command| Exec::new(command, args.exec_timeout.0));
    let stop = worker.stop_handle();
    let stop_commands = exec.as_ref().map(Exec::stopper);
    ctrlc::set_handler(move || {
        stop.stop();
        // The request being served ends with its command, and the reply says it was stopped.
        if let Some(stop_commands) = &stop_commands {
            stop_commands.stop_all();
        }
    })?;
    match &exec {
        // Echo: the request frames go back as they came, without a copy.
        None => worker.serve(|body| body)?,
        Some(exec) => worker.serve(|body| exec.run(&body))?,
    }
    log::info!("stopping: sending DISCONNECT to the broker");
    // Dropping the worker sends DISCONNECT.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_is_the_same_flag_as_in_every_program() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        for (argv, verbose) in [
            (&["worker"][..], 0),
            (&["worker", "-v"], 1),
            (&["worker", "-vv"], 2),
        ] {
            let args = Args::try_parse_from(argv).expect("accepted");
            assert_eq!(args.verbosity.verbose, verbose, "{argv:?}");
        }
    }
}
