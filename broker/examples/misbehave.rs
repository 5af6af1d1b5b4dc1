//! Peers that misbehave on purpose, for `scripts/overload.sh`: each speaks just enough MDP/0.1 to
//! be let in, then does what a broken or hostile program would.
//!
//! ```text
//! misbehave silent-worker ENDPOINT SERVICE [--heartbeat-ms MS]
//!     READY, then heartbeats forever and never replies: each request it gets is held for good.
//! misbehave deaf-client ENDPOINT SERVICE COUNT SIZE
//!     sends COUNT requests of SIZE bytes and never reads a reply, with the smallest receive
//!     queue and kernel buffer it can ask for, so the broker's queue to it fills; runs until killed.
//! ```
//!
//! Both print one line to stdout when they have done their part (`registered`, `sent N`), so a
//! script can wait for it, and otherwise run until they are killed.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "misbehave", about = "MDP peers that misbehave on purpose")]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Register a service, heartbeat, and never reply to a request.
    SilentWorker {
        endpoint: String,
        service: String,
        /// Heartbeat interval; must match the broker's.
        #[arg(long, default_value_t = mdp::DEFAULT_HEARTBEAT_INTERVAL_MS)]
        heartbeat_ms: u64,
    },
    /// Send requests and never read the replies.
    DeafClient {
        endpoint: String,
        service: String,
        count: u64,
        size: usize,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.role {
        Role::SilentWorker {
            endpoint,
            service,
            heartbeat_ms,
        } => silent_worker(&endpoint, &service, Duration::from_millis(heartbeat_ms)),
        Role::DeafClient {
            endpoint,
            service,
            count,
            size,
        } => deaf_client(&endpoint, &service, count, size),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("misbehave: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a line to stdout at once (stdout may be a pipe or a file, which would buffer it).
fn announce(line: &str) {
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn silent_worker(endpoint: &str, service: &str, interval: Duration) -> Result<(), zmq::Error> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    socket.connect(endpoint)?;
    socket.send_multipart([&b""[..], b"MDPW01", b"\x01", service.as_bytes()], 0)?;
    announce("registered");
    let mut held = 0u64;
    let mut heartbeat_at = Instant::now() + interval;
    loop {
        let wait = heartbeat_at.saturating_duration_since(Instant::now());
        if socket.poll(zmq::POLLIN, wait.as_millis() as i64)? > 0 {
            let frames = socket.recv_multipart(0)?;
            // [empty, MDPW01, command, ...]
            match frames.get(2).map(|command| command.as_slice()) {
                Some(b"\x02") => {
                    held += 1;
                    eprintln!("silent-worker: holding request {held}, and never replying");
                }
                Some(b"\x05") => {
                    eprintln!("silent-worker: the broker sent DISCONNECT; stopping");
                    return Ok(());
                }
                // HEARTBEAT, or anything else: a sign of life from the broker, nothing to do.
                _ => {}
            }
        }
        if Instant::now() >= heartbeat_at {
            // Heartbeats keep it registered while it holds requests: the broker cannot tell it
            // from a worker that is merely slow.
            socket.send_multipart([&b""[..], b"MDPW01", b"\x04"], 0)?;
            heartbeat_at = Instant::now() + interval;
        }
    }
}

fn deaf_client(endpoint: &str, service: &str, count: u64, size: usize) -> Result<(), zmq::Error> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    // Take in as little as possible: one message in libzmq's queue, and the smallest kernel
    // receive buffer, so the replies back up into the broker right away.
    socket.set_rcvhwm(1)?;
    socket.set_rcvbuf(4096)?;
    // Never block on sending: every request goes out, however many.
    socket.set_sndhwm(0)?;
    socket.connect(endpoint)?;
    let body = vec![b'd'; size];
    for _ in 0..count {
        socket.send_multipart([&b""[..], b"MDPC01", service.as_bytes(), &body], 0)?;
    }
    announce(&format!("sent {count}"));
    // Keep the connection open and never read: until killed.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
