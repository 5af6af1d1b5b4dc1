//! The PostgreSQL store against a real server (`TITANIC_PG_URL`, a schema per test), and its
//! lease rule in virtual time: every time is made up and passed in, no clock is read.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use super::*;

#[path = "../../tests/support/pg_server.rs"]
mod pg_server;

use pg_server::TestDatabase;

const TTL: u64 = 60_000;
const NOW: u64 = 1_700_000_000_000;
const LEASE: u64 = 10_000;

fn stored_id(submitted: Submitted) -> RequestId {
    match submitted {
        Submitted::Stored(id) => id,
        Submitted::Full => panic!("the store refused a request as full"),
    }
}

macro_rules! database {
    ($name:literal) => {
        match TestDatabase::new($name) {
            Some(database) => database,
            None => return,
        }
    };
}

#[test]
fn a_request_and_its_reply_survive_reopening_and_a_reply_is_stored_once() {
    let database = database!("a_request_and_its_reply_survive_reopening");
    let body: [&[u8]; 3] = [b"first", b"", &[0, 1, 255]];
    let id = {
        let store = PgStore::open(&database.url, 100).unwrap();
        let id = stored_id(store.submit(b"echo", &body, NOW, TTL).unwrap());
        assert_eq!(store.reply(&id, NOW).unwrap(), ReplyState::Pending);
        id
    };
    let store = PgStore::open(&database.url, 100).unwrap();
    assert_eq!(store.stored(), 1);
    let pending = store.pending(NOW).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].id,
            &pending[0].service[..],
            pending[0].expires_ms
        ),
        (id, &b"echo"[..], NOW + TTL)
    );
    assert_eq!(
        store.body(&id).unwrap().unwrap(),
        body.map(<[u8]>::to_vec).to_vec()
    );
    let reply: [&[u8]; 2] = [b"answer", b"\x00\x00"];
    assert!(store.complete(&id, &reply).unwrap());
    drop(store);

    let store = PgStore::open(&database.url, 100).unwrap();
    let want = ReplyState::Done(reply.map(<[u8]>::to_vec).to_vec());
    assert_eq!(store.reply(&id, NOW).unwrap(), want);
    assert_eq!(
        store.reply(&id, NOW).unwrap(),
        want,
        "reading does not delete"
    );
    assert!(store.pending(NOW).unwrap().is_empty());
    assert_eq!(store.body(&id).unwrap(), None);
    assert!(!store.complete(&id, &[b"other"]).unwrap());
    assert_eq!(
        store.reply(&id, NOW).unwrap(),
        want,
        "the first reply stays"
    );
}

#[test]
fn close_expiry_and_a_full_store_behave_as_on_sqlite() {
    let database = database!("close_expiry_and_a_full_store");
    let store = PgStore::open(&database.url, 2).unwrap();
    let first = stored_id(store.submit(b"echo", &[b"1"], NOW, TTL).unwrap());
    let second = stored_id(store.submit(b"echo", &[b"2"], NOW + 10, TTL).unwrap());
    assert_eq!(
        store.submit(b"echo", &[b"3"], NOW, TTL).unwrap(),
        Submitted::Full
    );
    assert_eq!(store.stats().refused_full, 1);
    store.close(&first).unwrap();
    store.close(&first).unwrap();
    store.close(&RequestId::random()).unwrap();
    assert_eq!(store.reply(&first, NOW).unwrap(), ReplyState::Unknown);
    assert!(!store.complete(&first, &[b"late"]).unwrap());
    let third = stored_id(store.submit(b"echo", &[b"3"], NOW + 20, TTL).unwrap());

    // At the second's expiry it reads as unknown; the sweep deletes it and recounts.
    let at_expiry = NOW + 10 + TTL;
    assert_eq!(
        store.reply(&second, at_expiry).unwrap(),
        ReplyState::Unknown
    );
    assert_eq!(store.reply(&third, at_expiry).unwrap(), ReplyState::Pending);
    assert_eq!(store.expire(at_expiry).unwrap(), 1);
    assert_eq!(store.stored(), 1);
    assert_eq!(store.pending(at_expiry).unwrap()[0].id, third);
}

