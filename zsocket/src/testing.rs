//! Test support, not part of the socket layer's API: a peer played by hand with a raw ROUTER
//! socket, for the socket-level tests of the clients and the worker, which check our programs
//! against frames written from the spec rather than only against our own broker.
//!
//! A [`RawRouter`] binds a free loopback port, receives whole messages as byte vectors (the
//! sender's routing identity first) with a time limit, and sends whatever frames a test writes.
//! It knows nothing of MDP: each test writes the frames the spec shows, so the test is the
//! reader's picture of the wire.
//!
//! It lives in `src/` (compiled in every build, behind no feature) only so that the tests of
//! several crates can share one copy; it is `#[doc(hidden)]` and nothing outside tests uses it.
//! Being test support, it panics on any socket error: a test that cannot bind has nothing to test.

use std::time::{Duration, Instant};

use crate::{bind, recv_until, send, Frames};

/// A broker (or any ROUTER peer) played by a test: one ROUTER socket on `tcp://127.0.0.1:*`,
/// with its own context and linger 0, so dropping it never waits.
pub struct RawRouter {
    // Field order is drop order: the socket closes before its context.
    router: zmq::Socket,
    _context: zmq::Context,
    endpoint: String,
}

impl std::fmt::Debug for RawRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRouter")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl RawRouter {
    /// Binds a ROUTER to a free loopback port.
    pub fn bind() -> RawRouter {
        let context = zmq::Context::new();
        let router = context.socket(zmq::ROUTER).expect("create a ROUTER");
        router.set_linger(0).expect("set ZMQ_LINGER");
        let endpoint = bind(&router, "tcp://127.0.0.1:*")
            .expect("bind tcp://127.0.0.1:*")
            .endpoint()
            .to_owned();
        RawRouter {
            router,
            _context: context,
            endpoint,
        }
    }

    /// The endpoint as bound (`tcp://127.0.0.1:<port>`), for the program under test to connect to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The ROUTER itself, for what the methods here do not cover.
    pub fn socket(&self) -> &zmq::Socket {
        &self.router
    }

    /// The next whole message, the sender's identity first, or `None` once `wait` has passed.
    pub fn recv(&self, wait: Duration) -> Option<Vec<Vec<u8>>> {
        let deadline = Instant::now() + wait;
        loop {
            let now = Instant::now();
            let frames = recv_until(&self.router, Some(deadline), now).expect("receive");
            if let Some(frames) = frames {
                return Some(frames.iter().map(|frame| frame.to_vec()).collect());
            }
            // A timeout, or a signal that cut the wait short: wait out what is left.
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// The next whole message, or a panic naming `what` if none comes within `wait`.
    pub fn expect(&self, what: &str, wait: Duration) -> Vec<Vec<u8>> {
        self.recv(wait)
            .unwrap_or_else(|| panic!("expected {what} within {wait:?}"))
    }

    /// Sends one message of these frames, the recipient's identity first.
    pub fn send(&self, frames: &[&[u8]]) {
        let message: Frames = frames
            .iter()
            .map(|frame| zmq::Message::from(*frame))
            .collect();
        send(&self.router, message, 0).expect("send");
    }

    /// Sends `frames` to the peer whose identity is `recipient`.
    pub fn send_to(&self, recipient: &[u8], frames: &[&[u8]]) {
        let mut message: Vec<&[u8]> = Vec::with_capacity(frames.len() + 1);
        message.push(recipient);
        message.extend_from_slice(frames);
        self.send(&message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_router_receives_with_the_identity_and_answers_it() {
        let router = RawRouter::bind();
        let context = zmq::Context::new();
        let dealer = crate::connect(&context, zmq::DEALER, router.endpoint()).expect("connect");
        assert_eq!(router.recv(Duration::from_millis(20)), None);
        dealer.send_multipart([&b""[..], b"hi"], 0).expect("send");
        let message = router.expect("a message", Duration::from_secs(5));
        assert_eq!(message[1..], [b"".to_vec(), b"hi".to_vec()]);
        router.send_to(&message[0], &[b"", b"back"]);
        let back = dealer.recv_multipart(0).expect("recv");
        assert_eq!(back, [b"".to_vec(), b"back".to_vec()]);
    }
}
