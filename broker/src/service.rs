//! One service: the requests waiting for it and the workers idle for it, both first-in first-out.
//!
//! The idle list is *lazy*: when a worker stops being idle for any reason other than being picked
//! from the front (it expired, disconnected, broke the protocol), its entry stays in the list and
//! is skipped when it reaches the front. Each entry carries the token the worker got when it went
//! idle, and only the entry whose token matches the worker's current one is live. That makes
//! "give me the least recently used idle worker" and "forget this worker" both O(1) amortised,
//! where removing from the middle of a list would be O(idle workers). Dead entries are counted and
//! swept out once they outnumber the live ones, so they cannot pile up.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use mdp::Frames;

/// A peer's ROUTER identity: opaque bytes (libzmq makes up 5 of them unless the peer set its own).
pub type Identity = Vec<u8>;

/// Whose fair share a waiting request counts against: the client's connection, or the
/// principal ZAP authenticated it as (so more sockets do not buy a principal more room).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShareKey {
    Connection(Identity),
    Principal(Arc<str>),
}

/// A client request waiting for a worker.
#[derive(Debug)]
pub struct QueuedRequest {
    pub client: Identity,
    pub body: Frames,
    pub queued_at: Instant,
    /// True when a worker already held this request and died; it will not be re-sent again.
    pub redelivered: bool,
    /// Whose share it counts against.
    pub share: ShareKey,
    /// What it counts as against the byte limits ([`crate::core::request_cost`]).
    pub cost: usize,
    /// The client's identity read as a one-request-at-a-time client's ([`mdp::tries`]), once,
    /// when the request came; `None` for any other client.
    pub tries: Option<mdp::tries::TryIdentity>,
}

/// An entry in a service's idle list: which worker, and the token it had when it went idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleEntry {
    pub worker: Identity,
    pub token: u64,
}

/// A service as the broker keeps it.
#[derive(Debug, Default)]
pub struct Service {
    /// Requests in arrival order (a redelivered request goes back to the front). Read it freely;
    /// change it only through the `enqueue_*`/`dequeue_*` methods, which keep `held` right.
    pub requests: VecDeque<QueuedRequest>,
    /// How many of `requests` each client holds.
    held: HashMap<ShareKey, usize>,
    /// Idle workers, least recently used first; may hold dead entries (see the module docs).
    idle_workers: VecDeque<IdleEntry>,
    /// How many entries of `idle_workers` are dead.
    dead_idle_entries: usize,
    /// Registered workers of this service, idle or busy: what `mmi.service` reports on.
    pub worker_count: usize,
    /// What happened to this service's requests, for the dashboard (`--http`); starts again
    /// when the service is forgotten.
    pub counters: dashboard::ServiceCounters,
    /// Request in to reply out, for the replies this service's workers sent.
    pub latency: dashboard::LatencyHistogram,
    /// How many of the registered workers hold a request.
    pub busy_count: usize,
}

impl Service {
    /// True when nothing refers to this service any more, so the broker may forget it.
    pub fn is_unused(&self) -> bool {
        self.worker_count == 0 && self.requests.is_empty()
    }

    /// A request waits at the back of the queue.
    pub fn enqueue_back(&mut self, request: QueuedRequest) {
        *self.held.entry(request.share.clone()).or_default() += 1;
        self.requests.push_back(request);
    }

    /// A request waits at the front of the queue (it was taken back).
    pub fn enqueue_front(&mut self, request: QueuedRequest) {
        *self.held.entry(request.share.clone()).or_default() += 1;
        self.requests.push_front(request);
    }

    /// The oldest waiting request leaves the queue.
    pub fn dequeue_front(&mut self) -> Option<QueuedRequest> {
        let request = self.requests.pop_front()?;
        self.release(&request.share);
        Some(request)
    }

    /// The newest waiting request leaves the queue (it was refused).
    pub fn dequeue_back(&mut self) -> Option<QueuedRequest> {
        let request = self.requests.pop_back()?;
        self.release(&request.share);
        Some(request)
    }

