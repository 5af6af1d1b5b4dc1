//! Titanic through a broker with `--auth` (issue 11 item 3, issue 13 item 4): the `titanic`
//! program logs in with `--user`/`--password-file` as one principal for its workers
//! (`titanic.*`) and its dispatch (`echo`), and a request goes through it to an echo worker and
//! back. Without the flags the broker refuses Titanic's handshakes and nothing is stored.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use broker::testing::auth::{principal, secret_file, AuthBroker};
use broker::Config;
use client::titanic::{TitanicClient, TitanicConfig};
use client::{Client, ClientConfig, ServiceName};
use worker::{Credentials, Worker};

mod common;
use common::*;

fn alice() -> Credentials {
    Credentials::Plain {
        user: "alice".into(),
        password: "alice-pw".into(),
    }
}

#[test]
fn titanic_logs_in_and_a_request_goes_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = principal(
        "alice",
        "alice-pw",
        &["echo", "titanic.*"],
        &["echo", "titanic.*", "mmi.*"],
    );
    let broker = AuthBroker::plain(
        &file,
        Config {
            heartbeat_interval: Duration::from_millis(HEARTBEAT_MS),
            ..Config::default()
        },
    );
    let endpoint = broker.endpoint.clone();

    let mut echo = Worker::builder(ServiceName::new(b"echo").unwrap())
        .endpoint(&endpoint)
        .config(worker_config())
        .credentials(alice())
        .build()
        .unwrap();
    let echo_stop = echo.stop_handle();
    let echo_thread = std::thread::spawn(move || echo.serve(|body| body).unwrap());

    let password = secret_file(dir.path(), "password", "alice-pw\n");
    let titanic = TitanicProcess::start(
        &endpoint,
        &dir.path().join("t.db"),
        &[
            "--user",
            "alice",
            "--password-file",
            password.to_str().unwrap(),
        ],
    );

    let config = ClientConfig {
        timeout: Duration::from_millis(1000),
        retries: 20,
    };
    let client = Client::with_credentials(
        &zmq::Context::new(),
        &[&endpoint],
        config.clone(),
        vec![alice()],
    )
    .unwrap();
    let mut titanic_client = TitanicClient::with_client(
        client,
        TitanicConfig {
            client: config,
            poll_initial: Duration::from_millis(10),
            poll_max: Duration::from_millis(200),
        },
    );
    let id = titanic_client
        .submit(&ServiceName::new(b"echo").unwrap(), &[b"through titanic"])
        .unwrap();
    let reply = titanic_client.wait(&id).unwrap();
    assert_eq!(&reply[0][..], b"through titanic", "{}", titanic.log());

    echo_stop.stop();
    echo_thread.join().unwrap();
    broker.stop();
}
