//! How a snapshot gets from the broker's socket loop to the HTTP thread without the loop ever
//! waiting on it.
//!
//! The [`Board`] holds the latest snapshot as an `Arc`. The loop publishes by swapping in a new
//! `Arc` under a mutex held only for the swap (a pointer write); the HTTP thread clones the `Arc`
//! under the same mutex and renders from its own copy for as long as it likes. The loop never
//! waits for a request being answered, only, at worst, for another pointer swap or clone.
//!
//! The [`Publisher`] is the loop's side: it says when a snapshot is due (something changed and
//! 100 ms have passed since the last one), and when the loop should wake up to publish a change
//! if nothing else wakes it ([`Publisher::next_deadline`]). A loop that is idle and unchanged
//! publishes nothing and is never woken for it. Time is given, never read: the publisher is
//! tested with made-up instants.
//!
//! The [`ServiceTable`] is for a broker with many services: it keeps one `Arc` per service, so a
//! snapshot copies pointers for the services that did not change and builds only those that did.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::snapshot::{ServiceSnapshot, Services, Snapshot, SERVICES_PER_CHUNK};

/// At most one snapshot per this much time.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// The latest snapshot, shared by the broker's loop (which writes) and the HTTP thread (which
/// reads).
#[derive(Debug, Default)]
pub struct Board {
    latest: Mutex<Arc<Snapshot>>,
}

impl Board {
    /// A board with an empty snapshot, for a program called `program`.
    pub fn new(program: &str) -> Board {
        Board {
            latest: Mutex::new(Arc::new(Snapshot {
                program: program.to_owned(),
                ..Snapshot::default()
            })),
        }
    }

