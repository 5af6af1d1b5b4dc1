//! Our clients against a broker played by this test with a raw ROUTER socket and frames written
//! from spec 7, so the clients are checked against the protocol, not only against our broker.
//!
//! What a ROUTER receives from a client is `[identity] [""] ["MDPC01"] [service] [body...]`
//! (a REQ socket adds the empty frame, a DEALER client writes it), and a reply goes back as
//! `[identity] [""] ["MDPC01"] [service] [body...]`.

#![allow(clippy::unwrap_used)]

use std::thread;
use std::time::{Duration, Instant};

use client::{
    AsyncClient, AsyncClientConfig, Client, ClientConfig, Error, Matching, Outcome, ServiceName,
};
use zsocket::testing::RawRouter;

/// A broker played by hand: zsocket's raw ROUTER on a free loopback port, with the checks of a
/// client's REQUEST that every test here wants.
struct RawBroker {
    router: RawRouter,
    endpoint: String,
}

impl RawBroker {
    fn bind() -> RawBroker {
        let router = RawRouter::bind();
        let endpoint = router.endpoint().to_owned();
        RawBroker { router, endpoint }
    }

    /// The next request, checked for spec 7's delimiter and header, or `None` after `wait`.
    fn recv_request(&self, wait: Duration) -> Option<Vec<Vec<u8>>> {
        let frames = self.router.recv(wait)?;
        assert_eq!(frames[1], b"", "delimiter in {frames:?}");
        assert_eq!(frames[2], b"MDPC01", "header in {frames:?}");
        Some(frames)
    }

    fn expect_request(&self) -> Vec<Vec<u8>> {
        self.recv_request(Duration::from_secs(5))
            .expect("a request within 5 s")
    }

    fn reply(&self, client: &[u8], service: &[u8], body: &[&[u8]]) {
        let mut frames: Vec<&[u8]> = vec![b"", b"MDPC01", service];
        frames.extend_from_slice(body);
        self.router.send_to(client, &frames);
    }

    /// Sends frames as they are, the client's identity first (for malformed replies).
    fn send_raw(&self, frames: &[&[u8]]) {
        self.router.send(frames);
    }
}

fn service(name: &str) -> ServiceName {
    name.parse().unwrap()
}

fn quick(retries: u32) -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_millis(200),
        retries,
    }
}

fn texts(frames: &[zmq::Message]) -> Vec<String> {
    frames
        .iter()
        .map(|frame| String::from_utf8_lossy(frame).into_owned())
        .collect()
}

#[test]
fn synchronous_request_and_reply_have_spec_7_frames() {
    let broker = RawBroker::bind();
    let endpoint = broker.endpoint.clone();
    let thread = thread::spawn(move || {
        let mut client = Client::connect(&endpoint, ClientConfig::default()).unwrap();
        client.send(&service("echo"), &["a", "b"])
    });
    let request = broker.expect_request();
    assert_eq!(
        request[3..],
        [b"echo".to_vec(), b"a".to_vec(), b"b".to_vec()]
    );
    broker.reply(&request[0], b"echo", &[b"A", b"B"]);
    assert_eq!(texts(&thread.join().unwrap().unwrap()), ["A", "B"]);
}

#[test]
fn synchronous_client_resends_on_a_new_socket_then_gives_up() {
    let broker = RawBroker::bind();
    let endpoint = broker.endpoint.clone();
    let thread = thread::spawn(move || {
        let mut client = Client::connect(&endpoint, quick(3)).unwrap();
        client.send(&service("echo"), &["x"])
    });
    let identities: Vec<Vec<u8>> = (0..3).map(|_| broker.expect_request()[0].clone()).collect();
    assert_ne!(identities[0], identities[1], "each try on a new socket");
    assert_ne!(identities[1], identities[2], "each try on a new socket");
    match thread.join().unwrap() {
        Err(Error::NoReply { attempts: 3, .. }) => {}
        other => panic!("expected NoReply after 3 tries, got {other:?}"),
    }
    assert!(
        broker.recv_request(Duration::from_millis(300)).is_none(),
        "no 4th try"
    );
}

