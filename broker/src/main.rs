//! `broker`: the Majordomo broker on the command line.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::auth::AuthConfig;
use broker::server::{Auth, Mechanism, SocketOptions};
use broker::{Config, Server};
use clap::{Parser, Subcommand};

/// A Majordomo Protocol broker (MDP/0.1, rfc.zeromq.org spec 7, with MMI, spec 8).
///
/// Clients send requests for a service by name; workers register for a service and receive
/// those requests one at a time, the least recently used worker first. Clients and workers both
/// connect to the same ROUTER socket. Requests for `mmi.service` ask whether a service has
/// workers ("200" or "404"); other `mmi.*` services answer "501".
///
/// Stop it with Ctrl-C (SIGINT) or SIGTERM: it sends DISCONNECT to every worker, so they
/// register again as soon as a broker is back, and exits 0 (for a server that is the normal end).
///
/// With --auth FILE, every peer must log in as a principal of FILE, which says what each may
/// serve and call: with ZeroMQ PLAIN (a name and a password) on a bare --bind endpoint, with
/// CURVE (key pairs, every frame encrypted) on one written curve+tcp://...; SIGHUP reads FILE
/// again. `broker keygen` writes the broker's CURVE key pair for --curve-secret-file.
#[derive(Debug, Parser)]
#[command(name = "broker", version, after_help = cli::EXIT_STATUS_HELP)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Require every peer to authenticate (PLAIN) as a principal of this TOML file, and let each
    /// serve and call only what the file grants it. SIGHUP reads the file again (a file that no
    /// longer parses is refused and the rules in force stay). See the README, "Running on a real
    /// network".
    #[arg(long, value_name = "FILE")]
    auth: Option<PathBuf>,

    /// The broker's CURVE key pair (a secret key file from `broker keygen`, mode 0600), for the
    /// curve+ endpoints of --bind; SIGHUP reads it again, and a new key rebinds those
    /// endpoints with it. Needs a build with CURVE (see the README, "A build with CURVE").
    #[arg(long, value_name = "FILE")]
    curve_secret_file: Option<PathBuf>,

    /// Endpoint to listen on; repeat to listen on several (tcp and ipc at once).
    /// `tcp://127.0.0.1:*` picks a free port, and the log line says which. With --auth, each
    /// endpoint picks its mechanism: `curve+tcp://*:5556` is CURVE (needs --curve-secret-file),
    /// `plain+tcp://*:5555` or a bare endpoint is PLAIN; both kinds at once on one broker share
    /// its queues and workers. Without --auth every endpoint is open (NULL).
    #[arg(
        short,
        long = "bind",
        value_name = "ENDPOINT",
        default_value = "tcp://*:5555"
    )]
    bind: Vec<String>,

    /// How often to send HEARTBEAT to each worker, in milliseconds. Workers must use the same.
    #[arg(long, value_name = "MS", default_value_t = mdp::DEFAULT_HEARTBEAT_INTERVAL_MS,
          value_parser = cli::at_least_one_u64)]
    heartbeat_ms: u64,

    /// How many heartbeat intervals a worker may stay silent before it is purged.
    #[arg(long, value_name = "N", default_value_t = mdp::DEFAULT_HEARTBEAT_LIVENESS,
          value_parser = cli::at_least_one_u32)]
    liveness: u32,

    /// Most requests that may wait for one service when none of its workers is free; more are
    /// dropped (and logged), and the client's own timeout and retry take over. One client (a
    /// connection, or a principal with --auth) may hold at most half of them.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_queue)]
    max_queue: usize,

    /// Most requests that may wait in all services together.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_queued_total)]
    max_queued_total: usize,

    /// Most bytes that may wait in all queues together: the bodies, plus 256 bytes per request
    /// and 64 per frame, so empty frames are not free. One client may hold at most half.
    /// Replies for clients that read slower than they come wait too, up to as much again, in
    /// order; past that they are dropped with a log line.
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().max_queued_bytes)]
    max_queued_bytes: usize,

    /// Most services that have only waiting requests and no worker: a request that would
    /// create one more is refused, so asking for made-up names cannot fill the broker.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_absent_services)]
    max_absent_services: usize,

    /// How long a request may wait for a worker before it is dropped, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    request_ttl_ms: u64,

    /// Largest frame a peer may send, in bytes (ZMQ_MAXMSGSIZE counts each frame of a multipart
    /// message, not their total); libzmq drops the connection of a peer that sends a larger
    /// one, and the broker is not told why. 0 means no limit. To find such a peer, run with -v:
    /// it logs each closed connection with its address (a peer cut off this way closes without
    /// a DISCONNECT, often right after connecting).
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64))]
    max_message_size: u64,

    /// When a worker dies holding a request, send that request to another worker (once).
    /// Off by default: MDP assumes idempotent workers, but with this on a request whose worker
    /// died after doing the work runs twice. Without it, the client's retry recovers instead.
    #[arg(long)]
    redeliver: bool,

    /// Serve a dashboard on ADDR (e.g. 127.0.0.1:8080; port 0 picks one and logs it): a live page
    /// at / with each service, its queue and its workers in LRU order, /metrics for Prometheus,
    /// /status as JSON. Off by default. An address that cannot be bound ends the run with
    /// status 1.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,

    #[command(flatten)]
    verbosity: cli::Verbosity,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read a password on stdin (one line) and print its argon2id hash, for a principal's
    /// `password_hash` in the --auth file.
    HashPassword,
    /// Write a new CURVE key pair: the secret key to PATH (mode 0600; for --curve-secret-file
    /// or a client's --curve-key-file) and the public key to PATH.pub (for peers'
    /// --curve-server-key, or a principal's curve_public_key), and print the public key. Never
    /// replaces a file. Needs a build with CURVE.
    Keygen {
        /// Where to write the secret key; the public key goes to PATH.pub.
        #[arg(long, value_name = "PATH", default_value = "broker.key")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    memory::large_blocks_go_back_at_once();
    let args = Args::parse();
    args.verbosity.init_logging(log::LevelFilter::Info);
    match &args.command {
        Some(Command::HashPassword) => {
            return match hash_password() {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(error) => cli::fail("broker hash-password", &*error, cli::exit::FAILED),
            };
        }
        Some(Command::Keygen { out }) => {
            return match keygen(out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => cli::fail("broker keygen", &error, cli::exit::FAILED),
            };
        }
        None => {}
    }
    if let Err(message) = check_mechanisms(&args) {
        use clap::CommandFactory;
        Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => cli::fail("broker", &*error, cli::exit::FAILED),
    }
}

