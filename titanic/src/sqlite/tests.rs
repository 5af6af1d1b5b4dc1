//! The SQLite store against a database in a temporary directory.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use super::*;

const TTL: u64 = 60_000;
const NOW: u64 = 1_700_000_000_000;

fn stored_id(submitted: Submitted) -> RequestId {
    match submitted {
        Submitted::Stored(id) => id,
        Submitted::Full => panic!("the store refused a request as full"),
    }
}

#[test]
fn a_request_and_its_reply_survive_closing_and_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("titanic.db");
    let body: [&[u8]; 3] = [b"first", b"", &[0, 1, 255]];
    let id = {
        let store = SqliteStore::open(&path, 100).unwrap();
        let id = stored_id(store.submit(b"echo", &body, NOW, TTL).unwrap());
        assert_eq!(store.reply(&id, NOW).unwrap(), ReplyState::Pending);
        id
    };
    let store = SqliteStore::open(&path, 100).unwrap();
    assert_eq!(store.stored(), 1);
    assert_eq!(store.reply(&id, NOW).unwrap(), ReplyState::Pending);
    let pending = store.pending(NOW).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, id);
    assert_eq!(pending[0].service, b"echo");
    assert_eq!(pending[0].expires_ms, NOW + TTL);
    assert_eq!(
        store.body(&id).unwrap().unwrap(),
        body.map(<[u8]>::to_vec).to_vec()
    );

    let reply: [&[u8]; 2] = [b"answer", b"\x00\x00"];
    assert!(store.complete(&id, &reply).unwrap());
    drop(store);

    let store = SqliteStore::open(&path, 100).unwrap();
    let want = ReplyState::Done(reply.map(<[u8]>::to_vec).to_vec());
    // Reading the reply does not delete it (spec 9: titanic.reply is idempotent).
    assert_eq!(store.reply(&id, NOW).unwrap(), want);
    assert_eq!(store.reply(&id, NOW).unwrap(), want);
    assert!(store.pending(NOW).unwrap().is_empty());
    assert_eq!(
        store.body(&id).unwrap(),
        None,
        "a done request is not sent again"
    );
    // A second reply (a duplicate from a resent try) does not replace the first.
    assert!(!store.complete(&id, &[b"other"]).unwrap());
    assert_eq!(store.reply(&id, NOW).unwrap(), want);
}

#[test]
fn close_deletes_a_request_and_is_a_no_op_for_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), 100).unwrap();
    let id = stored_id(store.submit(b"echo", &[b"x"], NOW, TTL).unwrap());
    store.close(&id).unwrap();
    assert_eq!(store.reply(&id, NOW).unwrap(), ReplyState::Unknown);
    assert_eq!(store.stored(), 0);
    store.close(&id).unwrap();
    store.close(&RequestId::random()).unwrap();
    // Completing a closed request stores nothing.
    assert!(!store.complete(&id, &[b"late"]).unwrap());
    assert_eq!(store.reply(&id, NOW).unwrap(), ReplyState::Unknown);
}

#[test]
fn an_expired_request_reads_as_unknown_and_expiry_deletes_answered_and_pending_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), 100).unwrap();
    let answered = stored_id(store.submit(b"echo", &[b"a"], NOW, TTL).unwrap());
    assert!(store.complete(&answered, &[b"a"]).unwrap());
    let pending = stored_id(store.submit(b"echo", &[b"b"], NOW, TTL).unwrap());
    let younger = stored_id(store.submit(b"echo", &[b"c"], NOW + 10, TTL).unwrap());

    let at_expiry = NOW + TTL;
    assert_eq!(
        store.reply(&answered, at_expiry).unwrap(),
        ReplyState::Unknown
    );
    assert_eq!(
        store.reply(&pending, at_expiry).unwrap(),
        ReplyState::Unknown
    );
    assert_eq!(
        store.reply(&younger, at_expiry).unwrap(),
        ReplyState::Pending
    );
    let due: Vec<RequestId> = store
        .pending(at_expiry)
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(due, [younger]);

    assert_eq!(store.expire(at_expiry).unwrap(), 2);
    assert_eq!(store.stored(), 1);
    assert_eq!(store.expire(at_expiry).unwrap(), 0);
    assert_eq!(store.reply(&younger, NOW).unwrap(), ReplyState::Pending);
}

#[test]
fn a_full_store_refuses_new_requests_until_one_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(&path, 2).unwrap();
    let first = stored_id(store.submit(b"echo", &[b"1"], NOW, TTL).unwrap());
    stored_id(store.submit(b"echo", &[b"2"], NOW, TTL).unwrap());
    assert_eq!(
        store.submit(b"echo", &[b"3"], NOW, TTL).unwrap(),
        Submitted::Full
    );
    assert_eq!(store.stats().refused_full, 1);
    drop(store);
    // The count is read back from the database, not started at zero.
    let store = SqliteStore::open(&path, 2).unwrap();
    assert_eq!(
        store.submit(b"echo", &[b"3"], NOW, TTL).unwrap(),
        Submitted::Full
    );
    store.close(&first).unwrap();
    stored_id(store.submit(b"echo", &[b"3"], NOW, TTL).unwrap());
}

#[test]
fn attempts_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), 100).unwrap();
    let id = stored_id(store.submit(b"echo", &[b"x"], NOW, TTL).unwrap());
    store.record_attempt(&id).unwrap();
    store.record_attempt(&id).unwrap();
    // Attempts go through the writer without an answer; a later answered write follows them.
    store.expire(0).unwrap();
    assert_eq!(store.pending(NOW).unwrap()[0].attempts, 2);
}

#[test]
fn submissions_that_wait_together_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Arc::new(SqliteStore::open(&path, 1000).unwrap());
    // Another connection holds the write lock, so the writer waits at its first transaction
    // while the other submissions queue up behind it.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
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
    // Every write is in the writer's first transaction (blocked at its start) or in the queue.
    while store.counters.handed_over.load(Ordering::Relaxed) < submitters as u64 {
        assert!(Instant::now() < deadline, "the submissions never queued up");
        std::thread::yield_now();
    }
    blocker.execute_batch("COMMIT").unwrap();
    let ids: std::collections::HashSet<RequestId> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(ids.len(), submitters);
    let stats = store.stats();
    assert_eq!(stats.submitted, submitters as u64);
    // The writes the writer took before it blocked, then all the others.
    assert!(stats.commits <= 2, "{stats:?}");
}
