//! The ZAP handler: a thread of the broker that answers libzmq's authentication requests
//! (rfc.zeromq.org spec 27) for `broker --auth`.
//!
//! libzmq asks it about every handshake on a socket with a security mechanism, over a REP socket
//! bound to `inproc://zeromq.zap.01` in the same context. It must be bound before the broker's
//! ROUTER binds anything: a PLAIN server with no handler to ask lets everyone in. A request is
//! `"1.0", request id, domain, address, routing id, mechanism, credentials...`; the reply is
//! `"1.0", request id, status code, status text, user id, metadata`. The user id is the
//! principal's name: libzmq puts it on every message of that connection (the `User-Id`
//! property), which is how the sans-IO core learns who sent what.
//!
//! PLAIN: the credentials are a name and a password, checked against the argon2 hash in the auth
//! file (each check costs one argon2 hash, tens of milliseconds). CURVE: the credential is the
//! client's public key (32 bytes; libzmq has already checked that the client holds its secret
//! half), looked up among the auth file's `curve_public_key`s; it costs a map look-up. NULL is
//! refused: a broker with `--auth` binds no NULL endpoint a peer can reach.
//!
//! Handshakes must not be a way to exhaust the broker: a verdict already reached for the same
//! name, password and hash is reused without hashing again (a [`Guard`] keeps them, under a keyed
//! digest, never the password itself), and an address with [`MAX_FAILURES`] failed logins within
//! [`FAILURE_WINDOW`] is refused without hashing until the window has passed, except for
//! credentials already found good (they cost no hash, and a flood from behind the same NAT must
//! not lock out the clients that logged in before).
//!
//! The credentials can be swapped while it runs ([`Zap::set`], on SIGHUP). Refusals and
//! successes are logged at most once a second each, with a count, since any peer can cause them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use zsocket::limit::LogLimit;
use zsocket::ResultExt;

use crate::auth::{self, AuthConfig};

/// The endpoint libzmq sends ZAP requests to (spec 27).
pub const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// How often the handler looks at its stop flag while no request comes.
const POLL: Duration = Duration::from_millis(100);

/// Failed logins from one address that make it wait ([`FAILURE_WINDOW`]).
pub const MAX_FAILURES: u32 = 5;
/// How long the failures of one address are remembered.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// Most verdicts or addresses remembered; past it the memory starts again empty.
const MAX_REMEMBERED: usize = 10_000;

/// Verdicts already reached, and failed logins per address; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Guard {
    keys: std::collections::hash_map::RandomState,
    verdicts: HashMap<u64, bool>,
    failures: HashMap<Vec<u8>, (u32, Instant)>,
}

impl Guard {
    /// The verdict already reached for these credentials, if any (no hashing).
    fn remembered(&self, hash: &str, user: &[u8], password: &[u8]) -> Option<bool> {
        use std::hash::BuildHasher;
        let key = self.keys.hash_one((hash, user, password));
        self.verdicts.get(&key).copied()
    }

    /// True if `password` matches `hash`, from memory when this was checked before.
    fn verify(&mut self, hash: &str, user: &[u8], password: &[u8]) -> bool {
        use std::hash::BuildHasher;
        if let Some(verdict) = self.remembered(hash, user, password) {
            return verdict;
        }
        let key = self.keys.hash_one((hash, user, password));
        let verdict = auth::verify_password(hash, password);
        if self.verdicts.len() >= MAX_REMEMBERED {
            self.verdicts.clear();
        }
        self.verdicts.insert(key, verdict);
        verdict
    }

    /// True if `address` failed too often lately to be heard now.
    fn blocked(&mut self, address: &[u8], now: Instant) -> bool {
        match self.failures.get(address) {
            Some(&(_, since)) if now >= since + FAILURE_WINDOW => {
                self.failures.remove(address);
                false
            }
            Some(&(count, _)) => count >= MAX_FAILURES,
            None => false,
        }
    }

    fn failed(&mut self, address: &[u8], now: Instant) {
        if self.failures.len() >= MAX_REMEMBERED && !self.failures.contains_key(address) {
            self.failures.clear();
        }
        self.failures.entry(address.to_vec()).or_insert((0, now)).0 += 1;
    }
}

/// What the handler checks credentials against.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Principal name to argon2 PHC hash.
    pub password_hashes: HashMap<String, String>,
    /// CURVE public key (32 bytes) to principal name.
    pub curve_keys: HashMap<Vec<u8>, String>,
}

