//! What a process knows of a lease it holds on a shared store ([`crate::pg`]): until when it may
//! keep a try out, and when to renew. No clock is read here: the times are given, and the rules
//! are tested in virtual time.
//!
//! The store's rule is that another process may claim a request once `now_ms` is at or past
//! `lease_expires_ms`, which is the claimer's `now_ms + lease` at the moment it asked. This side's
//! rule is that the holder stops waiting for the try's reply at `asked_at + lease`, where
//! `asked_at` is read *before* the claim (or renewal) is sent: the store's expiry cannot come
//! sooner than that, so the holder has given the try up before anyone else may send it (with the
//! hosts' clocks in step; see [`crate::pg`]).

use std::time::{Duration, Instant};

/// One lease, as its holder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    length: Duration,
    held_until: Instant,
}

impl Lease {
    /// A lease of `length`, taken by a claim asked for at `asked_at`.
    pub fn taken(asked_at: Instant, length: Duration) -> Lease {
        Lease {
            length,
            held_until: asked_at + length,
        }
    }

    /// The store renewed it, in a renewal asked for at `asked_at`. A renewal never shortens what
    /// is already known to be held.
    pub fn renewed(&mut self, asked_at: Instant) {
        self.held_until = self.held_until.max(asked_at + self.length);
    }

    /// The end of the lease, as far as the holder can be sure of it: the try must be given up
    /// at this instant unless a renewal moved it on.
    pub fn held_until(&self) -> Instant {
        self.held_until
    }

    /// Whether the try may still be out at `now`.
    pub fn held(&self, now: Instant) -> bool {
        now < self.held_until
    }

    /// How often leases are renewed: a third of their length, so that two renewals in a row can
    /// fail (a slow database, a lost connection) before a try is given up.
    pub fn renew_every(length: Duration) -> Duration {
        (length / 3).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    #[test]
    fn a_lease_is_held_from_before_the_claim_for_its_length_and_no_longer() {
        let asked = Instant::now();
        let lease = Lease::taken(asked, LEASE);
        assert!(lease.held(asked));
        assert!(lease.held(asked + LEASE - Duration::from_millis(1)));
        assert!(
            !lease.held(asked + LEASE),
            "given up at the store's expiry at the latest"
        );
    }

    #[test]
    fn each_renewal_moves_the_end_to_its_own_asking_time_plus_the_length() {
        let start = Instant::now();
        let mut lease = Lease::taken(start, LEASE);
        let every = Lease::renew_every(LEASE);
        assert_eq!(every, Duration::from_secs(10));
        for renewal in 1..=5 {
            let asked = start + every * renewal;
            lease.renewed(asked);
            assert_eq!(lease.held_until(), asked + LEASE);
        }
        // Renewals stop (the store is unreachable): the lease ends one length after the last.
        let last = start + every * 5;
        assert!(lease.held(last + LEASE - Duration::from_millis(1)));
        assert!(!lease.held(last + LEASE));
    }

    #[test]
    fn a_renewal_answered_late_does_not_shorten_the_lease() {
        let start = Instant::now();
        let mut lease = Lease::taken(start, LEASE);
        lease.renewed(start + Duration::from_secs(20));
        // An older renewal (asked earlier, answered after the newer one) changes nothing.
        lease.renewed(start + Duration::from_secs(10));
        assert_eq!(lease.held_until(), start + Duration::from_secs(50));
    }
}
