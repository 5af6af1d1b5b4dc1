//! The client cores in virtual time: each test makes an `Instant`, moves it forward by hand and
//! looks at the actions and outcomes, so every timing rule is checked to the nanosecond and
//! nothing sleeps.

#![allow(clippy::unwrap_used)]

mod async_core;
mod sync_core;

use std::time::{Duration, Instant};

use mdp::{Frames, ServiceName};

/// One nanosecond: the smallest step of the fake clock, to land just before a deadline.
const NANO: Duration = Duration::from_nanos(1);

fn frames(parts: &[&[u8]]) -> Frames {
    parts.iter().map(|part| zmq::Message::from(*part)).collect()
}

fn bytes(frames: &Frames) -> Vec<Vec<u8>> {
    frames.iter().map(|frame| frame.to_vec()).collect()
}

fn service(name: &str) -> ServiceName {
    name.parse().unwrap()
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A REPLY as a REQ socket delivers it (delimiter stripped), written from spec 7.
fn req_reply(service: &[u8], body: &[&[u8]]) -> Frames {
    let mut parts: Vec<&[u8]> = vec![b"MDPC01", service];
    parts.extend_from_slice(body);
    frames(&parts)
}

/// A REPLY as a DEALER socket delivers it (delimiter first), written from spec 7.
fn dealer_reply(service: &[u8], body: &[&[u8]]) -> Frames {
    let mut parts: Vec<&[u8]> = vec![b"", b"MDPC01", service];
    parts.extend_from_slice(body);
    frames(&parts)
}

#[test]
fn a_warning_a_peer_can_cause_is_logged_at_most_once_per_period_with_a_count_of_the_rest() {
    use super::{WarnLimit, WARN_EVERY};
    let mut limit = WarnLimit::default();
    let t0 = Instant::now();
    assert_eq!(limit.allow(t0), Some(0), "the first is logged");
    assert_eq!(limit.allow(t0), None);
    assert_eq!(
        limit.allow(t0 + WARN_EVERY - NANO),
        None,
        "not before the period is over"
    );
    assert_eq!(
        limit.allow(t0 + WARN_EVERY),
        Some(2),
        "at the end of the period exactly, with the two held back"
    );
    assert_eq!(
        limit.allow(t0 + WARN_EVERY * 5),
        Some(0),
        "a quiet period holds none back"
    );
}
