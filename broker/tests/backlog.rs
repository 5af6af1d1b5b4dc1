//! Replies for a client that reads slower than they come wait at the broker instead of being
//! dropped (`broker::backlog`). Over real sockets: a client sends 3,000 requests of 4 KiB and
//! reads nothing until a worker has answered them all; its receive high-water mark is 1 message,
//! so libzmq stops reading its TCP connection at once and the broker's pipe to it (1,000
//! messages) fills. Before the backlog, what did not fit was dropped ("peer is not reading").

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

mod common;
use common::*;

const REQUESTS: usize = 3000;

#[test]
fn replies_wait_for_a_slow_client_and_all_arrive_in_order() {
    let broker = TestBroker::start(broker::Config::default());
    let worker = ready_worker(&broker.endpoint, "W", "echo");

    let context = zmq::Context::new();
    let client = context.socket(zmq::DEALER).unwrap();
    client.set_linger(0).unwrap();
    client.set_rcvhwm(1).unwrap();
    client.set_sndhwm(0).unwrap();
    client.set_rcvtimeo(10_000).unwrap();
    client.connect(&broker.endpoint).unwrap();
    let body = vec![7u8; 4096];
    for number in 0..REQUESTS {
        let tag = (number as u32).to_be_bytes();
        client
            .send_multipart([&b""[..], b"MDPC01", b"echo", &tag, &body], 0)
            .unwrap();
    }

    // The worker answers every request as it comes (heartbeats skipped).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = 0;
    while answered < REQUESTS {
        assert!(
            Instant::now() < deadline,
            "the worker got {answered} requests"
        );
        let request = worker.recv_skipping_heartbeats();
        // [""] [MDPW01] [0x02] [client] [""] [tag] [body]
        assert_eq!(request[2], b"\x02");
        let reply: Vec<&[u8]> = vec![
            b"",
            b"MDPW01",
            b"\x03",
            &request[3],
            b"",
            &request[5],
            &request[6],
        ];
        worker.send(&reply);
        answered += 1;
    }

    // Only now does the client read: every reply, in order.
    for number in 0..REQUESTS {
        let reply = client.recv_multipart(0).unwrap_or_else(|error| {
            panic!("reply {number} of {REQUESTS} never came ({error}): dropped by the broker?")
        });
        assert_eq!(reply[..3], [&b""[..], b"MDPC01", b"echo"]);
        assert_eq!(reply[3], (number as u32).to_be_bytes());
        assert_eq!(reply[4].len(), 4096);
    }
    let stats = broker.stop();
    assert_eq!(stats.replies_forwarded, REQUESTS as u64);
}
