//! What a run produced: the ledger of every request the applications issued and how each ended,
//! the counters of what the run covered, and the first rule it saw broken.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::scenario::FaultKind;

/// What a run covered, for the report that shows the seeds are not trivial.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    pub runs: u64,
    pub requests: u64,
    pub sync_requests: u64,
    pub async_requests: u64,
    pub answered: u64,
    pub failed: u64,
    pub client_resends: u64,
    /// Requests handed to a worker after their client had given up on them (issue 12 item 6).
    pub runs_after_give_up: u64,
    pub faults: HashMap<FaultKind, u64>,
    pub workers_purged: u64,
    pub redelivered: u64,
    pub lost_with_worker: u64,
    pub refused_by_router: u64,
    pub refused_queue_full: u64,
    /// REQUESTs the ROUTER refused that the broker then dropped, its queue being full.
    pub refused_requests_lost_queue_full: u64,
    pub messages: u64,
    pub messages_lost: u64,
    pub connections: u64,
    pub virtual_time: Duration,
}

impl Coverage {
    pub fn add(&mut self, other: &Coverage) {
        self.runs += other.runs;
        self.requests += other.requests;
        self.sync_requests += other.sync_requests;
        self.async_requests += other.async_requests;
        self.answered += other.answered;
        self.failed += other.failed;
        self.client_resends += other.client_resends;
        self.runs_after_give_up += other.runs_after_give_up;
        for (kind, count) in &other.faults {
            *self.faults.entry(*kind).or_default() += count;
        }
        self.workers_purged += other.workers_purged;
        self.redelivered += other.redelivered;
        self.lost_with_worker += other.lost_with_worker;
        self.refused_by_router += other.refused_by_router;
        self.refused_queue_full += other.refused_queue_full;
        self.refused_requests_lost_queue_full += other.refused_requests_lost_queue_full;
        self.messages += other.messages;
        self.messages_lost += other.messages_lost;
        self.connections += other.connections;
        self.virtual_time += other.virtual_time;
    }

    pub fn fault_count(&self, kind: FaultKind) -> u64 {
        self.faults.get(&kind).copied().unwrap_or(0)
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runs = self.runs.max(1) as f64;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, total: u64| {
            writeln!(
                f,
                "  {name:<34} {total:>9} in all, {:>8.2} per run",
                total as f64 / runs
            )
        };
        writeln!(f, "{} runs covered:", self.runs)?;
        row(f, "requests issued", self.requests)?;
        row(f, "  by synchronous clients", self.sync_requests)?;
        row(f, "  by asynchronous clients", self.async_requests)?;
        row(f, "  answered", self.answered)?;
        row(f, "  failed, with a reason", self.failed)?;
        row(f, "client resends", self.client_resends)?;
        row(f, "runs after the client gave up", self.runs_after_give_up)?;
        for kind in FaultKind::ALL {
            row(
                f,
                &format!("fault: {}", kind.name()),
                self.fault_count(kind),
            )?;
        }
        row(f, "workers purged by the broker", self.workers_purged)?;
        row(f, "requests redelivered", self.redelivered)?;
        row(f, "requests lost with a worker", self.lost_with_worker)?;
        row(f, "sends refused by the ROUTER", self.refused_by_router)?;
        row(f, "requests refused: queue full", self.refused_queue_full)?;
        row(
            f,
            "refused REQUESTs dropped: queue full",
            self.refused_requests_lost_queue_full,
        )?;
        row(f, "messages sent", self.messages)?;
        row(f, "messages lost in the network", self.messages_lost)?;
        row(f, "connections made", self.connections)?;
        write!(
            f,
            "  {:<34} {:>9.0} s in all, {:>8.2} s per run",
            "virtual time",
            self.virtual_time.as_secs_f64(),
            self.virtual_time.as_secs_f64() / runs
        )
    }
}

/// How one request ended.
#[derive(Debug, Clone)]
pub enum Ended {
    Answered,
    Failed(String),
}

/// One request an application issued.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub client: usize,
    pub service: usize,
    /// The reply must be exactly this request's (sync client, tag matching), or only one of
    /// this client's requests to this service (matching by service).
    pub exact: bool,
    pub ended: Option<Ended>,
    pub issued_at: Duration,
    /// How many times a worker's application was handed it (each try may run once).
    pub runs: u32,
    /// How many of those came after its client had given up on it.
    pub runs_after_give_up: u32,
}

/// Every request of the run, numbered in issue order; the number is the request's body.
#[derive(Debug, Default)]
pub struct Ledger {
    pub requests: Vec<RequestRecord>,
}

/// What a run produced.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub coverage: Coverage,
    /// The first broken rule, with the virtual time it was seen at.
    pub violation: Option<String>,
    pub ledger: Ledger,
    /// The broker's counters, summed over its incarnations.
    pub broker: broker::Stats,
    /// The longest time from a broker restart to all the workers left alone registered again
    /// (zero if there was no restart, or the run ended first).
    pub longest_reregistration: Duration,
    /// The most requests the broker held waiting at once, and workers registered at once.
    pub peak_queued: usize,
    pub peak_workers: usize,
    pub kills_of_busy_workers: u64,
    pub kills: u64,
    /// Requests handed to a worker after their client had given up on them.
    pub runs_after_give_up: u64,
}

impl Report {
    pub fn failed_requests(&self, client_kind: impl Fn(usize) -> bool) -> usize {
        self.ledger
            .requests
            .iter()
            .filter(|request| client_kind(request.client))
            .filter(|request| matches!(request.ended, Some(Ended::Failed(_))))
            .count()
    }
}