/// `broker hash-password`: one line from stdin, without its line end, hashed.
fn hash_password() -> Result<String, Box<dyn std::error::Error>> {
    let mut input = Vec::new();
    std::io::stdin().take(64 * 1024).read_to_end(&mut input)?;
    let line = input.split(|&b| b == b'\n').next().unwrap_or_default();
    let password = line.strip_suffix(b"\r").unwrap_or(line);
    if password.is_empty() {
        return Err(
            "no password on stdin (give it one line, e.g. `broker hash-password < FILE`)".into(),
        );
    }
    Ok(broker::auth::hash_password(password)?)
}

/// `broker keygen`: a fresh pair, the secret to `out` (0600), the public to `out`.pub.
fn keygen(out: &std::path::Path) -> Result<(), zsocket::curve::Error> {
    let keys = zsocket::curve::KeyPair::generate()?;
    let public_path = keys.write(out)?;
    println!("{}", keys.public());
    eprintln!(
        "broker keygen: secret key in {} (mode 0600: for --curve-secret-file, never give it \
         away); public key above and in {} (for peers' --curve-server-key, or a principal's \
         curve_public_key)",
        out.display(),
        public_path.display()
    );
    Ok(())
}

/// The usage mistakes of --bind's mechanisms, --auth and --curve-secret-file, said before
/// anything starts (exit 2). A build without CURVE is not a usage mistake: `run` says so.
fn check_mechanisms(args: &Args) -> Result<(), String> {
    let curve_binds = args
        .bind
        .iter()
        .filter(|bind| broker::server::parse_bind(bind).0 == Some(Mechanism::Curve))
        .count();
    let prefixed = args
        .bind
        .iter()
        .find(|bind| broker::server::parse_bind(bind).0.is_some());
    if let (Some(bind), None) = (prefixed, &args.auth) {
        return Err(format!(
            "--bind {bind} names a mechanism, which needs --auth FILE (the principals it admits)"
        ));
    }
    match (curve_binds, &args.curve_secret_file) {
        (0, Some(_)) => Err(
            "--curve-secret-file is for CURVE endpoints, and no --bind is one (write it \
             curve+tcp://...)"
                .to_string(),
        ),
        (1.., None) => Err(
            "a curve+ endpoint needs the broker's key pair: --curve-secret-file FILE \
             (`broker keygen --out FILE` writes one)"
                .to_string(),
        ),
        _ => Ok(()),
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Before any thread starts, so that every thread inherits the mask and SIGHUP is taken by
    // the reload thread alone (ctrlc's handler would otherwise treat it as a stop, and without
    // a handler SIGHUP's default action ends the process).
    let hangups = hangup::block()?;
    // The signal handler goes in before anything that takes time or logs (binding, loading the
    // auth file), so that a SIGINT or SIGTERM during start-up ends the broker cleanly (status 0)
    // rather than by the signal's default action. Until the server exists there is nothing to
    // stop: the handler leaves a flag, looked at once the stopper is in its slot.
    //
    // The handler lives as long as the process, but the stopper must not: it holds the ZeroMQ
    // context, and only terminating the context (when its last holder lets go) waits for the
    // final DISCONNECTs to leave. So the handler borrows the stopper from a slot that is emptied
    // once the server has stopped.
    let stopper_slot: Arc<Mutex<Option<zsocket::StopHandle>>> = Arc::new(Mutex::new(None));
    let stop_asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (handler_slot, handler_asked) = (Arc::clone(&stopper_slot), Arc::clone(&stop_asked));
    ctrlc::set_handler(move || {
        handler_asked.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(slot) = handler_slot.lock() {
            if let Some(stopper) = slot.as_ref() {
                stopper.stop();
            }
        }
    })?;
    let curve = match &args.curve_secret_file {
        Some(file) => {
            zsocket::curve::available()?;
            Some(zsocket::curve::KeyPair::read(file)?)
        }
        None => None,
    };
    let auth = match &args.auth {
        Some(file) => Some(Auth {
            config: AuthConfig::load(file)?,
            file: Some(file.clone()),
            curve,
        }),
        None => None,
    };
    let config = Config {
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        liveness: args.liveness,
        max_queue: args.max_queue,
        max_queued_total: args.max_queued_total,
        max_queued_bytes: args.max_queued_bytes,
        max_absent_services: args.max_absent_services,
        request_ttl: Duration::from_millis(args.request_ttl_ms),
        redeliver: args.redeliver,
    };
    let options = SocketOptions {
        max_message_size: match args.max_message_size {
            0 => None,
            // Within i64 by the value parser's range.
            size => Some(i64::try_from(size).unwrap_or(i64::MAX)),
        },
    };
    let principals = auth.as_ref().map(|auth| auth.config.access.len());
    let mut server = Server::bind_with_auth(&args.bind, config, &options, auth)?;
    if let Some(file) = &args.curve_secret_file {
        server.reload_curve_key_from(file.clone());
    }
    if let Some(addr) = args.http {
        server.serve_dashboard(addr)?;
    }
    if let (Some(file), Some(count)) = (&args.auth, principals) {
        let mut kinds: Vec<String> = server.mechanisms().iter().map(|m| m.to_string()).collect();
        kinds.sort();
        kinds.dedup();
        log::info!(
            "authentication on: {}, {count} principal(s) from {}",
            kinds.join(" and "),
            file.display()
        );
    }
    hangup::spawn_reloader(hangups, args.auth.is_some().then(|| server.reload_handle()))?;
    if let Ok(mut slot) = stopper_slot.lock() {
        let stopper = server.stop_handle();
        // A signal that came before the slot was filled (the handler saw it empty).
        if stop_asked.load(std::sync::atomic::Ordering::SeqCst) {
            stopper.stop();
        }
        *slot = Some(stopper);
    }
    let result = server.run();
    if let Ok(mut slot) = stopper_slot.lock() {
        slot.take();
    }
    // Closing the last socket and the context lets the DISCONNECTs out (linger 500 ms).
    drop(server);
    result?;
    Ok(())
}

/// SIGHUP: blocked in every thread and waited for by one, which asks the server to reload the
/// `--auth` file, or, without `--auth`, logs that there is nothing to reload (a broker started
/// without it must not be stopped by a SIGHUP meant for a reload, nor by a closed terminal).
/// (`sigwait` takes a blocked signal whatever handler is installed.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod hangup {
    use broker::server::ReloadHandle;

    /// The signal set holding SIGHUP, now blocked in this thread and those it starts.
    pub struct Blocked(libc::sigset_t);

    pub fn block() -> std::io::Result<Blocked> {
        // SAFETY: sigemptyset/sigaddset only write the set we own; pthread_sigmask changes this
        // thread's mask, read from the set we pass.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGHUP);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(Blocked(set))
        }
    }

    pub fn spawn_reloader(blocked: Blocked, reload: Option<ReloadHandle>) -> std::io::Result<()> {
        let set = blocked.0;
        std::thread::Builder::new()
            .name("sighup".into())
            .spawn(move || loop {
                let mut signal: libc::c_int = 0;
                // SAFETY: sigwait reads the set (ours, blocked) and writes the signal number.
                let rc = unsafe { libc::sigwait(&set, &mut signal) };
                if rc == 0 && signal == libc::SIGHUP {
                    match &reload {
                        Some(reload) => {
                            log::info!("SIGHUP: reading the auth file again");
                            reload.reload();
                        }
                        None => log::info!(
                            "SIGHUP: nothing to reload (no --auth file); the broker goes on"
                        ),
                    }
                }
            })?;
        Ok(())
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod hangup {
    use broker::server::ReloadHandle;

    pub struct Blocked;

    pub fn block() -> std::io::Result<Blocked> {
        Ok(Blocked)
    }

    pub fn spawn_reloader(_: Blocked, reload: Option<ReloadHandle>) -> std::io::Result<()> {
        if reload.is_some() {
            log::warn!("SIGHUP does not reload the auth file on this platform");
        }
        Ok(())
    }
}

/// glibc's malloc serves a large block from its heap once a block that size has been freed (its
/// mmap threshold follows the largest block freed, up to 32 MiB), and a freed heap block stays in
/// the process until the heap is trimmed. A flood of 1 MiB requests that the broker refuses then
/// leaves hundreds of MB of freed blocks resident. A fixed threshold keeps every block of
/// 128 KiB or more (large request bodies) in a mapping of its own, returned when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod memory {
    pub fn large_blocks_go_back_at_once() {
        // SAFETY: mallopt only sets a tuning parameter of the allocator; called first thing in
        // main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod memory {
    pub fn large_blocks_go_back_at_once() {}
}
