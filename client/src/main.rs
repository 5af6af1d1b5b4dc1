//! `client`: an MDP/0.1 client program. It sends a request (or many) to a service through a
//! broker and prints each reply frame on its own line; `--stats` turns it into a load generator
//! that prints one summary line instead (`--stats=json`: one JSON object with a latency
//! histogram, see [`client::stats`]), and `--merge-stats FILE...` adds up such objects from
//! clients that ran side by side.
//!
//! Without `--window` requests go one at a time through the synchronous [`client::Client`]
//! (timeout, then resend on a new socket, `--retries` sends in all, 3 by default). With
//! `--window W` the [`client::AsyncClient`] keeps W requests in flight; by default a request whose
//! reply does not come within the timeout is counted as failed (no resends: the point is to see
//! what was lost), and with `--retries N` it is resent up to N sends in all before it fails.
//! `--stats` counts the requests that were sent more than once as `retried`.
//!
//! `--titanic SERVICE` sends each request through Titanic (spec 9, [`client::titanic`]):
//! stored by `titanic.request`, its reply polled for with `titanic.reply` (backoff from 50 ms
//! doubling to 2 s while it answers 300 or 500), closed with `titanic.close`, and printed as the
//! reply of a normal request; a refusal (400, 500 to the submission) or an unknown id (400 to a
//! poll) fails it.
//!
//! A reply in the shape of [`mdp::failure`] (the work failed) prints its output to stdout, the
//! reason and diagnostics to stderr, and counts as failed (exit 1, `failed=` in `--stats`).
//!
//! A failed request says why: no connection to the broker at all (the socket monitor saw none),
//! or connected but no reply; a tcp host that does not resolve is an error before anything is
//! sent (exit 1, not 2: the name may be right and the resolver down).
//!
//! Exit status: 0 when every request got its reply, 1 when any did not (the reasons on stderr),
//! 2 for usage errors, 130 when Ctrl-C (or SIGTERM) ended the run, after printing what was done,
//! 141 when stdout was closed by its reader (`client ... | head -1`): the run stops at the first
//! reply that cannot be written, quietly, as Unix tools do.
//! With `--merge-stats`: 0 when the figures were merged, 1 when a FILE could
//! not be read or is not a `--stats=json` object.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use client::stats::{Counts, Summary};
use client::{
    AsyncClient, AsyncClientConfig, Client, ClientConfig, Frames, Matching, Outcome, ServiceName,
};

