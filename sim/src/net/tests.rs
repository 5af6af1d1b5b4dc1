//! The model's rules one at a time, in virtual time. The same situations are checked against
//! libzmq itself by `tests/differential.rs`.

use super::*;

fn frames(parts: &[&[u8]]) -> Frames {
    parts.iter().map(|part| zmq::Message::from(*part)).collect()
}

fn bytes(frames: &Frames) -> Vec<Vec<u8>> {
    frames.iter().map(|frame| frame.to_vec()).collect()
}

/// Runs the network for a virtual second past its last event time (connection attempts to an
/// endpoint nobody binds go on forever, so "until nothing is left" would never come).
fn settle(net: &mut Network) {
    let until = net.now + Duration::from_secs(1);
    while net.next_at().is_some_and(|at| at <= until) {
        net.step();
    }
    net.set_now(until);
}

fn router(net: &mut Network, mandatory: bool) -> SocketId {
    let options = SocketOptions {
        router_mandatory: mandatory,
        ..SocketOptions::default()
    };
    let socket = net.socket(SocketKind::Router, options, 0);
    net.bind(socket, "tcp://broker").unwrap();
    socket
}

#[test]
fn a_dealer_gets_a_generated_identity_and_its_reply() {
    let mut net = Network::new(NetConfig::default(), 1);
    let router = router(&mut net, true);
    let dealer = net.socket(SocketKind::Dealer, SocketOptions::default(), 1);
    net.connect(dealer, "tcp://broker");
    net.send(dealer, frames(&[b"", b"hi"])).unwrap();
    settle(&mut net);
    let received = net.recv(router).unwrap().unwrap();
    assert_eq!(received[0].len(), 5);
    assert_eq!(received[0][0], 0);
    assert_eq!(bytes(&received)[1..], [b"".to_vec(), b"hi".to_vec()]);
    let mut reply = vec![zmq::Message::from(&received[0][..])];
    reply.extend(frames(&[b"", b"back"]));
    net.send(router, reply).unwrap();
    settle(&mut net);
    assert_eq!(
        bytes(&net.recv(dealer).unwrap().unwrap()),
        [b"".to_vec(), b"back".to_vec()]
    );
}

#[test]
fn a_gone_peer_is_unreachable_once_the_router_knows() {
    let mut net = Network::new(NetConfig::default(), 2);
    let router = router(&mut net, true);
    let dealer = net.socket(SocketKind::Dealer, SocketOptions::default(), 1);
    net.connect(dealer, "tcp://broker");
    net.send(dealer, frames(&[b"x"])).unwrap();
    settle(&mut net);
    let identity = net.recv(router).unwrap().unwrap().remove(0);
    net.close(dealer);
    // Before the FIN arrives the message is taken (and lost).
    let message = vec![zmq::Message::from(&identity[..]), zmq::Message::from("a")];
    net.send(router, message).unwrap();
    settle(&mut net);
    let message = vec![zmq::Message::from(&identity[..]), zmq::Message::from("b")];
    let refused = net.send(router, message).unwrap_err();
    assert_eq!(refused.error, zmq::Error::EHOSTUNREACH);
    assert_eq!(bytes(&refused.frames)[1], b"b");
    assert_eq!(net.stats().messages_lost, 1);
}

#[test]
fn a_duplicate_identity_is_ignored_without_handover() {
    let mut net = Network::new(NetConfig::default(), 3);
    let router = router(&mut net, true);
    let named = SocketOptions {
        routing_id: Some(b"W".to_vec()),
        ..SocketOptions::default()
    };
    let first = net.socket(SocketKind::Dealer, named.clone(), 1);
    net.connect(first, "tcp://broker");
    settle(&mut net);
    let second = net.socket(SocketKind::Dealer, named, 2);
    net.connect(second, "tcp://broker");
    net.send(second, frames(&[b"from second"])).unwrap();
    net.send(first, frames(&[b"from first"])).unwrap();
    settle(&mut net);
    let received = net.recv(router).unwrap().unwrap();
    assert_eq!(bytes(&received), [b"W".to_vec(), b"from first".to_vec()]);
    assert!(net.recv(router).unwrap().is_none());
    net.send(router, frames(&[b"W", b"to W"])).unwrap();
    settle(&mut net);
    assert!(net.recv(first).unwrap().is_some());
    assert!(net.recv(second).unwrap().is_none());
}

#[test]
fn a_full_peer_is_refused_with_eagain() {
    let mut net = Network::new(NetConfig::default(), 4);
    let router_options = SocketOptions {
        router_mandatory: true,
        sndhwm: 2,
        ..SocketOptions::default()
    };
    let router = net.socket(SocketKind::Router, router_options, 0);
    net.bind(router, "tcp://broker").unwrap();
    let dealer_options = SocketOptions {
        rcvhwm: 3,
        ..SocketOptions::default()
    };
    let dealer = net.socket(SocketKind::Dealer, dealer_options, 1);
    net.connect(dealer, "tcp://broker");
    net.send(dealer, frames(&[b"x"])).unwrap();
    settle(&mut net);
    let identity = net.recv(router).unwrap().unwrap().remove(0);
    let to_dealer = |n: u8| {
        vec![
            zmq::Message::from(&identity[..]),
            zmq::Message::from(&[n][..]),
        ]
    };
    for n in 0..5 {
        net.send(router, to_dealer(n)).unwrap();
    }
    let refused = net.send(router, to_dealer(5)).unwrap_err();
    assert_eq!(refused.error, zmq::Error::EAGAIN);
    settle(&mut net);
    // The writer hears of reads every low-water mark (3 of 5) messages, as in libzmq.
    net.recv(dealer).unwrap().unwrap();
    assert!(net.send(router, to_dealer(6)).is_err());
    net.recv(dealer).unwrap().unwrap();
    net.recv(dealer).unwrap().unwrap();
    for n in 6..9 {
        net.send(router, to_dealer(n)).unwrap();
    }
    assert!(net.send(router, to_dealer(9)).is_err());
}

