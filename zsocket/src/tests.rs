//! The socket layer over real sockets: whole messages, refused sends, waits, and both stops.

use std::time::{Duration, Instant};

use super::*;

fn frames(parts: &[&[u8]]) -> Frames {
    parts.iter().map(|part| zmq::Message::from(*part)).collect()
}

fn bytes(frames: &Frames) -> Vec<Vec<u8>> {
    frames.iter().map(|frame| frame.to_vec()).collect()
}

/// A ROUTER bound to a free tcp port and a DEALER connected to it.
fn router_and_dealer(context: &zmq::Context) -> (zmq::Socket, zmq::Socket) {
    let router = context.socket(zmq::ROUTER).expect("router");
    router.set_linger(0).expect("linger");
    let endpoint = bind(&router, "tcp://127.0.0.1:*")
        .expect("bind")
        .endpoint()
        .to_owned();
    assert!(!endpoint.ends_with('*'), "wildcard resolved: {endpoint}");
    let dealer = connect(context, zmq::DEALER, &endpoint).expect("connect");
    (router, dealer)
}

#[test]
fn a_whole_message_travels_both_ways_with_its_frames() {
    let context = zmq::Context::new();
    let (router, dealer) = router_and_dealer(&context);
    send(&dealer, frames(&[b"", b"a", b"bc"]), 0).expect("send");
    let (identity, received) = recv_routed(&router, 0).expect("recv").expect("a message");
    assert_eq!(
        bytes(&received),
        [b"".to_vec(), b"a".to_vec(), b"bc".to_vec()]
    );
    let mut reply = vec![identity];
    reply.extend(frames(&[b"", b"ok"]));
    send(&router, reply, 0).expect("reply");
    let back = recv(&dealer, 0).expect("recv").expect("a reply");
    assert_eq!(bytes(&back), [b"".to_vec(), b"ok".to_vec()]);
    assert_eq!(recv(&dealer, zmq::DONTWAIT).expect("recv"), None);
}

#[test]
fn a_message_for_a_gone_peer_comes_back_whole() {
    let context = zmq::Context::new();
    let router = context.socket(zmq::ROUTER).expect("router");
    router.set_router_mandatory(true).expect("mandatory");
    router.set_linger(0).expect("linger");
    let message = frames(&[b"nobody", b"", b"body"]);
    match send(&router, message, zmq::DONTWAIT) {
        Err(SendError::Refused(refused)) => {
            assert_eq!(refused.error, zmq::Error::EHOSTUNREACH);
            assert_eq!(bytes(&refused.frames)[2], b"body");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn errors_name_the_action_and_the_endpoint() {
    let context = zmq::Context::new();
    let Err(error) = connect(&context, zmq::DEALER, "tcpx://nowhere") else {
        panic!("an unknown transport must not connect");
    };
    assert_eq!(error.to_string(), "cannot connect to tcpx://nowhere");
    assert_eq!(error.zmq_error(), zmq::Error::EPROTONOSUPPORT);
    let socket = context.socket(zmq::ROUTER).expect("router");
    let error = bind(&socket, "ipc:///no/such/dir/x.ipc").expect_err("no directory");
    assert_eq!(error.zmq_error(), zmq::Error::ENOENT);
    assert_eq!(error.action(), "bind ipc:///no/such/dir/x.ipc");
}

#[test]
fn wait_reports_the_readable_socket_and_times_out_otherwise() {
    let context = zmq::Context::new();
    let (router, dealer) = router_and_dealer(&context);
    let (_quiet_router, quiet) = router_and_dealer(&context);
    let now = Instant::now();
    let woken = wait(
        &[&quiet, &router],
        None,
        Some(now + Duration::from_millis(5)),
        now,
    );
    assert_eq!(woken.expect("wait"), Woken::Timeout);
    send(&dealer, frames(&[b"x"]), 0).expect("send");
    let now = Instant::now();
    let woken = wait(
        &[&quiet, &router],
        None,
        Some(now + Duration::from_secs(10)),
        now,
    );
    assert_eq!(woken.expect("wait"), Woken::Readable(vec![1]));
}

#[test]
fn a_pair_stop_wakes_every_waiting_thread() {
    let context = zmq::Context::new();
    let (handle, signal) = stop_pair().expect("stop pair");
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let signal = signal.clone();
            let (router, _dealer) = router_and_dealer(&context);
            std::thread::spawn(move || {
                let woken = wait(&[&router], Some(&signal), None, Instant::now());
                drop(_dealer);
                woken.expect("wait")
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    handle.stop();
    handle.stop();
    for waiter in waiters {
        assert_eq!(waiter.join().expect("thread"), Woken::Stopped);
    }
    assert!(signal.sleep(Duration::from_secs(10)).expect("sleep"));
}

#[test]
fn a_router_stop_wakes_a_loop_waiting_in_recv() {
    let context = zmq::Context::new();
    let router = context.socket(zmq::ROUTER).expect("router");
    router.set_linger(0).expect("linger");
    let (handle, signal) = stop_router(&context, &router).expect("stop");
    assert!(signal.poll_item().is_none());
    let waiter = std::thread::spawn(move || {
        // Waits with no deadline: only the wake-up message can end it.
        let received = recv_until(&router, None, Instant::now()).expect("recv");
        (received.is_some(), signal.is_raised())
    });
    std::thread::sleep(Duration::from_millis(20));
    handle.stop();
    assert_eq!(waiter.join().expect("thread"), (true, true));
}

#[test]
fn millis_until_rounds_up_and_never_goes_negative() {
    let now = Instant::now();
    assert_eq!(millis_until(None, now), -1);
    assert_eq!(millis_until(Some(now), now), 0);
    assert_eq!(millis_until(Some(now + Duration::from_micros(1)), now), 1);
    assert_eq!(
        millis_until(Some(now + Duration::from_micros(1001)), now),
        2
    );
    assert_eq!(millis_until(Some(now), now + Duration::from_secs(1)), 0);
}

#[test]
fn a_second_bind_to_an_ipc_path_fails_like_a_port_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/b.ipc", dir.path().display());
    let context = zmq::Context::new();
    let first = context.socket(zmq::ROUTER).unwrap();
    let binding = bind(&first, &endpoint).unwrap();
    assert_eq!(binding.endpoint(), endpoint);
    let second = context.socket(zmq::ROUTER).unwrap();
    let error = bind(&second, &endpoint).expect_err("the path is taken");
    assert_eq!(error.to_string(), format!("cannot bind {endpoint}"));
    assert_eq!(error.zmq_error(), zmq::Error::EADDRINUSE);
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(cause.contains("another program is bound to it"), "{cause}");
    // The first is still the one a peer reaches.
    let peer = connect(&context, zmq::DEALER, &endpoint).unwrap();
    send(&peer, frames(&[b"still here"]), 0).unwrap();
    let (_, received) = recv_routed(&first, 0).unwrap().unwrap();
    assert_eq!(bytes(&received), [b"still here".to_vec()]);
    drop(first);
    drop(binding);
    assert!(
        !dir.path().join("b.ipc").exists(),
        "the socket file goes with the binding"
    );
    bind(&second, &endpoint).expect("free again");
}

#[test]
fn binding_a_host_name_says_to_name_an_interface_instead() {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::ROUTER).unwrap();
    let error = bind(&socket, "tcp://localhost:*").expect_err("libzmq binds interfaces");
    assert_eq!(error.zmq_error(), zmq::Error::ENODEV);
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(
        cause.starts_with("No such device; to bind, name an interface address such as 127.0.0.1"),
        "{cause}"
    );
}