/// Send requests to an MDP/0.1 service through a broker and print the replies.
#[derive(Debug, Parser)]
#[command(version, after_help = AFTER_HELP)]
struct Args {
    /// The broker's endpoint; give -c several times for several brokers: the synchronous client
    /// keeps using the one that last answered and moves to the next on a timeout (so a dead
    /// broker costs one timeout; with -r at least the number of brokers no request fails while
    /// one answers); with --window requests are spread over the live brokers, and one that
    /// times out or whose connection drops is left alone until it answers an mmi.service probe.
    #[arg(
        short = 'c',
        long = "connect",
        value_name = "ENDPOINT",
        default_value = "tcp://localhost:5555",
        action = clap::ArgAction::Append
    )]
    endpoints: Vec<String>,
    /// The service to ask; `mmi.service` asks the broker whether the service named by FRAME has
    /// a worker (200) or not (404).
    #[arg(short, long, value_name = "SERVICE", default_value = "echo", value_parser = parse_service)]
    service: ServiceName,
    /// How long to wait for each reply, in milliseconds.
    #[arg(short = 't', long = "timeout", value_name = "TIMEOUT_MS", default_value_t = 2500,
          value_parser = cli::at_least_one_u64)]
    timeout_ms: u64,
    /// How many times a request is sent in all before it counts as failed, each try waiting
    /// TIMEOUT_MS [default: 3; with --window: 1, no resends]
    #[arg(short, long, value_name = "RETRIES",
          value_parser = cli::at_least_one_u32)]
    retries: Option<u32>,
    /// How many requests to send.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1,
          value_parser = cli::at_least_one_u64)]
    count: u64,
    /// Keep up to this many requests in flight, refilled in batches of W/8 (asynchronous
    /// client; resends only with --retries).
    #[arg(short, long, value_name = "W", value_parser = cli::at_least_one_u64)]
    window: Option<u64>,
    /// With --window: match each reply to its request exactly by a tag frame put first in the
    /// request body, which the worker must echo first (the echo service does). Without it a
    /// reply answers the oldest outstanding request to its service.
    #[arg(long, requires = "window")]
    tag: bool,
    /// Send a body of this many bytes instead of FRAMEs or stdin.
    #[arg(long, value_name = "BYTES", conflicts_with = "frames")]
    size: Option<usize>,
    /// Exact bytes both ways: the body is stdin as it is (no newline removed), and the reply's
    /// frames are written back to back with nothing added, so `client --raw < file > copy` copies
    /// a file byte for byte (through an echo worker). Without it, one trailing newline of stdin is
    /// removed and each reply frame is printed followed by a newline, for text.
    #[arg(long, conflicts_with_all = ["frames", "size"])]
    raw: bool,
    /// Print only a summary at the end: requests, replies, failures, rate, latency. `line` (the
    /// default) is one line of key=value; `json` one JSON object with a latency histogram.
    #[arg(long, value_name = "FORMAT", num_args = 0..=1, require_equals = true,
          default_missing_value = "line")]
    stats: Option<StatsFormat>,
    /// Send nothing: add up the `--stats=json` objects in these files (one per line; `-` is
    /// stdin) of clients that ran side by side, and print their summary as --stats says.
    #[arg(long, value_name = "FILE", num_args = 1..,
          conflicts_with_all = ["frames", "size", "window", "tag", "count"])]
    merge_stats: Vec<PathBuf>,
    /// Send the request through Titanic (rfc.zeromq.org spec 9), durably, to SERVICE: stored by
    /// titanic.request, its reply collected by polling titanic.reply, then titanic.close (see
    /// below for each status). -t and -r apply to each of these requests. One -c only.
    #[arg(long, value_name = "SERVICE", value_parser = parse_service,
          conflicts_with_all = ["service", "window", "tag", "merge_stats"])]
    titanic: Option<ServiceName>,
    #[command(flatten)]
    credentials: cli::CredentialFlags,
    #[command(flatten)]
    verbosity: cli::Verbosity,
    /// The request body, one frame per argument; when none is given, stdin (one trailing newline
    /// removed) is the one frame.
    #[arg(value_name = "FRAME")]
    frames: Vec<std::ffi::OsString>,
}

const AFTER_HELP: &str = "\
Output: each reply frame on its own line, or with --stats exactly one line:
  requests=N replies=N failed=N retried=N seconds=S req_per_s=R p50_us=X p99_us=Y
(retried: requests sent more than once; latency counts from the first send;
with several -c brokers also per_broker=N,N: the replies through each, in -c order.)
With --stats=json one JSON object instead: the same fields, dropped_replies (late or duplicate
replies the windowed client dropped) and latency_us, a histogram that --merge-stats adds up
exactly; percentiles read from it are at most 1/128 (0.78%) above the exact ones.
Ctrl-C (or SIGTERM) stops the run: the windowed client at once, the synchronous one after the
request in hand; --stats still prints what was done.
A reply in the project's failure shape (4 frames, the first MDP-FAILED: the work failed, as
`worker --exec` reports a command that exits non-zero) prints its output frame to stdout, the
reason and diagnostics to stderr, and counts as failed (exit 1; failed= in --stats).
A request that fails says why: \"no connection to the broker at ENDPOINT\" when nothing
accepted a connection there (no broker running, wrong port), \"no reply from service S\" when
the broker was reached but no reply came. A tcp host name is looked up first: one that does
not resolve fails at once (exit 1: the name may be right and the resolver down).
With --titanic SERVICE (through a `titanic` process serving the broker):
  titanic.request  200 ID: stored on disk; 400 (a service Titanic does not serve) or 500 (its
                   store full or failing): the request fails (exit 1)
  titanic.reply    polled after 50 ms, then twice as long each time up to 2 s: 300 (not
                   answered yet) and 500 (store failing) poll on; 200 prints the reply as for a
                   normal request (a failure report too); 400 (unknown, closed or expired) fails
  titanic.close    after the reply; if it fails the reply still counts, with a warning (Titanic
                   keeps the request until its --request-ttl)
  Ctrl-C while polling prints the ID: `client -s titanic.reply ID` collects the reply later.
