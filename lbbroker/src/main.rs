//! `lbbroker`: the command line. Without a subcommand (or with `demo`) it runs the Ruby gist's
//! whole demo in one process; `broker`, `processor` and `client` run one role each, to watch the
//! pattern in separate terminals. Stdout carries only the gist's lines; logs go to stderr.
//!
//! The demo's flags may also be given before a subcommand that takes them (`lbbroker --frontend X
//! broker`, `lbbroker --unit-ms 1 demo`), as `-v` may; given on both sides, the subcommand's value
//! wins. One given before a subcommand that does not take it (`lbbroker --clients 3 broker`) is a
//! usage error, as it is after it.
//!
//! The exit statuses are the workspace's ([`cli::exit`]). A closed stdout (`lbbroker | head -2`)
//! stops every role and ends the program quietly, with 141.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use lbbroker::{
    run_broker, run_clients, run_demo, run_processors, stop_pair, ClientGroup, DemoConfig,
    Endpoints, Error, ProcessorGroup, StopHandle, DEFAULT_BACKEND, DEFAULT_FRONTEND, MAX_CLIENTS,
    MAX_PROCESSORS,
};

/// What `--help` says after the flags.
const HOW_IT_WORKS: &str = "\
HOW IT WORKS
  Clients (REQ sockets) connect to the broker's frontend ROUTER; processors (REQ sockets) connect
  to its backend ROUTER and say READY. A ROUTER puts the sender's identity in front of every
  message it receives and routes what it sends by the first frame, so the broker can keep a queue
  of ready processors and send each request to the one at the front, with the client's identity
  inside. The processor copies that envelope into its reply, and the broker sends the reply back
  out of the frontend to that client.

  While no processor is ready, the broker does not even poll the frontend: requests wait in the
  socket, and the broker sleeps. A request sent to a processor that has gone goes to the next
  ready one. Two peers with one identity: the newer takes it over, and the broker warns.

EXAMPLES
  lbbroker                        the gist: 10 clients, 3 processors, 1-second units
  lbbroker --unit-ms 100 --seed 7 a faster run with the same loads every time
  lbbroker broker                 in one terminal, then in others:
  lbbroker processor              3 processors, PROCESSOR-0..2
  lbbroker client --clients 4     4 clients, one request each

  The demo's flags work before or after the subcommand. Pass -v to see every message, frame by
  frame, on stderr (-vv for everything; RUST_LOG, if set, overrides both).";

/// What the exit statuses mean for each role, after the workspace's [`cli::EXIT_STATUS_HELP`].
const EXIT_STATUS_OF_ROLES: &str = "\
The broker and processors end normally on Ctrl-C or SIGTERM (exit 0); the demo and clients exit
130 if interrupted before every client has its reply, 1 if a client's --timeout passes.";

/// The load-balancing broker of the ZeroMQ guide: clients and processors that never know about
/// each other, and a broker that gives each request to the processor that has waited longest.
#[derive(Debug, Parser)]
#[command(
    name = "lbbroker",
    version,
    after_help = format!("{HOW_IT_WORKS}\n\n{}\n{EXIT_STATUS_OF_ROLES}", cli::EXIT_STATUS_HELP)
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    verbosity: cli::Verbosity,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole demo in one process: broker, processors and clients as threads (the default).
    Demo(DemoArgs),
    /// Run only the broker: bind both ROUTER sockets and forward until Ctrl-C.
    Broker(BrokerArgs),
    /// Run only processors: connect to the backend, say READY, work on requests until Ctrl-C.
    Processor(ProcessorArgs),
    /// Run only clients: connect to the frontend, send one request each, print each reply, exit.
    Client(ClientArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    clients: ClientCount,
    #[command(flatten)]
    processors: ProcessorCount,
    #[command(flatten)]
    unit: Unit,
    #[command(flatten)]
    frontend: Frontend,
    #[command(flatten)]
    backend: Backend,
    #[command(flatten)]
    seed: Seed,
    #[command(flatten)]
    http: Http,
}

#[derive(Debug, Args)]
struct BrokerArgs {
    #[command(flatten)]
    frontend: Frontend,
    #[command(flatten)]
    backend: Backend,
    #[command(flatten)]
    http: Http,
}

#[derive(Debug, Args)]
struct ProcessorArgs {
    #[command(flatten)]
    processors: ProcessorCount,
    /// Number in the first processor's identity. Give each terminal its own range (e.g. 3 for
    /// PROCESSOR-3..): of two peers with one identity, the newer takes it over and the older one
    /// is cut off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    first_id: usize,
    #[command(flatten)]
    unit: Unit,
    #[command(flatten)]
    backend: Backend,
}

#[derive(Debug, Args)]
struct ClientArgs {
    #[command(flatten)]
    clients: ClientCount,
    /// Number in the first client's identity. Give each terminal its own range (e.g. 10 for
    /// CLIENT-10..): of two peers with one identity, the newer takes it over and the older one
    /// is cut off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    first_id: usize,
    #[command(flatten)]
    frontend: Frontend,
    #[command(flatten)]
    seed: Seed,
    /// Give up if a client has no reply MS milliseconds after it started, and exit 1 (the broker
    /// may be down, or have no processor). Without it, clients wait until Ctrl-C.
    #[arg(long, value_name = "MS", value_parser = cli::at_least_one_u64)]
    timeout: Option<u64>,
}

