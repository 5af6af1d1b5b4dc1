//! What a broker looks like at one moment: the types a broker fills in and the HTTP side reads.
//! They fit both brokers of the workspace: the Majordomo `broker` has many services, each with
//! its own queue and workers; `lbbroker` has one queue of processors, shown as one service.
//!
//! A snapshot is plain data, built by the broker's own thread and never changed after it is
//! published (see [`crate::Publisher`]). Services are behind [`Arc`]s so that a broker with
//! 100,000 services rebuilds only those that changed since the last snapshot and shares the rest
//! (see [`crate::ServiceTable`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// How many worker identities a [`ServiceSnapshot`] lists, idle and busy each. The counts are
/// always whole; only the lists stop here, so a service with 10,000 workers costs the broker
/// no more to publish than one with 100.
pub const MAX_LISTED_WORKERS: usize = 100;

/// The upper bounds, in seconds, of the latency histogram's buckets (a last bucket, `+Inf`,
/// holds the rest). From half a millisecond, where a broker on one machine answers, to ten
/// seconds, past any sensible request timeout.
pub const LATENCY_BOUNDS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The whole broker at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Which program this is: `"broker"` or `"lbbroker"`.
    pub program: String,
    /// Counted once per publish by [`crate::Publisher`]: a page sees from it that it is live.
    pub sequence: u64,
    /// Milliseconds since the publisher was made (about when the broker started).
    pub uptime_ms: u64,
    /// Counters of the whole broker.
    pub counters: BrokerCounters,
    /// Every service, in no particular order (the HTTP side sorts them by name).
    pub services: Services,
}

/// How many services share one chunk of a [`Services`] list.
pub const SERVICES_PER_CHUNK: usize = 256;

/// The services of a snapshot, in chunks of [`SERVICES_PER_CHUNK`] that the snapshots of a
/// [`crate::ServiceTable`] share: a new snapshot copies one pointer per chunk, and a chunk
/// in which a service changed is copied once (pointers again, never the services). With
/// 100,000 services, that is 391 pointers for a snapshot in which nothing changed, rather than
/// 100,000 reference counts to touch (and to touch again when the old snapshot is freed).
#[derive(Debug, Clone, Default)]
pub struct Services {
    pub(crate) chunks: Vec<Arc<Vec<Arc<ServiceSnapshot>>>>,
    pub(crate) len: usize,
}

impl Services {
    /// Every service, chunk by chunk.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServiceSnapshot>> + '_ {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// How many services.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl FromIterator<Arc<ServiceSnapshot>> for Services {
    /// A list of its own, for a broker with few services (`lbbroker` has one).
    fn from_iter<I: IntoIterator<Item = Arc<ServiceSnapshot>>>(services: I) -> Services {
        let mut list = Services::default();
        for service in services {
            match list.chunks.last_mut() {
                Some(chunk) if chunk.len() < SERVICES_PER_CHUNK => {
                    Arc::make_mut(chunk).push(service)
                }
                _ => list.chunks.push(Arc::new(vec![service])),
            }
            list.len += 1;
        }
        list
    }
}

impl From<Vec<Arc<ServiceSnapshot>>> for Services {
    fn from(services: Vec<Arc<ServiceSnapshot>>) -> Services {
        services.into_iter().collect()
    }
}

/// Counters of the whole broker, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BrokerCounters {
    /// Workers (processors) that said READY for the first time.
    pub workers_registered: u64,
    /// Workers dropped for silence (missed heartbeats). `lbbroker` has no heartbeats: always 0.
    pub workers_purged: u64,
    /// Workers that left: sent DISCONNECT, were disconnected for a protocol error, or (in
    /// `lbbroker`) were found gone when a request was sent to them.
    pub workers_disconnected: u64,
    /// Connections open now, where the broker counts them. `None` where it does not: `lbbroker`,
    /// whose ROUTERs do not say when a peer connects, and for now the Majordomo `broker`, whose
    /// connections only its monitor thread sees (it logs them, it does not count them). `None`
    /// is left out of `/status` and `/metrics` rather than shown as `null` or 0, which would
    /// read as a figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// Messages received, on every socket.
    pub messages_in: u64,
    /// Messages sent, on every socket.
    pub messages_out: u64,
    /// Messages dropped because they broke the protocol.
    pub malformed: u64,
}