Credentials, for a broker with --auth: PLAIN (--user NAME --password-file FILE) or CURVE
(--curve-key-file FILE --curve-server-key KEY, in the CURVE build). With several brokers, give
--curve-server-key once (every broker has that key) or once per -c, in the same order. A broker
that refuses the handshake ends the run at once, not after the timeout: \"authentication refused
by the broker at ENDPOINT (PLAIN): ...; check --user and --password-file\" (exit 1); with
several brokers a refusing one counts as down and the request goes to the next.
Exit status: 0 when every request got its reply, 1 when any failed, 2 for usage errors,
130 when interrupted, 141 when stdout was closed by its reader (`client -n 1000 x | head -1`:
the run ends at once, quietly);
with --merge-stats 0 when merged, 1 when a FILE cannot be read or parsed.";

/// The two forms of `--stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatsFormat {
    /// One line of key=value.
    Line,
    /// One JSON object, with a latency histogram.
    Json,
}

fn parse_service(name: &str) -> Result<ServiceName, String> {
    name.parse().map_err(|error| format!("{error}"))
}

/// How many failure reasons are printed before the rest are only counted.
const FAILURES_SHOWN: u64 = 5;

/// Raised by Ctrl-C (SIGINT) or SIGTERM: the run stops, prints what it did, and exits 130.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How often the windowed client looks at [`INTERRUPTED`] while it waits for replies.
const INTERRUPT_CHECK: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let args = Args::parse();
    // Without -v only warnings (a resend, say); -v adds frame dumps, -vv everything.
    args.verbosity.init_logging(log::LevelFilter::Warn);
    if !args.merge_stats.is_empty() {
        return merge_stats(&args.merge_stats, args.stats.unwrap_or(StatsFormat::Line));
    }
    if args.titanic.is_some() && args.endpoints.len() > 1 {
        eprintln!("client: --titanic takes one -c ENDPOINT (the broker Titanic serves)");
        return ExitCode::from(cli::exit::USAGE);
    }
    // Ctrl-C (or SIGTERM) ends the run early but still reports it (issue #16 item 5).
    if let Err(error) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst)) {
        log::warn!("Ctrl-C will not print the figures: {error}");
    }
    match run(&args) {
        // `client ... | head -1`: the reader has what it wanted; say nothing more.
        Ok(Tally {
            output_error: Some(error),
            ..
        }) if cli::is_closed_pipe(&error) => ExitCode::from(cli::exit::STDOUT_CLOSED),
        Ok(Tally {
            output_error: Some(error),
            ..
        }) => {
            eprintln!("client: cannot write the replies to stdout: {error}");
            ExitCode::from(cli::exit::FAILED)
        }
        Ok(tally) if tally.interrupted => {
            eprintln!(
                "client: interrupted: {} of {} requests answered, {} failed",
                tally.replies, tally.requests, tally.failed
            );
            ExitCode::from(cli::exit::INTERRUPTED)
        }
        Ok(tally) if tally.failed == 0 => ExitCode::SUCCESS,
        Ok(tally) => {
            eprintln!(
                "client: {} of {} requests failed",
                tally.failed, tally.requests
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            // A malformed endpoint is a typo on the command line, and so are credential flags
            // that do not fit (or CURVE in a build without it).
            let status =
                if error.is_bad_endpoint() || matches!(error, client::Error::Credentials(_)) {
                    cli::exit::USAGE
                } else {
                    cli::exit::FAILED
                };
            cli::fail("client", &error, status)
        }
    }
}

/// What happened to the requests, for the exit status and `--stats`.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    replies: u64,
    failed: u64,
    /// Requests sent more than once (answered or failed).
    retried: u64,
    /// Replies no request was waiting for, dropped by the windowed client.
    dropped_replies: u64,
    /// Round-trip times of the answered requests, in microseconds.
    latencies_us: Vec<u64>,
    /// Ctrl-C ended the run early; requests still in flight then count as neither.
    interrupted: bool,
    /// With several brokers, the replies through each; empty with one.
    per_broker: Vec<u64>,
    /// Writing a reply to stdout failed: the run stopped there. A closed pipe (the reader has
    /// what it wanted) ends the program quietly with 141, anything else with 1.
    output_error: Option<std::io::Error>,
}

impl Tally {
    /// An empty tally; with several brokers, one reply count per broker.
    fn for_brokers(brokers: usize) -> Tally {
        Tally {
            per_broker: if brokers > 1 {
                vec![0; brokers]
            } else {
                Vec::new()
            },
            ..Tally::default()
        }
    }