#[test]
fn synchronous_client_takes_the_reply_to_a_resend_and_ignores_a_late_one() {
    let broker = RawBroker::bind();
    let endpoint = broker.endpoint.clone();
    let thread = thread::spawn(move || {
        let mut client = Client::connect(&endpoint, quick(3)).unwrap();
        let first = client.send(&service("echo"), &["one"]);
        let second = client.send(&service("echo"), &["two"]);
        (first, second)
    });
    let first_try = broker.expect_request();
    let second_try = broker.expect_request();
    assert_eq!(second_try[4], b"one");
    broker.reply(&second_try[0], b"echo", &[b"reply to one"]);
    let next = broker.expect_request();
    assert_eq!(next[4], b"two");
    // The first try's reply comes late: its socket is closed, so it cannot answer "two".
    broker.reply(&first_try[0], b"echo", &[b"late reply to one"]);
    broker.reply(&next[0], b"echo", &[b"reply to two"]);
    let (first, second) = thread.join().unwrap();
    assert_eq!(texts(&first.unwrap()), ["reply to one"]);
    assert_eq!(texts(&second.unwrap()), ["reply to two"]);
}

#[test]
fn synchronous_client_rejects_replies_that_break_the_protocol() {
    let broker = RawBroker::bind();
    let endpoint = broker.endpoint.clone();
    let thread = thread::spawn(move || {
        let mut client = Client::connect(&endpoint, ClientConfig::default()).unwrap();
        let wrong_service = client.send(&service("echo"), &["x"]);
        let bad_header = client.send(&service("echo"), &["x"]);
        let no_body = client.send(&service("echo"), &["x"]);
        (wrong_service, bad_header, no_body)
    });
    let request = broker.expect_request();
    broker.reply(&request[0], b"other", &[b"x"]);
    let request = broker.expect_request();
    broker.send_raw(&[&request[0], b"", b"MDPW01", b"echo", b"x"]);
    let request = broker.expect_request();
    broker.reply(&request[0], b"echo", &[]);
    let (wrong_service, bad_header, no_body) = thread.join().unwrap();
    assert!(matches!(wrong_service, Err(Error::WrongService { .. })));
    assert!(matches!(
        bad_header,
        Err(Error::InvalidReply(mdp::Error::BadHeader(_)))
    ));
    assert!(matches!(
        no_body,
        Err(Error::InvalidReply(mdp::Error::MissingFrame(_)))
    ));
}

#[test]
fn has_service_asks_mmi_service() {
    let broker = RawBroker::bind();
    let endpoint = broker.endpoint.clone();
    let thread = thread::spawn(move || {
        let mut client = Client::connect(&endpoint, ClientConfig::default()).unwrap();
        let found = client.has_service(&service("echo")).unwrap();
        let missing = client.has_service(&service("nope")).unwrap();
        (found, missing)
    });
    for status in [&b"200"[..], b"404"] {
        let request = broker.expect_request();
        assert_eq!(request[3], b"mmi.service");
        broker.reply(&request[0], b"mmi.service", &[status]);
    }
    assert_eq!(thread.join().unwrap(), (true, false));
}

fn async_client(endpoint: &str, timeout_ms: u64, matching: Matching) -> AsyncClient {
    async_client_with_retries(endpoint, timeout_ms, matching, 1)
}

fn async_client_with_retries(
    endpoint: &str,
    timeout_ms: u64,
    matching: Matching,
    retries: u32,
) -> AsyncClient {
    let config = AsyncClientConfig {
        timeout: Duration::from_millis(timeout_ms),
        matching,
        retries,
    };
    AsyncClient::connect(endpoint, config).unwrap()
}

fn one_frame(text: &str) -> client::Frames {
    vec![zmq::Message::from(text)]
}

