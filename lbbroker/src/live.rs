//! The broker's side of `--http`: what it counts, and the snapshot of its one queue that it
//! publishes for the [`dashboard`] (a page at `/`, `/metrics`, `/status`).
//!
//! The load-balancing broker has one queue, so the dashboard shows it as one service,
//! [`SERVICE`]: its ready processors in LRU order (the first gets the next request), its busy
//! ones, and the requests the broker has read and holds for a processor. (Requests not yet
//! read wait inside the frontend ROUTER, where the broker cannot count them: while no processor
//! is ready it does not read the frontend at all.)
//!
//! The broker-wide counters, as this pattern has them: `workers_registered` counts READYs (a
//! processor that restarts, or whose identity is taken over, counts again); `workers_purged` is
//! always 0 (no heartbeats); `workers_disconnected` counts processors found gone when a request
//! was sent to them; `connections` is not known (a ROUTER does not say when a peer connects).
//!
//! Counting is done always (a few integer additions); the snapshot is built and published only
//! with `--http`, at most every 100 ms and only when something changed, by [`Live::publish_if_due`].
//! Latency, from request in to reply out, is measured only with `--http`: it needs the time each
//! client's request arrived, kept by client identity until its reply goes out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dashboard::{
    Board, BrokerCounters, LatencyHistogram, Publisher, Server, ServiceCounters, ServiceSnapshot,
    Snapshot,
};

use crate::balancer::LoadBalancer;
use crate::error::Error;

/// The name the dashboard gives the broker's one queue.
pub const SERVICE: &str = "processors";

/// The most clients whose request times are kept for the latency histogram. A client that never
/// gets its reply (its processor died while working) leaves its entry behind; past this many,
/// new requests go unmeasured rather than the map growing without end.
const MAX_TIMED_REQUESTS: usize = 100_000;

/// What the broker counts, with or without `--http`.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// The broker-wide counters.
    pub broker: BrokerCounters,
    /// The queue's counters.
    pub queue: ServiceCounters,
}

/// The dashboard of a running broker: its HTTP thread and what the loop publishes to it.
#[derive(Debug)]
pub struct Live {
    server: Server,
    publisher: Publisher,
    latency: LatencyHistogram,
    /// When each client's unanswered request came in, by client identity.
    received_at: HashMap<Vec<u8>, Instant>,
}

impl Live {
    /// Binds `addr` and starts the dashboard's HTTP thread.
    pub fn start(addr: SocketAddr, now: Instant) -> Result<Live, Error> {
        let board = Arc::new(Board::new("lbbroker"));
        let server = Server::start(addr, Arc::clone(&board))?;
        Ok(Live {
            server,
            publisher: Publisher::new(board, now),
            latency: LatencyHistogram::default(),
            received_at: HashMap::new(),
        })
    }

    /// Where the dashboard listens (the port the system picked, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// A request from `client` was taken by the balancer at `now`.
    pub fn request_in(&mut self, client: Vec<u8>, now: Instant) {
        if self.received_at.len() < MAX_TIMED_REQUESTS || self.received_at.contains_key(&client) {
            self.received_at.insert(client, now);
        }
    }

    /// The reply to `client` went out at `now`.
    pub fn reply_out(&mut self, client: &[u8], now: Instant) {
        if let Some(received) = self.received_at.remove(client) {
            self.latency
                .observe(now.saturating_duration_since(received));
        }
    }

    /// The reply to `client` could not be delivered: its request is over.
    pub fn reply_dropped(&mut self, client: &[u8]) {
        self.received_at.remove(client);
    }

    /// Something the page shows has changed.
    pub fn changed(&mut self) {
        self.publisher.changed();
    }

    /// When the loop must wake up to publish a change, if nothing wakes it before.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.publisher.next_deadline()
    }

    /// Publishes a snapshot of `balancer` and `tally` if one is due at `now`.
    pub fn publish_if_due(&mut self, now: Instant, balancer: &LoadBalancer, tally: &Tally) {
        if !self.publisher.due(now) {
            return;
        }
        let mut queue = ServiceSnapshot::named(SERVICE);
        queue.requests_waiting = balancer.waiting_requests() as u64;
        queue.set_idle(balancer.ready_count(), balancer.ready_processors());
        queue.set_busy(balancer.busy_count(), balancer.busy_processors());
        queue.counters = tally.queue.clone();
        queue.latency = self.latency;
        self.publisher.publish(
            now,
            Snapshot {
                program: "lbbroker".to_owned(),
                counters: tally.broker,
                services: vec![Arc::new(queue)].into(),
                ..Snapshot::default()
            },
        );
    }
}
