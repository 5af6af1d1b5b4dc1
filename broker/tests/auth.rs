//! `--auth` over real sockets: PLAIN handshakes checked by the ZAP handler, and what each
//! principal may serve and call decided by the core from the User-Id libzmq puts on messages.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use broker::auth::{weak_hash_for_tests, AuthConfig};
use broker::server::Auth;
use broker::Stats;
use common::*;

/// The auth file of these tests: alice serves echo and db.*, calls echo and mmi.*; bob serves
/// nothing and calls db.* only.
fn auth_file() -> &'static str {
    static FILE: OnceLock<String> = OnceLock::new();
    FILE.get_or_init(|| {
        // Real hashes cost tens of milliseconds per handshake, ten times that in a debug build;
        // these cost almost nothing, and are checked the same way.
        let alice = weak_hash_for_tests(b"alice-pw");
        let bob = weak_hash_for_tests(b"bob-pw");
        format!(
            "[[principal]]\nname = \"alice\"\npassword_hash = \"{alice}\"\n\
             serve = [\"echo\", \"db.*\"]\ncall = [\"echo\", \"mmi.*\"]\n\n\
             [[principal]]\nname = \"bob\"\npassword_hash = \"{bob}\"\ncall = [\"db.*\"]\n"
        )
    })
}

/// The broker of these tests: `--auth` with [`auth_file`] on disk, so that a reload reads it.
struct AuthBroker {
    broker: broker::testing::auth::AuthBroker,
    endpoint: String,
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
}

impl AuthBroker {
    fn start() -> AuthBroker {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.toml");
        std::fs::write(&file, auth_file()).unwrap();
        let auth = Auth {
            config: AuthConfig::load(&file).unwrap(),
            file: Some(file.clone()),
            curve: None,
        };
        let broker = broker::testing::auth::AuthBroker::with_auth(auth, fast_heartbeats(50));
        AuthBroker {
            endpoint: broker.endpoint.clone(),
            broker,
            _dir: dir,
            file,
        }
    }

    fn connect(&self, identity: &str, user: &str, password: &str) -> Peer {
        Peer::connect_plain(&self.endpoint, identity, Some((user, password)))
    }

    fn stop(self) -> Stats {
        self.broker.stop()
    }
}

#[test]
fn the_right_password_gets_in_and_requests_flow() {
    let broker = AuthBroker::start();
    let worker = broker.connect("W1", "alice", "alice-pw");
    assert!(worker.handshake());
    worker.send(&[b"", b"MDPW01", b"\x01", b"echo"]);
    let client = broker.connect("C1", "alice", "alice-pw");
    assert!(client.handshake());
    wait_for_mmi(&client, "echo", b"200");
    request(&client, "echo", b"hi");
    let delivered = worker.recv_skipping_heartbeats();
    assert_eq!(delivered[3], b"C1");
    worker.send(&[b"", b"MDPW01", b"\x03", b"C1", b"", b"hi back"]);
    assert_eq!(
        client.recv(),
        frames(&[b"", b"MDPC01", b"echo", b"hi back"])
    );
    let stats = broker.stop();
    assert_eq!(stats.replies_forwarded, 1);
    assert_eq!(stats.requests_refused_unauthorized, 0);
}

#[test]
fn a_wrong_password_an_unknown_user_and_no_credentials_are_refused_before_the_core() {
    let broker = AuthBroker::start();
    let wrong = broker.connect("WRONG", "alice", "bob-pw");
    let unknown = broker.connect("UNKNOWN", "mallory", "alice-pw");
    let anonymous = Peer::connect_plain(&broker.endpoint, "ANON", None);
    for peer in [&wrong, &unknown, &anonymous] {
        // Queued before the handshake if it is still going on (libzmq never sends it to a
        // broker that refused it); if the handshake has already failed there is nothing to queue
        // into, and a blocking send would wait for ever (it hung once, for 11 minutes).
        peer.try_send(&[b"", b"MDPC01", b"echo", b"x"]);
        peer.try_send(&[b"", b"MDPW01", b"\x01", b"echo"]);
    }
    assert!(!wrong.handshake(), "a wrong password got in");
    assert!(!unknown.handshake(), "an unknown user got in");
    assert!(!anonymous.handshake(), "a peer without credentials got in");
    let stats = broker.stop();
    assert_eq!(stats.requests_received, 0, "{stats}");
    assert_eq!(stats.workers_registered, 0, "{stats}");
    assert_eq!(stats.malformed_messages, 0, "{stats}");
}

