//! A broker's live view, shared by the workspace's two brokers (`broker` and `lbbroker`):
//! `/metrics` for Prometheus, `/status` as JSON, and at `/` a page that shows each queue and its
//! workers in LRU order, updating several times a second.
//!
//! The broker's socket loop must never wait on any of this. So the loop does not answer HTTP: it
//! builds a [`Snapshot`] of itself, at most every 100 ms and only when something changed, and
//! puts it up on a [`Board`] (a pointer swap under a mutex held for nothing else). The HTTP
//! thread ([`Server`]) takes the latest snapshot and renders from it. A slow scraper, or a
//! hundred open pages, slow down only that thread.
//!
//! ```text
//!  broker loop ──(changed? 100 ms?)──> Publisher ──swap Arc<Snapshot>──> Board <──clone── HTTP thread
//!                                                                                  /metrics /status /
//! ```
//!
//! A broker wires it in like this (`lbbroker`'s `broker.rs` does exactly this):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use dashboard::{Board, Publisher, Server, ServiceSnapshot, Snapshot};
//!
//! let board = Arc::new(Board::new("lbbroker"));
//! let server = Server::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&board)).unwrap();
//! let mut publisher = Publisher::new(board, Instant::now());
//!
//! // In the loop: after handling messages, and when woken at publisher.next_deadline().
//! publisher.changed();
//! let now = Instant::now();
//! if publisher.due(now) {
//!     let mut queue = ServiceSnapshot::named("processors");
//!     queue.set_idle(1, ["PROCESSOR-0".to_owned()]);
//!     publisher.publish(now, Snapshot { services: vec![Arc::new(queue)].into(), ..Snapshot::default() });
//! }
//! println!("dashboard at http://{}/", server.local_addr());
//! ```
//!
//! The Majordomo `broker` is wired the same way, with a table of many services that rebuilds
//! only the changed ones ([`ServiceTable`]): see its `broker/src/live.rs`, and `broker --http`.
//!
//! Modules: [`snapshot`] (the types), [`board`] (publishing), [`render`] (Prometheus text and
//! JSON, and how far each lists), `server` (the HTTP thread and the page); with the `testing`
//! feature, `testing` (the browser tests' Chromium driver).

pub mod board;
pub mod render;
mod server;
pub mod snapshot;
#[cfg(feature = "testing")]
pub mod testing;

pub use board::{Board, Publisher, ServiceTable, PUBLISH_INTERVAL};
pub use server::{ServeError, Server};
pub use snapshot::{
    BrokerCounters, LatencyHistogram, ServiceCounters, ServiceSnapshot, Services, Snapshot,
    LATENCY_BOUNDS_SECONDS, MAX_LISTED_WORKERS, SERVICES_PER_CHUNK,
};