#[derive(Debug, Args)]
struct ClientCount {
    /// How many clients (CLIENT-0, CLIENT-1, ...), 1 to 500. Each is a thread with a REQ socket
    /// that sends one request, a random load of 1 to 3 units, and waits for its reply.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=MAX_CLIENTS as i64))]
    clients: u16,
}

#[derive(Debug, Args)]
struct ProcessorCount {
    /// How many processors (PROCESSOR-0, ...), 1 to 100. Each is a thread with a REQ socket that
    /// says READY, then takes one request at a time and answers "OK from PROCESSOR-n".
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=MAX_PROCESSORS as i64))]
    processors: u16,
}

#[derive(Debug, Args)]
struct Unit {
    /// How long one unit of load takes, in milliseconds: a processor given load 2 works for
    /// 2 x MS. The gist's unit is one second; use 1 for a run that is over at once.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    unit_ms: u64,
}

#[derive(Debug, Args)]
struct Frontend {
    /// Where the broker's frontend ROUTER binds and clients connect. ipc:// paths are Unix
    /// sockets relative to the current directory; tcp://127.0.0.1:5555 works too.
    #[arg(long, value_name = "ENDPOINT", default_value = DEFAULT_FRONTEND)]
    frontend: String,
}

#[derive(Debug, Args)]
struct Backend {
    /// Where the broker's backend ROUTER binds and processors connect.
    #[arg(long, value_name = "ENDPOINT", default_value = DEFAULT_BACKEND)]
    backend: String,
}

#[derive(Debug, Args)]
struct Http {
    /// Serve a dashboard on ADDR (e.g. 127.0.0.1:8080; port 0 picks one and logs it): a live page
    /// at / with the queue and its processors in LRU order, /metrics for Prometheus, /status as
    /// JSON. Off by default. An address that cannot be bound ends the run with status 1.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct Seed {
    /// Seed for the clients' random loads, to repeat a run exactly (the order of the lines can
    /// still differ, as threads race). Without it a seed is drawn and logged with -v.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let parsed = parse();
    // The broker is a server with nothing on stdout: at the default level it says where it
    // listens and how it ended. The other roles print the gist's lines, and only warnings besides.
    // A demo with a dashboard says where it is, as the broker does.
    let quiet = match &parsed.command {
        Command::Broker(_) => log::LevelFilter::Info,
        Command::Demo(args) if args.http.http.is_some() => log::LevelFilter::Info,
        _ => log::LevelFilter::Warn,
    };
    parsed.verbosity.init_logging(quiet);
    match run(parsed) {
        Ok(()) => ExitCode::from(cli::exit::DONE),
        // `lbbroker | head -2`: the reader has what it wanted; every role has been stopped.
        Err(Error::Output(error)) if cli::is_closed_pipe(&error) => {
            ExitCode::from(cli::exit::STDOUT_CLOSED)
        }
        // The whole chain on one line, outermost first, so the user sees what failed and why.
        Err(error) => cli::fail("lbbroker", &error, exit_status(&error)),
    }
}

/// The exit status for `error`, by the workspace's contract (see [`cli::exit`]).
fn exit_status(error: &Error) -> u8 {
    match error {
        Error::RoleFailed { source, .. } => exit_status(source),
        Error::InvalidSetting { .. } => cli::exit::USAGE,
        // ZeroMQ connects in the background: a connect fails only for an endpoint it cannot parse.
        Error::Connect { .. } => cli::exit::USAGE,
        // An endpoint libzmq cannot use at all is a usage error; one it could use but cannot now
        // (a port or path in use, a missing directory) is a failure.
        Error::Bind { source, .. }
            if matches!(
                source.zmq_error(),
                zmq::Error::EINVAL
                    | zmq::Error::EPROTONOSUPPORT
                    | zmq::Error::ENOCOMPATPROTO
                    | zmq::Error::ENODEV
            ) =>
        {
            cli::exit::USAGE
        }
        Error::Interrupted { .. } => cli::exit::INTERRUPTED,
        _ => cli::exit::FAILED,
    }
}

/// The flags the top level (the demo's) shares with subcommands, by clap's id (the field name).
const SHARED_FLAGS: [&str; 7] = [
    "clients",
    "processors",
    "unit_ms",
    "frontend",
    "backend",
    "seed",
    "http",
];