#[test]
fn submissions_that_wait_together_share_one_commit() {
    let database = database!("submissions_that_wait_together_share_one_commit");
    let store = Arc::new(PgStore::open(&database.url, 1000).unwrap());
    // Another connection holds a lock that blocks inserts, so the writer waits in its first
    // transaction while the other submissions queue up behind it.
    let mut blocker = database.connect();
    blocker
        .batch_execute("BEGIN; LOCK TABLE titanic_requests IN EXCLUSIVE MODE")
        .unwrap();
    let submitters = 20;
    let threads: Vec<_> = (0..submitters)
        .map(|n| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let body = format!("request {n}");
                stored_id(store.submit(b"echo", &[body.as_bytes()], NOW, TTL).unwrap())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.handed_over() < submitters as u64 {
        assert!(Instant::now() < deadline, "the submissions never queued up");
        std::thread::yield_now();
    }
    blocker.batch_execute("COMMIT").unwrap();
    let ids: std::collections::HashSet<RequestId> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(ids.len(), submitters);
    let stats = store.stats();
    assert_eq!(stats.submitted, submitters as u64);
    assert!(stats.commits <= 2, "{stats:?}");
}

/// The lease rule with two processes' stores on one database, in virtual time.
#[test]
fn a_leased_request_is_taken_over_only_after_its_lease_ran_out_unrenewed() {
    let database = database!("a_leased_request_is_taken_over_only_after_its_lease_ran_out");
    let a = PgStore::open(&database.url, 100).unwrap();
    let b = PgStore::open(&database.url, 100).unwrap();
    let id = stored_id(a.submit(b"echo", &[b"x"], NOW, TTL).unwrap());
    assert_eq!(
        b.claimable(NOW, 10).unwrap()[0].id,
        id,
        "stored by A, seen by B"
    );

    assert!(a.claim(&id, "a", NOW, LEASE).unwrap());
    assert!(b.claimable(NOW, 10).unwrap().is_empty());
    assert!(!b.claim(&id, "b", NOW + 5_000, LEASE).unwrap());
    // A renews while the request is out: the lease now ends at NOW + 3 s + LEASE.
    assert_eq!(a.renew(&[id], "a", NOW + 3_000, LEASE).unwrap(), [id]);
    let end = NOW + 3_000 + LEASE;
    assert!(!b.claim(&id, "b", end - 1, LEASE).unwrap());
    assert!(b.claimable(end - 1, 10).unwrap().is_empty());
    // A's renewals stopped (A died): at the end of the lease, B takes it over.
    assert_eq!(b.claimable(end, 10).unwrap()[0].id, id);
    assert!(b.claim(&id, "b", end, LEASE).unwrap());
    // A, back, cannot renew nor claim it while B's lease runs.
    assert!(a.renew(&[id], "a", end + 1, LEASE).unwrap().is_empty());
    assert!(!a.claim(&id, "a", end + 1, LEASE).unwrap());
    // The holder may claim again (a retry after an unanswered try).
    assert!(b.claim(&id, "b", end + 2, LEASE).unwrap());
    assert_eq!(
        b.pending(end).unwrap()[0].attempts,
        3,
        "every claim is a try"
    );
    assert!(b.complete(&id, &[b"x"]).unwrap());
    // Done: nobody claims it, whatever the time.
    assert!(!a.claim(&id, "a", end + 2 * LEASE, LEASE).unwrap());
    assert!(a.claimable(end + 2 * LEASE, 10).unwrap().is_empty());
    assert!(b.renew(&[id], "b", end + 3, LEASE).unwrap().is_empty());
}

#[test]
fn an_expired_request_cannot_be_claimed() {
    let database = database!("an_expired_request_cannot_be_claimed");
    let store = PgStore::open(&database.url, 100).unwrap();
    let id = stored_id(store.submit(b"echo", &[b"x"], NOW, TTL).unwrap());
    assert!(!store.claim(&id, "a", NOW + TTL, LEASE).unwrap());
    assert!(store.claimable(NOW + TTL, 10).unwrap().is_empty());
    assert!(store.claim(&id, "a", NOW + TTL - 1, LEASE).unwrap());
}

/// A claim does not wait for a row another transaction has locked: it skips it (not taken),
/// and takes it once that transaction is over.
#[test]
fn a_claim_skips_a_row_another_transaction_holds() {
    let database = database!("a_claim_skips_a_row_another_transaction_holds");
    let store = Arc::new(PgStore::open(&database.url, 100).unwrap());
    let id = stored_id(store.submit(b"echo", &[b"x"], NOW, TTL).unwrap());
    let mut other = database.connect();
    other.batch_execute("BEGIN").unwrap();
    other
        .execute(
            "SELECT id FROM titanic_requests WHERE id = $1 FOR UPDATE",
            &[&id.to_hex()],
        )
        .unwrap();
    let claimer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || store.claim(&id, "a", NOW, LEASE).unwrap())
    };
    // A claim that waited for the lock would only return after the ROLLBACK below, which
    // waits for it: the bound turns that deadlock into a failure.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !claimer.is_finished() {
        assert!(Instant::now() < deadline, "the claim waited for the lock");
        std::thread::yield_now();
    }
    assert!(!claimer.join().unwrap(), "a locked row is not taken");
    other.batch_execute("ROLLBACK").unwrap();
    assert!(store.claim(&id, "a", NOW, LEASE).unwrap());
}
