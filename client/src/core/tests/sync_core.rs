//! `SyncCore`: one request at a time, a timeout per try, a new socket per try, `retries` tries.

use super::*;
use crate::core::{Link, SyncAction, SyncCore};
use crate::{ClientConfig, Error};

const TIMEOUT: Duration = Duration::from_millis(100);

fn core(retries: u32) -> SyncCore {
    SyncCore::new(ClientConfig {
        timeout: TIMEOUT,
        retries,
    })
}

/// What a list of actions says, in a form tests can compare: `send <frames>`, `reopen`,
/// `done <body>` or `failed <error>`.
fn describe(actions: &mut Vec<SyncAction>) -> Vec<String> {
    actions
        .drain(..)
        .map(|action| match action {
            SyncAction::Send(frames) => format!("send {:?}", texts(&frames)),
            SyncAction::Reopen => "reopen".to_owned(),
            SyncAction::Done(Ok(body)) => format!("done {:?}", texts(&body)),
            SyncAction::Done(Err(error)) => format!("failed {error}"),
        })
        .collect()
}

fn texts(frames: &Frames) -> Vec<String> {
    bytes(frames)
        .into_iter()
        .map(|frame| String::from_utf8_lossy(&frame).into_owned())
        .collect()
}

/// The `Done` at the end of `actions`, taken out.
fn done(actions: &mut Vec<SyncAction>) -> Result<Frames, Error> {
    match actions.pop() {
        Some(SyncAction::Done(result)) => result,
        other => panic!("expected Done last, got {other:?}"),
    }
}

