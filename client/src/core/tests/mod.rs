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

/// A refusal of our PLAIN handshake by `endpoint`, as the driver makes it from the monitor.
fn refusal(endpoint: &str) -> zsocket::credentials::Refusal {
    let event = zsocket::monitor::Event::new(
        zsocket::monitor::EventKind::HandshakeFailedAuth,
        400,
        endpoint,
    );
    zsocket::credentials::Credentials::plain("alice", "wrong")
        .expect("valid")
        .refusal(endpoint, &event)
        .expect("a refusal")
}
