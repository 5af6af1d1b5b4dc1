//! `lbbroker`: the command line. Without a subcommand (or with `demo`) it runs the Ruby gist's
//! whole demo in one process; `broker`, `processor` and `client` run one role each, to watch the
//! pattern in separate terminals. Stdout carries only the gist's lines; logs go to stderr.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lbbroker::{
    run_broker, run_clients, run_demo, run_processors, stop_pair, ClientGroup, DemoConfig,
    Endpoints, Error, ProcessorGroup, StopHandle, DEFAULT_BACKEND, DEFAULT_FRONTEND, MAX_CLIENTS,
    MAX_PROCESSORS,
};

/// The load-balancing broker of the ZeroMQ guide: clients and processors that never know about
/// each other, and a broker that gives each request to the processor that has waited longest.
#[derive(Debug, Parser)]
#[command(
    name = "lbbroker",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "\
HOW IT WORKS
  Clients (REQ sockets) connect to the broker's frontend ROUTER; processors (REQ sockets) connect
  to its backend ROUTER and say READY. A ROUTER puts the sender's identity in front of every
  message it receives and routes what it sends by the first frame, so the broker can keep a queue
  of ready processors and send each request to the one at the front, with the client's identity
  inside. The processor copies that envelope into its reply, and the broker sends the reply back
  out of the frontend to that client.

  While no processor is ready, the broker does not even poll the frontend: requests wait in the
  socket, and the broker sleeps.

EXAMPLES
  lbbroker                        the gist: 10 clients, 3 processors, 1-second units
  lbbroker --unit-ms 100 --seed 7 a faster run with the same loads every time
  lbbroker broker                 in one terminal, then in others:
  lbbroker processor              3 processors, PROCESSOR-0..2
  lbbroker client --clients 4     4 clients, one request each

  Set RUST_LOG=debug (or pass -v) to see every message, frame by frame, on stderr."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    demo: DemoArgs,

    /// Log every message, frame by frame, on stderr (RUST_LOG, if set, takes precedence).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
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
}

#[derive(Debug, Args)]
struct BrokerArgs {
    #[command(flatten)]
    frontend: Frontend,
    #[command(flatten)]
    backend: Backend,
}

#[derive(Debug, Args)]
struct ProcessorArgs {
    #[command(flatten)]
    processors: ProcessorCount,
    /// Number in the first processor's identity. Give each terminal its own range (e.g. 3 for
    /// PROCESSOR-3..): a ROUTER will not accept a second peer with an identity it already has.
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
    /// CLIENT-10..): a ROUTER will not accept a second peer with an identity it already has.
    #[arg(long, value_name = "N", default_value_t = 0)]
    first_id: usize,
    #[command(flatten)]
    frontend: Frontend,
    #[command(flatten)]
    seed: Seed,
    /// Give up if a client has no reply MS milliseconds after it started, and exit 1 (the broker
    /// may be down, or have no processor). Without it, clients wait until Ctrl-C.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
}

#[derive(Debug, Args)]
struct ClientCount {
    /// How many clients (CLIENT-0, CLIENT-1, ...). Each is a thread with a REQ socket that sends
    /// one request, a random load of 1 to 3 units, and waits for its reply.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=MAX_CLIENTS as i64))]
    clients: u16,
}

#[derive(Debug, Args)]
struct ProcessorCount {
    /// How many processors (PROCESSOR-0, ...). Each is a thread with a REQ socket that says
    /// READY, then takes one request at a time and answers "OK from PROCESSOR-n".
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
struct Seed {
    /// Seed for the clients' random loads, to repeat a run exactly (the order of the lines can
    /// still differ, as threads race). Without it a seed is drawn and logged with -v.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The whole chain on one line, outermost first, so the user sees what failed and why.
        Err(error) => cli::fail("lbbroker", &error, cli::exit::FAILED),
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let (stop, stopped) = stop_pair().map_err(Error::StopSignal)?;
    stop_on_ctrl_c(&stop);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match cli.command.unwrap_or(Command::Demo(cli.demo)) {
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
            let stats = run_broker(&endpoints, &stopped)?;
            log::info!("broker stopped: {stats:?}");
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

/// Logs go to stderr. `RUST_LOG` wins; otherwise warnings only, or debug with `-v`.
fn init_logging(verbose: u8) {
    let default_level = if verbose == 0 { "warn" } else { "debug" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
}