#[test]
fn a_request_is_sent_from_the_header_on_and_its_reply_is_the_result() {
    let mut core = core(3);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"a", b"b"]), &mut out);
    assert_eq!(describe(&mut out), [r#"send ["MDPC01", "echo", "a", "b"]"#]);
    assert_eq!(core.next_deadline(), Some(t0 + TIMEOUT));
    assert!(core.in_flight());

    core.handle(t0 + millis(5), req_reply(b"echo", &[b"A", b"B"]), &mut out);
    assert_eq!(describe(&mut out), [r#"done ["A", "B"]"#]);
    assert_eq!(
        core.next_deadline(),
        None,
        "nothing in flight, nothing to wake for"
    );
    assert!(!core.in_flight());
    assert_eq!(core.resends(), 0);
}

#[test]
fn an_empty_body_is_sent_as_one_empty_frame() {
    let mut core = core(1);
    let mut out = Vec::new();
    core.start(Instant::now(), &service("echo"), Vec::new(), &mut out);
    assert_eq!(describe(&mut out), [r#"send ["MDPC01", "echo", ""]"#]);
}

#[test]
fn a_try_times_out_exactly_at_its_deadline_and_is_resent_on_a_new_socket() {
    let mut core = core(3);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    out.clear();

    core.tick(t0 + TIMEOUT - NANO, &mut out);
    assert!(out.is_empty(), "not yet: {out:?}");
    assert_eq!(core.resends(), 0);

    core.tick(t0 + TIMEOUT, &mut out);
    assert_eq!(
        describe(&mut out),
        ["reopen", r#"send ["MDPC01", "echo", "x"]"#],
        "the socket first, so the resend goes on the new one"
    );
    assert_eq!(core.resends(), 1);
    assert_eq!(core.next_deadline(), Some(t0 + TIMEOUT * 2));
}

#[test]
fn after_the_last_try_the_socket_is_replaced_and_the_request_fails() {
    let mut core = core(3);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    core.link(t0, Link::Up);
    out.clear();
    core.tick(t0 + TIMEOUT, &mut out);
    core.tick(t0 + TIMEOUT * 2, &mut out);
    assert_eq!(out.len(), 4, "two resends: {out:?}");
    out.clear();

    core.tick(t0 + TIMEOUT * 3 - NANO, &mut out);
    assert!(out.is_empty());
    core.tick(t0 + TIMEOUT * 3, &mut out);
    let result = done(&mut out);
    assert_eq!(
        describe(&mut out),
        ["reopen"],
        "a REQ socket still waiting for a reply would refuse the next request"
    );
    match result {
        Err(Error::NoReply {
            service,
            attempts: 3,
            timeout: TIMEOUT,
        }) => assert_eq!(service.as_bytes(), b"echo"),
        other => panic!("expected NoReply after 3 tries, got {other:?}"),
    }
    assert_eq!(core.resends(), 2);
    assert_eq!(core.next_deadline(), None);
    core.tick(t0 + TIMEOUT * 10, &mut out);
    assert!(out.is_empty(), "no 4th try");
}

#[test]
fn zero_retries_count_as_one_try() {
    let mut core = core(0);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    core.link(t0, Link::Up);
    out.clear();
    core.tick(t0 + TIMEOUT, &mut out);
    assert!(matches!(
        done(&mut out),
        Err(Error::NoReply { attempts: 1, .. })
    ));
    assert_eq!(describe(&mut out), ["reopen"]);
    assert_eq!(core.resends(), 0);
}

#[test]
fn every_try_carries_the_same_body_and_a_late_tick_restarts_the_timeout_from_then() {
    let mut core = core(3);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"one", b"two"]), &mut out);
    out.clear();
    // The driver was slow to wake: the next try's timeout counts from when it is sent.
    let late = t0 + TIMEOUT + millis(30);
    core.tick(late, &mut out);
    assert_eq!(core.next_deadline(), Some(late + TIMEOUT));
    let late_again = late + TIMEOUT;
    core.tick(late_again, &mut out);
    let sends: Vec<String> = describe(&mut out)
        .into_iter()
        .filter(|action| action.starts_with("send"))
        .collect();
    assert_eq!(
        sends, [r#"send ["MDPC01", "echo", "one", "two"]"#; 2],
        "each resend the same frames"
    );
}

#[test]
fn the_reply_to_a_resend_is_the_result_and_the_resend_is_counted() {
    let mut core = core(2);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    core.tick(t0 + TIMEOUT, &mut out);
    out.clear();
    core.handle(
        t0 + TIMEOUT + millis(1),
        req_reply(b"echo", &[b"y"]),
        &mut out,
    );
    assert_eq!(describe(&mut out), [r#"done ["y"]"#]);
    assert_eq!(core.resends(), 1);
    assert_eq!(core.next_deadline(), None);
}

#[test]
fn a_reply_at_the_deadline_still_counts_if_it_comes_before_the_tick() {
    // The driver hands over what the socket received before it looks at the clock's deadline:
    // a reply on the current socket can only be the answer to the try in flight.
    let mut core = core(3);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    out.clear();
    core.handle(
        t0 + TIMEOUT,
        req_reply(b"echo", &[b"just in time"]),
        &mut out,
    );
    assert_eq!(describe(&mut out), [r#"done ["just in time"]"#]);
    core.tick(t0 + TIMEOUT, &mut out);
    assert!(out.is_empty(), "nothing left to time out");
}

#[test]
fn replies_that_break_spec_7_end_the_request_with_an_error_and_no_new_socket() {
    type IsExpected = fn(&Error) -> bool;
    let cases: [(Frames, IsExpected); 3] = [
        (req_reply(b"other", &[b"x"]), |error| {
            matches!(error, Error::WrongService { asked, replied }
                if asked.as_bytes() == b"echo" && replied.as_bytes() == b"other")
        }),
        (frames(&[b"MDPW01", b"echo", b"x"]), |error| {
            matches!(error, Error::InvalidReply(mdp::Error::BadHeader(_)))
        }),
        (req_reply(b"echo", &[]), |error| {
            matches!(error, Error::InvalidReply(mdp::Error::MissingFrame(_)))
        }),
    ];
    for (reply, expected) in cases {
        let mut core = core(3);
        let mut out = Vec::new();
        let t0 = Instant::now();
        core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
        out.clear();
        core.handle(t0, reply, &mut out);
        let error = done(&mut out).unwrap_err();
        assert!(expected(&error), "unexpected {error:?}");
        assert!(
            out.is_empty(),
            "a REQ socket that got its reply can send again"
        );
        assert_eq!(core.next_deadline(), None);
    }
}

#[test]
fn a_message_with_no_request_in_flight_is_dropped() {
    let mut core = core(3);
    let mut out = Vec::new();
    core.handle(Instant::now(), req_reply(b"echo", &[b"x"]), &mut out);
    assert!(out.is_empty());
    core.tick(Instant::now() + TIMEOUT * 10, &mut out);
    assert!(out.is_empty());
}

#[test]
fn a_new_request_while_one_is_in_flight_takes_a_new_socket_first() {
    let mut core = core(3);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"first"]), &mut out);
    out.clear();
    let t1 = t0 + millis(10);
    core.start(t1, &service("echo"), frames(&[b"second"]), &mut out);
    assert_eq!(
        describe(&mut out),
        ["reopen", r#"send ["MDPC01", "echo", "second"]"#]
    );
    assert_eq!(core.next_deadline(), Some(t1 + TIMEOUT));
}

#[test]
fn resends_add_up_over_the_clients_life() {
    let mut core = core(2);
    let mut out = Vec::new();
    let mut now = Instant::now();
    for round in 1..=3 {
        core.start(now, &service("echo"), frames(&[b"x"]), &mut out);
        core.link(now, Link::Up);
        now += TIMEOUT;
        core.tick(now, &mut out);
        now += TIMEOUT;
        core.tick(now, &mut out);
        assert!(matches!(done(&mut out), Err(Error::NoReply { .. })));
        out.clear();
        assert_eq!(core.resends(), round);
    }
}

#[test]
fn a_timeout_too_large_for_the_clock_never_expires() {
    let mut core = SyncCore::new(ClientConfig {
        timeout: Duration::MAX,
        retries: 3,
    });
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    out.clear();
    assert_eq!(core.next_deadline(), None);
    core.tick(t0 + Duration::from_secs(1_000_000), &mut out);
    assert!(out.is_empty());
    core.handle(t0, req_reply(b"echo", &[b"x"]), &mut out);
    assert!(done(&mut out).is_ok());
}

#[test]
fn tries_that_never_had_a_connection_fail_as_no_connection() {
    let mut core = SyncCore::with_brokers(
        ClientConfig {
            timeout: TIMEOUT,
            retries: 2,
        },
        vec!["tcp://b:1".to_owned()],
    );
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    core.tick(t0 + TIMEOUT, &mut out);
    core.tick(t0 + TIMEOUT * 2, &mut out);
    match done(&mut out) {
        Err(Error::NoConnection {
            brokers,
            attempts: 2,
            timeout: TIMEOUT,
        }) => assert_eq!(brokers, ["tcp://b:1"]),
        other => panic!("expected NoConnection, got {other:?}"),
    }
}

#[test]
fn a_connection_in_any_try_makes_it_no_reply_even_if_it_dropped() {
    let mut core = core(2);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    core.link(t0, Link::Up);
    core.link(t0 + NANO, Link::Down);
    core.tick(t0 + TIMEOUT, &mut out);
    // The second try's socket never connects: the broker went away, but it was there.
    core.tick(t0 + TIMEOUT * 2, &mut out);
    assert!(matches!(done(&mut out), Err(Error::NoReply { .. })));
}

#[test]
fn a_replaced_socket_keeps_what_was_known_of_its_broker_until_its_monitor_speaks() {
    let mut core = core(1);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.link(t0, Link::Up);
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    core.tick(t0 + TIMEOUT, &mut out);
    assert!(matches!(done(&mut out), Err(Error::NoReply { .. })));
    // That timeout replaced the socket, the client's own doing: the broker was there, and the new
    // socket is taken to reach it too (before, it counted as not connected, and a request whose
    // fresh socket had not reported its handshake by the deadline failed as NoConnection).
    out.clear();
    assert!(core.link_known());
    core.start(t0 + TIMEOUT, &service("echo"), frames(&[b"x"]), &mut out);
    core.tick(t0 + TIMEOUT * 2, &mut out);
    assert!(matches!(done(&mut out), Err(Error::NoReply { .. })));
    // Until its monitor says the connect was refused: then the broker is gone.
    out.clear();
    core.start(
        t0 + TIMEOUT * 2,
        &service("echo"),
        frames(&[b"x"]),
        &mut out,
    );
    core.link(t0 + TIMEOUT * 2, Link::Down);
    assert!(core.link_known());
    core.tick(t0 + TIMEOUT * 3, &mut out);
    assert!(matches!(done(&mut out), Err(Error::NoConnection { .. })));
}

#[test]
fn nothing_is_known_of_the_link_before_the_monitor_speaks() {
    let mut core = core(1);
    assert!(!core.link_known(), "a driver waits for the monitor then");
    core.link(Instant::now(), Link::Down);
    assert!(core.link_known());
}

fn two_brokers(retries: u32) -> SyncCore {
    SyncCore::with_brokers(
        ClientConfig {
            timeout: TIMEOUT,
            retries,
        },
        vec!["tcp://a:1".to_owned(), "tcp://b:2".to_owned()],
    )
}

#[test]
fn several_brokers_a_timeout_moves_to_the_next_and_the_one_that_answered_is_kept() {
    let mut core = two_brokers(2);
    let mut out = Vec::new();
    let t0 = Instant::now();
    assert_eq!(core.broker(), 0, "the first broker first");
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    out.clear();
    core.tick(t0 + TIMEOUT, &mut out);
    assert_eq!(core.broker(), 1, "the timeout moved it on");
    assert_eq!(
        describe(&mut out),
        ["reopen", r#"send ["MDPC01", "echo", "x"]"#],
        "the reopen connects to broker 1"
    );
    core.handle(t0 + TIMEOUT + NANO, req_reply(b"echo", &[b"x"]), &mut out);
    assert_eq!(describe(&mut out), [r#"done ["x"]"#]);
    // The next request goes to broker 1 as it is, with no reopen and no timeout to pay.
    let t1 = t0 + TIMEOUT * 2;
    core.start(t1, &service("echo"), frames(&[b"y"]), &mut out);
    assert_eq!(describe(&mut out), [r#"send ["MDPC01", "echo", "y"]"#]);
    assert_eq!(core.broker(), 1);
    assert_eq!(core.next_deadline(), Some(t1 + TIMEOUT));
}

#[test]
fn several_brokers_with_retries_at_least_their_number_a_dead_broker_fails_nothing() {
    // Broker 0 is dead (nothing answers on it), broker 1 answers everything at once.
    let mut core = two_brokers(2);
    let mut out = Vec::new();
    let mut now = Instant::now();
    let mut timeouts_paid = 0;
    for request in 0..5 {
        core.start(now, &service("echo"), frames(&[b"x"]), &mut out);
        loop {
            if core.broker() == 1 {
                core.link(now, Link::Up);
                core.handle(now, req_reply(b"echo", &[b"x"]), &mut out);
                assert!(done(&mut out).is_ok(), "request {request}");
                out.clear();
                break;
            }
            now = core.next_deadline().unwrap();
            core.tick(now, &mut out);
            timeouts_paid += 1;
            assert!(
                !out.iter()
                    .any(|action| matches!(action, SyncAction::Done(_))),
                "request {request} failed: {out:?}"
            );
            out.clear();
        }
    }
    assert_eq!(timeouts_paid, 1, "the dead broker cost one timeout in all");
}

#[test]
fn several_brokers_every_one_silent_fails_naming_those_tried() {
    let mut core = two_brokers(3);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    for step in 1..=3 {
        core.tick(t0 + TIMEOUT * step, &mut out);
    }
    match done(&mut out) {
        Err(Error::NoConnection {
            brokers,
            attempts: 3,
            ..
        }) => {
            assert_eq!(brokers, ["tcp://a:1", "tcp://b:2"])
        }
        other => panic!("expected NoConnection, got {other:?}"),
    }
    assert_eq!(
        core.broker(),
        1,
        "3 timeouts from broker 0: 0 -> 1 -> 0 -> 1"
    );
}

#[test]
fn a_refused_handshake_fails_the_request_at_once_and_backs_off_before_the_next_try() {
    let mut core = core(3);
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    out.clear();
    core.refused(t0 + millis(2), refusal("tcp://b:1"), &mut out);
    let result = done(&mut out);
    assert!(
        out.is_empty(),
        "no resend to a broker that refused: {out:?}"
    );
    let text = result.expect_err("refused").to_string();
    assert!(
        text.starts_with("authentication refused by the broker at tcp://b:1 (PLAIN)"),
        "{text}"
    );
    assert!(!core.in_flight());

    // Within the backoff (100 ms), the next request fails at once without a socket.
    core.start(t0 + millis(50), &service("echo"), frames(&[b"y"]), &mut out);
    assert!(matches!(done(&mut out), Err(Error::AuthRefused { .. })));
    assert!(out.is_empty(), "{out:?}");
    // After it, a new socket (the refused one was closed) and the request.
    core.start(
        t0 + millis(102),
        &service("echo"),
        frames(&[b"z"]),
        &mut out,
    );
    assert_eq!(
        describe(&mut out),
        ["reopen", r#"send ["MDPC01", "echo", "z"]"#]
    );
    // Refused again: the backoff doubles; a handshake that succeeds resets it.
    core.refused(t0 + millis(110), refusal("tcp://b:1"), &mut out);
    out.clear();
    core.start(
        t0 + millis(305),
        &service("echo"),
        frames(&[b"w"]),
        &mut out,
    );
    assert!(matches!(done(&mut out), Err(Error::AuthRefused { .. })));
    core.start(
        t0 + millis(311),
        &service("echo"),
        frames(&[b"v"]),
        &mut out,
    );
    assert_eq!(describe(&mut out).len(), 2, "reopen and send");
    core.link(t0 + millis(312), Link::Up);
    core.handle(t0 + millis(313), req_reply(b"echo", &[b"v"]), &mut out);
    out.clear();
    core.start(
        t0 + millis(320),
        &service("echo"),
        frames(&[b"u"]),
        &mut out,
    );
    out.clear();
    core.refused(t0 + millis(321), refusal("tcp://b:1"), &mut out);
    out.clear();
    core.start(
        t0 + millis(422),
        &service("echo"),
        frames(&[b"t"]),
        &mut out,
    );
    assert_eq!(describe(&mut out).len(), 2, "100 ms again after a success");
}

#[test]
fn with_several_brokers_a_refusing_one_counts_as_down_and_the_request_goes_on() {
    let mut core = SyncCore::with_brokers(
        ClientConfig {
            timeout: TIMEOUT,
            retries: 3,
        },
        vec!["tcp://a:1".into(), "tcp://b:2".into()],
    );
    let mut out = Vec::new();
    let t0 = Instant::now();
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    out.clear();
    core.refused(t0 + millis(1), refusal("tcp://a:1"), &mut out);
    assert_eq!(
        describe(&mut out),
        ["reopen", r#"send ["MDPC01", "echo", "x"]"#],
        "resent at once, through the other broker"
    );
    assert_eq!(core.broker(), 1);
    assert_eq!(core.resends(), 1);
    core.handle(t0 + millis(3), req_reply(b"echo", &[b"x"]), &mut out);
    assert!(done(&mut out).is_ok());
    // Both refuse: the error names both.
    core.start(t0 + millis(4), &service("echo"), frames(&[b"y"]), &mut out);
    out.clear();
    core.refused(t0 + millis(5), refusal("tcp://b:2"), &mut out);
    let text = done(&mut out).expect_err("both refused").to_string();
    assert!(
        text.contains("tcp://b:2") && !text.contains("tcp://a:1"),
        "the request met one refusal: {text}"
    );
    core.start(t0 + millis(6), &service("echo"), frames(&[b"z"]), &mut out);
    let text = done(&mut out).expect_err("both backing off").to_string();
    assert!(
        text.contains("tcp://a:1") && text.contains("tcp://b:2"),
        "{text}"
    );
}

#[test]
fn a_timeout_does_not_move_the_client_to_a_broker_that_refused_it_moments_ago() {
    let mut core = SyncCore::with_brokers(
        ClientConfig {
            // Half the first refusal backoff (100 ms).
            timeout: TIMEOUT / 2,
            retries: 3,
        },
        vec!["tcp://a:1".into(), "tcp://b:2".into()],
    );
    let mut out = Vec::new();
    let t0 = Instant::now();
    // Broker a refuses; the request goes to b, which does not answer in time.
    core.start(t0, &service("echo"), frames(&[b"x"]), &mut out);
    core.refused(t0 + millis(1), refusal("tcp://a:1"), &mut out);
    out.clear();
    assert_eq!(core.broker(), 1);
    core.link(t0 + millis(2), Link::Up);
    core.tick(t0 + millis(1) + TIMEOUT / 2, &mut out);
    assert_eq!(
        describe(&mut out),
        ["reopen", r#"send ["MDPC01", "echo", "x"]"#]
    );
    assert_eq!(core.broker(), 1, "a is still backing off: b again");
    // Once a's backoff has passed, a timeout moves the client there as before.
    core.tick(t0 + millis(1) + TIMEOUT, &mut out);
    assert_eq!(core.broker(), 0);
}