impl From<&AuthConfig> for Credentials {
    fn from(config: &AuthConfig) -> Credentials {
        Credentials {
            password_hashes: config.password_hashes.clone(),
            curve_keys: config.curve_keys.clone(),
        }
    }
}

/// Why the handler could not start.
#[derive(Debug, thiserror::Error)]
pub enum ZapError {
    /// The handler's socket could not be set up.
    #[error(transparent)]
    Socket(#[from] zsocket::Error),
    /// The handler's thread could not be started.
    #[error("cannot start the ZAP handler's thread: {0}")]
    Thread(std::io::Error),
}

/// The running handler; dropping it stops the thread (within a tenth of a second).
#[derive(Debug)]
pub struct Zap {
    credentials: Arc<RwLock<Credentials>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Zap {
    /// Binds the handler's socket in `context` and starts its thread.
    pub fn spawn(context: &zmq::Context, credentials: Credentials) -> Result<Zap, ZapError> {
        let socket = context
            .socket(zmq::REP)
            .doing("create the ZAP handler's socket")?;
        socket.set_linger(0).doing("set ZMQ_LINGER")?;
        socket
            .set_rcvtimeo(POLL.as_millis() as i32)
            .doing("set ZMQ_RCVTIMEO")?;
        socket
            .bind(ZAP_ENDPOINT)
            .doing("bind the ZAP handler to inproc://zeromq.zap.01")?;
        let credentials = Arc::new(RwLock::new(credentials));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let credentials = Arc::clone(&credentials);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("zap".into())
                .spawn(move || serve(&socket, &credentials, &stop))
                .map_err(ZapError::Thread)?
        };
        Ok(Zap {
            credentials,
            stop,
            thread: Some(thread),
        })
    }