    fn answered(&mut self, latency: Duration) {
        self.replies += 1;
        self.latencies_us
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// A reply came to request number `request`: printed (unless `--stats`) and counted, or, if
    /// it has the shape of [`mdp::failure`] (the work failed), its output printed to stdout, the
    /// reason and diagnostics to stderr, and the request counted as failed.
    fn reply(
        &mut self,
        request: u64,
        body: &Frames,
        latency: Duration,
        broker: usize,
        args: &Args,
    ) {
        let Some(failure) = mdp::failure::Failure::parse(body) else {
            self.answered(latency);
            if let Some(count) = self.per_broker.get_mut(broker) {
                *count += 1;
            }
            if args.stats.is_none() {
                self.output(print_frames(body, args.raw));
            }
            return;
        };
        if args.stats.is_none() && !failure.output.is_empty() {
            self.output(print_bytes(failure.output, args.raw));
        }
        let shown = self.failed < FAILURES_SHOWN;
        self.failed(
            request,
            &format_args!("the service reported a failure: {}", failure.reason_text()),
        );
        if shown && !failure.diagnostics.is_empty() {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(failure.diagnostics);
            if !failure.diagnostics.ends_with(b"\n") {
                let _ = stderr.write_all(b"\n");
            }
        }
    }

    /// Keeps the first error writing to stdout: the run stops at once after it.
    fn output(&mut self, written: std::io::Result<()>) {
        if let Err(error) = written {
            self.output_error.get_or_insert(error);
        }
    }

    /// True once stdout cannot be written: the reader has gone (`| head -1`) or the disk is full.
    fn output_failed(&self) -> bool {
        self.output_error.is_some()
    }

    fn failed(&mut self, request: u64, reason: &dyn std::fmt::Display) {
        self.failed += 1;
        if self.failed <= FAILURES_SHOWN {
            eprintln!("client: request {request} failed: {reason}");
        } else if self.failed == FAILURES_SHOWN + 1 {
            eprintln!("client: (further failures are only counted)");
        }
    }

    /// What `--stats` prints, in either form.
    fn summary(&mut self, elapsed: Duration) -> Summary {
        let counts = Counts {
            requests: self.requests,
            replies: self.replies,
            failed: self.failed,
            retried: self.retried,
            dropped_replies: self.dropped_replies,
        };
        let mut summary = Summary::of_run(counts, &mut self.latencies_us, elapsed.as_secs_f64());
        summary.per_broker.clone_from(&self.per_broker);
        summary
    }
}

/// `--merge-stats`: the summary of runs side by side, from their `--stats=json` objects.
fn merge_stats(files: &[PathBuf], format: StatsFormat) -> ExitCode {
    let mut merged: Option<Summary> = None;
    for file in files {
        let text = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map(|_| text)
        } else {
            std::fs::read_to_string(file)
        };
        let text = match text {
            Ok(text) => text,
            Err(error) => {
                eprintln!("client: cannot read {}: {error}", file.display());
                return ExitCode::FAILURE;
            }
        };
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match Summary::from_json(line) {
                Ok(summary) => match merged.as_mut() {
                    Some(merged) => merged.merge(&summary),
                    None => merged = Some(summary),
                },
                Err(error) => {
                    eprintln!("client: {} line {}: {error}", file.display(), number + 1);
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let Some(merged) = merged else {
        eprintln!("client: no --stats=json object to merge");
        return ExitCode::FAILURE;
    };
    let line = format!("{}\n", print_summary(&merged, format));
    match cli::write_stdout("client", line.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(status) => status,
    }
}

fn print_summary(summary: &Summary, format: StatsFormat) -> String {
    match format {
        StatsFormat::Line => summary.line(),
        StatsFormat::Json => summary.to_json(),
    }
}

fn run(args: &Args) -> Result<Tally, client::Error> {
    let body = request_body(args);
    let timeout = Duration::from_millis(args.timeout_ms);
    let credentials = args.credentials.load(args.endpoints.len())?;
    let started = Instant::now();
    let mut tally = match (&args.titanic, args.window) {
        (Some(target), _) => run_titanic(args, target, &body, timeout, credentials)?,
        (None, None) => run_synchronous(args, &body, timeout, credentials)?,
        (None, Some(window)) => run_windowed(args, &body, timeout, window, credentials)?,
    };
    if let Some(format) = args.stats {
        let line = format!(
            "{}\n",
            print_summary(&tally.summary(started.elapsed()), format)
        );
        let mut stdout = std::io::stdout().lock();
        let written = stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush());
        tally.output(written);
    }
    Ok(tally)
}

/// One request at a time, each with timeout and resends.
fn run_synchronous(
    args: &Args,
    body: &[Vec<u8>],
    timeout: Duration,
    credentials: Vec<client::Credentials>,
) -> Result<Tally, client::Error> {
    let config = ClientConfig {
        timeout,
        retries: args.retries.unwrap_or(ClientConfig::default().retries),
    };
    let mut client =
        Client::with_credentials(&zmq::Context::new(), &args.endpoints, config, credentials)?;
    let mut tally = Tally::for_brokers(args.endpoints.len());
    for request in 1..=args.count {
        if INTERRUPTED.load(Ordering::SeqCst) {
            tally.interrupted = true;
            break;
        }
        tally.requests += 1;
        let sent_at = Instant::now();
        let resends_before = client.resends();
        let outcome = client.send(&args.service, body);
        if client.resends() > resends_before {
            tally.retried += 1;
        }
        match outcome {
            Ok(reply) => {
                let broker = client.broker_index();
                if args.endpoints.len() > 1 {
                    log::debug!("request {request} answered through {}", client.broker());
                }
                tally.reply(request, &reply, sent_at.elapsed(), broker, args);
                if tally.output_failed() {
                    break;
                }
            }
            // Every answer is worth waiting for; only a broken socket stops the run, and a
            // broker that refuses our credentials, which the next request would not change.
            Err(error @ client::Error::Socket(_)) => return Err(error),
            Err(error @ client::Error::AuthRefused { .. }) => {
                tally.failed(request, &cli::error_chain(&error));
                break;
            }
            Err(error) => tally.failed(request, &cli::error_chain(&error)),
        }
    }
    Ok(tally)
}

/// `--titanic`: each request stored by Titanic, its reply polled for with backoff, then closed;
/// one at a time.
fn run_titanic(
    args: &Args,
    target: &ServiceName,
    body: &[Vec<u8>],
    timeout: Duration,
    credentials: Vec<client::Credentials>,
) -> Result<Tally, client::Error> {
    use client::titanic::{Poll, TitanicClient, TitanicConfig, TitanicError};

    let config = TitanicConfig {
        client: ClientConfig {
            timeout,
            retries: args.retries.unwrap_or(ClientConfig::default().retries),
        },
        ..TitanicConfig::default()
    };
    let endpoint = args.endpoints.first().map_or("", String::as_str);
    let mut tally = Tally::for_brokers(1);
    // The client's own errors (a bad endpoint, a socket) end the run as for any request.
    let client = Client::with_credentials(
        &zmq::Context::new(),
        &[endpoint],
        config.client.clone(),
        credentials,
    )?;
    let mut titanic = TitanicClient::with_client(client, config.clone());
    'requests: for request in 1..=args.count {
        if INTERRUPTED.load(Ordering::SeqCst) {
            tally.interrupted = true;
            break;
        }
        tally.requests += 1;
        let sent_at = Instant::now();
        let resends_before = titanic.resends();
        let id = match titanic.submit(target, body) {
            Ok(id) => id,
            Err(TitanicError::Client(error @ client::Error::Socket(_))) => return Err(error),
            Err(error) => {
                tally.failed(request, &cli::error_chain(&error));
                continue;
            }
        };
        log::debug!("request {request} stored by Titanic as {id}");
        let mut delay = None;
        let reply = loop {
            match titanic.poll(&id) {
                Ok(Poll::Done(reply)) => break reply,
                Ok(Poll::Pending) => {}
                Ok(Poll::Unknown) => {
                    let error = TitanicError::Unknown(id.clone());
                    tally.failed(request, &error);
                    continue 'requests;
                }
                Err(TitanicError::Client(error @ client::Error::Socket(_))) => return Err(error),
                Err(error) => {
                    tally.failed(
                        request,
                        &format_args!("{} ({})", cli::error_chain(&error), collect_later(&id)),
                    );
                    continue 'requests;
                }
            }
            let next = config.next_poll_delay(delay);
            delay = Some(next);
            log::debug!("request {request} ({id}) not answered yet; next poll in {next:?}");
            if !sleep_unless_interrupted(next) {
                tally.interrupted = true;
                eprintln!("client: request {request} {}", collect_later(&id));
                break 'requests;
            }
        };
        if titanic.resends() > resends_before {
            tally.retried += 1;
        }
        if let Err(error) = titanic.close(&id) {
            log::warn!(
                "request {request}: titanic.close {id} failed ({}); Titanic keeps it until its \
                 --request-ttl",
                cli::error_chain(&error)
            );
        }
        tally.reply(request, &reply, sent_at.elapsed(), 0, args);
        if tally.output_failed() {
            break;
        }
    }
    Ok(tally)
}

/// What to do with a request Titanic has stored when this client stops waiting for it.
fn collect_later(id: &str) -> String {
    format!(
        "is stored by Titanic as {id}: `client -s titanic.reply {id}` collects its reply later, \
         `client -s titanic.close {id}` lets Titanic forget it"
    )
}

/// Sleeps for `duration`, looking at Ctrl-C every [`INTERRUPT_CHECK`]; false if it came.
fn sleep_unless_interrupted(duration: Duration) -> bool {
    let until = Instant::now() + duration;
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(INTERRUPT_CHECK));
    }
}