#[test]
fn a_worker_may_not_register_for_a_service_it_may_not_serve() {
    let broker = AuthBroker::start();
    // bob may call db.* but serve nothing.
    let rogue = broker.connect("ROGUE", "bob", "bob-pw");
    assert!(rogue.handshake());
    rogue.send(&[b"", b"MDPW01", b"\x01", b"db.read"]);
    assert_eq!(rogue.recv(), disconnect());
    // bob's request for db.read waits for a real worker: the rogue never got it.
    let client = broker.connect("C1", "bob", "bob-pw");
    request(&client, "db.read", b"q");
    let worker = broker.connect("W1", "alice", "alice-pw");
    worker.send(&[b"", b"MDPW01", b"\x01", b"db.read"]);
    let delivered = worker.recv_skipping_heartbeats();
    assert_eq!(&delivered[3..], &frames(&[b"C1", b"", b"q"])[..]);
    assert_eq!(rogue.recv_within(Duration::from_millis(100)), None);
    let stats = broker.stop();
    assert_eq!(stats.workers_refused_unauthorized, 1);
    assert_eq!(stats.workers_registered, 1);
}

#[test]
fn a_client_may_not_call_a_service_it_may_not_call_nor_mmi_without_it() {
    let broker = AuthBroker::start();
    let worker = broker.connect("W1", "alice", "alice-pw");
    worker.send(&[b"", b"MDPW01", b"\x01", b"echo"]);
    let alice = broker.connect("ALICE", "alice", "alice-pw");
    wait_for_mmi(&alice, "echo", b"200");
    // bob may call db.* only: echo and mmi.service are dropped, db.read is let through.
    let bob = broker.connect("BOB", "bob", "bob-pw");
    request(&bob, "echo", b"not for bob");
    request(&bob, "mmi.service", b"echo");
    request(&bob, "db.read", b"q");
    let alice_db = broker.connect("W2", "alice", "alice-pw");
    alice_db.send(&[b"", b"MDPW01", b"\x01", b"db.read"]);
    // One connection is ordered: when db.read arrives, the two before it were handled.
    assert_eq!(alice_db.recv_skipping_heartbeats()[3], b"BOB");
    assert_eq!(bob.recv_within(Duration::from_millis(100)), None);
    let stats = broker.stop();
    assert_eq!(stats.requests_refused_unauthorized, 2);
    assert_eq!(
        stats.requests_dispatched, 1,
        "echo's worker got nothing: {stats}"
    );
}

#[test]
fn a_reload_swaps_passwords_and_rules_and_a_broken_file_keeps_the_old_ones() {
    let broker = AuthBroker::start();
    let carol = weak_hash_for_tests(b"carol-pw");
    // carol joins; bob leaves.
    let alice_only = auth_file().split("\n\n").next().unwrap().to_string();
    std::fs::write(
        &broker.file,
        format!(
            "{alice_only}\n\n[[principal]]\nname = \"carol\"\npassword_hash = \"{carol}\"\n\
             call = [\"mmi.*\"]\n"
        ),
    )
    .unwrap();
    let keep_awake = broker.connect("ALICE", "alice", "alice-pw");
    assert!(keep_awake.handshake());
    broker.broker.reload();
    // The reload happens when the loop next wakes: this request wakes it, and is then checked
    // under the new rules (alice may still call mmi.*).
    wait_for_mmi(&keep_awake, "echo", b"404");
    let carol_peer = broker.connect("CAROL", "carol", "carol-pw");
    assert!(carol_peer.handshake(), "the new principal cannot log in");
    wait_for_mmi(&carol_peer, "echo", b"404");
    let bob = broker.connect("BOB", "bob", "bob-pw");
    assert!(!bob.handshake(), "the removed principal still logs in");

    // A file that no longer parses changes nothing.
    std::fs::write(&broker.file, "[[principal]]\nname = \n").unwrap();
    broker.broker.reload();
    wait_for_mmi(&keep_awake, "echo", b"404");
    let carol_again = broker.connect("CAROL2", "carol", "carol-pw");
    assert!(carol_again.handshake(), "a broken file took the rules away");
    broker.stop();
}
