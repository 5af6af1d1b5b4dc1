//! Titanic (rfc.zeromq.org spec 9): requests that survive a crash of anything, on top of MDP.
//!
//! A client hands a request to `titanic.request` and gets a 32-hex-digit id back once the request
//! is on disk; Titanic sends it to its service as an MDP client, stores the reply, and hands it
//! out through `titanic.reply` for as long as the client wants, until `titanic.close`. The client,
//! the broker, the workers and Titanic itself may all crash and restart in between: what was
//! answered 200 is not lost.
//!
//! Titanic is an MDP worker (of its three services) and an MDP client (of the services it
//! dispatches to) of the same broker. Its parts:
//! * [`store`]: the [`store::Store`] trait, what any store promises; [`sqlite`]: the embedded
//!   SQLite store (WAL, `synchronous=FULL`, one writer thread with group commit); [`pg`]: the
//!   PostgreSQL store that several Titanic processes share, with leases ([`lease`]).
//! * [`service`]: the three services of spec 9, frame by frame, and the workers that serve them.
//! * [`dispatch`]: per-service queues and lanes that send stored requests and store the replies.
//! * [`patterns`]: `--services`, the services Titanic may call.
//! * [`id`]: the request ids (random UUIDs).
//!
//! [`Titanic::start`] puts them together, as the `titanic` program does.

pub mod dispatch;
pub mod id;
pub mod lease;
pub mod patterns;
pub mod pg;
pub mod service;
pub mod sqlite;
pub mod store;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use log::{info, warn};
use worker::WorkerConfig;
use zsocket::StopHandle;

use crate::dispatch::{DispatchConfig, Dispatcher};
use crate::patterns::ServicePatterns;
use crate::pg::PgStore;
use crate::service::{unix_ms, Conversations, ServiceWorkers, Services};
use crate::sqlite::SqliteStore;
use crate::store::{Store, StoreError, StoreStats};

/// Everything Titanic is set up with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The broker's endpoint.
    pub endpoint: String,
    /// The store: an SQLite database file (created if missing), or a PostgreSQL database.
    pub db: Db,
    /// How long a request is kept, answered or not, after it was submitted. Default 24 h.
    pub request_ttl: Duration,
    /// The most requests stored at once; more are refused with 500. Default 1,000,000.
    pub max_stored: u64,
    /// The services Titanic stores requests for. Default every one (`*`).
    pub services: ServicePatterns,
    /// Conversations with the broker per service.
    pub conversations: Conversations,
    pub dispatch: DispatchConfig,
    /// Heartbeats of the service workers; must match the broker's.
    pub worker: WorkerConfig,
    /// What Titanic proves to a broker with `--auth`, as its workers and as the client that
    /// dispatches (one principal for both: it must be allowed to serve `titanic.*` and to call
    /// the services it stores requests for). Default none.
    pub credentials: zsocket::credentials::Credentials,
}

impl Config {
    /// The defaults, for a broker at `endpoint` and a database at `db`.
    pub fn new(endpoint: &str, db: impl Into<Db>) -> Config {
        Config {
            endpoint: endpoint.to_owned(),
            db: db.into(),
            request_ttl: Duration::from_secs(24 * 3600),
            max_stored: 1_000_000,
            services: ServicePatterns::any(),
            conversations: Conversations {
                request: 8,
                reply: 2,
                close: 1,
            },
            dispatch: DispatchConfig::default(),
            worker: WorkerConfig::default(),
            credentials: zsocket::credentials::Credentials::None,
        }
    }
}

/// Where the requests are stored.
#[derive(Clone, PartialEq, Eq)]
pub enum Db {
    /// The embedded store: an SQLite database file.
    Sqlite(PathBuf),
    /// The shared store: a PostgreSQL connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl Db {
    /// `postgres://...` or `postgresql://...` is a PostgreSQL URL; anything else is a file.
    pub fn parse(text: &str) -> Db {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Db::Postgres(text.to_owned())
        } else {
            Db::Sqlite(PathBuf::from(text))
        }
    }

    /// Opens the store.
    pub fn open(&self, max_stored: u64) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Db::Sqlite(path) => Arc::new(SqliteStore::open(path, max_stored)?),
            Db::Postgres(url) => Arc::new(PgStore::open(url, max_stored)?),
        })
    }
}

