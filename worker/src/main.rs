//! `worker`: an MDP/0.1 worker program. It registers one service with a broker (or several:
//! `-c A -c B`, all at once or `--failover`) and serves it, either as `echo` (the reply is the
//! request) or by running a shell command per request (`--exec`; see the `worker::exec` module for
//! how bodies map to stdin and stdout). `--slots N` makes it N MDP workers to each broker.
//!
//! SIGINT or SIGTERM stop the `--exec` commands running at the time (SIGTERM to each one's process
//! group, SIGKILL after a grace), send DISCONNECT to the broker and exit 0. Exit status 2 means a
//! usage error (a bad flag, service name or endpoint), 1 any other failure.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use worker::exec::{Exec, Timeout};
use worker::{Mode, ServiceName, Worker};

/// Serve one MDP/0.1 service for a broker: echo each request, or run a command per request.
#[derive(Debug, Parser)]
#[command(version, after_help = AFTER_HELP)]
struct Args {
    /// A broker's endpoint. Repeat it for several brokers: registered with all of them at once,
    /// or with one at a time in the order given (--failover).
    #[arg(
        short = 'c',
        long = "connect",
        value_name = "ENDPOINT",
        default_value = "tcp://localhost:5555"
    )]
    endpoints: Vec<String>,
    /// One broker at a time: the first that answers, the next when it fails (silent for
    /// heartbeat x liveness, or its connection refused), and no going back while it serves.
    #[arg(long)]
    failover: bool,
    /// MDP workers (sockets) to each broker, each holding at most one request: requests in flight
    /// at once to this program, per broker.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_slots)]
    slots: usize,
    /// Requests handled at the same moment (with --exec, processes at once). Default with --exec:
    /// brokers x slots in all mode, slots with --failover, so that no request waits inside the
    /// worker. Default for echo: 1, on the thread that polls, since an echo takes no time and
    /// more threads only add hand-offs between them.
    #[arg(long, value_name = "N", value_parser = parse_concurrency)]
    concurrency: Option<usize>,
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
    #[command(flatten)]
    heartbeats: worker::HeartbeatFlags,
    #[command(flatten)]
    credentials: worker::CredentialFlags,
    /// Benchmarks only (scripts/bench.sh): echo after sleeping this many milliseconds, a slow
    /// worker without --exec.
    #[arg(long, value_name = "MS", hide = true)]
    bench_delay_ms: Option<u64>,
    /// Benchmarks only: a request whose body is `sleep-ms=N` is echoed after N ms, so that one
    /// long request can be sent among short ones (the head-of-line row).
    #[arg(long, hide = true)]
    bench_sleep_bodies: bool,
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

Several brokers (-c A -c B), in all mode (the default): the worker is registered with every broker
at once, as separate MDP workers; the loss of one never interrupts work from the others, and a
broker that only the clients can still reach keeps its workers. With --failover, one broker at a
time: the first that answers, the next one when it is silent for heartbeat x liveness or refuses
the connection, and it stays there (no flapping back when the first returns). Failover cannot see
a broker that the clients have lost but the worker has not: it stays on it, serving nobody; all
mode covers that case.

Slots (--slots N) are a prefetch window: the broker sends each slot a request as soon as it is
ready. With --concurrency below brokers x slots, requests wait inside the worker: a long request
holds up the ones queued behind it (head-of-line) while other workers may sit idle, and a worker
that dies loses every request it holds, up to N per broker (clients retry; a broker's --redeliver
sends them on once). With --exec the default concurrency runs every request at once; plain echo,
which answers at once and so strands nothing, serves every slot on one thread (less CPU per
request than a thread per slot).

Credentials, for a broker with --auth: PLAIN (--user NAME --password-file FILE) or CURVE
(--curve-key-file FILE --curve-server-key KEY, in the CURVE build). With several brokers, give
--curve-server-key once (every broker has that key) or once per -c, in the same order. A broker
that refuses the handshake is logged (at most once a second, naming authentication) and tried
again after a backoff that doubles up to 5 s; libzmq alone would retry every 100 ms. A broker that
answers READY with DISCONNECT may not let this principal serve the service (the serve list of
its --auth file): logged the same way, and retried with the same backoff.

Exit status: 0 after SIGINT or SIGTERM (running commands stopped as at the timeout, DISCONNECT
sent: the normal end of a server); 1 failed (a socket error); 2 usage error (a bad flag, service
name, endpoint or credential file, or CURVE in a build without it).";

fn parse_slots(text: &str) -> Result<usize, String> {
    parse_count(text, MAX_SLOTS)
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    parse_count(text, MAX_CONCURRENCY)
}

/// A count from 1 to `max`, with words for what is wrong.
fn parse_count(text: &str, max: usize) -> Result<usize, String> {
    let count: usize = text
        .parse()
        .map_err(|_| format!("not a whole number: {text:?}"))?;
    if count == 0 || count > max {
        return Err(format!("must be from 1 to {max}"));
    }
    Ok(count)
}

