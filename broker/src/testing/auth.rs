//! Test support for the tests that log in to a broker with `--auth` (the broker's, the client's,
//! the worker's and Titanic's): a [`AuthBroker`] running in a thread on a free loopback port,
//! the password hashes of its auth files ([`password_hash`], cheap and computed once per
//! password), a principal's lines of an auth file ([`principal`]), secret files of mode 600
//! ([`secret_file`]), as the clients' and workers' `--password-file` must be, and CURVE key
//! files ([`key_file`]).
//!
//! Test code: these functions panic, with a message that says what went wrong, where a test
//! would fail.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use zsocket::curve::KeyPair;

use super::TestBroker;
use crate::auth::{weak_hash_for_tests, AuthConfig};
use crate::core::Config;
use crate::server::Auth;

/// A broker with `--auth` in a thread, bound to one free loopback port: `tcp://` (PLAIN) or,
/// with a CURVE key pair, `curve+tcp://`. It is a [`TestBroker`], started with these.
pub type AuthBroker = TestBroker;

impl TestBroker {
    /// PLAIN on `tcp://`, with the rules of the auth file `text`.
    pub fn plain(text: &str, config: Config) -> TestBroker {
        TestBroker::with_auth(
            Auth {
                config: parse(text),
                file: None,
                curve: None,
            },
            config,
        )
    }

    /// CURVE on `curve+tcp://` with the broker's key pair `keys`, and the rules of the auth file
    /// `text`.
    pub fn curve(text: &str, keys: KeyPair, config: Config) -> TestBroker {
        TestBroker::with_auth(
            Auth {
                config: parse(text),
                file: None,
                curve: Some(keys),
            },
            config,
        )
    }

    /// With `auth` as it is (an auth file to read again on [`TestBroker::reload`], say): CURVE
    /// if it has a key pair, else PLAIN.
    pub fn with_auth(auth: Auth, config: Config) -> TestBroker {
        let bind = if auth.curve.is_some() {
            "curve+tcp://127.0.0.1:*"
        } else {
            "tcp://127.0.0.1:*"
        };
        TestBroker::bind(bind, config, Some(auth))
    }
}

fn parse(text: &str) -> AuthConfig {
    AuthConfig::parse(text).unwrap_or_else(|error| panic!("a bad auth file ({error}):\n{text}"))
}

/// The hash of `password` for an auth file: cheap argon2 parameters, checked the same way as
/// real ones ([`weak_hash_for_tests`]); computed once per password in a test binary.
pub fn password_hash(password: &str) -> String {
    static HASHES: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let mut hashes = HASHES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    hashes
        .entry(password.to_owned())
        .or_insert_with(|| weak_hash_for_tests(password.as_bytes()))
        .clone()
}

/// One `[[principal]]` of an auth file logging in by PLAIN as `name` with `password`, allowed to
/// serve the services of `serve` and to call those of `call` (patterns, as the file has them).
pub fn principal(name: &str, password: &str, serve: &[&str], call: &[&str]) -> String {
    let list = |patterns: &[&str]| {
        patterns
            .iter()
            .map(|pattern| format!("\"{pattern}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[[principal]]\nname = \"{name}\"\npassword_hash = \"{}\"\n\
         serve = [{}]\ncall = [{}]\n",
        password_hash(password),
        list(serve),
        list(call)
    )
}

/// A new CURVE key pair written to `dir/name` (and `name.pub`), as `broker keygen` writes one,
/// and read back from there: its path and the pair.
pub fn key_file(dir: &Path, name: &str) -> (PathBuf, KeyPair) {
    let path = dir.join(name);
    KeyPair::generate()
        .and_then(|keys| keys.write(&path))
        .unwrap_or_else(|error| panic!("write a key pair to {path:?}: {error}"));
    let keys = KeyPair::read(&path).unwrap_or_else(|error| panic!("read {path:?}: {error}"));
    (path, keys)
}

/// Writes `text` to `dir/name` with mode 600 (a password file that others may read is refused)
/// and returns its path.
pub fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|error| panic!("write {path:?}: {error}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|error| panic!("chmod 600 {path:?}: {error}"));
    path
}