/// `window` requests in flight, replies as they come, resends if asked, then timeouts counted
/// as failures.
fn run_windowed(
    args: &Args,
    body: &[Vec<u8>],
    timeout: Duration,
    window: u64,
    credentials: Vec<client::Credentials>,
) -> Result<Tally, client::Error> {
    let config = AsyncClientConfig {
        timeout,
        matching: if args.tag {
            Matching::ByTag
        } else {
            Matching::ByService
        },
        retries: args.retries.unwrap_or(1),
    };
    let mut client =
        AsyncClient::with_credentials(&zmq::Context::new(), &args.endpoints, config, credentials)?;
    // A broker that refused our credentials will refuse the requests not sent yet too.
    let mut refused = false;
    let window = usize::try_from(window).unwrap_or(usize::MAX);
    // Refill in batches of W/8: libzmq wakes its I/O thread once for a burst of sends but once
    // per send when they trickle, so this saves about a third of the client's CPU per request
    // (measured), while keeping between 7/8 W and W requests in flight.
    let batch = (window / 8).max(1);
    let mut tally = Tally::for_brokers(args.endpoints.len());
    while (tally.requests < args.count && !refused) || client.outstanding() > 0 {
        if INTERRUPTED.load(Ordering::SeqCst) {
            tally.interrupted = true;
            break;
        }
        let room = window.saturating_sub(client.outstanding());
        let refill = room >= batch || tally.requests + (room as u64) >= args.count;
        while refill && !refused && tally.requests < args.count && client.outstanding() < window {
            // Each request needs its own messages (sending consumes them); this is the one copy.
            let frames: Frames = body
                .iter()
                .map(|frame| zmq::Message::from(&frame[..]))
                .collect();
            client.send(&args.service, frames)?;
            tally.requests += 1;
        }
        // Not `recv`, which may wait a whole timeout: Ctrl-C is looked at every INTERRUPT_CHECK.
        let Some(outcome) = client.recv_timeout(INTERRUPT_CHECK)? else {
            continue;
        };
        match outcome {
            Outcome::Reply {
                body,
                latency,
                tries,
                id,
                broker,
                ..
            } => {
                if tries > 1 {
                    tally.retried += 1;
                }
                if args.endpoints.len() > 1 {
                    log::debug!(
                        "request {} answered through {}",
                        id.0 + 1,
                        args.endpoints.get(broker).map_or("", String::as_str)
                    );
                }
                tally.reply(id.0 + 1, &body, latency, broker, args);
                if tally.output_failed() {
                    // The replies still in flight are not wanted: the reader has gone.
                    return Ok(tally);
                }
            }
            Outcome::TimedOut {
                id,
                service,
                tries,
                no_connection,
                refused: refusal,
            } => {
                if tries > 1 {
                    tally.retried += 1;
                }
                let reason = if let Some(refusal) = refusal {
                    refused = true;
                    refusal.to_string()
                } else if no_connection {
                    client::no_connection(&args.endpoints, tries, timeout)
                } else if client.untagged_replies() > 0 {
                    // Replies came, but none could be matched: say so, not a bare "no reply".
                    format!(
                        "{} ({})",
                        client::no_reply(&service, tries, timeout),
                        client::untagged(client.untagged_replies())
                    )
                } else {
                    client::no_reply(&service, tries, timeout)
                };
                tally.failed(id.0 + 1, &reason);
            }
        }
    }
    tally.dropped_replies = client.dropped_replies();
    if client.dropped_replies() > 0 {
        log::info!(
            "dropped {} replies that no request was waiting for",
            client.dropped_replies()
        );
    }
    Ok(tally)
}

