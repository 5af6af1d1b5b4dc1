//! Leases over a real PostgreSQL server, with two `titanic` processes sharing the store: a
//! request out for far longer than its lease is kept by the process that sent it (the lease is
//! renewed), so the other process never sends it too, and each request runs once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::ServiceName;
use common::*;
use worker::Worker;

/// A service that takes `work` per request, and notes each run and any run that began while
/// another run of the same body was still going.
struct SlowWorkers {
    stops: Vec<worker::StopHandle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    runs: Arc<Mutex<HashMap<Vec<u8>, u32>>>,
    overlaps: Arc<Mutex<u32>>,
}

impl SlowWorkers {
    fn start(endpoint: &str, count: usize, work: Duration) -> SlowWorkers {
        let runs: Arc<Mutex<HashMap<Vec<u8>, u32>>> = Arc::default();
        let running: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
        let overlaps: Arc<Mutex<u32>> = Arc::default();
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..count {
            let mut worker =
                Worker::connect(endpoint, "slow".parse().unwrap(), worker_config()).unwrap();
            stops.push(worker.stop_handle());
            let (runs, running, overlaps) = (
                Arc::clone(&runs),
                Arc::clone(&running),
                Arc::clone(&overlaps),
            );
            threads.push(std::thread::spawn(move || {
                worker
                    .serve(|body| {
                        let key = body.first().map(|frame| frame.to_vec()).unwrap_or_default();
                        *runs.lock().unwrap().entry(key.clone()).or_insert(0) += 1;
                        if !running.lock().unwrap().insert(key.clone()) {
                            *overlaps.lock().unwrap() += 1;
                        }
                        // The service's work: far longer than a lease.
                        std::thread::sleep(work);
                        running.lock().unwrap().remove(&key);
                        body
                    })
                    .unwrap();
            }));
        }
        SlowWorkers {
            stops,
            threads,
            runs,
            overlaps,
        }
    }
}

impl Drop for SlowWorkers {
    fn drop(&mut self) {
        for stop in &self.stops {
            stop.stop();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_request_out_longer_than_its_lease_is_renewed_and_never_sent_by_the_other_process() {
    let Some(database) = pg_server::TestDatabase::new("leases with two titanic processes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = test_broker();
    // Each run takes four leases' worth; renewals every 200 ms keep it.
    let workers = SlowWorkers::start(&broker.endpoint, 3, Duration::from_millis(2400));
    let extra = ["--lease", "600ms", "--try-timeout", "20s"];
    let titanics: Vec<TitanicProcess> = (0..2)
        .map(|number| {
            let log = dir.path().join(format!("titanic-{number}.log"));
            TitanicProcess::start_on(&broker.endpoint, database.url.as_ref(), &log, &extra)
        })
        .collect();

    let slow: ServiceName = "slow".parse().unwrap();
    let mut client = titanic_client(&broker.endpoint);
    let bodies: Vec<(String, Vec<Vec<u8>>)> = (0..6)
        .map(|n| {
            let body = checked_body(&format!("slow-{n}"), b"payload");
            (client.submit(&slow, &body).unwrap(), body)
        })
        .collect();
    let patience = Instant::now() + Duration::from_secs(60);
    for (id, body) in &bodies {
        let reply = client.wait_until(id, Some(patience)).unwrap();
        let reply: Vec<Vec<u8>> = reply.iter().map(|frame| frame.to_vec()).collect();
        assert_eq!(&reply, body);
    }
    let runs = workers.runs.lock().unwrap().clone();
    let overlaps = *workers.overlaps.lock().unwrap();
    assert_eq!(overlaps, 0, "a request ran in two places at once: {runs:?}");
    assert_eq!(runs.len(), bodies.len());
    assert!(
        runs.values().all(|&count| count == 1),
        "a request ran twice: {runs:?}"
    );
    let mut connection = database.connect();
    let owners: i64 = connection
        .query_one(
            "SELECT count(DISTINCT lease_owner) FROM titanic_requests WHERE lease_owner IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owners, 0, "a done request holds no lease");
    drop(titanics);
}
