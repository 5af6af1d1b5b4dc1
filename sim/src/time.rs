//! Virtual time: a clock that only moves when the simulation says so, and a queue of things due
//! at given moments.
//!
//! The cores are given `now: Instant` and never read a clock, so the simulation can hand them
//! any instant it likes. It picks one real `Instant` at the start (the base) and from then on
//! counts offsets from it: a run that covers ten minutes of the system's life takes as long as
//! its events take to process, and two runs with the same seed see exactly the same instants.
//!
//! The [`Timeline`] orders what is due by time, then by the order it was scheduled in, so that
//! two things due at the same moment always happen in the same order: with that, and a seeded
//! random generator, a run is a pure function of its seed.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A virtual clock: a fixed base `Instant` and how far the simulation has moved past it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    elapsed: Duration,
}

impl Clock {
    /// A clock at its start, whose base is the real time it was made at (any instant would do;
    /// a real one keeps `Instant` arithmetic in the cores far from overflow).
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    /// The current virtual instant, as the cores are given it.
    pub fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    /// How long the simulation has run.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The offset of a virtual instant from the base (zero for one before it).
    pub fn offset_of(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.base)
    }

    /// Moves the clock to `elapsed` past the base; the clock never goes back.
    pub fn advance_to(&mut self, elapsed: Duration) {
        self.elapsed = self.elapsed.max(elapsed);
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// One scheduled event.
#[derive(Debug)]
struct Entry<E> {
    at: Duration,
    sequence: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    // Reversed, so that the max-heap pops the earliest (then the first scheduled) entry.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.sequence).cmp(&(self.at, self.sequence))
    }
}

/// Events ordered by the time they are due (an offset from the clock's base), then by the order
/// they were scheduled in.
#[derive(Debug)]
pub struct Timeline<E> {
    heap: BinaryHeap<Entry<E>>,
    next_sequence: u64,
}

impl<E> Timeline<E> {
    pub fn new() -> Timeline<E> {
        Timeline {
            heap: BinaryHeap::new(),
            next_sequence: 0,
        }
    }

    /// Schedules `event` at `at` past the base.
    pub fn schedule(&mut self, at: Duration, event: E) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.heap.push(Entry {
            at,
            sequence,
            event,
        });
    }

    /// When the next event is due, if any is scheduled.
    pub fn next_at(&self) -> Option<Duration> {
        self.heap.peek().map(|entry| entry.at)
    }

    /// Takes the next event and the time it is due.
    pub fn pop(&mut self) -> Option<(Duration, E)> {
        self.heap.pop().map(|entry| (entry.at, entry.event))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

impl<E> Default for Timeline<E> {
    fn default() -> Self {
        Timeline::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_by_time_then_by_scheduling_order() {
        let mut timeline = Timeline::new();
        let ms = Duration::from_millis;
        timeline.schedule(ms(5), "late");
        timeline.schedule(ms(1), "first");
        timeline.schedule(ms(1), "second");
        timeline.schedule(ms(3), "middle");
        let order: Vec<_> = std::iter::from_fn(|| timeline.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, ["first", "second", "middle", "late"]);
    }

    #[test]
    fn the_clock_never_goes_back() {
        let mut clock = Clock::new();
        let start = clock.now();
        clock.advance_to(Duration::from_secs(2));
        clock.advance_to(Duration::from_secs(1));
        assert_eq!(clock.now() - start, Duration::from_secs(2));
        assert_eq!(clock.offset_of(clock.now()), Duration::from_secs(2));
    }
}