/// Each slot is a socket (and a monitor) per broker; a few hundred is already far past the
/// point where more slots help.
const MAX_SLOTS: usize = 256;
/// Each unit of concurrency is a thread.
const MAX_CONCURRENCY: usize = 1024;

/// The sleep a `sleep-ms=N` body asks for (--bench-sleep-bodies); anything else asks for none.
fn requested_sleep(body: &worker::Frames) -> Option<Duration> {
    let text = std::str::from_utf8(body.first()?).ok()?;
    let millis: u64 = text.strip_prefix("sleep-ms=")?.trim().parse().ok()?;
    Some(Duration::from_millis(millis))
}

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
                Some(
                    worker::Error::Connect(_)
                    | worker::Error::Topology(_)
                    | worker::Error::Credentials(_),
                ) => cli::exit::USAGE,
                _ if error
                    .downcast_ref::<zsocket::credentials::Error>()
                    .is_some() =>
                {
                    cli::exit::USAGE
                }
                _ => cli::exit::FAILED,
            };
            cli::fail("worker", error.as_ref(), status)
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.heartbeats.config();
    let mode = if args.failover {
        Mode::Failover
    } else {
        Mode::All
    };
    let brokers_at_once = match mode {
        Mode::All => args.endpoints.len(),
        Mode::Failover => 1,
    };
    // A handler that takes time (a command, or the bench's deliberate delays) gets one thread per
    // conversation, so nothing waits inside the worker unless the user asks (issue 15's default).
    // Plain echo answers at once, so one thread strands nothing: served inline, one poll brings
    // the requests of every slot that has one, and their replies go out before the next poll.
    let takes_time =
        args.exec.is_some() || args.bench_delay_ms.is_some() || args.bench_sleep_bodies;
    let concurrency = args.concurrency.unwrap_or(if takes_time {
        brokers_at_once.saturating_mul(args.slots)
    } else {
        1
    });
    let credentials = args.credentials.load(args.endpoints.len())?;
    let mut worker = Worker::builder(args.service)
        .broker_credentials(credentials)
        .endpoints(args.endpoints)
        .slots(args.slots)
        .mode(mode)
        .config(config)
        .build()?;
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
    let served = AtomicU64::new(0);
    let delay = args.bench_delay_ms.map(Duration::from_millis);
    let sleep_bodies = args.bench_sleep_bodies;
    match &exec {
        // Echo: the request frames go back as they came, without a copy.
        None => worker.serve_concurrent(concurrency, |body| {
            served.fetch_add(1, Ordering::Relaxed);
            if let Some(delay) = delay {
                std::thread::sleep(delay);
            }
            if sleep_bodies {
                if let Some(delay) = requested_sleep(&body) {
                    std::thread::sleep(delay);
                }
            }
            body
        })?,
        Some(exec) => worker.serve_concurrent(concurrency, |body| {
            served.fetch_add(1, Ordering::Relaxed);
            exec.run(&body)
        })?,
    }
    log::info!(
        "stopping after {} requests: sending DISCONNECT to the broker",
        served.load(Ordering::Relaxed)
    );
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

    #[test]
    fn several_brokers_slots_and_concurrency_parse_and_bad_counts_are_refused() {
        let args = Args::try_parse_from([
            "worker",
            "-c",
            "tcp://a:1",
            "-c",
            "tcp://b:2",
            "--slots",
            "4",
            "--failover",
        ])
        .expect("accepted");
        assert_eq!(args.endpoints, ["tcp://a:1", "tcp://b:2"]);
        assert_eq!(args.slots, 4);
        assert!(args.failover);
        assert_eq!(args.concurrency, None);
        let args = Args::try_parse_from(["worker"]).expect("accepted");
        assert_eq!(args.endpoints, ["tcp://localhost:5555"]);
        assert_eq!(args.slots, 1);
        for bad in [
            &["worker", "--slots", "0"][..],
            &["worker", "--slots", "257"],
            &["worker", "--concurrency", "0"],
            &["worker", "--concurrency", "x"],
        ] {
            let error = Args::try_parse_from(bad).expect_err("refused");
            assert!(
                error.to_string().contains("from 1 to") || error.to_string().contains("number"),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn a_sleep_body_asks_for_its_milliseconds_and_nothing_else_does() {
        let body = |text: &str| vec![zmq::Message::from(text)];
        assert_eq!(
            requested_sleep(&body("sleep-ms=250")),
            Some(Duration::from_millis(250))
        );
        for other in ["hello", "sleep-ms=", "sleep-ms=x", "sleep=5"] {
            assert_eq!(requested_sleep(&body(other)), None, "{other}");
        }
        assert_eq!(requested_sleep(&Vec::new()), None);
    }
}
