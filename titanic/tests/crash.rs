//! The short crash drill (the long one is scripts/titanic-crash.sh): clients submit a few hundred
//! requests while the `titanic` program is killed with SIGKILL at random moments and restarted.
//! Every request that was answered 200 must end with its own reply, intact (each body carries a
//! checksum, and the reply must equal the body sent: the service is echo). The same again on
//! PostgreSQL with two titanic processes sharing the store, killed in turn.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::ServiceName;
use common::*;
use rand::Rng;

const CLIENTS: usize = 4;
const PER_CLIENT: usize = 75;
const KILLS: usize = 3;

#[test]
fn every_acknowledged_request_is_answered_intact_across_sigkills_of_titanic() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    drill(db.as_os_str(), 1, dir.path());
}

#[test]
fn the_same_with_two_titanic_processes_sharing_a_postgresql_store() {
    let Some(database) = pg_server::TestDatabase::new("crash drill on PostgreSQL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    drill(database.url.as_ref(), 2, dir.path());
}

/// `processes` titanic programs on `db`, killed in turn at random points of the load.
fn drill(db: &std::ffi::OsStr, processes: usize, dir: &std::path::Path) {
    let broker = test_broker();
    let echo = EchoWorkers::start(&broker.endpoint, "echo", 3);
    // A short lease, so that a killed process's tries are taken over soon.
    let extra = ["--lease", "2s"];
    let start = |number: usize| {
        let log = dir.join(format!("titanic-{number}.log"));
        TitanicProcess::start_on(&broker.endpoint, db, &log, &extra)
    };
    let mut titanics: Vec<TitanicProcess> = (0..processes).map(start).collect();

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let submitted: Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client_number| {
            let endpoint = broker.endpoint.clone();
            let acknowledged = Arc::clone(&acknowledged);
            let submitted = Arc::clone(&submitted);
            std::thread::spawn(move || {
                let echo: ServiceName = "echo".parse().unwrap();
                let mut client = titanic_client(&endpoint);
                for n in 0..PER_CLIENT {
                    let body = checked_body(&format!("c{client_number}-{n}"), &[n as u8; 100]);
                    let id = client.submit(&echo, &body).unwrap();
                    submitted.lock().unwrap().insert(id, body);
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                client.resends()
            })
        })
        .collect();

    // Kill at random points of the load: after a random number of acknowledgements.
    let total = CLIENTS * PER_CLIENT;
    let mut rng = rand::rng();
    let mut kill_points: Vec<usize> = (0..KILLS)
        .map(|_| rng.random_range(10..total - 10))
        .collect();
    kill_points.sort_unstable();
    let patience = Instant::now() + Duration::from_secs(40);
    for (kill, point) in kill_points.into_iter().enumerate() {
        while acknowledged.load(Ordering::Relaxed) < point {
            assert!(Instant::now() < patience, "the load stalled at {point}");
            std::thread::sleep(Duration::from_millis(1));
        }
        let number = kill % processes;
        titanics[number].kill();
        titanics[number] = start(number);
    }
    let resends: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();

    let submitted = submitted.lock().unwrap().clone();
    assert_eq!(submitted.len(), total, "every submission got its own id");
    let mut client = titanic_client(&broker.endpoint);
    for (id, body) in &submitted {
        let reply = client
            .wait_until(id, Some(patience))
            .unwrap_or_else(|error| panic!("{id}: {error}"));
        let reply: Vec<Vec<u8>> = reply.iter().map(|frame| frame.to_vec()).collect();
        assert!(checksum_holds(&reply), "{id}: a corrupted reply {reply:?}");
        assert_eq!(&reply, body, "{id}: another request's reply");
        client.close(id).unwrap();
    }
    let runs: u32 = echo.runs.lock().unwrap().values().sum();
    eprintln!(
        "{total} acknowledged, {KILLS} kills of {processes} titanic processes, {} bodies run twice \
         by a worker, {runs} runs in all, {resends} titanic.* requests resent by the clients",
        echo.ran_twice()
    );
    drop(titanics);
}
