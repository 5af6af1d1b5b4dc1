//! How a synchronous client lets a broker tell its tries apart, without leaving MDP/0.1.
//!
//! Spec 7's client recovers from a lost reply by closing its REQ socket, opening a new one and
//! sending the request again. The broker cannot tell that the new socket belongs to the same
//! client, so every try that is still waiting in a queue runs when a worker comes, even after
//! the client has given up on them all (three tries, three runs: the issue's `order #1`).
//!
//! A client that sends **one request at a time** can say so in the routing identity it gives
//! each of its REQ sockets (`ZMQ_ROUTING_ID`, set before connecting): `req:` then its own random
//! 64-bit number in 16 lowercase hex digits, `:`, and the number of the socket in decimal,
//! counting from 1, e.g. `req:9f3a0c1b2d4e5f60:3`. Nothing else in the messages changes, so any
//! MDP/0.1 broker serves such a client as any other, and the identity is plain text in logs.
//!
//! What our broker does with it (see `broker::core`):
//! * A request from socket *n* of a client supersedes whatever that client sent from its
//!   sockets *m* < *n* that still waits in a queue: a REQ client that opened a new socket has
//!   given up on what it sent from the old one. The superseded try is dropped when it reaches
//!   the front of its queue, unsent.
//! * Before a request from such a client goes to a worker, the broker checks that the socket
//!   that sent it is still connected, by sending it a [`probe`]: a ROUTER with
//!   `ZMQ_ROUTER_MANDATORY` refuses a message for a peer whose connection is gone
//!   (`EHOSTUNREACH`), and a connected REQ socket drops the probe unread. A request whose client
//!   is gone is dropped instead of being run for nobody.
//!
//! The probe's shape matters, because libzmq checks what reaches a REQ socket twice. Its
//! session (`req_session_t::push_msg`) takes only `[""] [body...]` or `[4 bytes] [""]
//! [body...]` (the second for `ZMQ_REQ_CORRELATE`'s request id) and drops the *connection* on
//! anything else, so a one-frame probe would cut the client off. Then the socket
//! (`req_t::xrecv`), with `ZMQ_REQ_CORRELATE` off, skips any message whose first frame is not
//! the empty delimiter. So the probe is `[4 bytes] [""] [text]`: the session lets it through and
//! the socket skips it. (With `ZMQ_REQ_CORRELATE` on, a REQ takes it as a reply only if its
//! four bytes happen to be its request id.)
//!
//! Only a REQ socket may use this form: a DEALER would receive the probes. A client that opens
//! several sockets at once must not share one number between them.

/// The first bytes of a one-request-at-a-time client's routing identity.
pub const PREFIX: &[u8] = b"req:";

/// What the broker sends a one-request-at-a-time client to learn whether its socket is still
/// connected, ROUTER identity first: `[client] ["MDP?"] [""] ["MDP probe ..."]`, which a REQ
/// socket drops unread (see the [module docs](self) for why this shape).
pub fn probe(client: &[u8]) -> crate::Frames {
    vec![
        zmq::Message::from(client),
        zmq::Message::from(&b"MDP?"[..]),
        zmq::Message::new(),
        zmq::Message::from(&b"MDP probe: is this REQ socket still connected? (mdp::tries)"[..]),
    ]
}

/// The routing identity of one REQ socket of a one-request-at-a-time client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TryIdentity {
    /// The client's own random number, the same for all its sockets.
    pub client: u64,
    /// Which of the client's sockets this is, counting from 1; a later socket has a larger one.
    pub socket: u32,
}

impl TryIdentity {
    /// The identity as bytes, e.g. `req:9f3a0c1b2d4e5f60:3`.
    pub fn encode(&self) -> Vec<u8> {
        format!("req:{:016x}:{}", self.client, self.socket).into_bytes()
    }

