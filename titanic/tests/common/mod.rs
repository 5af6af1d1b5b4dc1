//! Test support: a broker in a thread on a free loopback port, echo workers in threads that count
//! what they ran, and Titanic as the real program, killed with SIGKILL when a test wants a crash.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use broker::testing::TestBroker;
use broker::{Config, StopHandle};
use client::titanic::{TitanicClient, TitanicConfig};
use client::ClientConfig;
use worker::{Worker, WorkerConfig};

/// Short heartbeats, so that a dead Titanic's workers are purged by the broker in 0.3 s.
pub const HEARTBEAT_MS: u64 = 100;

/// A broker in a thread with short heartbeats ([`HEARTBEAT_MS`]), stopped when dropped.
pub fn test_broker() -> TestBroker {
    TestBroker::start(Config {
        heartbeat_interval: Duration::from_millis(HEARTBEAT_MS),
        ..Config::default()
    })
}

pub fn worker_config() -> WorkerConfig {
    WorkerConfig {
        heartbeat_interval: Duration::from_millis(HEARTBEAT_MS),
        ..WorkerConfig::default()
    }
}

/// Echo workers for `service`: each request's frames go back as they came. `runs` counts how many
/// times each body (its first frame) was run.
pub struct EchoWorkers {
    stops: Vec<StopHandle>,
    threads: Vec<JoinHandle<()>>,
    pub runs: Arc<Mutex<HashMap<Vec<u8>, u32>>>,
}

impl EchoWorkers {
    pub fn start(endpoint: &str, service: &str, count: usize) -> EchoWorkers {
        let runs = Arc::new(Mutex::new(HashMap::new()));
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..count {
            let mut worker =
                Worker::connect(endpoint, service.parse().unwrap(), worker_config()).unwrap();
            stops.push(worker.stop_handle());
            let runs = Arc::clone(&runs);
            threads.push(std::thread::spawn(move || {
                worker
                    .serve(|body| {
                        let key = body.first().map(|frame| frame.to_vec()).unwrap_or_default();
                        *runs.lock().unwrap().entry(key).or_insert(0) += 1;
                        body
                    })
                    .unwrap();
            }));
        }
        EchoWorkers {
            stops,
            threads,
            runs,
        }
    }

    /// Bodies that were run more than once.
    pub fn ran_twice(&self) -> usize {
        self.runs
            .lock()
            .unwrap()
            .values()
            .filter(|&&n| n > 1)
            .count()
    }
}

impl Drop for EchoWorkers {
    fn drop(&mut self) {
        for stop in &self.stops {
            stop.stop();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The `titanic` program, started on `db`, killed (SIGKILL) when dropped.
pub struct TitanicProcess {
    child: Child,
    log: PathBuf,
}

impl TitanicProcess {
    pub fn start(endpoint: &str, db: &Path, extra: &[&str]) -> TitanicProcess {
        let log = db.with_extension(format!("{}.log", std::process::id()));
        TitanicProcess::start_on(endpoint, db.as_os_str(), &log, extra)
    }

    /// On any `--db` (a PostgreSQL URL too), logging (appending) to `log`.
    pub fn start_on(
        endpoint: &str,
        db: &std::ffi::OsStr,
        log: &Path,
        extra: &[&str],
    ) -> TitanicProcess {
        let log = log.to_owned();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_titanic"))
            .args(["-c", endpoint, "--db"])
            .arg(db)
            .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .args(if extra.contains(&"--try-timeout") {
                &[][..]
            } else {
                &["--try-timeout", "2s"][..]
            })
            .args(["--backoff-max", "500ms"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        TitanicProcess { child, log }
    }

    /// SIGKILL, no goodbye: the broker finds out by the heartbeats.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TitanicProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- titanic log ----\n{}", self.log());
        }
        self.kill();
    }
}

/// A Titanic client with a short timeout and many tries: a Titanic that was just killed takes a
/// few tenths of a second to be purged by the broker and started again.
pub fn titanic_client(endpoint: &str) -> TitanicClient {
    TitanicClient::connect(
        endpoint,
        TitanicConfig {
            client: ClientConfig {
                timeout: Duration::from_millis(1000),
                retries: 20,
            },
            poll_initial: Duration::from_millis(10),
            poll_max: Duration::from_millis(200),
        },
    )
    .unwrap()
}

// The checksummed bodies, shared with the crash drill (examples/drill.rs).
#[path = "../support/checked_body.rs"]
mod checked_body;
// Each test binary uses part of it.
#[allow(unused_imports)]
pub use checked_body::{checked_body, checksum_holds};

#[path = "../support/pg_server.rs"]
pub mod pg_server;
