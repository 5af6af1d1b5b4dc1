//! `titanic`: the Titanic service of spec 9 for an MDP broker. It serves `titanic.request`,
//! `titanic.reply` and `titanic.close`, keeps every request in an SQLite database (or a
//! PostgreSQL database that several titanic processes share) until the client closes it, and
//! sends each stored request to its service.
//!
//! SIGINT or SIGTERM stop it (exit 0: the normal end of a server); whatever was stored stays
//! stored, and the next start dispatches what is still pending.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use titanic::dispatch::DispatchConfig;
use titanic::patterns::ServicePatterns;
use titanic::service::Conversations;
use titanic::{Config, Db, Titanic};

/// Durable MDP requests (spec 9): store, dispatch, and hand back replies across crashes.
#[derive(Debug, Parser)]
#[command(version, after_help = AFTER_HELP)]
struct Args {
    /// The broker's endpoint (Titanic is its worker and its client).
    #[arg(short = 'c', long = "connect", value_name = "ENDPOINT")]
    endpoint: String,
    /// The store: an SQLite database file (created if missing), or a PostgreSQL URL
    /// (postgres://USER:PASSWORD@HOST:PORT/DATABASE) that several titanic processes share.
    #[arg(long, value_name = "PATH|URL", value_parser = parse_db)]
    db: Db,
    /// How long a request is kept, answered or not (e.g. 90s, 30m, 24h, 7d). After it,
    /// titanic.reply answers 400, as for an unknown request.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    request_ttl: Duration,
    /// The most requests stored at once, answered or not; titanic.request answers 500 beyond.
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = cli::at_least_one_u64)]
    max_stored: u64,
    /// The services Titanic stores requests for, comma-separated: a name (echo), a prefix
    /// ending in * (billing.*), or * for all. Requests for others are refused with 400.
    #[arg(long, value_name = "PATTERNS", default_value = "*", value_parser = ServicePatterns::parse)]
    services: ServicePatterns,
    /// Conversations with the broker serving titanic.request: submissions that arrive
    /// together share one disk sync.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = cli::at_least_one_u32)]
    request_conversations: u32,
    /// Tries out at once per service.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = cli::at_least_one_u32)]
    lanes: u32,
    /// How long one try waits for its service's reply before it is given up and retried
    /// later (the request may then run twice).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    try_timeout: Duration,
    /// The longest wait between two tries of a request, or two mmi.service checks.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    backoff_max: Duration,
    /// With PostgreSQL: how long a request's lease lasts unrenewed. The process that sends a
    /// request holds its lease and renews it every third of this; another process takes the
    /// request over only after the lease ran out.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    lease: Duration,
    #[command(flatten)]
    heartbeats: worker::HeartbeatFlags,
    /// For a broker with --auth: one principal for Titanic's workers and for its dispatch, so
    /// it must be allowed to serve titanic.* and to call the services in --services.
    #[command(flatten)]
    credentials: worker::CredentialFlags,
    #[command(flatten)]
    verbosity: cli::Verbosity,
}

const AFTER_HELP: &str = "\
Services (rfc.zeromq.org spec 9), each reply starting with a status frame:
  titanic.request SERVICE BODY...  200 ID once stored on disk; 400 malformed or service not
                                   allowed (--services); 500 store full or failing (retry)
  titanic.reply ID                 200 REPLY... ; 300 pending (retry later); 400 unknown, closed
                                   or expired; 500 store failing (retry)
  titanic.close ID                 200, also for an unknown ID
Replies are kept until titanic.close or --request-ttl; titanic.reply never deletes.
Look into the store with: sqlite3 DB \"select id, cast(service as text), state, attempts from requests\"
  or: psql URL -c \"select id, state, attempts, lease_owner from titanic_requests\"

Exit status: 0 after SIGINT or SIGTERM (the normal end of a server); 1 failed (the database
cannot be opened, a socket error); 2 usage error (a bad flag or endpoint).";

fn parse_db(text: &str) -> Result<Db, String> {
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(Db::parse(text))
}

/// `500ms`, `90s`, `30m`, `24h`, `7d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m, h or d (e.g. 24h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m, h or d")),
    };
    match number.checked_mul(unit_ms) {
        Some(0) => Err("must be more than 0".to_owned()),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err(format!("{text:?} is too long")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.verbosity.init_logging(log::LevelFilter::Info);
    let worker_config = args.heartbeats.config();
    let mut config = Config::new(&args.endpoint, args.db.clone());
    config.request_ttl = args.request_ttl;
    config.max_stored = args.max_stored;
    config.services = args.services;
    config.conversations = Conversations {
        request: args.request_conversations as usize,
        reply: 2,
        close: 1,
    };
    config.dispatch = DispatchConfig {
        lanes: args.lanes as usize,
        try_timeout: args.try_timeout,
        backoff_max: args.backoff_max,
        lease: args.lease,
        ..DispatchConfig::default()
    };
    config.worker = worker_config;
    config.credentials = match args.credentials.load(1) {
        Ok(credentials) => credentials.into_iter().next().unwrap_or_default(),
        Err(error) => return cli::fail("titanic", &error, cli::exit::USAGE),
    };

    let (stop, stop_signal) = match zsocket::stop_pair() {
        Ok(pair) => pair,
        Err(error) => return cli::fail("titanic", &error, cli::exit::FAILED),
    };
    if let Err(error) = ctrlc::set_handler(move || stop.stop()) {
        return cli::fail("titanic", &error, cli::exit::FAILED);
    }
    let titanic = match Titanic::start(&config) {
        Ok(titanic) => titanic,
        Err(error) => {
            let status = match &error {
                titanic::Error::Worker(worker::Error::Connect(_)) => cli::exit::USAGE,
                _ => cli::exit::FAILED,
            };
            return cli::fail("titanic", &error, status);
        }
    };
    log::info!(
        "titanic is storing requests in {} for services {}",
        args.db,
        config.services
    );
    // Wait for SIGINT or SIGTERM.
    while let Ok(false) = stop_signal.sleep(Duration::from_secs(3600)) {}
    let stats = titanic.store_stats();
    log::info!(
        "stopping: {} requests stored in {} commits since start",
        stats.submitted,
        stats.commits
    );
    titanic.stop();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_and_say_what_is_wrong() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("10").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("10x").unwrap_err().contains("unit must be"));
        assert!(parse_duration("0s").unwrap_err().contains("more than 0"));
        assert!(parse_duration("s").is_err());
    }
}