/// The request body: the FRAME arguments, or `--size` bytes, or stdin as one frame.
fn request_body(args: &Args) -> Vec<Vec<u8>> {
    if !args.frames.is_empty() {
        return args
            .frames
            .iter()
            .map(|frame| frame.clone().into_vec())
            .collect();
    }
    if let Some(size) = args.size {
        // Printable, so that `-v` dumps show text.
        return vec![b"0123456789abcdef"
            .iter()
            .copied()
            .cycle()
            .take(size)
            .collect()];
    }
    if std::io::stdin().is_terminal() {
        // Otherwise a user who typed no FRAME sees a client that seems to hang.
        eprintln!("client: reading the request body from stdin (Ctrl-D to end)");
    }
    let mut stdin = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut stdin) {
        log::warn!("cannot read stdin ({error}); sending an empty body");
    }
    if !args.raw && stdin.last() == Some(&b'\n') {
        stdin.pop();
    }
    vec![stdin]
}

/// The output of work that failed: as it is with `--raw`, else with a newline added if it has
/// none (a command's stdout usually ends with one).
fn print_bytes(bytes: &[u8], raw: bool) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    if !raw && !bytes.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()
}

/// Each frame on its own line, as raw bytes (a reply need not be text); with `raw`, the frames
/// back to back and nothing else. An error (a closed stdout, `client ... | head -1`) ends the run.
fn print_frames(frames: &Frames, raw: bool) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    for frame in frames {
        stdout.write_all(frame)?;
        if !raw {
            stdout.write_all(b"\n")?;
        }
    }
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_line_has_exactly_the_documented_fields() {
        let mut tally = Tally {
            requests: 3,
            replies: 2,
            failed: 1,
            retried: 1,
            latencies_us: vec![300, 100],
            ..Tally::default()
        };
        assert_eq!(
            tally.summary(Duration::from_millis(500)).line(),
            "requests=3 replies=2 failed=1 retried=1 seconds=0.500 req_per_s=4 p50_us=100 p99_us=300"
        );
    }

    #[test]
    fn retries_default_to_three_sync_and_one_windowed() {
        let sync = Args::try_parse_from(["client", "x"]).unwrap();
        assert_eq!(sync.retries, None, "3 is applied in run_synchronous");
        let windowed = Args::try_parse_from(["client", "-w", "8", "-r", "2", "x"]).unwrap();
        assert_eq!(windowed.retries, Some(2));
        assert!(Args::try_parse_from(["client", "-r", "0", "x"]).is_err());
    }

    #[test]
    fn stats_takes_its_format_only_after_an_equals_sign() {
        let plain = Args::try_parse_from(["client", "--stats", "json"]).unwrap();
        assert_eq!(plain.stats, Some(StatsFormat::Line));
        assert_eq!(
            plain.frames,
            ["json"],
            "a FRAME after --stats stays a FRAME"
        );
        let json = Args::try_parse_from(["client", "--stats=json", "x"]).unwrap();
        assert_eq!(json.stats, Some(StatsFormat::Json));
        assert_eq!(Args::try_parse_from(["client", "x"]).unwrap().stats, None);
        assert!(Args::try_parse_from(["client", "--stats=yaml", "x"]).is_err());
        let merge = Args::try_parse_from(["client", "--merge-stats", "a", "b"]).unwrap();
        assert_eq!(merge.merge_stats, [PathBuf::from("a"), PathBuf::from("b")]);
        assert!(Args::try_parse_from(["client", "--merge-stats", "a", "-w", "8"]).is_err());
    }

    #[test]
    fn usage_errors_are_caught_by_clap() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        assert!(
            Args::try_parse_from(["client", "--tag", "x"]).is_err(),
            "--tag needs --window"
        );
        assert!(Args::try_parse_from(["client", "--size", "3", "x"]).is_err());
        assert!(Args::try_parse_from(["client", "-s", "", "x"]).is_err());
    }
}