#[test]
fn async_client_matches_replies_by_service_and_counts_them() {
    let broker = RawBroker::bind();
    let mut client = async_client(&broker.endpoint, 5000, Matching::ByService);
    let to_a = client.send(&service("a"), one_frame("for a")).unwrap();
    let to_b = client.send(&service("b"), one_frame("for b")).unwrap();
    let request_a = broker.expect_request();
    let request_b = broker.expect_request();
    let expected: [&[u8]; 4] = [b"", b"MDPC01", b"a", b"for a"];
    assert_eq!(request_a[1..], expected.map(<[u8]>::to_vec));
    assert_eq!(request_b[3], b"b");
    // b's reply overtakes a's.
    broker.reply(&request_b[0], b"b", &[b"from b"]);
    broker.reply(&request_a[0], b"a", &[b"from a"]);
    for (expected_id, expected_body) in [(to_b, "from b"), (to_a, "from a")] {
        match client.recv().unwrap() {
            Outcome::Reply { id, body, .. } => {
                assert_eq!(id, expected_id);
                assert_eq!(texts(&body), [expected_body]);
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }
    assert_eq!(client.outstanding(), 0);
    assert!(matches!(client.recv(), Err(Error::NothingOutstanding)));
}

#[test]
fn async_client_times_out_oldest_first_and_a_late_reply_cannot_answer_a_later_request() {
    let broker = RawBroker::bind();
    let mut client = async_client(&broker.endpoint, 200, Matching::ByService);
    let first = client.send(&service("echo"), one_frame("first")).unwrap();
    let second = client.send(&service("echo"), one_frame("second")).unwrap();
    let first_request = broker.expect_request();
    broker.expect_request();
    for expected in [first, second] {
        match client.recv().unwrap() {
            Outcome::TimedOut { id, .. } => assert_eq!(id, expected),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    let third = client.send(&service("echo"), one_frame("third")).unwrap();
    let third_request = broker.expect_request();
    assert_ne!(
        third_request[0], first_request[0],
        "after a timeout, new requests go on a new socket"
    );
    // The late reply goes to the retired socket, which is closed: it cannot answer "third".
    broker.reply(&first_request[0], b"echo", &[b"late reply to first"]);
    broker.reply(&third_request[0], b"echo", &[b"reply to third"]);
    match client.recv().unwrap() {
        Outcome::Reply { id, body, .. } => {
            assert_eq!(id, third);
            assert_eq!(texts(&body), ["reply to third"]);
        }
        other => panic!("expected the reply to third, got {other:?}"),
    }
    assert_eq!(client.open_connections(), 1);
}

#[test]
fn async_client_with_tags_matches_exactly_and_drops_duplicates() {
    let broker = RawBroker::bind();
    let mut client = async_client(&broker.endpoint, 5000, Matching::ByTag);
    let first = client.send(&service("echo"), one_frame("first")).unwrap();
    let second = client.send(&service("echo"), one_frame("second")).unwrap();
    let first_request = broker.expect_request();
    let second_request = broker.expect_request();
    assert_eq!(first_request[4].len(), 8, "the tag is the first body frame");
    assert_eq!(first_request[5], b"first");
    // An echoing worker returns the tag first; replies come back in the opposite order, and
    // the first one twice.
    let echo = |request: &Vec<Vec<u8>>, body: &[u8]| {
        broker.reply(&request[0], b"echo", &[&request[4], body]);
    };
    echo(&second_request, b"second echoed");
    echo(&first_request, b"first echoed");
    echo(&first_request, b"first echoed again");
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        match client.recv().unwrap() {
            Outcome::Reply { id, body, .. } => outcomes.push((id, texts(&body))),
            other => panic!("expected a reply, got {other:?}"),
        }
    }
    assert_eq!(
        outcomes,
        [
            (second, vec!["second echoed".to_owned()]),
            (first, vec!["first echoed".to_owned()])
        ]
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.dropped_replies() < 1 && Instant::now() < deadline {
        assert!(client
            .recv_timeout(Duration::from_millis(50))
            .unwrap()
            .is_none());
    }
    assert_eq!(client.dropped_replies(), 1, "the duplicate was dropped");
}

#[test]
fn async_client_drops_malformed_replies() {
    let broker = RawBroker::bind();
    let mut client = async_client(&broker.endpoint, 5000, Matching::ByService);
    let request_id = client.send(&service("echo"), one_frame("x")).unwrap();
    let request = broker.expect_request();
    broker.send_raw(&[&request[0], b"", b"MDPX01", b"echo", b"x"]);
    broker.reply(&request[0], b"echo", &[]);
    broker.reply(&request[0], b"echo", &[b"good"]);
    match client.recv().unwrap() {
        Outcome::Reply { id, body, .. } => {
            assert_eq!(id, request_id);
            assert_eq!(texts(&body), ["good"]);
        }
        other => panic!("expected the good reply, got {other:?}"),
    }
    assert_eq!(client.dropped_replies(), 2);
}

#[test]
fn async_client_retired_socket_still_collects_replies_for_what_it_carried() {
    let broker = RawBroker::bind();
    let mut client = async_client(&broker.endpoint, 1000, Matching::ByService);
    let first = client.send(&service("echo"), one_frame("first")).unwrap();
    let first_request = broker.expect_request();
    // Half a timeout later, a second request on the same socket.
    assert!(client
        .recv_timeout(Duration::from_millis(500))
        .unwrap()
        .is_none());
    let second = client.send(&service("echo"), one_frame("second")).unwrap();
    let second_request = broker.expect_request();
    assert_eq!(first_request[0], second_request[0], "same socket so far");

    match client.recv().unwrap() {
        Outcome::TimedOut { id, .. } => assert_eq!(id, first),
        other => panic!("expected the first to time out, got {other:?}"),
    }
    assert_eq!(
        client.open_connections(),
        2,
        "retired, not closed: second is outstanding"
    );
    broker.reply(&second_request[0], b"echo", &[b"reply to second"]);
    match client.recv().unwrap() {
        Outcome::Reply { id, body, .. } => {
            assert_eq!(id, second);
            assert_eq!(texts(&body), ["reply to second"]);
        }
        other => panic!("expected the reply to second, got {other:?}"),
    }
    assert_eq!(client.open_connections(), 1, "drained, so closed");
}

#[test]
fn async_client_sends_once_by_default() {
    let broker = RawBroker::bind();
    let mut client = async_client(&broker.endpoint, 200, Matching::ByTag);
    let only = client.send(&service("echo"), one_frame("once")).unwrap();
    broker.expect_request();
    match client.recv().unwrap() {
        Outcome::TimedOut { id, tries, .. } => assert_eq!((id, tries), (only, 1)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        broker.recv_request(Duration::from_millis(300)).is_none(),
        "no resend"
    );
    assert_eq!(client.resends(), 0);
}

#[test]
fn async_client_resends_a_timed_out_request_then_gives_up() {
    let broker = RawBroker::bind();
    let mut client = async_client_with_retries(&broker.endpoint, 200, Matching::ByTag, 3);
    let request_id = client.send(&service("echo"), one_frame("again")).unwrap();
    let receiver = thread::spawn(move || {
        let tries: Vec<_> = (0..3).map(|_| broker.expect_request()).collect();
        let fourth = broker.recv_request(Duration::from_millis(500));
        (tries, fourth)
    });
    match client.recv().unwrap() {
        Outcome::TimedOut { id, tries, .. } => assert_eq!((id, tries), (request_id, 3)),
        other => panic!("expected a timeout after 3 tries, got {other:?}"),
    }
    assert_eq!(client.outstanding(), 0);
    assert_eq!(client.resends(), 2);
    let (tries, fourth) = receiver.join().unwrap();
    assert!(fourth.is_none(), "no 4th try");
    for request in &tries {
        assert_eq!(request[3], b"echo");
        assert_eq!(request[5], b"again", "each try carries the same body");
    }
    assert_ne!(tries[0][4], tries[1][4], "each try has its own tag");
    assert_ne!(tries[1][4], tries[2][4], "each try has its own tag");
}

#[test]
fn async_client_takes_the_reply_to_a_resend_and_drops_the_late_one() {
    let broker = RawBroker::bind();
    let mut client = async_client_with_retries(&broker.endpoint, 200, Matching::ByTag, 2);
    let request_id = client.send(&service("echo"), one_frame("job")).unwrap();
    let receiver = thread::spawn(move || {
        // Nothing comes for the first try within its timeout, so the client sends it again.
        let first_try = broker.expect_request();
        let second_try = broker.expect_request();
        // Both tries get answered, the abandoned one first: it must not count.
        broker.reply(&first_try[0], b"echo", &[&first_try[4], b"late"]);
        broker.reply(&second_try[0], b"echo", &[&second_try[4], b"on time"]);
        (first_try, second_try)
    });
    match client.recv().unwrap() {
        Outcome::Reply {
            id,
            body,
            tries,
            latency,
            ..
        } => {
            assert_eq!((id, tries), (request_id, 2));
            assert_eq!(texts(&body), ["on time"]);
            assert!(
                latency >= Duration::from_millis(200),
                "latency counts from the first try: {latency:?}"
            );
        }
        other => panic!("expected the reply to the resend, got {other:?}"),
    }
    let (first_try, second_try) = receiver.join().unwrap();
    assert_eq!(first_try[0], second_try[0], "ByTag keeps one socket");
    assert_eq!(client.dropped_replies(), 1, "the late reply was dropped");
    assert_eq!(client.outstanding(), 0);
}

#[test]
fn async_client_by_service_resends_on_a_new_socket() {
    let broker = RawBroker::bind();
    let mut client = async_client_with_retries(&broker.endpoint, 200, Matching::ByService, 2);
    let request_id = client.send(&service("echo"), one_frame("job")).unwrap();
    let first_try = broker.expect_request();
    let receiver = thread::spawn(move || {
        let second_try = broker.expect_request();
        // The late reply goes to the first socket, closed by now: it cannot count.
        broker.reply(&first_try[0], b"echo", &[b"late"]);
        broker.reply(&second_try[0], b"echo", &[b"on time"]);
        (first_try, second_try)
    });
    match client.recv().unwrap() {
        Outcome::Reply {
            id, body, tries, ..
        } => {
            assert_eq!((id, tries), (request_id, 2));
            assert_eq!(texts(&body), ["on time"]);
        }
        other => panic!("expected the reply to the resend, got {other:?}"),
    }
    let (first_try, second_try) = receiver.join().unwrap();
    assert_ne!(
        first_try[0], second_try[0],
        "the resend goes on a new socket"
    );
    assert_eq!(second_try[3..], [b"echo".to_vec(), b"job".to_vec()]);
    assert_eq!(client.open_connections(), 1);
    assert_eq!(client.resends(), 1);
}

#[test]
fn synchronous_client_counts_its_resends() {
    let broker = RawBroker::bind();
    let endpoint = broker.endpoint.clone();
    let thread = thread::spawn(move || {
        let mut client = Client::connect(&endpoint, quick(2)).unwrap();
        let reply = client.send(&service("echo"), &["x"]);
        (reply, client.resends())
    });
    broker.expect_request();
    let second_try = broker.expect_request();
    broker.reply(&second_try[0], b"echo", &[b"x"]);
    let (reply, resends) = thread.join().unwrap();
    assert_eq!(texts(&reply.unwrap()), ["x"]);
    assert_eq!(resends, 1);
}

#[test]
fn a_bad_endpoint_is_an_error_that_names_it() {
    for endpoint in ["tcpx://nowhere", "localhost:5555"] {
        let sync = Client::connect(endpoint, ClientConfig::default()).unwrap_err();
        let windowed = AsyncClient::connect(endpoint, AsyncClientConfig::default()).unwrap_err();
        for error in [sync, windowed] {
            assert!(error.is_bad_endpoint(), "{error:?}");
            assert_eq!(error.to_string(), format!("cannot connect to {endpoint}"));
        }
    }
    // A timeout is no usage error.
    let timed_out = Error::NoReply {
        service: service("echo"),
        attempts: 1,
        timeout: Duration::from_millis(1),
    };
    assert!(!timed_out.is_bad_endpoint());
}
