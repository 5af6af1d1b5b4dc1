//! The three services' answers, frame by frame, over a real SQLite store in a temporary
//! directory; the time is given, so expiry is tested without waiting.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use super::*;
use crate::sqlite::SqliteStore;

const NOW: u64 = 1_700_000_000_000;
const TTL: u64 = 3_600_000;

struct Fixture {
    _dir: tempfile::TempDir,
    services: Services,
    stored: Arc<Mutex<Vec<PendingRequest>>>,
}

fn fixture(max_stored: u64, allowed: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("t.db"), max_stored).unwrap());
    let stored = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&stored);
    let services = Services::new(
        store,
        ServicePatterns::parse(allowed).unwrap(),
        TTL,
        Box::new(move |pending| seen.lock().unwrap().push(pending)),
    );
    Fixture {
        _dir: dir,
        services,
        stored,
    }
}

fn frames(parts: &[&[u8]]) -> Frames {
    parts.iter().map(|part| zmq::Message::from(*part)).collect()
}

fn bytes(frames: &Frames) -> Vec<Vec<u8>> {
    frames.iter().map(|frame| frame.to_vec()).collect()
}

impl Fixture {
    fn call(&self, kind: Kind, parts: &[&[u8]], now: u64) -> Vec<Vec<u8>> {
        bytes(&self.services.handle(kind, &frames(parts), now))
    }

    fn submit(&self, parts: &[&[u8]]) -> RequestId {
        let reply = self.call(Kind::Request, parts, NOW);
        assert_eq!(reply.len(), 2, "{reply:?}");
        assert_eq!(reply[0], b"200");
        RequestId::parse(&reply[1]).unwrap()
    }
}

#[test]
fn a_request_goes_from_300_to_200_and_stays_until_closed() {
    let fixture = fixture(100, "*");
    let id = fixture.submit(&[b"echo", b"one", b""]);
    let hex = id.to_hex();
    let stored = fixture.stored.lock().unwrap().clone();
    assert_eq!(
        stored.len(),
        1,
        "the dispatcher is told of the stored request"
    );
    assert_eq!((stored[0].id, &stored[0].service[..]), (id, &b"echo"[..]));

    assert_eq!(fixture.call(Kind::Reply, &[hex.as_bytes()], NOW), [b"300"]);
    // The same id in upper case is the same request.
    let upper = hex.to_uppercase();
    assert_eq!(
        fixture.call(Kind::Reply, &[upper.as_bytes()], NOW),
        [b"300"]
    );

    let store = &fixture.services.store;
    assert_eq!(
        store.body(&id).unwrap().unwrap(),
        [b"one".to_vec(), b"".to_vec()]
    );
    assert!(store.complete(&id, &[b"ONE", b""]).unwrap());
    let want = vec![b"200".to_vec(), b"ONE".to_vec(), b"".to_vec()];
    assert_eq!(fixture.call(Kind::Reply, &[hex.as_bytes()], NOW), want);
    // titanic.reply never deletes.
    assert_eq!(fixture.call(Kind::Reply, &[hex.as_bytes()], NOW), want);

    assert_eq!(fixture.call(Kind::Close, &[hex.as_bytes()], NOW), [b"200"]);
    assert_eq!(fixture.call(Kind::Reply, &[hex.as_bytes()], NOW), [b"400"]);
    assert_eq!(fixture.call(Kind::Close, &[hex.as_bytes()], NOW), [b"200"]);
}

#[test]
fn unknown_ids_are_400_for_reply_and_200_for_close() {
    let fixture = fixture(100, "*");
    let unknown = RequestId::random().to_hex();
    assert_eq!(
        fixture.call(Kind::Reply, &[unknown.as_bytes()], NOW),
        [b"400"]
    );
    assert_eq!(
        fixture.call(Kind::Close, &[unknown.as_bytes()], NOW),
        [b"200"]
    );
    assert_eq!(fixture.call(Kind::Reply, &[b"not an id"], NOW), [b"400"]);
    assert_eq!(fixture.call(Kind::Close, &[b"not an id"], NOW), [b"200"]);
}

#[test]
fn malformed_requests_are_400_and_store_nothing() {
    let fixture = fixture(100, "echo,billing.*");
    let id = RequestId::random().to_hex();
    for (kind, parts) in [
        (Kind::Request, &[&b"echo"[..]][..]),
        (Kind::Request, &[b"", b"body"]),
        (Kind::Request, &[b"other", b"body"]),
        (Kind::Request, &[b"mmi.service", b"echo"]),
        (Kind::Request, &[b"titanic.request", b"echo", b"x"]),
        (Kind::Reply, &[]),
        (Kind::Reply, &[id.as_bytes(), b"extra"]),
        (Kind::Close, &[id.as_bytes(), b"extra"]),
    ] {
        assert_eq!(
            fixture.call(kind, parts, NOW),
            [b"400"],
            "{kind:?} {parts:?}"
        );
    }
    assert!(fixture.stored.lock().unwrap().is_empty());
    assert_eq!(fixture.services.store.stored(), 0);
    fixture.submit(&[b"billing.charge", b"10"]);
}

#[test]
fn a_request_past_its_time_to_live_is_unknown_not_an_error() {
    let fixture = fixture(100, "*");
    let id = fixture.submit(&[b"echo", b"x"]).to_hex();
    let just_before = NOW + TTL - 1;
    assert_eq!(
        fixture.call(Kind::Reply, &[id.as_bytes()], just_before),
        [b"300"]
    );
    assert_eq!(
        fixture.call(Kind::Reply, &[id.as_bytes()], NOW + TTL),
        [b"400"]
    );
}

#[test]
fn a_full_store_answers_500() {
    let fixture = fixture(1, "*");
    fixture.submit(&[b"echo", b"1"]);
    assert_eq!(fixture.call(Kind::Request, &[b"echo", b"2"], NOW), [b"500"]);
    assert_eq!(fixture.stored.lock().unwrap().len(), 1);
}