    /// Reads an identity in exactly the form [`TryIdentity::encode`] writes (lowercase hex, no
    /// leading zeros in the socket number), so that one client and socket have one spelling;
    /// anything else is `None`: an ordinary peer.
    pub fn parse(identity: &[u8]) -> Option<TryIdentity> {
        let rest = identity.strip_prefix(PREFIX)?;
        if rest.len() < 18 || rest[16] != b':' {
            return None;
        }
        let (hex, socket) = (&rest[..16], &rest[17..]);
        if !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let socket_is_canonical = !socket.is_empty()
            && socket.iter().all(u8::is_ascii_digit)
            && (socket[0] != b'0' || socket.len() == 1);
        if !socket_is_canonical {
            return None;
        }
        let client = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        let socket = std::str::from_utf8(socket).ok()?.parse().ok()?;
        Some(TryIdentity { client, socket })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_as_plain_text() {
        let id = TryIdentity {
            client: 0x9f3a_0c1b_2d4e_5f60,
            socket: 3,
        };
        assert_eq!(id.encode(), b"req:9f3a0c1b2d4e5f60:3");
        assert_eq!(TryIdentity::parse(b"req:9f3a0c1b2d4e5f60:3"), Some(id));
    }

    #[test]
    fn other_spellings_are_ordinary_peers() {
        for other in [
            &b"req:9F3A0C1B2D4E5F60:3"[..],
            b"req:9f3a0c1b2d4e5f60:03",
            b"req:9f3a0c1b2d4e5f60:",
            b"req:9f3a0c1b2d4e5f6:3",
            b"req:9f3a0c1b2d4e5f60:3x",
            b"req:9f3a0c1b2d4e5f60:99999999999",
            b"req:9f3a0c1b2d4e5f60-3",
            b"\0\x01\x02\x03\x04",
            b"",
        ] {
            assert_eq!(TryIdentity::parse(other), None, "{other:?}");
        }
    }

    /// Over real sockets: a connected REQ socket skips probes and takes the reply after them,
    /// and once it is closed the ROUTER refuses the probe.
    #[test]
    fn a_req_socket_drops_probes_and_a_closed_one_refuses_them() {
        let context = zmq::Context::new();
        let router = context.socket(zmq::ROUTER).unwrap();
        router.set_router_mandatory(true).unwrap();
        router.set_rcvtimeo(5000).unwrap();
        router.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = router.get_last_endpoint().unwrap().unwrap();
        let id = TryIdentity {
            client: 42,
            socket: 1,
        }
        .encode();
        let req = context.socket(zmq::REQ).unwrap();
        req.set_identity(&id).unwrap();
        req.set_linger(0).unwrap();
        req.set_rcvtimeo(5000).unwrap();
        req.connect(&endpoint).unwrap();
        req.send("hello", 0).unwrap();
        let request = router.recv_multipart(0).unwrap();
        assert_eq!(request[0], id);
        for _ in 0..3 {
            router.send_multipart(probe(&id), 0).unwrap();
        }
        router.send_multipart([&id[..], b"", b"world"], 0).unwrap();
        assert_eq!(req.recv_bytes(0).unwrap(), b"world");
        assert!(!req.get_rcvmore().unwrap());
        // The connection survived the probes: a second request is answered too.
        req.send("again", 0).unwrap();
        assert_eq!(router.recv_multipart(0).unwrap()[0], id);
        router.send_multipart(probe(&id), 0).unwrap();
        router.send_multipart([&id[..], b"", b"ok"], 0).unwrap();
        assert_eq!(req.recv_bytes(0).unwrap(), b"ok");
        drop(req);
        // The ROUTER learns of the close when the connection's end reaches it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match router.send_multipart(probe(&id), zmq::DONTWAIT) {
                Err(zmq::Error::EHOSTUNREACH) => break,
                Ok(()) => {}
                Err(other) => panic!("probe: {other}"),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the probe was never refused"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    proptest! {
        #[test]
        fn parse_reads_what_encode_writes(client: u64, socket: u32) {
            let id = TryIdentity { client, socket };
            prop_assert_eq!(TryIdentity::parse(&id.encode()), Some(id));
        }

        #[test]
        fn anything_parsed_has_one_spelling(bytes: Vec<u8>) {
            if let Some(id) = TryIdentity::parse(&bytes) {
                prop_assert_eq!(id.encode(), bytes);
            }
        }
    }
}
