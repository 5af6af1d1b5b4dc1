//! `AsyncCore`: many requests in flight, matching by service or by tag, timeouts oldest first,
//! retired connections, resends, and what is dropped.

use super::*;
use crate::core::{AsyncAction, AsyncCore, ConnId, Link};
use crate::{AsyncClientConfig, Matching, Outcome, RequestId};

const TIMEOUT: Duration = Duration::from_millis(100);

fn core(matching: Matching, retries: u32) -> AsyncCore {
    AsyncCore::new(AsyncClientConfig {
        timeout: TIMEOUT,
        matching,
        retries,
    })
}

/// A started core, with the first connection's `Open` taken out of the way.
fn started(matching: Matching, retries: u32) -> (AsyncCore, Vec<AsyncAction>) {
    let mut core = core(matching, retries);
    let mut out = Vec::new();
    core.start(&mut out);
    assert_eq!(describe(&mut out), ["open 0"]);
    (core, out)
}

/// A frame as text if it is printable, else as hex (tags are 8 binary bytes).
fn show(frame: &[u8]) -> String {
    if frame
        .iter()
        .all(|byte| byte.is_ascii_graphic() || *byte == b' ')
    {
        String::from_utf8_lossy(frame).into_owned()
    } else {
        frame.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

fn shown(frames: &Frames) -> Vec<String> {
    frames.iter().map(|frame| show(frame)).collect()
}

/// What a list of actions says: `open N`, `close N`, `send N <frames>`.
fn describe(actions: &mut Vec<AsyncAction>) -> Vec<String> {
    actions
        .drain(..)
        .map(|action| match action {
            AsyncAction::Open(ConnId(conn)) => format!("open {conn}"),
            AsyncAction::Close(ConnId(conn)) => format!("close {conn}"),
            AsyncAction::Send {
                conn: ConnId(conn),
                frames,
            } => format!("send {conn} {:?}", shown(&frames)),
        })
        .collect()
}

/// The frames of the `Send`s in `actions`, with their connection, taken out.
fn sends(actions: &mut Vec<AsyncAction>) -> Vec<(ConnId, Frames)> {
    actions
        .drain(..)
        .filter_map(|action| match action {
            AsyncAction::Send { conn, frames } => Some((conn, frames)),
            _ => None,
        })
        .collect()
}

/// Every outcome waiting, in a form tests can compare: `reply #id <body> tries N` or
/// `timeout #id tries N`.
fn outcomes(core: &mut AsyncCore) -> Vec<String> {
    std::iter::from_fn(|| core.pop_outcome())
        .map(|outcome| match outcome {
            Outcome::Reply {
                id, body, tries, ..
            } => format!("reply {id} {:?} tries {tries}", shown(&body)),
            Outcome::TimedOut { id, tries, .. } => format!("timeout {id} tries {tries}"),
        })
        .collect()
}

/// The one outcome waiting, which must be a reply: its latency.
fn reply_latency(core: &mut AsyncCore) -> Duration {
    match core.pop_outcome() {
        Some(Outcome::Reply { latency, .. }) => latency,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// Sends a one-frame request to `to` at `now`, and drops the actions.
fn send(core: &mut AsyncCore, now: Instant, to: &str, body: &str) -> RequestId {
    let mut out = Vec::new();
    core.send(now, &service(to), frames(&[body.as_bytes()]), &mut out)
}

/// The tag frame a `ByTag` core put first in the body of the request it sent.
fn tag_of(frames: &Frames) -> Vec<u8> {
    frames[3].to_vec()
}

const C0: ConnId = ConnId(0);
const C1: ConnId = ConnId(1);

#[test]
fn the_first_connection_is_opened_once_and_requests_go_out_on_it_with_spec_7_frames() {
    let mut core = core(Matching::ByService, 1);
    let mut out = Vec::new();
    let t0 = Instant::now();
    // `send` opens the connection if the driver did not `start`.
    let first = core.send(t0, &service("echo"), frames(&[b"a", b"b"]), &mut out);
    core.start(&mut out);
    let second = core.send(t0, &service("echo"), Vec::new(), &mut out);
    assert_eq!(
        describe(&mut out),
        [
            "open 0",
            r#"send 0 ["", "MDPC01", "echo", "a", "b"]"#,
            r#"send 0 ["", "MDPC01", "echo", ""]"#,
        ],
        "the delimiter first (a DEALER does not add it), and an empty body as one empty frame"
    );
    assert_eq!((first, second), (RequestId(0), RequestId(1)));
    assert_eq!(core.outstanding(), 2);
    assert_eq!(core.open_connections(), 1);
    assert_eq!(core.current_connection(), C0);
}

#[test]
fn by_service_a_reply_answers_the_oldest_request_to_its_service() {
    let (mut core, mut out) = started(Matching::ByService, 1);
    let t0 = Instant::now();
    let to_a = send(&mut core, t0, "a", "1");
    let to_b = send(&mut core, t0, "b", "2");
    let to_a_again = send(&mut core, t0, "a", "3");
    // b's reply overtakes a's; the two replies of a go to a's requests oldest first.
    let replies: [(&[u8], &[u8]); 3] = [(b"b", b"from b"), (b"a", b"first"), (b"a", b"other")];
    for (service, body) in replies {
        core.handle(t0 + millis(1), C0, dealer_reply(service, &[body]), &mut out);
    }
    assert_eq!(
        outcomes(&mut core),
        [
            format!(r#"reply {to_b} ["from b"] tries 1"#),
            format!(r#"reply {to_a} ["first"] tries 1"#),
            format!(r#"reply {to_a_again} ["other"] tries 1"#),
        ]
    );
    assert!(out.is_empty(), "nothing to send or close: {out:?}");
    assert_eq!(core.outstanding(), 0);
    assert_eq!(core.dropped_replies(), 0);
    assert_eq!(core.next_deadline(), None);
}

#[test]
fn a_reply_no_request_of_its_service_waits_for_is_dropped_and_counted() {
    let (mut core, mut out) = started(Matching::ByService, 1);
    let t0 = Instant::now();
    send(&mut core, t0, "a", "1");
    core.handle(t0, C0, dealer_reply(b"b", &[b"x"]), &mut out);
    assert!(outcomes(&mut core).is_empty());
    assert_eq!(core.dropped_replies(), 1);
    assert_eq!(core.outstanding(), 1, "a's request still waits");
}

#[test]
fn outstanding_counts_a_request_until_its_outcome_is_taken() {
    let (mut core, mut out) = started(Matching::ByService, 1);
    let t0 = Instant::now();
    send(&mut core, t0, "echo", "1");
    core.handle(t0, C0, dealer_reply(b"echo", &[b"x"]), &mut out);
    assert_eq!(core.outstanding(), 1, "decided, not yet taken");
    assert_eq!(core.next_deadline(), None, "but nothing left to time out");
    assert!(core.pop_outcome().is_some());
    assert_eq!(core.outstanding(), 0);
    assert!(core.pop_outcome().is_none());
}

#[test]
fn the_latency_counts_from_the_send_to_the_handling_of_the_reply() {
    let (mut core, mut out) = started(Matching::ByService, 1);
    let t0 = Instant::now();
    send(&mut core, t0, "echo", "1");
    core.handle(
        t0 + millis(42),
        C0,
        dealer_reply(b"echo", &[b"x"]),
        &mut out,
    );
    assert_eq!(reply_latency(&mut core), millis(42));
}

#[test]
fn a_request_times_out_exactly_at_its_deadline() {
    let (mut core, mut out) = started(Matching::ByTag, 1);
    let t0 = Instant::now();
    let only = send(&mut core, t0, "echo", "1");
    assert_eq!(core.next_deadline(), Some(t0 + TIMEOUT));
    core.tick(t0 + TIMEOUT - NANO, &mut out);
    assert!(outcomes(&mut core).is_empty());
    assert!(out.is_empty());
    core.tick(t0 + TIMEOUT, &mut out);
    assert_eq!(outcomes(&mut core), [format!("timeout {only} tries 1")]);
    assert!(out.is_empty(), "by default no resend: {out:?}");
    assert_eq!(core.resends(), 0);
    assert_eq!(core.next_deadline(), None);
}

#[test]
fn timeouts_are_reported_oldest_first_and_the_deadline_follows_the_oldest() {
    let (mut core, mut out) = started(Matching::ByTag, 1);
    let t0 = Instant::now();
    let ids: Vec<RequestId> = (0..3)
        .map(|step| send(&mut core, t0 + millis(10 * step), "echo", "x"))
        .collect();
    assert_eq!(core.next_deadline(), Some(t0 + TIMEOUT));
    // One tick long after all three expired: all three, in sending order.
    core.tick(t0 + TIMEOUT * 5, &mut out);
    let expected: Vec<String> = ids
        .iter()
        .map(|id| format!("timeout {id} tries 1"))
        .collect();
    assert_eq!(outcomes(&mut core), expected);

    // And one at a time: each tick at the next deadline gives exactly the next one.
    let t1 = t0 + TIMEOUT * 10;
    let ids: Vec<RequestId> = (0..3)
        .map(|step| send(&mut core, t1 + millis(10 * step), "echo", "x"))
        .collect();
    for id in ids {
        let deadline = core.next_deadline().unwrap();
        core.tick(deadline - NANO, &mut out);
        assert!(outcomes(&mut core).is_empty());
        core.tick(deadline, &mut out);
        assert_eq!(outcomes(&mut core), [format!("timeout {id} tries 1")]);
    }
    assert_eq!(core.next_deadline(), None);
}

#[test]
fn when_the_oldest_is_answered_the_deadline_moves_to_the_next_oldest() {
    let (mut core, mut out) = started(Matching::ByService, 1);
    let t0 = Instant::now();
    send(&mut core, t0, "a", "1");
    send(&mut core, t0 + millis(10), "b", "2");
    send(&mut core, t0 + millis(20), "c", "3");
    core.handle(t0 + millis(30), C0, dealer_reply(b"b", &[b"x"]), &mut out);
    assert_eq!(
        core.next_deadline(),
        Some(t0 + TIMEOUT),
        "a is still the oldest"
    );
    core.handle(t0 + millis(30), C0, dealer_reply(b"a", &[b"x"]), &mut out);
    assert_eq!(
        core.next_deadline(),
        Some(t0 + millis(20) + TIMEOUT),
        "b is answered too, so c"
    );
}

#[test]
fn by_service_a_timeout_retires_the_connection_which_collects_what_it_carried_then_closes() {
    let (mut core, mut out) = started(Matching::ByService, 1);
    let t0 = Instant::now();
    let first = send(&mut core, t0, "echo", "first");
    let second = send(&mut core, t0 + millis(50), "echo", "second");

    core.tick(t0 + TIMEOUT, &mut out);
    assert_eq!(outcomes(&mut core), [format!("timeout {first} tries 1")]);
    assert_eq!(
        describe(&mut out),
        ["open 1"],
        "retired, not closed: the second is outstanding on it"
    );
    assert_eq!(core.open_connections(), 2);
    assert_eq!(core.current_connection(), C1);
    assert_eq!(core.next_deadline(), Some(t0 + millis(50) + TIMEOUT));

    // New requests go out on the new connection.
    let third = core.send(
        t0 + millis(60),
        &service("echo"),
        frames(&[b"third"]),
        &mut out,
    );
    assert_eq!(
        describe(&mut out),
        [r#"send 1 ["", "MDPC01", "echo", "third"]"#]
    );

    // The retired connection's reply answers what it carried, and then it is closed.
    core.handle(
        t0 + millis(70),
        C0,
        dealer_reply(b"echo", &[b"to second"]),
        &mut out,
    );
    assert_eq!(
        outcomes(&mut core),
        [format!(r#"reply {second} ["to second"] tries 1"#)]
    );
    assert_eq!(describe(&mut out), ["close 0"]);
    assert_eq!(core.open_connections(), 1);

    // The first request's late reply would come to the closed connection: dropped, uncounted,
    // and the third request still waits for its own.
    core.handle(
        t0 + millis(80),
        C0,
        dealer_reply(b"echo", &[b"late"]),
        &mut out,
    );
    assert!(outcomes(&mut core).is_empty());
    assert_eq!(core.dropped_replies(), 0, "a closed socket never sees it");
    core.handle(
        t0 + millis(90),
        C1,
        dealer_reply(b"echo", &[b"to third"]),
        &mut out,
    );
    assert_eq!(
        outcomes(&mut core),
        [format!(r#"reply {third} ["to third"] tries 1"#)]
    );
}

#[test]
fn by_service_a_timeout_with_nothing_else_in_flight_closes_the_connection_at_once() {
    let (mut core, mut out) = started(Matching::ByService, 1);
    let t0 = Instant::now();
    send(&mut core, t0, "echo", "x");
    core.tick(t0 + TIMEOUT, &mut out);
    assert_eq!(describe(&mut out), ["open 1", "close 0"]);
    assert_eq!(core.open_connections(), 1);
}

#[test]
fn a_retired_connection_that_times_out_its_last_request_is_closed() {
    let (mut core, mut out) = started(Matching::ByService, 1);
    let t0 = Instant::now();
    send(&mut core, t0, "echo", "1");
    send(&mut core, t0 + millis(10), "echo", "2");
    core.tick(t0 + TIMEOUT, &mut out);
    assert_eq!(describe(&mut out), ["open 1"]);
    core.tick(t0 + millis(10) + TIMEOUT, &mut out);
    assert_eq!(
        describe(&mut out),
        ["close 0"],
        "the second timed out on the retired connection: no new one, the retired one closes"
    );
    assert_eq!(outcomes(&mut core).len(), 2);
    assert_eq!(core.open_connections(), 1);
    assert_eq!(core.current_connection(), C1);
}

#[test]
fn the_deadline_is_the_earliest_over_the_current_and_the_retired_connections() {
    let (mut core, mut out) = started(Matching::ByService, 1);
    let t0 = Instant::now();
    send(&mut core, t0, "echo", "1");
    send(&mut core, t0 + millis(40), "echo", "2");
    core.tick(t0 + TIMEOUT, &mut out);
    // The retired connection holds the request sent at 40 ms; a new one at 110 ms on the new.
    send(&mut core, t0 + millis(110), "echo", "3");
    assert_eq!(core.next_deadline(), Some(t0 + millis(40) + TIMEOUT));
    core.tick(t0 + millis(40) + TIMEOUT, &mut out);
    assert_eq!(core.next_deadline(), Some(t0 + millis(110) + TIMEOUT));
}

#[test]
fn by_tag_each_reply_finds_its_own_request_and_the_tag_is_removed() {
    let (mut core, mut out) = started(Matching::ByTag, 1);
    let t0 = Instant::now();
    let first = core.send(t0, &service("echo"), frames(&[b"first"]), &mut out);
    let second = core.send(t0, &service("echo"), frames(&[b"second"]), &mut out);
    let sent = sends(&mut out);
    let tags: Vec<Vec<u8>> = sent.iter().map(|(_, frames)| tag_of(frames)).collect();
    assert_eq!(
        tags[0],
        0u64.to_be_bytes(),
        "the tag is the try number, big-endian"
    );
    assert_eq!(tags[1], 1u64.to_be_bytes());
    assert_eq!(shown(&sent[0].1)[4], "first", "the body follows the tag");

    core.handle(
        t0,
        C0,
        dealer_reply(b"echo", &[&tags[1], b"second echoed"]),
        &mut out,
    );
    core.handle(
        t0,
        C0,
        dealer_reply(b"echo", &[&tags[0], b"first echoed"]),
        &mut out,
    );
    assert_eq!(
        outcomes(&mut core),
        [
            format!(r#"reply {second} ["second echoed"] tries 1"#),
            format!(r#"reply {first} ["first echoed"] tries 1"#),
        ]
    );
}

#[test]
fn by_tag_duplicate_unknown_untagged_and_wrong_service_replies_are_dropped_and_counted() {
    let (mut core, mut out) = started(Matching::ByTag, 1);
    let t0 = Instant::now();
    let only = core.send(t0, &service("echo"), frames(&[b"x"]), &mut out);
    let tag = tag_of(&sends(&mut out)[0].1);
    let unknown = 99u64.to_be_bytes();
    for reply in [
        dealer_reply(b"echo", &[&unknown, b"unknown tag"]),
        dealer_reply(b"echo", &[b"untagged"]),
        dealer_reply(b"other", &[&tag, b"wrong service"]),
    ] {
        core.handle(t0, C0, reply, &mut out);
    }
    assert!(outcomes(&mut core).is_empty());
    assert_eq!(core.dropped_replies(), 3);
    assert_eq!(
        core.untagged_replies(),
        2,
        "a tag never sent and none at all; not the wrong service's"
    );
    core.handle(t0, C0, dealer_reply(b"echo", &[&tag, b"right"]), &mut out);
    core.handle(t0, C0, dealer_reply(b"echo", &[&tag, b"again"]), &mut out);
    assert_eq!(
        outcomes(&mut core),
        [format!(r#"reply {only} ["right"] tries 1"#)]
    );
    assert_eq!(core.dropped_replies(), 4, "the duplicate too");
    assert_eq!(
        core.untagged_replies(),
        2,
        "a duplicate carries a tag that was sent"
    );
}

#[test]
fn by_tag_a_late_reply_after_the_timeout_is_dropped_and_no_connection_is_retired() {
    let (mut core, mut out) = started(Matching::ByTag, 1);
    let t0 = Instant::now();
    let late = core.send(t0, &service("echo"), frames(&[b"x"]), &mut out);
    let tag = tag_of(&sends(&mut out)[0].1);
    core.tick(t0 + TIMEOUT, &mut out);
    assert_eq!(outcomes(&mut core), [format!("timeout {late} tries 1")]);
    assert!(out.is_empty(), "tags need no new socket: {out:?}");
    let next = core.send(t0 + TIMEOUT, &service("echo"), frames(&[b"y"]), &mut out);
    let next_tag = tag_of(&sends(&mut out)[0].1);
    core.handle(
        t0 + TIMEOUT,
        C0,
        dealer_reply(b"echo", &[&tag, b"late"]),
        &mut out,
    );
    assert!(
        outcomes(&mut core).is_empty(),
        "cannot answer the next request"
    );
    assert_eq!(core.dropped_replies(), 1);
    core.handle(
        t0 + TIMEOUT,
        C0,
        dealer_reply(b"echo", &[&next_tag, b"y"]),
        &mut out,
    );
    assert_eq!(
        outcomes(&mut core),
        [format!(r#"reply {next} ["y"] tries 1"#)]
    );
}

#[test]
fn by_tag_an_empty_body_is_the_tag_alone_and_comes_back_empty() {
    let (mut core, mut out) = started(Matching::ByTag, 1);
    let t0 = Instant::now();
    let only = core.send(t0, &service("echo"), Vec::new(), &mut out);
    let sent = sends(&mut out);
    assert_eq!(sent[0].1.len(), 4, "delimiter, header, service, tag");
    let tag = tag_of(&sent[0].1);
    core.handle(t0, C0, dealer_reply(b"echo", &[&tag]), &mut out);
    assert_eq!(outcomes(&mut core), [format!("reply {only} [] tries 1")]);
}

#[test]
fn malformed_replies_are_dropped_and_counted_and_the_request_still_waits() {
    let (mut core, mut out) = started(Matching::ByService, 1);
    let t0 = Instant::now();
    let only = send(&mut core, t0, "echo", "x");
    for reply in [
        frames(&[b"", b"MDPX01", b"echo", b"x"]),
        dealer_reply(b"echo", &[]),
        frames(&[b""]),
        frames(&[b"", b"MDPC01", b"", b"x"]),
    ] {
        core.handle(t0, C0, reply, &mut out);
    }
    assert_eq!(core.dropped_replies(), 4);
    assert!(outcomes(&mut core).is_empty());
    core.handle(t0, C0, dealer_reply(b"echo", &[b"good"]), &mut out);
    assert_eq!(
        outcomes(&mut core),
        [format!(r#"reply {only} ["good"] tries 1"#)]
    );
}

#[test]
fn by_tag_a_timed_out_try_is_resent_with_a_new_tag_on_the_same_connection_then_given_up() {
    let (mut core, mut out) = started(Matching::ByTag, 3);
    let t0 = Instant::now();
    let only = core.send(t0, &service("echo"), frames(&[b"again"]), &mut out);
    let mut tries = sends(&mut out);
    for round in 1..=2u32 {
        let deadline = t0 + TIMEOUT * round;
        assert_eq!(core.next_deadline(), Some(deadline));
        core.tick(deadline - NANO, &mut out);
        assert!(out.is_empty());
        core.tick(deadline, &mut out);
        assert!(outcomes(&mut core).is_empty(), "resent, not given up");
        tries.extend(sends(&mut out));
        assert_eq!(core.resends(), u64::from(round));
    }
    core.tick(t0 + TIMEOUT * 3, &mut out);
    assert_eq!(outcomes(&mut core), [format!("timeout {only} tries 3")]);
    assert!(out.is_empty(), "no 4th try: {out:?}");
    assert_eq!(core.outstanding(), 0);
    assert_eq!(tries.len(), 3);
    for (conn, frames) in &tries {
        assert_eq!(*conn, C0, "ByTag keeps its one connection");
        assert_eq!(shown(frames)[4], "again", "each try carries the same body");
    }
    let tags: Vec<Vec<u8>> = tries.iter().map(|(_, frames)| tag_of(frames)).collect();
    assert_ne!(tags[0], tags[1], "each try has its own tag");
    assert_ne!(tags[1], tags[2]);
}

#[test]
fn the_reply_to_a_resend_counts_and_the_abandoned_tries_late_reply_is_dropped() {
    let (mut core, mut out) = started(Matching::ByTag, 2);
    let t0 = Instant::now();
    let only = core.send(t0, &service("echo"), frames(&[b"job"]), &mut out);
    let first_try = tag_of(&sends(&mut out)[0].1);
    core.tick(t0 + TIMEOUT, &mut out);
    let second_try = tag_of(&sends(&mut out)[0].1);
    let replied_at = t0 + TIMEOUT + millis(5);
    core.handle(
        replied_at,
        C0,
        dealer_reply(b"echo", &[&first_try, b"late"]),
        &mut out,
    );
    assert!(outcomes(&mut core).is_empty());
    core.handle(
        replied_at,
        C0,
        dealer_reply(b"echo", &[&second_try, b"on time"]),
        &mut out,
    );
    match core.pop_outcome() {
        Some(Outcome::Reply {
            id,
            body,
            tries,
            latency,
            ..
        }) => {
            assert_eq!((id, tries), (only, 2));
            assert_eq!(shown(&body), ["on time"]);
            assert_eq!(
                latency,
                TIMEOUT + millis(5),
                "latency counts from the first try"
            );
        }
        other => panic!("expected the reply to the resend, got {other:?}"),
    }
    assert_eq!(core.dropped_replies(), 1);
    assert_eq!(core.outstanding(), 0);
}

#[test]
fn by_service_a_resend_goes_out_on_the_new_connection() {
    let (mut core, mut out) = started(Matching::ByService, 2);
    let t0 = Instant::now();
    let only = send(&mut core, t0, "echo", "job");
    core.tick(t0 + TIMEOUT, &mut out);
    assert_eq!(
        describe(&mut out),
        [
            "open 1",
            "close 0",
            r#"send 1 ["", "MDPC01", "echo", "job"]"#
        ],
        "opened before it is used; the old one closed, as nothing else was in flight on it"
    );
    assert_eq!(core.resends(), 1);
    core.handle(
        t0 + TIMEOUT,
        C0,
        dealer_reply(b"echo", &[b"late"]),
        &mut out,
    );
    assert!(
        outcomes(&mut core).is_empty(),
        "closed: the late reply cannot count"
    );
    core.handle(
        t0 + TIMEOUT,
        C1,
        dealer_reply(b"echo", &[b"on time"]),
        &mut out,
    );
    assert_eq!(
        outcomes(&mut core),
        [format!(r#"reply {only} ["on time"] tries 2"#)]
    );
    assert_eq!(core.open_connections(), 1);
}

#[test]
fn a_zero_timeout_uses_up_the_tries_in_one_tick_and_stops() {
    let mut core = AsyncCore::new(AsyncClientConfig {
        timeout: Duration::ZERO,
        matching: Matching::ByTag,
        retries: 5,
    });
    let mut out = Vec::new();
    let t0 = Instant::now();
    let only = core.send(t0, &service("echo"), frames(&[b"x"]), &mut out);
    out.clear();
    core.tick(t0, &mut out);
    assert_eq!(sends(&mut out).len(), 4);
    assert_eq!(outcomes(&mut core), [format!("timeout {only} tries 5")]);
}

#[test]
fn a_timeout_too_large_for_the_clock_never_expires() {
    let mut core = AsyncCore::new(AsyncClientConfig {
        timeout: Duration::MAX,
        ..AsyncClientConfig::default()
    });
    let mut out = Vec::new();
    let t0 = Instant::now();
    send(&mut core, t0, "echo", "x");
    assert_eq!(core.next_deadline(), None);
    core.tick(t0 + Duration::from_secs(1_000_000), &mut out);
    assert!(outcomes(&mut core).is_empty());
}

/// A small deterministic random source (xorshift), so the mixed run below is the same each time.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Many sends, replies (right, late, duplicate, malformed, to closed connections) and ticks in
/// a mixed order, checking after each step what must always hold: every request ends as exactly
/// one outcome; a tick just before `next_deadline` does nothing, and there is a deadline exactly
/// while something is in flight; sends go only to open connections; the connections the core
/// counts are those opened and not closed.
#[test]
fn a_long_mixed_run_keeps_every_rule() {
    for (matching, retries) in [
        (Matching::ByService, 1),
        (Matching::ByService, 3),
        (Matching::ByTag, 1),
        (Matching::ByTag, 2),
    ] {
        let mut core = core(matching, retries);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut now = Instant::now();
        let mut out = Vec::new();
        let mut open: Vec<ConnId> = Vec::new();
        // Every request sent on the wire: connection, service, tag (ByTag), body.
        let mut wire: Vec<(ConnId, Vec<u8>, Vec<u8>)> = Vec::new();
        let mut ended = std::collections::HashSet::new();
        let mut sent = 0u64;
        let (mut replies, mut timeouts) = (0, 0);
        core.start(&mut out);
        for _ in 0..3000 {
            match rng.below(10) {
                0..=2 => {
                    let name = if rng.below(2) == 0 { "a" } else { "b" };
                    core.send(now, &service(name), frames(&[b"x"]), &mut out);
                    sent += 1;
                }
                3..=5 if !wire.is_empty() => {
                    // A reply to something sent lately (maybe twice, maybe after its timeout).
                    let recent = rng.below(wire.len().min(8) as u64);
                    let index = wire.len() - 1 - usize::try_from(recent).unwrap();
                    let (conn, name, tag) = wire[index].clone();
                    let reply = match matching {
                        Matching::ByTag => dealer_reply(&name, &[&tag, b"r"]),
                        Matching::ByService => dealer_reply(&name, &[b"r"]),
                    };
                    core.handle(now, conn, reply, &mut out);
                }
                6 => {
                    let conn = match rng.below(2) {
                        0 => core.current_connection(),
                        _ => ConnId(rng.below(4)),
                    };
                    core.handle(now, conn, frames(&[b"", b"junk"]), &mut out);
                }
                _ => {
                    now += millis(rng.below(20));
                    if let Some(deadline) = core.next_deadline() {
                        let before = out.len();
                        let outcomes_before = core.outstanding();
                        core.tick(deadline - NANO, &mut out);
                        assert_eq!(out.len(), before, "a tick before the deadline acts");
                        if let Some(outcome) = core.pop_outcome() {
                            panic!("a tick before the deadline decided {outcome:?}");
                        }
                        assert_eq!(core.outstanding(), outcomes_before);
                    }
                    core.tick(now, &mut out);
                }
            }
            for action in out.drain(..) {
                match action {
                    AsyncAction::Open(conn) => {
                        assert!(!open.contains(&conn), "opened twice: {conn:?}");
                        open.push(conn);
                    }
                    AsyncAction::Close(conn) => {
                        assert!(open.contains(&conn), "closed while not open: {conn:?}");
                        open.retain(|id| *id != conn);
                    }
                    AsyncAction::Send { conn, frames } => {
                        assert!(open.contains(&conn), "sent on {conn:?}, not open");
                        let tag = match matching {
                            Matching::ByTag => frames[3].to_vec(),
                            Matching::ByService => Vec::new(),
                        };
                        wire.push((conn, frames[2].to_vec(), tag));
                    }
                }
            }
            while let Some(outcome) = core.pop_outcome() {
                let (id, tries) = match outcome {
                    Outcome::Reply { id, tries, .. } => {
                        replies += 1;
                        (id, tries)
                    }
                    Outcome::TimedOut { id, tries, .. } => {
                        timeouts += 1;
                        (id, tries)
                    }
                };
                assert!((1..=retries).contains(&tries));
                assert!(ended.insert(id), "{id} ended twice");
            }
            assert_eq!(core.open_connections(), open.len());
            assert_eq!(core.outstanding() as u64, sent - ended.len() as u64);
            assert_eq!(
                core.next_deadline().is_some(),
                core.outstanding() > 0,
                "a deadline exactly while something is in flight"
            );
        }
        // Let everything time out: every request has ended, once.
        while let Some(deadline) = core.next_deadline() {
            core.tick(deadline, &mut out);
        }
        while let Some(outcome) = core.pop_outcome() {
            let (Outcome::Reply { id, .. } | Outcome::TimedOut { id, .. }) = outcome;
            assert!(ended.insert(id), "{id} ended twice");
        }
        assert_eq!(ended.len() as u64, sent, "{matching:?} retries {retries}");
        assert!(
            sent > 500 && core.dropped_replies() > 100 && replies > 100 && timeouts > 30,
            "the run is not trivial: {sent} sent, {replies} replies, {timeouts} timeouts, {} dropped",
            core.dropped_replies()
        );
        assert_eq!(core.resends() > 0, retries > 1, "resends only with retries");
    }
}

/// A started core of two brokers (connections 0 and 1), Opens taken out of the way.
fn two_brokers(matching: Matching, retries: u32) -> (AsyncCore, Vec<AsyncAction>) {
    let mut core = AsyncCore::with_brokers(
        AsyncClientConfig {
            timeout: TIMEOUT,
            matching,
            retries,
        },
        2,
    );
    let mut out = Vec::new();
    core.start(&mut out);
    assert_eq!(describe(&mut out), ["open 0", "open 1"]);
    assert_eq!(core.broker_of(C0), Some(0));
    assert_eq!(core.broker_of(C1), Some(1));
    (core, out)
}

/// The connections the `Send`s in `actions` went on, taken out.
fn sent_on(actions: &mut Vec<AsyncAction>) -> Vec<u64> {
    sends(actions)
        .into_iter()
        .map(|(ConnId(conn), _)| conn)
        .collect()
}

#[test]
fn several_brokers_requests_go_to_the_least_loaded_and_replies_say_which_broker() {
    let (mut core, mut out) = two_brokers(Matching::ByService, 1);
    let t0 = Instant::now();
    for body in ["a", "b", "c"] {
        core.send(t0, &service("echo"), frames(&[body.as_bytes()]), &mut out);
    }
    assert_eq!(sent_on(&mut out), [0, 1, 0]);
    core.handle(t0, C0, dealer_reply(b"echo", &[b"a"]), &mut out);
    core.handle(t0, C0, dealer_reply(b"echo", &[b"c"]), &mut out);
    // Broker 0 has nothing outstanding now, broker 1 one: the next goes to broker 0.
    core.send(t0, &service("echo"), frames(&[b"d"]), &mut out);
    assert_eq!(sent_on(&mut out), [0]);
    core.handle(t0, C1, dealer_reply(b"echo", &[b"b"]), &mut out);
    let brokers: Vec<usize> = std::iter::from_fn(|| core.pop_outcome())
        .map(|outcome| match outcome {
            Outcome::Reply { broker, .. } => broker,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(brokers, [0, 0, 1]);
}

#[test]
fn several_brokers_a_timeout_marks_the_broker_down_and_the_try_goes_to_another() {
    let (mut core, mut out) = two_brokers(Matching::ByService, 2);
    let t0 = Instant::now();
    let first = core.send(t0, &service("echo"), frames(&[b"x"]), &mut out);
    assert_eq!(sent_on(&mut out), [0]);
    core.tick(t0 + TIMEOUT - NANO, &mut out);
    assert!(out.is_empty());
    core.tick(t0 + TIMEOUT, &mut out);
    assert!(core.is_down(0));
    assert_eq!(
        describe(&mut out),
        ["open 2", "close 0", r#"send 1 ["", "MDPC01", "echo", "x"]"#],
        "broker 0 gets a fresh connection, the try goes to broker 1"
    );
    // While broker 0 is down everything goes to broker 1, however loaded.
    for _ in 0..3 {
        core.send(t0 + TIMEOUT, &service("echo"), frames(&[b"y"]), &mut out);
    }
    assert_eq!(sent_on(&mut out), [1, 1, 1]);
    core.handle(t0 + TIMEOUT, C1, dealer_reply(b"echo", &[b"x"]), &mut out);
    match core.pop_outcome() {
        Some(Outcome::Reply {
            id, tries, broker, ..
        }) => assert_eq!((id, tries, broker), (first, 2, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn several_brokers_a_down_broker_is_probed_a_timeout_later_and_used_again_on_200() {
    let (mut core, mut out) = two_brokers(Matching::ByService, 1);
    let t0 = Instant::now();
    core.send(t0, &service("echo"), frames(&[b"x"]), &mut out);
    core.tick(t0 + TIMEOUT, &mut out);
    assert_eq!(
        outcomes(&mut core),
        [format!("timeout {} tries 1", RequestId(0))]
    );
    out.clear();
    assert!(core.is_down(0));
    let probe_at = t0 + TIMEOUT * 2;
    assert_eq!(core.next_deadline(), Some(probe_at), "the probe's time");
    core.tick(probe_at - NANO, &mut out);
    assert!(out.is_empty());
    core.tick(probe_at, &mut out);
    assert_eq!(
        describe(&mut out),
        [r#"send 2 ["", "MDPC01", "mmi.service", "echo"]"#],
        "mmi.service for the service last asked, on the fresh connection"
    );
    // 404: no worker there yet; still down, probed again a timeout later.
    core.handle(
        probe_at,
        ConnId(2),
        dealer_reply(b"mmi.service", &[b"404"]),
        &mut out,
    );
    assert!(core.is_down(0));
    assert_eq!(core.next_deadline(), Some(probe_at + TIMEOUT));
    core.tick(probe_at + TIMEOUT, &mut out);
    assert_eq!(sent_on(&mut out), [2]);
    core.handle(
        probe_at + TIMEOUT,
        ConnId(2),
        dealer_reply(b"mmi.service", &[b"200"]),
        &mut out,
    );
    assert!(!core.is_down(0));
    assert!(
        outcomes(&mut core).is_empty(),
        "a probe is no request's outcome"
    );
    assert_eq!(core.dropped_replies(), 0);
    core.send(
        probe_at + TIMEOUT,
        &service("echo"),
        frames(&[b"a"]),
        &mut out,
    );
    core.send(
        probe_at + TIMEOUT,
        &service("echo"),
        frames(&[b"b"]),
        &mut out,
    );
    assert_eq!(sent_on(&mut out), [2, 1], "both brokers in use again");
}

#[test]
fn several_brokers_a_dropped_connection_marks_down_resends_and_a_link_up_probes_at_once() {
    let (mut core, mut out) = two_brokers(Matching::ByTag, 2);
    let t0 = Instant::now();
    core.link(t0, C0, Link::Up, &mut out);
    core.link(t0, C1, Link::Up, &mut out);
    core.send(t0, &service("echo"), frames(&[b"x"]), &mut out);
    assert_eq!(sent_on(&mut out), [0]);
    let t1 = t0 + TIMEOUT / 2;
    core.link(t1, C0, Link::Down, &mut out);
    assert!(core.is_down(0));
    let actions = describe(&mut out);
    assert_eq!(actions[..2], ["open 2", "close 0"], "{actions:?}");
    assert!(
        actions[2].starts_with("send 1 "),
        "what broker 0 held is resent through broker 1 at once: {actions:?}"
    );
    assert_eq!(core.resends(), 1);
    // Broker 0's fresh connection comes up: probed at once, not a timeout later.
    core.link(t1 + NANO, ConnId(2), Link::Up, &mut out);
    assert_eq!(
        describe(&mut out),
        [r#"send 2 ["", "MDPC01", "mmi.service", "echo"]"#]
    );
}

#[test]
fn one_broker_is_never_marked_down() {
    let (mut core, mut out) = started(Matching::ByService, 1);
    let t0 = Instant::now();
    core.link(t0, C0, Link::Down, &mut out);
    core.send(t0, &service("echo"), frames(&[b"x"]), &mut out);
    core.tick(t0 + TIMEOUT, &mut out);
    assert!(!core.is_down(0));
    assert_eq!(core.next_deadline(), None, "no probe to wake for");
}

/// The outcomes waiting, with `refused` where a refusal ended them.
fn refused_outcomes(core: &mut AsyncCore) -> Vec<String> {
    std::iter::from_fn(|| core.pop_outcome())
        .map(|outcome| match outcome {
            Outcome::TimedOut {
                id,
                refused: Some(refusal),
                ..
            } => format!("refused {id} by {}", refusal.endpoint),
            Outcome::TimedOut { id, .. } => format!("timeout {id}"),
            Outcome::Reply { id, .. } => format!("reply {id}"),
        })
        .collect()
}

#[test]
fn a_refused_connection_is_closed_its_requests_end_at_once_and_it_reopens_after_a_backoff() {
    let (mut core, mut out) = started(Matching::ByService, 3);
    let t0 = Instant::now();
    assert!(core.awaiting_handshake(), "no handshake seen yet");
    send(&mut core, t0, "echo", "a");
    send(&mut core, t0, "echo", "b");
    core.refused(t0 + millis(1), C0, refusal("tcp://b:1"), &mut out);
    assert_eq!(
        describe(&mut out),
        ["close 0"],
        "closed, not reopened at once"
    );
    assert_eq!(
        refused_outcomes(&mut core),
        ["refused #0 by tcp://b:1", "refused #1 by tcp://b:1"],
        "no resend to the broker that refused, and no wait for the timeout"
    );
    // While the socket is closed a new request ends at once too.
    send(&mut core, t0 + millis(2), "echo", "c");
    assert_eq!(refused_outcomes(&mut core), ["refused #2 by tcp://b:1"]);
    // The backoff: 100 ms, then a new socket.
    assert_eq!(core.next_deadline(), Some(t0 + millis(101)));
    core.tick(t0 + millis(100), &mut out);
    assert!(out.is_empty(), "{:?}", describe(&mut out));
    core.tick(t0 + millis(101), &mut out);
    assert_eq!(describe(&mut out), ["open 1"]);
    // Refused again: 200 ms this time; a handshake that succeeds ends the refusal.
    core.refused(t0 + millis(102), C1, refusal("tcp://b:1"), &mut out);
    assert_eq!(describe(&mut out), ["close 1"]);
    assert_eq!(core.next_deadline(), Some(t0 + millis(302)));
    core.tick(t0 + millis(302), &mut out);
    assert_eq!(describe(&mut out), ["open 2"]);
    core.link(t0 + millis(303), ConnId(2), Link::Up, &mut out);
    assert!(!core.awaiting_handshake());
    let id = send(&mut core, t0 + millis(304), "echo", "d");
    assert!(refused_outcomes(&mut core).is_empty(), "sent, not refused");
    core.handle(
        t0 + millis(305),
        ConnId(2),
        dealer_reply(b"echo", &[b"d"]),
        &mut out,
    );
    assert_eq!(refused_outcomes(&mut core), [format!("reply {id}")]);
}

#[test]
fn with_two_brokers_a_refusing_one_is_down_and_its_requests_go_to_the_other() {
    let mut core = AsyncCore::with_brokers(
        AsyncClientConfig {
            // Long, so that no try times out while broker 0 backs off.
            timeout: TIMEOUT * 10,
            matching: Matching::ByService,
            retries: 2,
        },
        2,
    );
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(&mut out);
    out.clear();
    // The fewest outstanding: one request to each broker.
    send(&mut core, t0, "echo", "a");
    send(&mut core, t0, "echo", "b");
    core.refused(t0 + millis(1), C0, refusal("tcp://a:1"), &mut out);
    let described = describe(&mut out);
    assert_eq!(described[0], "close 0");
    assert!(
        described[1].starts_with("send 1 ") && described.len() == 2,
        "resent through broker 1: {described:?}"
    );
    assert!(core.is_down(0));
    assert!(refused_outcomes(&mut core).is_empty());
    // New requests go to broker 1 while broker 0 is down.
    send(&mut core, t0 + millis(2), "echo", "c");
    assert!(refused_outcomes(&mut core).is_empty());
    core.tick(t0 + millis(101), &mut out);
    assert_eq!(describe(&mut out), ["open 2"], "broker 0 gets a new socket");
    // Its handshake succeeds: probed, and back in use on 200.
    core.link(t0 + millis(102), ConnId(2), Link::Up, &mut out);
    let probe = describe(&mut out);
    assert!(probe[0].contains("mmi.service"), "{probe:?}");
    core.handle(
        t0 + millis(103),
        ConnId(2),
        dealer_reply(b"mmi.service", &[b"200"]),
        &mut out,
    );
    assert!(!core.is_down(0));
}
