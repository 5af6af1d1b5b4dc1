//! The demo as a library call, over real ipc sockets, each test in its own temporary directory.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use lbbroker::{run_demo, stop_pair, DemoConfig, DemoReport, Endpoints, Error};
use tempfile::TempDir;

/// The gist's run (10 clients, 3 processors) with 1 ms units, in `dir`.
fn quick_demo(dir: &TempDir, seed: Option<u64>) -> DemoConfig {
    DemoConfig {
        unit: Duration::from_millis(1),
        endpoints: Endpoints::in_dir(dir.path()),
        seed,
        ..DemoConfig::default()
    }
}

/// Runs the demo with a stop that nothing raises before the run ends.
fn demo(config: &DemoConfig, out: &mut Vec<u8>) -> Result<DemoReport, Error> {
    let (stop, stopped) = stop_pair().unwrap();
    run_demo(config, out, &stop, &stopped)
}

fn run(config: &DemoConfig) -> (DemoReport, Vec<String>) {
    let mut out = Vec::new();
    let report = demo(config, &mut out).unwrap();
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (report, lines)
}

fn files_in(dir: &TempDir) -> Vec<String> {
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn each_client_gets_exactly_one_reply_and_every_processor_gets_work() {
    let dir = TempDir::new().unwrap();
    let (report, lines) = run(&quick_demo(&dir, None));

    // One reply per client, CLIENT-0..9, none twice.
    let clients: Vec<&str> = report.replies.iter().map(|r| r.client.as_str()).collect();
    let unique: BTreeSet<&str> = clients.iter().copied().collect();
    assert_eq!(clients.len(), 10, "{lines:#?}");
    let expected: BTreeSet<String> = (0..10).map(|n| format!("CLIENT-{n}")).collect();
    assert_eq!(
        unique,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );

    // One request per client, and every processor took at least one.
    assert_eq!(report.requests.len(), 10);
    let processors: BTreeSet<&str> = report
        .requests
        .iter()
        .map(|r| r.processor.as_str())
        .collect();
    assert_eq!(
        processors,
        BTreeSet::from(["PROCESSOR-0", "PROCESSOR-1", "PROCESSOR-2"])
    );

    // Each reply names the processor that took that client's request.
    let taken_by: BTreeMap<&str, &str> = report
        .requests
        .iter()
        .map(|r| (r.client.as_str(), r.processor.as_str()))
        .collect();
    for reply in &report.replies {
        assert_eq!(
            reply.reply,
            format!("OK from {}", taken_by[reply.client.as_str()])
        );
    }

    // The output is exactly the 20 lines, in the gist's format.
    assert_eq!(lines.len(), 20);
    for line in &lines {
        let rest = line.get(11..).unwrap_or_default();
        assert!(
            rest.starts_with(": REQ ") || rest.starts_with(": REP "),
            "not a gist line: {line:?}"
        );
    }
    for request in &report.requests {
        assert!(lines.contains(&request.to_string()));
    }
    for reply in &report.replies {
        assert!(lines.contains(&reply.to_string()));
    }
}

#[test]
fn a_reply_line_never_comes_before_its_request_line() {
    let dir = TempDir::new().unwrap();
    let (_, lines) = run(&quick_demo(&dir, None));
    for (index, line) in lines.iter().enumerate() {
        if let Some((client, _)) = line.trim_start().split_once(": REP ") {
            let request_seen = lines[..index]
                .iter()
                .any(|earlier| earlier.ends_with(&format!(" from {client}")));
            assert!(request_seen, "{line:?} came before its request: {lines:#?}");
        }
    }
}

#[test]
fn the_demo_removes_its_ipc_files() {
    let dir = TempDir::new().unwrap();
    run(&quick_demo(&dir, None));
    assert_eq!(files_in(&dir), Vec::<String>::new());
}

#[test]
fn two_demos_in_different_directories_do_not_collide() {
    let start_together = Arc::new(Barrier::new(2));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let start_together = Arc::clone(&start_together);
            thread::spawn(move || {
                let dir = TempDir::new().unwrap();
                let config = DemoConfig {
                    // Long enough units that the two runs overlap.
                    unit: Duration::from_millis(5),
                    ..quick_demo(&dir, None)
                };
                start_together.wait();
                let (report, _) = run(&config);
                (report, files_in(&dir))
            })
        })
        .collect();
    for handle in runs {
        let (report, files_left) = handle.join().unwrap();
        assert_eq!(report.replies.len(), 10);
        assert_eq!(report.requests.len(), 10);
        assert!(files_left.is_empty(), "{files_left:?}");
    }
}