    fn release(&mut self, share: &ShareKey) {
        if let Some(count) = self.held.get_mut(share) {
            *count -= 1;
            if *count == 0 {
                self.held.remove(share);
            }
        }
    }

    /// How many waiting requests this client holds.
    pub fn held_by(&self, share: &ShareKey) -> usize {
        self.held.get(share).copied().unwrap_or(0)
    }

    /// Puts a worker at the back of the idle list.
    pub fn push_idle(&mut self, entry: IdleEntry) {
        self.idle_workers.push_back(entry);
    }

    /// Puts a worker back at the front of the idle list: it was taken from there, and got
    /// nothing after all.
    pub fn push_idle_front(&mut self, entry: IdleEntry) {
        self.idle_workers.push_front(entry);
    }

    /// Takes the least recently used idle worker, skipping dead entries; `is_live` says whether an
    /// entry still matches its worker's current idle token.
    pub fn pop_idle(&mut self, mut is_live: impl FnMut(&IdleEntry) -> bool) -> Option<IdleEntry> {
        while let Some(entry) = self.idle_workers.pop_front() {
            if is_live(&entry) {
                return Some(entry);
            }
            self.dead_idle_entries = self.dead_idle_entries.saturating_sub(1);
        }
        None
    }

    /// Records that one idle entry just died (its worker left while idle), and sweeps the list
    /// when dead entries outnumber live ones.
    pub fn idle_entry_died(&mut self, mut is_live: impl FnMut(&IdleEntry) -> bool) {
        self.dead_idle_entries += 1;
        if self.dead_idle_entries * 2 > self.idle_workers.len() {
            self.idle_workers.retain(|entry| is_live(entry));
            self.dead_idle_entries = 0;
        }
    }

    /// All entries of the idle list, dead or alive (for invariant checks).
    pub fn idle_entries(&self) -> impl Iterator<Item = &IdleEntry> {
        self.idle_workers.iter()
    }

    /// How many idle-list entries are counted as dead (for invariant checks).
    pub fn dead_idle_entries(&self) -> usize {
        self.dead_idle_entries
    }

    /// Gives memory back after a burst: a queue that held 100,000 requests keeps its buffer
    /// otherwise.
    pub fn shrink(&mut self) {
        if self.held.capacity() > 64 && self.held.len() < self.held.capacity() / 4 {
            self.held.shrink_to(self.held.len() * 2);
        }
        if self.requests.capacity() > 64 && self.requests.len() < self.requests.capacity() / 4 {
            self.requests.shrink_to(self.requests.len() * 2);
        }
        if self.idle_workers.capacity() > 64
            && self.idle_workers.len() < self.idle_workers.capacity() / 4
        {
            self.idle_workers.shrink_to(self.idle_workers.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(worker: &[u8], token: u64) -> IdleEntry {
        IdleEntry {
            worker: worker.to_vec(),
            token,
        }
    }

    #[test]
    fn pop_idle_is_fifo_and_skips_dead_entries() {
        let mut service = Service::default();
        service.push_idle(entry(b"A", 1));
        service.push_idle(entry(b"B", 2));
        service.push_idle(entry(b"C", 3));
        // B left while idle.
        service.idle_entry_died(|e| e.worker != b"B");
        let live = |e: &IdleEntry| e.worker != b"B";
        assert_eq!(service.pop_idle(live), Some(entry(b"A", 1)));
        assert_eq!(service.pop_idle(live), Some(entry(b"C", 3)));
        assert_eq!(service.pop_idle(live), None);
        assert_eq!(service.dead_idle_entries(), 0);
    }

    #[test]
    fn dead_entries_are_swept_when_they_outnumber_live_ones() {
        let mut service = Service::default();
        for token in 0..10 {
            service.push_idle(entry(&[token as u8], token));
        }
        let alive = |e: &IdleEntry| e.token >= 6;
        for _ in 0..6 {
            service.idle_entry_died(alive);
        }
        assert_eq!(service.idle_entries().count(), 4);
        assert_eq!(service.dead_idle_entries(), 0);
    }
}