#[test]
fn req_adds_and_strips_the_delimiter_and_keeps_turns() {
    let mut net = Network::new(NetConfig::default(), 5);
    let router = router(&mut net, true);
    let req = net.socket(SocketKind::Req, SocketOptions::default(), 1);
    net.connect(req, "tcp://broker");
    assert_eq!(net.recv(req).unwrap_err(), zmq::Error::EFSM);
    net.send(req, frames(&[b"q"])).unwrap();
    let refused = net.send(req, frames(&[b"again"])).unwrap_err();
    assert_eq!(refused.error, zmq::Error::EFSM);
    assert_eq!(bytes(&refused.frames), [b"again".to_vec()]);
    settle(&mut net);
    let mut received = net.recv(router).unwrap().unwrap();
    assert_eq!(bytes(&received)[1..], [b"".to_vec(), b"q".to_vec()]);
    received.truncate(2);
    received.push(zmq::Message::from("answer"));
    net.send(router, received).unwrap();
    settle(&mut net);
    assert_eq!(
        bytes(&net.recv(req).unwrap().unwrap()),
        [b"answer".to_vec()]
    );
    net.send(req, frames(&[b"next"])).unwrap();
}

#[test]
fn a_reconnection_is_a_new_identity_and_the_pipe_keeps_what_waited() {
    let mut net = Network::new(NetConfig::default(), 6);
    let first_router = router(&mut net, true);
    let dealer = net.socket(SocketKind::Dealer, SocketOptions::default(), 1);
    net.connect(dealer, "tcp://broker");
    net.send(dealer, frames(&[b"one"])).unwrap();
    settle(&mut net);
    let first_identity = net.recv(first_router).unwrap().unwrap().remove(0);
    net.close(first_router);
    settle(&mut net);
    assert!(!net.is_connected(dealer));
    // Sent while nobody is bound: waits in the pipe, goes out on the next connection.
    net.send(dealer, frames(&[b"two"])).unwrap();
    let second_router = router(&mut net, true);
    settle(&mut net);
    let received = net.recv(second_router).unwrap().unwrap();
    assert_eq!(bytes(&received)[1], b"two");
    assert_ne!(received[0][..], first_identity[..]);
}

#[test]
fn a_partition_stalls_and_a_heal_delivers_in_order() {
    let mut net = Network::new(NetConfig::default(), 7);
    let router = router(&mut net, true);
    let dealer = net.socket(SocketKind::Dealer, SocketOptions::default(), 1);
    net.connect(dealer, "tcp://broker");
    settle(&mut net);
    net.set_partitioned(dealer, true);
    for n in 0..3u8 {
        net.send(dealer, vec![zmq::Message::from(&[n][..])])
            .unwrap();
    }
    settle(&mut net);
    assert!(net.recv(router).unwrap().is_none());
    net.set_partitioned(dealer, false);
    settle(&mut net);
    for n in 0..3u8 {
        assert_eq!(net.recv(router).unwrap().unwrap()[1][..], [n]);
    }
}

#[test]
fn a_dealer_sends_round_robin_over_its_connections() {
    let mut net = Network::new(NetConfig::default(), 8);
    let first = net.socket(SocketKind::Router, SocketOptions::default(), 0);
    net.bind(first, "tcp://a").unwrap();
    let second = net.socket(SocketKind::Router, SocketOptions::default(), 0);
    net.bind(second, "tcp://b").unwrap();
    let dealer = net.socket(SocketKind::Dealer, SocketOptions::default(), 1);
    net.connect(dealer, "tcp://a");
    net.connect(dealer, "tcp://b");
    settle(&mut net);
    for n in 0..4u8 {
        net.send(dealer, vec![zmq::Message::from(&[n][..])])
            .unwrap();
    }
    settle(&mut net);
    let firsts: Vec<u8> = std::iter::from_fn(|| net.recv(first).unwrap())
        .map(|m| m[1][0])
        .collect();
    let seconds: Vec<u8> = std::iter::from_fn(|| net.recv(second).unwrap())
        .map(|m| m[1][0])
        .collect();
    assert_eq!((firsts, seconds), (vec![0, 2], vec![1, 3]));
}

#[test]
fn a_req_sent_an_undelimited_message_drops_the_connection_for_good() {
    let mut net = Network::new(NetConfig::default(), 9);
    let router = router(&mut net, true);
    let req = net.socket(SocketKind::Req, SocketOptions::default(), 1);
    net.connect(req, "tcp://broker");
    net.send(req, frames(&[b"q"])).unwrap();
    settle(&mut net);
    let identity = net.recv(router).unwrap().unwrap().remove(0);
    let to_req = |parts: &[&[u8]]| {
        let mut message = vec![zmq::Message::from(&identity[..])];
        message.extend(frames(parts));
        message
    };
    net.send(router, to_req(&[b"junk"])).unwrap();
    net.send(router, to_req(&[b"", b"answer"])).unwrap();
    settle(&mut net);
    assert!(net.recv(req).unwrap().is_none());
    assert!(!net.is_connected(req));
    let refused = net.send(router, to_req(&[b"", b"later"])).unwrap_err();
    assert_eq!(refused.error, zmq::Error::EHOSTUNREACH);
}