#[test]
fn the_same_seed_gives_every_client_the_same_load() {
    let loads_of = |report: &DemoReport| -> BTreeMap<String, String> {
        report
            .requests
            .iter()
            .map(|r| (r.client.clone(), r.load.clone()))
            .collect()
    };
    let first_dir = TempDir::new().unwrap();
    let second_dir = TempDir::new().unwrap();
    let (first, _) = run(&quick_demo(&first_dir, Some(42)));
    let (second, _) = run(&quick_demo(&second_dir, Some(42)));
    assert_eq!(first.seed, 42);
    assert_eq!(loads_of(&first), loads_of(&second));
    assert!(loads_of(&first)
        .values()
        .all(|load| ["1", "2", "3"].contains(&load.as_str())));
}

#[test]
fn a_demo_over_tcp_with_ports_picked_by_the_system() {
    let config = DemoConfig {
        unit: Duration::from_millis(1),
        endpoints: Endpoints {
            frontend: "tcp://127.0.0.1:*".to_owned(),
            backend: "tcp://127.0.0.1:*".to_owned(),
        },
        clients: 4,
        processors: 2,
        seed: None,
        http: None,
    };
    let (report, _) = run(&config);
    assert_eq!(report.replies.len(), 4);
}

#[test]
fn an_endpoint_that_cannot_be_bound_is_an_error_and_prints_nothing() {
    let dir = TempDir::new().unwrap();
    let config = DemoConfig {
        endpoints: Endpoints {
            frontend: format!("ipc://{}/no/such/dir/frontend.ipc", dir.path().display()),
            backend: format!("ipc://{}/backend.ipc", dir.path().display()),
        },
        ..quick_demo(&dir, None)
    };
    let mut out = Vec::new();
    let error = demo(&config, &mut out).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Bind {
                socket: "frontend ROUTER",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(out.is_empty());
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

#[test]
fn the_backend_failing_to_bind_removes_the_frontend_file_again() {
    let dir = TempDir::new().unwrap();
    let config = DemoConfig {
        endpoints: Endpoints {
            frontend: format!("ipc://{}/frontend.ipc", dir.path().display()),
            backend: "tcp://no-such-interface-here:5555".to_owned(),
        },
        ..quick_demo(&dir, None)
    };
    let error = demo(&config, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Bind {
                socket: "backend ROUTER",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

#[test]
fn zero_clients_is_refused_before_anything_starts() {
    let dir = TempDir::new().unwrap();
    let config = DemoConfig {
        clients: 0,
        ..quick_demo(&dir, None)
    };
    let error = demo(&config, &mut Vec::new()).unwrap_err();
    assert!(matches!(
        error,
        Error::InvalidSetting {
            setting: "clients",
            ..
        }
    ));
    assert!(files_in(&dir).is_empty());
}

#[test]
fn an_interrupt_stops_every_thread_and_reports_how_far_it_got() {
    let dir = TempDir::new().unwrap();
    let config = DemoConfig {
        // Units so long that no client could finish before the interrupt.
        unit: Duration::from_secs(600),
        ..quick_demo(&dir, None)
    };
    let (interrupt_handle, interrupt) = stop_pair().unwrap();
    interrupt_handle.stop();
    let error = run_demo(&config, &mut Vec::new(), &interrupt_handle, &interrupt).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Interrupted {
                replies: 0,
                clients: 10
            }
        ),
        "{error:?}"
    );
    assert!(files_in(&dir).is_empty());
}
