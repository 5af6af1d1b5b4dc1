//! The broker's side of `--http ADDR`: the [`dashboard`]'s HTTP thread, and the snapshot of
//! every service the loop publishes for it, at most every 100 ms and only when something changed.
//!
//! The core marks the services it touches; at publish time only those are rebuilt into the
//! [`ServiceTable`], and the rest are shared with the previous snapshot in chunks of 256, so a
//! broker with 100,000 services pays for the chunks that changed plus one pointer per chunk
//! (`cargo run --release -p dashboard --example publish_100k`: about 1 ms per publish with 100
//! services changed, 5 us with none, at most one publish per 100 ms).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dashboard::{Board, BrokerCounters, Publisher, ServeError, Server, ServiceTable, Snapshot};

use crate::core::Broker;

/// Most services rebuilt into one publish: the rest of a burst (100,000 services registering at
/// once) follow in the next publishes, 100 ms apart, so no single one stalls the loop for long
/// (measured with `cargo run --release -p broker --example publish_cost`: the first publish of
/// 100,000 new services took 307 ms in one piece).
pub const SERVICES_PER_PUBLISH: usize = 2_000;

/// The dashboard of a running broker.
#[derive(Debug)]
pub struct Live {
    server: Server,
    publisher: Publisher,
    services: ServiceTable,
    /// The connection count last handed in, so that a change of it alone is published.
    connections: Option<u64>,
}

impl Live {
    /// Binds `addr` and starts the HTTP thread. Call it in `Server::bind*`, before the loop
    /// runs, so an address in use is an error at start (`cli::exit::FAILED`, 1).
    pub fn start(addr: SocketAddr, now: Instant) -> Result<Live, ServeError> {
        let board = Arc::new(Board::new("broker"));
        let server = Server::start(addr, Arc::clone(&board))?;
        Ok(Live {
            server,
            publisher: Publisher::new(board, now),
            services: ServiceTable::new(),
            connections: None,
        })
    }

    /// Where it listens (the port the system picked, for port 0): log it at info.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// When the loop must wake to publish a change, if no message wakes it first.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.publisher.next_deadline()
    }

    /// Call after every pass of the loop (after `send_all`). Cheap when nothing is due: one
    /// comparison. `connections` is the number of open connections, if the caller counts them
    /// (the server does, from its monitor thread's events, [`crate::monitor::spawn_with`]);
    /// `None` leaves the field out of `/status` and `/metrics`. A change of it alone is
    /// published too, at the loop's next pass (a message, or at the latest the next heartbeat).
    pub fn publish_if_due(&mut self, now: Instant, core: &mut Broker, connections: Option<u64>) {
        if core.has_dashboard_changes() || connections != self.connections {
            self.connections = connections;
            self.publisher.changed();
        }
        if !self.publisher.due(now) {
            return;
        }
        for name in core.take_changed_services(SERVICES_PER_PUBLISH) {
            match core.service_snapshot(&name) {
                Some(service) => self.services.update(service),
                None => self.services.remove(&name.to_string()),
            }
        }
        let stats = core.stats();
        self.publisher.publish(
            now,
            Snapshot {
                program: "broker".to_owned(),
                counters: BrokerCounters {
                    workers_registered: stats.workers_registered,
                    workers_purged: stats.workers_purged,
                    workers_disconnected: stats.workers_disconnected,
                    connections,
                    messages_in: stats.messages_in,
                    messages_out: stats.messages_out,
                    malformed: stats.malformed_messages,
                },
                services: self.services.services(),
                ..Snapshot::default()
            },
        );
        if core.has_dashboard_changes() {
            // More of a burst than one publish takes: wake for the next one in 100 ms, even
            // if no message comes to wake the loop.
            self.publisher.changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::Config;

    #[test]
    fn a_burst_of_new_services_is_published_in_batches_and_wakes_the_loop_for_each() {
        let mut now = Instant::now();
        let mut core = Broker::new(Config::default(), now);
        let mut out = Vec::new();
        let count = SERVICES_PER_PUBLISH + SERVICES_PER_PUBLISH / 2;
        for n in 0..count {
            let frames = [&b""[..], b"MDPW01", b"\x01", format!("s{n}").as_bytes()]
                .iter()
                .map(|part| zmq::Message::from(*part))
                .collect();
            core.handle(now, format!("W{n}").as_bytes(), frames, &mut out);
        }
        let mut live = Live::start("127.0.0.1:0".parse().unwrap(), now).unwrap();
        now += Duration::from_millis(200);
        live.publish_if_due(now, &mut core, None);
        assert!(
            core.has_dashboard_changes(),
            "the rest waits for the next publish"
        );
        let next = live
            .next_deadline()
            .expect("the loop is woken for the rest");
        assert_eq!(next, now + dashboard::PUBLISH_INTERVAL);
        assert_eq!(live.services.services().len(), SERVICES_PER_PUBLISH);
        live.publish_if_due(next, &mut core, None);
        assert!(!core.has_dashboard_changes());
        assert_eq!(live.next_deadline(), None);
        assert_eq!(live.services.services().len(), count);
    }
}
