//! The three roles run apart, as in three terminals, here as three threads of the test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use lbbroker::{
    run_broker, run_clients, run_processors, stop_pair, ClientGroup, Endpoints, ProcessorGroup,
};
use tempfile::TempDir;

#[test]
fn clients_started_first_are_served_once_a_broker_and_processors_arrive() {
    let dir = TempDir::new().unwrap();
    let endpoints = Endpoints::in_dir(dir.path());

    // Clients first: their requests wait in their sockets until the broker binds.
    let client_group = ClientGroup {
        count: 6,
        first_id: 10,
        frontend: endpoints.frontend.clone(),
        seed: Some(1),
        timeout: None,
    };
    let clients = thread::spawn(move || {
        let mut out = Vec::new();
        // Nothing raises this stop: the clients end once each has its reply.
        let (stop, stopped) = stop_pair().unwrap();
        let replies = run_clients(&client_group, &mut out, &stop, &stopped).unwrap();
        (replies, String::from_utf8(out).unwrap())
    });

    let (broker_stop, broker_signal) = stop_pair().unwrap();
    let broker_endpoints = endpoints.clone();
    let broker =
        thread::spawn(move || run_broker(&broker_endpoints, None, &broker_signal).unwrap());

    let (processors_stop, processors_signal) = stop_pair().unwrap();
    let processors_handle = processors_stop.clone();
    let processor_group = ProcessorGroup {
        count: 2,
        first_id: 5,
        backend: endpoints.backend.clone(),
        unit: Duration::from_millis(1),
    };
    let processors = thread::spawn(move || {
        let mut out = Vec::new();
        let taken = run_processors(
            &processor_group,
            &mut out,
            &processors_handle,
            &processors_signal,
        )
        .unwrap();
        (taken, String::from_utf8(out).unwrap())
    });

    let (replies, client_lines) = clients.join().unwrap();
    let served: BTreeSet<String> = replies.iter().map(|r| r.client.clone()).collect();
    let expected: BTreeSet<String> = (10..16).map(|n| format!("CLIENT-{n}")).collect();
    assert_eq!(served, expected);
    assert_eq!(client_lines.lines().count(), 6);
    for reply in &replies {
        assert!(
            reply.reply == "OK from PROCESSOR-5" || reply.reply == "OK from PROCESSOR-6",
            "{reply:?}"
        );
    }

    // Ctrl-C, as it were: the processors and the broker end cleanly.
    processors_stop.stop();
    let (taken, processor_lines) = processors.join().unwrap();
    assert_eq!(taken, 6);
    assert_eq!(processor_lines.lines().count(), 6);
    broker_stop.stop();
    let stats = broker.join().unwrap();
    assert_eq!(stats.requests_forwarded, 6);
    assert_eq!(stats.replies_forwarded, 6);
    assert!(!dir.path().join("frontend.ipc").exists());
    assert!(!dir.path().join("backend.ipc").exists());
}
