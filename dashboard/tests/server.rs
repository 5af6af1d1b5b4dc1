//! The HTTP thread over a real socket: what each path answers, from the latest snapshot.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use dashboard::{Board, Publisher, ServeError, Server, ServiceSnapshot, Snapshot};

/// `GET path` over a fresh connection: the status code, the headers and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

fn serving() -> (Server, Publisher) {
    let board = Arc::new(Board::new("lbbroker"));
    let server = Server::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&board)).unwrap();
    (server, Publisher::new(board, Instant::now()))
}

#[test]
fn every_path_answers_from_the_latest_snapshot() {
    let (server, mut publisher) = serving();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the port the system picked");

    let (status, _, body) = get(addr, "/status");
    assert_eq!(status, 200);
    let before: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(before["sequence"], 0);

    let mut queue = ServiceSnapshot::named("processors");
    queue.set_idle(1, ["PROCESSOR-0".to_owned()]);
    queue.counters.answered = 42;
    publisher.publish(
        Instant::now(),
        Snapshot {
            program: "lbbroker".to_owned(),
            services: vec![Arc::new(queue)].into(),
            ..Snapshot::default()
        },
    );

    let (status, head, body) = get(addr, "/status");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"), "{head}");
    let after: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(after["sequence"], 1);
    assert_eq!(after["services"][0]["idle_workers"][0], "PROCESSOR-0");

    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(
        body.contains("lbbroker_service_requests_answered_total{service=\"processors\"} 42"),
        "{body}"
    );

    let (status, head, body) = get(addr, "/");
    assert_eq!(status, 200);
    assert!(head.contains("text/html"), "{head}");
    assert!(body.contains("<script src=\"/page.js\">"), "{body}");
    let (status, _, body) = get(addr, "/page.js");
    assert_eq!(status, 200);
    assert!(body.contains("fetch(\"/status"), "the page reads /status");
    assert_eq!(get(addr, "/page.css").0, 200);
    assert_eq!(get(addr, "/nothing").0, 404);
}

#[test]
fn an_address_in_use_is_a_bind_error_that_names_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let error = Server::start(addr, Arc::new(Board::new("broker"))).unwrap_err();
    assert!(
        matches!(&error, ServeError::Bind { source, .. }
            if source.kind() == std::io::ErrorKind::AddrInUse),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("cannot serve the dashboard on {addr}")
    );
}
