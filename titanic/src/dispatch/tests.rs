//! The per-service queue's rules in virtual time: instants made up, no clock read, no sleep.
#![allow(clippy::unwrap_used)]

use super::*;

const NOW_MS: u64 = 1_000_000;
const LATER_MS: u64 = 2_000_000;

fn config(lanes: usize) -> DispatchConfig {
    DispatchConfig {
        lanes,
        try_timeout: Duration::from_secs(1),
        check_timeout: Duration::from_secs(1),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(1000),
        ..DispatchConfig::default()
    }
}

fn sent(next: Next) -> Entry {
    match next {
        Next::Send(entry) => entry,
        other => panic!("expected a send, got {other:?}"),
    }
}

#[test]
fn nothing_goes_out_before_mmi_service_says_the_service_has_a_worker() {
    let start = Instant::now();
    let mut queue = ServiceQueue::new(config(2));
    assert_eq!(
        queue.next(start, NOW_MS),
        Next::Wait(None),
        "nothing queued"
    );
    let id = RequestId::random();
    queue.add(id, LATER_MS);
    assert_eq!(queue.next(start, NOW_MS), Next::Check);
    // One check at a time: another lane waits for its answer.
    assert_eq!(queue.next(start, NOW_MS), Next::Wait(None));
    queue.checked(start, true);
    assert_eq!(sent(queue.next(start, NOW_MS)).id, id);
    assert_eq!(queue.out(), 1);
}

#[test]
fn an_absent_service_is_asked_again_after_a_backoff_that_doubles_up_to_the_maximum() {
    let start = Instant::now();
    let at = |ms| start + Duration::from_millis(ms);
    let mut queue = ServiceQueue::new(config(1));
    queue.add(RequestId::random(), LATER_MS);
    let mut now = start;
    let mut waits = Vec::new();
    for _ in 0..6 {
        assert_eq!(queue.next(now, NOW_MS), Next::Check);
        queue.checked(now, false);
        let Next::Wait(Some(recheck_at)) = queue.next(now, NOW_MS) else {
            panic!("an absent service is waited for");
        };
        waits.push((recheck_at - now).as_millis());
        // Just before the recheck, still waiting.
        assert!(matches!(
            queue.next(recheck_at - Duration::from_millis(1), NOW_MS),
            Next::Wait(_)
        ));
        now = recheck_at;
    }
    assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(queue.next(now, NOW_MS), Next::Check);
    queue.checked(now, true);
    assert!(matches!(queue.next(at(10_000), NOW_MS), Next::Send(_)));
}

#[test]
fn at_most_one_try_per_lane_and_one_lane_per_request() {
    let start = Instant::now();
    let mut queue = ServiceQueue::new(config(2));
    let ids: Vec<RequestId> = (0..3).map(|_| RequestId::random()).collect();
    for id in &ids {
        queue.add(*id, LATER_MS);
    }
    assert_eq!(queue.next(start, NOW_MS), Next::Check);
    queue.checked(start, true);
    let first = sent(queue.next(start, NOW_MS));
    let second = sent(queue.next(start, NOW_MS));
    assert_eq!(
        queue.next(start, NOW_MS),
        Next::Wait(None),
        "both lanes are busy"
    );
    assert_eq!([first.id, second.id], [ids[0], ids[1]]);
    queue.answered();
    assert_eq!(sent(queue.next(start, NOW_MS)).id, ids[2]);
    queue.answered();
    queue.answered();
    assert_eq!(queue.next(start, NOW_MS), Next::Wait(None), "all sent once");
}

#[test]
fn an_unanswered_try_waits_its_backoff_and_the_service_is_asked_about_again() {
    let start = Instant::now();
    let at = |ms| start + Duration::from_millis(ms);
    let mut queue = ServiceQueue::new(config(4));
    let slow = RequestId::random();
    let other = RequestId::random();
    queue.add(slow, LATER_MS);
    queue.add(other, LATER_MS);
    assert_eq!(queue.next(start, NOW_MS), Next::Check);
    queue.checked(start, true);
    let entry = sent(queue.next(start, NOW_MS));
    assert_eq!(entry.id, slow);
    queue.unanswered(at(1000), entry);
    assert_eq!(queue.presence(), Presence::Unknown);
    assert_eq!(queue.next(at(1000), NOW_MS), Next::Check);
    queue.checked(at(1000), true);
    // The other request goes first; the unanswered one waits 100 ms.
    assert_eq!(sent(queue.next(at(1000), NOW_MS)).id, other);
    assert_eq!(queue.next(at(1000), NOW_MS), Next::Wait(Some(at(1100))));
    let again = sent(queue.next(at(1100), NOW_MS));
    assert_eq!((again.id, again.failures), (slow, 1));
    queue.unanswered(at(2100), again);
    queue.checked(at(2100), true);
    assert_eq!(queue.next(at(2100), NOW_MS), Next::Wait(Some(at(2300))));
}

#[test]
fn expired_requests_are_dropped_without_being_sent() {
    let start = Instant::now();
    let mut queue = ServiceQueue::new(config(1));
    queue.add(RequestId::random(), NOW_MS);
    assert_eq!(queue.next(start, NOW_MS), Next::Wait(None));
    assert_eq!(queue.waiting(), 0);
    assert_eq!(queue.presence(), Presence::Unknown, "no check for nothing");
}