    /// Checks later handshakes against `credentials` (connections already made stay).
    pub fn set(&self, credentials: Credentials) {
        match self.credentials.write() {
            Ok(mut held) => *held = credentials,
            Err(poisoned) => *poisoned.into_inner() = credentials,
        }
    }
}

impl Drop for Zap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(socket: &zmq::Socket, credentials: &RwLock<Credentials>, stop: &AtomicBool) {
    let mut guard = Guard::default();
    let mut refused_lines = LogLimit::default();
    let mut accepted_lines = LogLimit::default();
    while !stop.load(Ordering::Relaxed) {
        let request = match socket.recv_multipart(0) {
            Ok(request) => request,
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => continue,
            Err(error) => {
                warn!("ZAP handler stops: {error}");
                return;
            }
        };
        let held = match credentials.read() {
            Ok(held) => held.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let now = Instant::now();
        let reply = answer(&request, &held, &mut guard, now);
        let address = request
            .get(3)
            .map(|frame| String::from_utf8_lossy(frame).into_owned())
            .unwrap_or_default();
        match &reply.verdict {
            Verdict::Accepted(user) => match accepted_lines.allow(now) {
                Some(0) => info!("authenticated {user} from {address}"),
                Some(held) => info!(
                    "authenticated {user} from {address} ({held} more authentications in the last second)"
                ),
                None => debug!("authenticated {user} from {address}"),
            },
            Verdict::Refused(why) => match refused_lines.allow(now) {
                Some(0) => warn!("refused a handshake from {address}: {why}"),
                Some(held) => warn!(
                    "refused a handshake from {address}: {why} ({held} more refusals in the last second)"
                ),
                None => debug!("refused a handshake from {address}: {why}"),
            },
        }
        if let Err(error) = socket.send_multipart(reply.frames, 0) {
            warn!("ZAP handler cannot reply: {error}");
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Accepted(String),
    Refused(String),
}

#[derive(Debug)]
struct Reply {
    frames: Vec<Vec<u8>>,
    verdict: Verdict,
}

/// The reply to one ZAP request: pure, apart from the argon2 check.
fn answer(
    request: &[Vec<u8>],
    credentials: &Credentials,
    guard: &mut Guard,
    now: Instant,
) -> Reply {
    let id = request.get(1).cloned().unwrap_or_default();
    let reply = |code: &str, text: &str, user: &str, verdict| Reply {
        frames: vec![
            b"1.0".to_vec(),
            id.clone(),
            code.as_bytes().to_vec(),
            text.as_bytes().to_vec(),
            user.as_bytes().to_vec(),
            Vec::new(),
        ],
        verdict,
    };
    if request.len() < 6 || request[0] != b"1.0" {
        return reply(
            "500",
            "malformed ZAP request",
            "",
            Verdict::Refused("malformed ZAP request".into()),
        );
    }
    let mechanism = &request[5][..];
    match mechanism {
        b"PLAIN" => {
            let (Some(user), Some(password)) = (request.get(6), request.get(7)) else {
                return reply(
                    "400",
                    "no credentials",
                    "",
                    Verdict::Refused("PLAIN without credentials".into()),
                );
            };
            let name = String::from_utf8_lossy(user).into_owned();
            let address = &request[3];
            let hash = std::str::from_utf8(user)
                .ok()
                .and_then(|user| credentials.password_hashes.get(user));
            // Credentials already found good pass even from an address that is failing a lot
            // (a flood from behind the same NAT must not lock out the clients that logged in
            // before): it costs no hash. Only new credentials wait out the window.
            let known_good =
                hash.is_some_and(|hash| guard.remembered(hash, user, password) == Some(true));
            if !known_good && guard.blocked(address, now) {
                return reply(
                    "400",
                    "too many failed logins",
                    "",
                    Verdict::Refused(format!(
                        "more than {MAX_FAILURES} failed logins within {FAILURE_WINDOW:?}; not checked"
                    )),
                );
            }
            let verdict = hash.map(|hash| guard.verify(hash, user, password));
            if verdict != Some(true) {
                guard.failed(address, now);
            }
            match verdict {
                Some(true) => reply("200", "OK", &name, Verdict::Accepted(name.clone())),
                Some(false) => reply(
                    "400",
                    "invalid username or password",
                    "",
                    Verdict::Refused(format!("wrong password for {name:?}")),
                ),
                None => reply(
                    "400",
                    "invalid username or password",
                    "",
                    Verdict::Refused(format!("unknown user {name:?}")),
                ),
            }
        }
        b"CURVE" => {
            let Some(key) = request.get(6).filter(|key| key.len() == 32) else {
                return reply(
                    "400",
                    "no client key",
                    "",
                    Verdict::Refused("CURVE without a 32-byte client key".into()),
                );
            };
            match credentials.curve_keys.get(key) {
                Some(name) => reply("200", "OK", name, Verdict::Accepted(name.clone())),
                None => reply(
                    "400",
                    "unknown client key",
                    "",
                    Verdict::Refused(format!(
                        "unknown CURVE key {}",
                        zmq::z85_encode(key).unwrap_or_default()
                    )),
                ),
            }
        }
        other => {
            let other = String::from_utf8_lossy(other).into_owned();
            reply(
                "400",
                "mechanism not allowed",
                "",
                Verdict::Refused(format!("mechanism {other} is not allowed")),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mechanism: &str, credentials: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut frames: Vec<Vec<u8>> = vec![
            b"1.0".to_vec(),
            b"7".to_vec(),
            b"mdp".to_vec(),
            b"127.0.0.1".to_vec(),
            Vec::new(),
            mechanism.as_bytes().to_vec(),
        ];
        frames.extend(credentials.iter().map(|c| c.to_vec()));
        frames
    }

    fn credentials() -> Credentials {
        let mut password_hashes = HashMap::new();
        password_hashes.insert("alice".to_string(), auth::weak_hash_for_tests(b"right"));
        let mut curve_keys = HashMap::new();
        curve_keys.insert(vec![7u8; 32], "billing".to_string());
        Credentials {
            password_hashes,
            curve_keys,
        }
    }

    #[test]
    fn curve_accepts_a_known_key_as_its_principal_and_refuses_others() {
        let credentials = credentials();
        let known = answer(
            &request("CURVE", &[&[7u8; 32]]),
            &credentials,
            &mut Guard::default(),
            Instant::now(),
        );
        assert_eq!(known.verdict, Verdict::Accepted("billing".into()));
        assert_eq!(known.frames[2], b"200");
        assert_eq!(known.frames[4], b"billing", "the principal is the User-Id");
        for key in [&[8u8; 32][..], &[7u8; 31][..]] {
            let reply = answer(
                &request("CURVE", &[key]),
                &credentials,
                &mut Guard::default(),
                Instant::now(),
            );
            assert_eq!(reply.frames[2], b"400", "{:?}", reply.verdict);
            assert_eq!(reply.frames[4], b"");
        }
        let none = answer(
            &request("CURVE", &[]),
            &credentials,
            &mut Guard::default(),
            Instant::now(),
        );
        assert_eq!(none.frames[2], b"400");
    }

    #[test]
    fn plain_accepts_the_right_password_with_the_principal_as_user_id() {
        let reply = answer(
            &request("PLAIN", &[b"alice", b"right"]),
            &credentials(),
            &mut Guard::default(),
            Instant::now(),
        );
        assert_eq!(reply.verdict, Verdict::Accepted("alice".into()));
        assert_eq!(
            reply.frames,
            [&b"1.0"[..], b"7", b"200", b"OK", b"alice", b""]
        );
    }

    #[test]
    fn plain_refuses_a_wrong_password_an_unknown_user_and_other_mechanisms() {
        let credentials = credentials();
        for (request, why) in [
            (request("PLAIN", &[b"alice", b"wrong"]), "wrong password"),
            (request("PLAIN", &[b"mallory", b"right"]), "unknown user"),
            (request("PLAIN", &[b"alice"]), "without credentials"),
            (request("NULL", &[]), "NULL"),
            (request("CURVE", &[&[0u8; 32]]), "unknown CURVE key"),
        ] {
            let reply = answer(
                &request,
                &credentials,
                &mut Guard::default(),
                Instant::now(),
            );
            assert!(
                matches!(&reply.verdict, Verdict::Refused(text) if text.contains(why)),
                "{:?}",
                reply.verdict
            );
            assert_eq!(reply.frames[2], b"400");
            assert_eq!(reply.frames[4], b"", "no user id for a refusal");
        }
        let malformed = answer(
            &[b"2.0".to_vec()],
            &credentials,
            &mut Guard::default(),
            Instant::now(),
        );
        assert_eq!(malformed.frames[2], b"500");
    }

    #[test]
    fn an_address_that_fails_too_often_waits_and_good_verdicts_are_remembered() {
        let credentials = credentials();
        let mut guard = Guard::default();
        let t0 = Instant::now();
        let wrong = request("PLAIN", &[b"alice", b"wrong"]);
        let right = request("PLAIN", &[b"alice", b"right"]);
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                answer(&wrong, &credentials, &mut guard, t0).frames[2],
                b"400"
            );
        }
        // Now even the right password, never checked before, waits, unchecked, until the window
        // has passed.
        let blocked = answer(&right, &credentials, &mut guard, t0);
        assert!(matches!(&blocked.verdict, Verdict::Refused(why) if why.contains("not checked")));
        let later = t0 + FAILURE_WINDOW;
        let reply = answer(&right, &credentials, &mut guard, later);
        assert_eq!(reply.verdict, Verdict::Accepted("alice".into()));
        // Each verdict was reached once and is remembered (under a digest, with its hash string,
        // so a new hash on reload is checked afresh).
        assert_eq!(guard.verdicts.len(), 2, "one wrong, one right");
        // Another address is not held back by this one's failures.
        let mut elsewhere = right.clone();
        elsewhere[3] = b"10.0.0.9".to_vec();
        for _ in 0..MAX_FAILURES {
            answer(&wrong, &credentials, &mut guard, later);
        }
        let reply = answer(&elsewhere, &credentials, &mut guard, later);
        assert_eq!(reply.verdict, Verdict::Accepted("alice".into()));
    }

    #[test]
    fn credentials_found_good_before_pass_from_an_address_that_fails_a_lot() {
        let credentials = credentials();
        let mut guard = Guard::default();
        let t0 = Instant::now();
        let right = request("PLAIN", &[b"alice", b"right"]);
        assert_eq!(
            answer(&right, &credentials, &mut guard, t0).verdict,
            Verdict::Accepted("alice".into())
        );
        // A flood of wrong passwords from the same address (a NAT) ...
        for n in 0..3 * MAX_FAILURES {
            let wrong = request("PLAIN", &[b"alice", format!("wrong {n}").as_bytes()]);
            answer(&wrong, &credentials, &mut guard, t0);
        }
        // ... holds back new credentials, unchecked, but not the ones already found good.
        let new = request("PLAIN", &[b"alice", b"never tried"]);
        let blocked = answer(&new, &credentials, &mut guard, t0);
        assert!(matches!(&blocked.verdict, Verdict::Refused(why) if why.contains("not checked")));
        assert_eq!(
            answer(&right, &credentials, &mut guard, t0).verdict,
            Verdict::Accepted("alice".into())
        );
    }
}