/// The parsed command line, with the demo's flags given before a subcommand moved into it.
fn parse() -> Parsed {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let verbosity = cli.verbosity;
    let top = cli.demo;
    let (Some(mut command), Some((name, sub_matches))) = (cli.command, matches.subcommand()) else {
        return Parsed {
            command: Command::Demo(top),
            verbosity,
        };
    };
    let given_before = |id: &str| given(&matches, id);
    let given_after = |id: &str| given(sub_matches, id);
    let mut command_line = Cli::command();
    let takes = command_line
        .find_subcommand(name)
        .map(|sub| {
            SHARED_FLAGS
                .into_iter()
                .filter(|id| sub.get_arguments().any(|arg| arg.get_id() == *id))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(misplaced) = SHARED_FLAGS
        .into_iter()
        .find(|id| given_before(id) && !takes.contains(id))
    {
        command_line
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--{} does not apply to `lbbroker {name}`",
                    misplaced.replace('_', "-")
                ),
            )
            .exit();
    }
    // The value given before the subcommand, unless the subcommand was given one itself.
    let before = |id: &str| given_before(id) && !given_after(id);
    match &mut command {
        Command::Demo(args) => {
            adopt(&mut args.clients, top.clients, before("clients"));
            adopt(&mut args.processors, top.processors, before("processors"));
            adopt(&mut args.unit, top.unit, before("unit_ms"));
            adopt(&mut args.frontend, top.frontend, before("frontend"));
            adopt(&mut args.backend, top.backend, before("backend"));
            adopt(&mut args.seed, top.seed, before("seed"));
            adopt(&mut args.http, top.http, before("http"));
        }
        Command::Broker(args) => {
            adopt(&mut args.frontend, top.frontend, before("frontend"));
            adopt(&mut args.backend, top.backend, before("backend"));
            adopt(&mut args.http, top.http, before("http"));
        }
        Command::Processor(args) => {
            adopt(&mut args.processors, top.processors, before("processors"));
            adopt(&mut args.unit, top.unit, before("unit_ms"));
            adopt(&mut args.backend, top.backend, before("backend"));
        }
        Command::Client(args) => {
            adopt(&mut args.clients, top.clients, before("clients"));
            adopt(&mut args.frontend, top.frontend, before("frontend"));
            adopt(&mut args.seed, top.seed, before("seed"));
        }
    }
    Parsed { command, verbosity }
}

/// Whether `id` was on the command line (not a default) at this level.
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(matches.try_get_raw(id), Ok(Some(_)))
        && matches.value_source(id) == Some(ValueSource::CommandLine)
}

/// A command line, ready to run.
#[derive(Debug)]
struct Parsed {
    command: Command,
    verbosity: cli::Verbosity,
}

fn run(parsed: Parsed) -> Result<(), Error> {
    let (stop, stopped) = stop_pair().map_err(Error::StopSignal)?;
    stop_on_ctrl_c(&stop);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match parsed.command {
        Command::Demo(args) => {
            let config = DemoConfig {
                clients: usize::from(args.clients.clients),
                processors: usize::from(args.processors.processors),
                unit: Duration::from_millis(args.unit.unit_ms),
                endpoints: Endpoints {
                    frontend: args.frontend.frontend,
                    backend: args.backend.backend,
                },
                seed: args.seed.seed,
                http: args.http.http,
            };
            let report = run_demo(&config, &mut out, &stop, &stopped)?;
            log::info!(
                "{} requests answered (seed {})",
                report.replies.len(),
                report.seed
            );
        }
        Command::Broker(args) => {
            let endpoints = Endpoints {
                frontend: args.frontend.frontend,
                backend: args.backend.backend,
            };
            let stats = run_broker(&endpoints, args.http.http, &stopped)?;
            log::info!("broker stopped: {stats}");
        }
        Command::Processor(args) => {
            let group = ProcessorGroup {
                count: usize::from(args.processors.processors),
                first_id: args.first_id,
                backend: args.backend.backend,
                unit: Duration::from_millis(args.unit.unit_ms),
            };
            let taken = run_processors(&group, &mut out, &stop, &stopped)?;
            log::info!("processors stopped after {taken} requests");
        }
        Command::Client(args) => {
            let group = ClientGroup {
                count: usize::from(args.clients.clients),
                first_id: args.first_id,
                frontend: args.frontend.frontend,
                seed: args.seed.seed,
                timeout: args.timeout.map(Duration::from_millis),
            };
            run_clients(&group, &mut out, &stop, &stopped)?;
        }
    }
    out.flush().map_err(Error::Output)
}

/// Raises `stop` on Ctrl-C (or SIGTERM), so every role ends cleanly and the broker still removes
/// its ipc files. Without a handler, Ctrl-C would kill the process on the spot.
fn stop_on_ctrl_c(stop: &StopHandle) {
    let stop = stop.clone();
    // The handler may run more than once; stopping again is harmless, logging it once is enough.
    let installed = ctrlc::set_handler(move || {
        if !stop.is_raised() {
            log::info!("interrupted: stopping");
        }
        stop.stop();
    });
    if let Err(error) = installed {
        log::warn!("Ctrl-C will end the process at once: {error}");
    }
}

/// Takes `value`, given before the subcommand, in place of the subcommand's own `field` when
/// `given` says so.
fn adopt<T>(field: &mut T, value: T, given: bool) {
    if given {
        *field = value;
    }
}