    /// Puts `snapshot` up and gives the one it replaces back, so that the caller decides where
    /// it is freed (the loop frees it after it has swapped, outside the lock).
    pub fn swap(&self, snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
        // A panic while the lock was held cannot leave a half-written pointer: take it anyway.
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *latest, snapshot)
    }

    /// The latest snapshot.
    pub fn latest(&self) -> Arc<Snapshot> {
        Arc::clone(&self.latest.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The broker loop's side of the [`Board`]: when to publish, and the publishing.
#[derive(Debug)]
pub struct Publisher {
    board: Arc<Board>,
    started: Instant,
    last_published: Option<Instant>,
    changed: bool,
    sequence: u64,
}

impl Publisher {
    /// A publisher onto `board`, counting uptime from `now`. The first change is due at once.
    pub fn new(board: Arc<Board>, now: Instant) -> Publisher {
        Publisher {
            board,
            started: now,
            last_published: None,
            // The first snapshot says at least which program this is and that it is live.
            changed: true,
            sequence: 0,
        }
    }

    /// The board it publishes onto.
    pub fn board(&self) -> &Arc<Board> {
        &self.board
    }

    /// Notes that something the snapshot shows has changed.
    pub fn changed(&mut self) {
        self.changed = true;
    }

    /// Whether a snapshot should be built and published now: something changed, and the last
    /// one is at least [`PUBLISH_INTERVAL`] old.
    pub fn due(&self, now: Instant) -> bool {
        self.changed
            && self
                .last_published
                .is_none_or(|last| now >= last + PUBLISH_INTERVAL)
    }

    /// When the loop must wake up to publish a change if no message wakes it first: `None` while
    /// nothing changed (sleep as long as you like).
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.changed {
            return None;
        }
        Some(match self.last_published {
            None => self.started,
            Some(last) => last + PUBLISH_INTERVAL,
        })
    }

    /// Publishes `snapshot`, numbered and timed here. Call it when [`Publisher::due`] says so
    /// (calling it more often only publishes more often).
    pub fn publish(&mut self, now: Instant, mut snapshot: Snapshot) {
        self.sequence += 1;
        snapshot.sequence = self.sequence;
        snapshot.uptime_ms = u64::try_from(now.saturating_duration_since(self.started).as_millis())
            .unwrap_or(u64::MAX);
        let replaced = self.board.swap(Arc::new(snapshot));
        // Freed here, after the lock is released (or later by the HTTP thread, if it holds it).
        drop(replaced);
        self.last_published = Some(now);
        self.changed = false;
    }
}

/// A broker's services as last published, one `Arc` each, in the chunks a [`Services`] list is
/// made of: [`ServiceTable::update`] replaces the ones that changed (copying their chunk if a
/// published snapshot still shares it), [`ServiceTable::services`] copies one pointer per chunk.
#[derive(Debug, Default)]
pub struct ServiceTable {
    services: Services,
    /// Each service's place, `chunk * SERVICES_PER_CHUNK + position`, by name.
    index: HashMap<String, usize>,
}

impl ServiceTable {
    /// An empty table.
    pub fn new() -> ServiceTable {
        ServiceTable::default()
    }

    /// The service at `slot`, to replace (its chunk copied first if a snapshot shares it).
    fn slot_mut(&mut self, slot: usize) -> Option<&mut Arc<ServiceSnapshot>> {
        let chunk = self.services.chunks.get_mut(slot / SERVICES_PER_CHUNK)?;
        Arc::make_mut(chunk).get_mut(slot % SERVICES_PER_CHUNK)
    }

    /// Puts in `service`, replacing the one with its name.
    pub fn update(&mut self, service: ServiceSnapshot) {
        if let Some(&slot) = self.index.get(&service.name) {
            if let Some(place) = self.slot_mut(slot) {
                *place = Arc::new(service);
                return;
            }
        }
        let slot = self.services.len;
        self.index.insert(service.name.clone(), slot);
        match self.services.chunks.last_mut() {
            Some(chunk) if chunk.len() < SERVICES_PER_CHUNK => {
                Arc::make_mut(chunk).push(Arc::new(service))
            }
            _ => self.services.chunks.push(Arc::new(vec![Arc::new(service)])),
        }
        self.services.len += 1;
    }

    /// Takes out the service called `name`, if it is there; the last service takes its place.
    pub fn remove(&mut self, name: &str) {
        let Some(slot) = self.index.remove(name) else {
            return;
        };
        let Some(last_chunk) = self.services.chunks.last_mut() else {
            return;
        };
        let Some(last) = Arc::make_mut(last_chunk).pop() else {
            return;
        };
        if last_chunk.is_empty() {
            self.services.chunks.pop();
        }
        self.services.len -= 1;
        if slot < self.services.len {
            self.index.insert(last.name.clone(), slot);
            if let Some(place) = self.slot_mut(slot) {
                *place = last;
            }
        }
    }

    /// How many services.
    pub fn len(&self) -> usize {
        self.services.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.services.len == 0
    }

    /// Every service, for a [`Snapshot`]: one reference count per chunk of
    /// [`SERVICES_PER_CHUNK`].
    pub fn services(&self) -> Services {
        self.services.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher() -> (Publisher, Instant) {
        let start = Instant::now();
        (Publisher::new(Arc::new(Board::new("test")), start), start)
    }

    #[test]
    fn the_first_snapshot_is_due_at_once() {
        let (publisher, start) = publisher();
        assert!(publisher.due(start));
        assert_eq!(publisher.next_deadline(), Some(start));
    }

    #[test]
    fn changes_are_published_at_most_every_100_ms() {
        let (mut publisher, start) = publisher();
        publisher.publish(start, Snapshot::default());
        assert!(!publisher.due(start), "nothing changed");
        assert_eq!(publisher.next_deadline(), None, "an unchanged loop sleeps");

        publisher.changed();
        let soon = start + Duration::from_millis(40);
        assert!(!publisher.due(soon), "too soon after the last one");
        assert_eq!(publisher.next_deadline(), Some(start + PUBLISH_INTERVAL));
        assert!(publisher.due(start + PUBLISH_INTERVAL));
        publisher.publish(start + PUBLISH_INTERVAL, Snapshot::default());
        assert_eq!(publisher.next_deadline(), None);
    }

    #[test]
    fn a_published_snapshot_is_numbered_timed_and_readable() {
        let (mut publisher, start) = publisher();
        let board = Arc::clone(publisher.board());
        assert_eq!(board.latest().program, "test");
        assert_eq!(board.latest().sequence, 0);
        let held = board.latest();
        publisher.publish(
            start + Duration::from_millis(250),
            Snapshot {
                program: "lbbroker".to_owned(),
                ..Snapshot::default()
            },
        );
        let latest = board.latest();
        assert_eq!(latest.sequence, 1);
        assert_eq!(latest.uptime_ms, 250);
        assert_eq!(latest.program, "lbbroker");
        assert_eq!(held.sequence, 0, "a reader keeps the snapshot it took");
    }

    fn names(services: &Services) -> Vec<String> {
        services
            .iter()
            .map(|service| service.name.clone())
            .collect()
    }

    #[test]
    fn the_table_replaces_by_name_and_shares_what_did_not_change() {
        let mut table = ServiceTable::new();
        let count = 2 * SERVICES_PER_CHUNK + 3;
        for n in 0..count {
            table.update(ServiceSnapshot::named(format!("s{n}")));
        }
        let before = table.services();
        let mut changed = ServiceSnapshot::named("s1");
        changed.requests_waiting = 7;
        table.update(changed);
        let after = table.services();
        assert_eq!(after.len(), count);
        assert_eq!(names(&after), names(&before), "same places");
        let (before_0, after_0) = (before.iter().next().unwrap(), after.iter().next().unwrap());
        assert!(Arc::ptr_eq(before_0, after_0), "s0 is shared, not rebuilt");
        assert_eq!(after.iter().nth(1).unwrap().requests_waiting, 7);
        assert_eq!(
            before.iter().nth(1).unwrap().requests_waiting,
            0,
            "a published snapshot stays as it was"
        );
        assert!(
            Arc::ptr_eq(&before.chunks[1], &after.chunks[1]),
            "a chunk with no change is shared whole"
        );
        assert!(
            !Arc::ptr_eq(&before.chunks[0], &after.chunks[0]),
            "s1's chunk was copied"
        );
    }

    #[test]
    fn removing_moves_the_last_service_into_the_gap() {
        let mut table = ServiceTable::new();
        let count = SERVICES_PER_CHUNK + 1;
        for n in 0..count {
            table.update(ServiceSnapshot::named(format!("s{n}")));
        }
        let published = table.services();
        table.remove("s0");
        table.remove("nothing");
        let after = table.services();
        assert_eq!(after.len(), count - 1);
        assert_eq!(after.chunks.len(), 1, "the emptied last chunk went");
        assert_eq!(after.iter().next().unwrap().name, format!("s{}", count - 1));
        assert_eq!(
            published.len(),
            count,
            "a published snapshot stays as it was"
        );
        assert_eq!(published.iter().next().unwrap().name, "s0");

        // The moved service's index followed it: updating it replaces, not adds.
        let mut moved = ServiceSnapshot::named(format!("s{}", count - 1));
        moved.requests_waiting = 3;
        table.update(moved);
        assert_eq!(table.len(), count - 1);
        assert_eq!(table.services().iter().next().unwrap().requests_waiting, 3);

        table.remove(&format!("s{}", count - 1));
        table.remove("s1");
        let left = names(&table.services());
        assert_eq!(left.len(), count - 3);
        assert!(!left.contains(&"s1".to_owned()));
        for name in &left {
            table.remove(name);
        }
        assert!(table.is_empty());
        assert!(table.services().chunks.is_empty());
    }
}
