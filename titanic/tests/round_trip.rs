//! Titanic over real sockets: a broker in a thread, echo workers in threads, and the `titanic`
//! program, as a client sees them.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use client::titanic::{Poll, TitanicError};
use client::{Client, ClientConfig, ServiceName};
use common::*;

fn frames_of(reply: &[zmq::Message]) -> Vec<Vec<u8>> {
    reply.iter().map(|frame| frame.to_vec()).collect()
}

/// How long a test waits for what should come; generous, the suite shares two cores.
fn patience() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn echo() -> ServiceName {
    "echo".parse().unwrap()
}

#[test]
fn a_request_goes_through_titanic_to_a_worker_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = test_broker();
    let _echo = EchoWorkers::start(&broker.endpoint, "echo", 1);
    let _titanic = TitanicProcess::start(&broker.endpoint, &dir.path().join("t.db"), &[]);
    let mut client = titanic_client(&broker.endpoint);

    let body = checked_body("n1", b"\x00binary\xff");
    let id = client.submit(&echo(), &body).unwrap();
    assert_eq!(id.len(), 32);
    let reply = client.wait_until(&id, Some(patience())).unwrap();
    assert_eq!(frames_of(&reply), body);
    // titanic.reply never deletes: the same reply again.
    let Poll::Done(again) = client.poll(&id).unwrap() else {
        panic!("the reply is gone before close");
    };
    assert_eq!(frames_of(&again), body);
    client.close(&id).unwrap();
    assert!(matches!(client.poll(&id).unwrap(), Poll::Unknown));
    assert!(matches!(
        client.wait_until(&id, Some(patience())),
        Err(TitanicError::Unknown(_))
    ));
}

#[test]
fn an_unknown_id_is_400_and_closing_it_is_200_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let broker = test_broker();
    let _titanic = TitanicProcess::start(&broker.endpoint, &dir.path().join("t.db"), &[]);
    let config = ClientConfig {
        timeout: Duration::from_secs(2),
        retries: 5,
    };
    let mut client = Client::connect(&broker.endpoint, config).unwrap();
    let unknown = b"0123456789abcdef0123456789abcdef";
    let reply = client
        .send(&"titanic.reply".parse().unwrap(), &[unknown])
        .unwrap();
    assert_eq!(frames_of(&reply), [b"400"]);
    let reply = client
        .send(&"titanic.close".parse().unwrap(), &[unknown])
        .unwrap();
    assert_eq!(frames_of(&reply), [b"200"]);
    // A service outside --services (default: all but mmi.* and titanic.*) is refused, not stored.
    let reply = client
        .send(
            &"titanic.request".parse().unwrap(),
            &[&b"mmi.service"[..], b"echo"],
        )
        .unwrap();
    assert_eq!(frames_of(&reply), [b"400"]);
}

#[test]
fn a_stored_request_survives_a_restart_of_titanic_before_its_service_has_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let broker = test_broker();
    let mut titanic = TitanicProcess::start(&broker.endpoint, &db, &[]);
    let mut client = titanic_client(&broker.endpoint);
    let body = checked_body("kept", b"across a restart");
    let id = client.submit(&echo(), &body).unwrap();
    assert!(matches!(client.poll(&id).unwrap(), Poll::Pending));

    titanic.kill();
    let _titanic = TitanicProcess::start(&broker.endpoint, &db, &[]);
    let echo_workers = EchoWorkers::start(&broker.endpoint, "echo", 1);
    let reply = client.wait_until(&id, Some(patience())).unwrap();
    assert_eq!(frames_of(&reply), body);
    assert_eq!(echo_workers.ran_twice(), 0);
}

#[test]
fn a_service_without_a_worker_does_not_hold_up_another() {
    let dir = tempfile::tempdir().unwrap();
    let broker = test_broker();
    let _echo = EchoWorkers::start(&broker.endpoint, "echo", 1);
    let _titanic = TitanicProcess::start(&broker.endpoint, &dir.path().join("t.db"), &[]);
    let mut client = titanic_client(&broker.endpoint);
    let absent: ServiceName = "nobody".parse().unwrap();
    let stuck: Vec<String> = (0..20)
        .map(|n| client.submit(&absent, &[format!("{n}")]).unwrap())
        .collect();
    // Patience, not a speed figure: a dispatcher that queued echo behind the absent service would
    // make it wait forever.
    let id = client.submit(&echo(), &[b"through"]).unwrap();
    let reply = client.wait_until(&id, Some(patience())).unwrap();
    assert_eq!(frames_of(&reply), [b"through"]);
    for id in &stuck {
        assert!(matches!(client.poll(id).unwrap(), Poll::Pending));
    }
}
