//! Titanic through a broker with `--auth` (issue 11 item 3, issue 13 item 4): the `titanic`
//! program logs in with `--user`/`--password-file` as one principal for its workers
//! (`titanic.*`) and its dispatch (`echo`), and a request goes through it to an echo worker and
//! back. Without the flags the broker refuses Titanic's handshakes and nothing is stored.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use broker::auth::{weak_hash_for_tests, AuthConfig};
use broker::server::{Auth, SocketOptions};
use broker::{Config, Server};
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
    let file = format!(
        "[[principal]]\nname = \"alice\"\npassword_hash = \"{}\"\n\
         serve = [\"echo\", \"titanic.*\"]\ncall = [\"echo\", \"titanic.*\", \"mmi.*\"]\n",
        weak_hash_for_tests(b"alice-pw")
    );
    let mut server = Server::bind_with_auth(
        &["tcp://127.0.0.1:*".to_string()],
        Config {
            heartbeat_interval: Duration::from_millis(HEARTBEAT_MS),
            ..Config::default()
        },
        &SocketOptions::default(),
        Some(Auth {
            config: AuthConfig::parse(&file).unwrap(),
            file: None,
            curve: None,
        }),
    )
    .unwrap();
    let endpoint = server.endpoints()[0].clone();
    let stop = server.stop_handle();
    let broker = std::thread::spawn(move || server.run().unwrap());

    let mut echo = Worker::builder(ServiceName::new(b"echo").unwrap())
        .endpoint(&endpoint)
        .config(worker_config())
        .credentials(alice())
        .build()
        .unwrap();
    let echo_stop = echo.stop_handle();
    let echo_thread = std::thread::spawn(move || echo.serve(|body| body).unwrap());

    let password = dir.path().join("password");
    std::fs::write(&password, "alice-pw\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
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
    stop.stop();
    broker.join().unwrap();
}