/// One service: its queue, its workers and its counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceSnapshot {
    /// The service name (for `lbbroker`, `processors`).
    pub name: String,
    /// Requests the broker holds for this service, waiting for a worker.
    pub requests_waiting: u64,
    /// How many workers are idle.
    pub workers_idle: u64,
    /// How many workers are busy with a request.
    pub workers_busy: u64,
    /// The idle workers in LRU order, the one to get the next request first; at most
    /// [`MAX_LISTED_WORKERS`].
    pub idle_workers: Vec<String>,
    /// The busy workers (sorted by name); at most [`MAX_LISTED_WORKERS`].
    pub busy_workers: Vec<String>,
    /// What happened to this service's requests.
    pub counters: ServiceCounters,
    /// From request in to reply out, as the broker measures it.
    pub latency: LatencyHistogram,
}

impl ServiceSnapshot {
    /// A service called `name` with nothing in it yet.
    pub fn named(name: impl Into<String>) -> ServiceSnapshot {
        ServiceSnapshot {
            name: name.into(),
            ..ServiceSnapshot::default()
        }
    }

    /// Sets the idle workers, LRU first, from an iterator that may be long: the count is whole,
    /// the list stops at [`MAX_LISTED_WORKERS`].
    pub fn set_idle<I: IntoIterator<Item = String>>(&mut self, count: usize, idle: I) {
        self.workers_idle = count as u64;
        self.idle_workers = idle.into_iter().take(MAX_LISTED_WORKERS).collect();
    }

    /// Sets the busy workers (see [`ServiceSnapshot::set_idle`]).
    pub fn set_busy<I: IntoIterator<Item = String>>(&mut self, count: usize, busy: I) {
        self.workers_busy = count as u64;
        self.busy_workers = busy.into_iter().take(MAX_LISTED_WORKERS).collect();
    }
}

/// What happened to one service's requests, since the broker started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceCounters {
    /// Requests received from clients.
    pub received: u64,
    /// Requests sent to a worker (a request sent again after its worker was lost counts again).
    pub dispatched: u64,
    /// Replies sent back to a client.
    pub answered: u64,
    /// Requests refused, by reason (`queue_full`, `broker_full`, ...). `lbbroker` refuses none.
    pub refused: BTreeMap<String, u64>,
    /// Requests that waited longer than their time to live and were dropped.
    pub expired: u64,
    /// Requests lost because the worker that had them was purged or left.
    pub lost_with_worker: u64,
    /// Replies that could not be delivered: the client had gone, or a newer client had taken its
    /// identity over.
    pub replies_dropped: u64,
}

/// A histogram of durations with the fixed buckets of [`LATENCY_BOUNDS_SECONDS`]: cheap to
/// observe into (one comparison per bucket, no allocation) and to copy into a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyHistogram {
    /// How many observations fell in each bucket (not cumulative): `counts[i]` are those at most
    /// `LATENCY_BOUNDS_SECONDS[i]` and more than the bound before; the last one, past every bound.
    pub counts: [u64; LATENCY_BOUNDS_SECONDS.len() + 1],
    /// The sum of every observation, in seconds.
    pub sum_seconds: f64,
    /// How many observations.
    pub count: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: [0; LATENCY_BOUNDS_SECONDS.len() + 1],
            sum_seconds: 0.0,
            count: 0,
        }
    }
}

impl LatencyHistogram {
    /// Counts one request that took `latency`.
    pub fn observe(&mut self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let bucket = LATENCY_BOUNDS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BOUNDS_SECONDS.len());
        self.counts[bucket] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// The buckets as `(upper bound, count in this bucket)`, the last one `+Inf`.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        LATENCY_BOUNDS_SECONDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_goes_to_the_first_bucket_whose_bound_holds_it() {
        let mut histogram = LatencyHistogram::default();
        histogram.observe(Duration::from_micros(500)); // exactly the first bound
        histogram.observe(Duration::from_micros(501));
        histogram.observe(Duration::from_secs(60));
        assert_eq!(histogram.counts[0], 1);
        assert_eq!(histogram.counts[1], 1);
        assert_eq!(histogram.counts[LATENCY_BOUNDS_SECONDS.len()], 1);
        assert_eq!(histogram.count, 3);
        assert!((histogram.sum_seconds - 60.001001).abs() < 1e-9);
        let last = histogram.buckets().last();
        assert_eq!(last, Some((f64::INFINITY, 1)));
    }

    #[test]
    fn worker_lists_stop_at_the_cap_but_counts_do_not() {
        let mut service = ServiceSnapshot::named("echo");
        service.set_idle(250, (0..250).map(|n| format!("w{n}")));
        assert_eq!(service.workers_idle, 250);
        assert_eq!(service.idle_workers.len(), MAX_LISTED_WORKERS);
        assert_eq!(service.idle_workers[0], "w0", "LRU order is kept");
    }
}