/// Printed without a URL's password.
impl std::fmt::Display for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Db::Sqlite(path) => write!(f, "{}", path.display()),
            Db::Postgres(url) => f.write_str(&pg::redacted(url)),
        }
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({self})")
    }
}

impl From<PathBuf> for Db {
    fn from(path: PathBuf) -> Db {
        Db::Sqlite(path)
    }
}

impl From<&Path> for Db {
    fn from(path: &Path) -> Db {
        Db::Sqlite(path.to_owned())
    }
}

impl From<&PathBuf> for Db {
    fn from(path: &PathBuf) -> Db {
        Db::Sqlite(path.clone())
    }
}

impl From<&str> for Db {
    fn from(text: &str) -> Db {
        Db::parse(text)
    }
}

/// What can stop Titanic from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Worker(#[from] worker::Error),
    #[error("cannot {0}")]
    Setup(&'static str, #[source] std::io::Error),
}

/// A running Titanic. Dropping it without [`Titanic::stop`] leaves its threads to the process.
#[derive(Debug)]
pub struct Titanic {
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
    workers: ServiceWorkers,
    sweeper: (StopHandle, JoinHandle<()>),
}

impl Titanic {
    /// Opens the store, queues every pending request it holds for dispatch, then starts serving
    /// the three services and dispatching.
    pub fn start(config: &Config) -> Result<Titanic, Error> {
        let store = config.db.open(config.max_stored)?;
        let context = zmq::Context::new();
        let dispatcher = Arc::new(Dispatcher::new(
            &context,
            &config.endpoint,
            &config.credentials,
            config.dispatch.clone(),
            Arc::clone(&store),
        ));
        // Before the services start, so that a request stored from now on is added exactly once.
        let pending = store.pending(unix_ms(SystemTime::now()))?;
        if !pending.is_empty() {
            info!(
                "{} stored requests are pending; dispatching them",
                pending.len()
            );
        }
        for request in pending {
            dispatcher.add(request);
        }
        dispatcher.start_keeper();
        let on_stored = {
            let dispatcher = Arc::clone(&dispatcher);
            Box::new(move |request| dispatcher.add(request))
        };
        let ttl_ms = u64::try_from(config.request_ttl.as_millis()).unwrap_or(u64::MAX);
        let services = Arc::new(Services::new(
            Arc::clone(&store),
            config.services.clone(),
            ttl_ms,
            on_stored,
        ));
        let sweeper = spawn_sweeper(Arc::clone(&store), config.request_ttl)?;
        let workers = service::spawn(
            &context,
            &config.endpoint,
            &config.credentials,
            &config.worker,
            config.conversations,
            services,
        )?;
        Ok(Titanic {
            store,
            dispatcher,
            workers,
            sweeper,
        })
    }

    /// The store's counters.
    pub fn store_stats(&self) -> StoreStats {
        self.store.stats()
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Stops serving (DISCONNECT to the broker) and dispatching. Tries out are abandoned: their
    /// requests stay pending in the store and are sent again by the next start.
    pub fn stop(self) {
        self.workers.stop();
        self.dispatcher.stop();
        let (stop, thread) = self.sweeper;
        stop.stop();
        let _ = thread.join();
    }
}

/// Deletes expired requests: at start, then every tenth of the time to live (at least every
/// second, at most every minute).
fn spawn_sweeper(
    store: Arc<dyn Store>,
    ttl: Duration,
) -> Result<(StopHandle, JoinHandle<()>), Error> {
    let (stop, signal) =
        zsocket::stop_pair().map_err(|error| Error::Setup("create a stop signal", error))?;
    let every = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let thread = std::thread::Builder::new()
        .name("titanic-sweeper".into())
        .spawn(move || loop {
            match store.expire(unix_ms(SystemTime::now())) {
                Ok(0) => {}
                Ok(count) => info!("{count} requests expired and were deleted"),
                Err(error) => warn!("cannot delete expired requests: {error}"),
            }
            match signal.sleep(every) {
                Ok(false) => {}
                _ => return,
            }
        })
        .map_err(|error| Error::Setup("start the expiry thread", error))?;
    Ok((stop, thread))
}
