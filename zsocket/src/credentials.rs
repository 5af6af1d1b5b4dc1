//! What a client or a worker proves to a broker that runs `--auth`: nothing, a PLAIN user name
//! and password (rfc.zeromq.org spec 24), or a CURVE key pair and the broker's public key
//! (spec 26). Loaded once from the programs' flags, and set on each socket before it connects.
//!
//! * [`Credentials`]: one broker's credentials; [`Credentials::apply`] sets them on a socket.
//! * [`CredentialArgs`]: the four flags every program takes (`--user`, `--password-file`,
//!   `--curve-key-file`, `--curve-server-key`), turned into one [`Credentials`] per broker by
//!   [`CredentialArgs::load`], which reads the files and checks every combination.
//! * [`Refusal`]: a handshake the broker refused, read from a socket monitor's event, with a
//!   message that names authentication and what to check.
//!
//! # The files
//!
//! * `--password-file F`: the password is the file's first line (without its line end); the
//!   rest of the file is ignored. A password on the command line would show in `ps` and in shell
//!   histories, so there is no flag for it. The file **must not be readable by others** (the
//!   "other" bits of its mode): `chmod o-rwx F`, or 600. It may be readable by its group, so that
//!   a service account's group can share one file (mode 640), as with other service secrets.
//!   (A CURVE secret key file is stricter, as ssh is with a private key: 600, see
//!   [`crate::curve::KeyPair::read`].) The file is read at start; a changed password needs a
//!   restart of the client or worker.
//! * `--curve-key-file F`: a secret key file as `broker keygen` writes it (see [`crate::curve`]).
//! * `--curve-server-key KEY`: the broker's public key, as its 40 Z85 characters or as the path
//!   of a public key file (`broker.key.pub`).
//!
//! PLAIN sends the password and every message in clear (spec 24): it authenticates on a network
//! where nobody listens, nothing more. CURVE encrypts and authenticates both ends.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::curve::{self, KeyPair, PublicKey};
use crate::monitor::{Event, EventKind};
use crate::{Error as SocketError, ResultExt};

/// The most bytes a PLAIN user name or password may have: each travels in a one-byte length
/// (spec 24, the HELLO command).
pub const PLAIN_MAX: usize = 255;

/// What a client or worker proves to one broker.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// Nothing: the NULL mechanism, for a broker without `--auth`.
    #[default]
    None,
    /// PLAIN: a user name and password, sent in clear.
    Plain {
        /// The principal's name in the broker's auth file.
        user: String,
        /// Its password (the broker's file holds only its hash).
        password: String,
    },
    /// CURVE: our key pair (its public half is the principal in the broker's auth file) and the
    /// broker's public key, which the handshake checks.
    Curve {
        /// Our key pair.
        keys: KeyPair,
        /// The broker's public key.
        server: PublicKey,
    },
}

impl fmt::Debug for Credentials {
    /// Never the password, nor the secret key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("Credentials::None"),
            Credentials::Plain { user, .. } => f
                .debug_struct("Credentials::Plain")
                .field("user", user)
                .field("password", &"(hidden)")
                .finish(),
            Credentials::Curve { keys, server } => f
                .debug_struct("Credentials::Curve")
                .field("public", keys.public())
                .field("server", server)
                .finish(),
        }
    }
}

impl Credentials {
    /// PLAIN credentials, checked: a user name of 1 to 255 bytes (an empty one would make libzmq
    /// fall back to NULL without a word), a password of 1 to 255.
    pub fn plain(user: &str, password: &str) -> Result<Credentials, Error> {
        for (what, value) in [("user name", user), ("password", password)] {
            if value.is_empty() {
                return Err(Error::Empty(what));
            }
            if value.len() > PLAIN_MAX {
                return Err(Error::TooLong {
                    what,
                    bytes: value.len(),
                });
            }
        }
        Ok(Credentials::Plain {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// CURVE credentials; an error that says how to get a CURVE build if this one has none.
    pub fn curve(keys: KeyPair, server: PublicKey) -> Result<Credentials, Error> {
        curve::available()?;
        Ok(Credentials::Curve { keys, server })
    }

    /// The security mechanism: "NULL", "PLAIN" or "CURVE".
    pub fn mechanism(&self) -> &'static str {
        match self {
            Credentials::None => "NULL",
            Credentials::Plain { .. } => "PLAIN",
            Credentials::Curve { .. } => "CURVE",
        }
    }

    /// What a user should check when a broker refuses these credentials.
    pub fn hint(&self) -> &'static str {
        match self {
            Credentials::None => {
                "the broker may require credentials: give --user and --password-file (PLAIN), \
                 or --curve-key-file and --curve-server-key (CURVE)"
            }
            Credentials::Plain { .. } => {
                "check --user and --password-file, and that the broker's endpoint is a PLAIN one"
            }
            Credentials::Curve { .. } => {
                "check --curve-server-key (the broker's public key), that the public key of \
                 --curve-key-file is a principal in the broker's auth file, and that the \
                 broker's endpoint is a CURVE one"
            }
        }
    }

    /// Sets these credentials on `socket`. Call it before `connect`: libzmq fixes a
    /// connection's mechanism when it is made.
    pub fn apply(&self, socket: &zmq::Socket) -> Result<(), Error> {
        match self {
            Credentials::None => Ok(()),
            Credentials::Plain { user, password } => {
                socket
                    .set_plain_username(Some(user))
                    .doing("set ZMQ_PLAIN_USERNAME")?;
                socket
                    .set_plain_password(Some(password))
                    .doing("set ZMQ_PLAIN_PASSWORD")?;
                Ok(())
            }
            Credentials::Curve { keys, server } => Ok(curve::set_client(socket, keys, server)?),
        }
    }

    /// A refusal of these credentials by the broker at `endpoint`, if `event` (from the monitor
    /// of a socket connected there) is a failed handshake; see [`Refusal`].
    ///
    /// A handshake cut off (`HANDSHAKE_FAILED_NO_DETAIL`: a reset, the broker killed halfway) is
    /// a refusal only with CURVE credentials, where a wrong server key shows as nothing else (the
    /// broker cannot open our HELLO and closes the connection). Otherwise it is the network or
    /// a broker going away, and libzmq's reconnecting is what we want: taking it for a refusal
    /// failed requests while a crash drill killed brokers ("Connection reset by peer").
    pub fn refusal(&self, endpoint: &str, event: &Event) -> Option<Refusal> {
        if event.kind == EventKind::HandshakeFailedNoDetail
            && !matches!(self, Credentials::Curve { .. })
        {
            return None;
        }
        Refusal::of(event).map(|reason| Refusal {
            endpoint: endpoint.to_owned(),
            mechanism: self.mechanism(),
            reason,
            hint: self.hint(),
        })
    }
}

/// The credential flags of a program that connects to brokers, before they are read. A program
/// declares the four flags itself (with clap), fills this in, and calls [`CredentialArgs::load`].
#[derive(Debug, Clone, Default)]
pub struct CredentialArgs {
    /// `--user NAME` (PLAIN).
    pub user: Option<String>,
    /// `--password-file F` (PLAIN): the password is its first line.
    pub password_file: Option<PathBuf>,
    /// `--curve-key-file F` (CURVE): our secret key file.
    pub curve_key_file: Option<PathBuf>,
    /// `--curve-server-key KEY`, each time it was given: one for every broker, or one per broker
    /// in the order of the endpoints.
    pub curve_server_keys: Vec<String>,
}

impl CredentialArgs {
    /// One [`Credentials`] per broker, for `brokers` endpoints: reads the password file or the
    /// key files and checks the combination. PLAIN needs both `--user` and `--password-file`;
    /// CURVE needs `--curve-key-file` and `--curve-server-key`, the latter once (the same broker
    /// key for every endpoint) or once per endpoint, in their order; the two mechanisms do not
    /// mix. Nothing given: [`Credentials::None`] for each.
    pub fn load(&self, brokers: usize) -> Result<Vec<Credentials>, Error> {
        let plain = self.user.is_some() || self.password_file.is_some();
        let curve = self.curve_key_file.is_some() || !self.curve_server_keys.is_empty();
        if plain && curve {
            return Err(Error::Combination(
                "PLAIN (--user, --password-file) and CURVE (--curve-key-file, \
                 --curve-server-key) do not mix: give one or the other",
            ));
        }
        if plain {
            let (Some(user), Some(file)) = (&self.user, &self.password_file) else {
                return Err(Error::Combination(
                    "PLAIN needs both --user and --password-file",
                ));
            };
            let credentials = Credentials::plain(user, &read_password(file)?)?;
            return Ok(vec![credentials; brokers]);
        }
        if curve {
            // Said first, before any file: in a build without CURVE nothing else matters.
            curve::available()?;
            let Some(key_file) = &self.curve_key_file else {
                return Err(Error::Combination(
                    "CURVE needs --curve-key-file (our secret key) with --curve-server-key",
                ));
            };
            if self.curve_server_keys.is_empty() {
                return Err(Error::Combination(
                    "CURVE needs --curve-server-key (the broker's public key) with \
                     --curve-key-file",
                ));
            }
            let given = self.curve_server_keys.len();
            if given != 1 && given != brokers {
                return Err(Error::ServerKeyCount { given, brokers });
            }
            let keys = KeyPair::read(key_file)?;
            let servers = self
                .curve_server_keys
                .iter()
                .map(|text| server_key(text))
                .collect::<Result<Vec<_>, _>>()?;
            return (0..brokers)
                .map(|index| {
                    let server = servers[if given == 1 { 0 } else { index }];
                    Credentials::curve(keys.clone(), server)
                })
                .collect();
        }
        Ok(vec![Credentials::None; brokers])
    }
}

/// The broker's public key from a flag: 40 Z85 characters, or the path of a public key file.
pub fn server_key(text: &str) -> Result<PublicKey, Error> {
    if let Ok(key) = PublicKey::from_z85(text) {
        return Ok(key);
    }
    let path = Path::new(text);
    if path.exists() {
        return Ok(curve::read_public_key(path)?);
    }
    let why = match PublicKey::from_z85(text) {
        Err(error) => error.to_string(),
        Ok(_) => String::new(),
    };
    Err(Error::ServerKey {
        text: text.to_owned(),
        why,
    })
}

/// The first line of a password file that others may not read.
pub fn read_password(path: &Path) -> Result<String, Error> {
    let file_error = |source| Error::PasswordFile {
        path: path.to_owned(),
        source,
    };
    let metadata = fs::metadata(path).map_err(file_error)?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(Error::PasswordFileMode {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(file_error)?;
    let first = text.lines().next().unwrap_or("");
    let password = first.strip_suffix('\r').unwrap_or(first);
    if password.is_empty() {
        return Err(Error::EmptyPasswordFile(path.to_owned()));
    }
    Ok(password.to_owned())
}

/// A handshake the broker refused: what a socket monitor's `HANDSHAKE_FAILED_*` event means
/// for a client or worker, with the words to tell the user.
///
/// `HANDSHAKE_FAILED_AUTH` is the broker's ZAP handler saying no (a wrong password, an unknown
/// user, a key that is no principal); `HANDSHAKE_FAILED_PROTOCOL` is most often a mechanism
/// mismatch (credentials of one kind, or none, at an endpoint that wants another) or, under
/// CURVE, a wrong server key; `HANDSHAKE_FAILED_NO_DETAIL` a handshake cut off, which is a
/// refusal only under CURVE (see [`Credentials::refusal`]). A refusal means: this socket will
/// not get through, and libzmq would retry it every 100 ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The broker's endpoint.
    pub endpoint: String,
    /// The mechanism we tried: "NULL", "PLAIN" or "CURVE".
    pub mechanism: &'static str,
    /// What the event said.
    pub reason: String,
    /// What to check ([`Credentials::hint`]).
    pub hint: &'static str,
}

impl Refusal {
    /// What a failed-handshake event says, or `None` for any other event.
    pub fn of(event: &Event) -> Option<String> {
        match event.kind {
            EventKind::HandshakeFailedAuth => Some(match event.value {
                0 => "the broker's authenticator refused the credentials".to_owned(),
                status => format!("the broker's authenticator refused the credentials ({status})"),
            }),
            EventKind::HandshakeFailedProtocol => Some(format!(
                "the handshake failed: {}",
                crate::monitor::protocol_error_text(event.value)
            )),
            EventKind::HandshakeFailedNoDetail => Some(format!(
                "the handshake was cut off: {}",
                crate::monitor::errno_text(event.value)
            )),
            _ => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "authentication refused by the broker at {} ({}): {}; {}",
            self.endpoint, self.mechanism, self.reason, self.hint
        )
    }
}

impl std::error::Error for Refusal {}

/// Credentials that cannot be used: a combination of flags, a file, a key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags that do not go together, or one missing its partner.
    #[error("{0}")]
    Combination(&'static str),
    /// `--curve-server-key` given neither once nor once per broker.
    #[error(
        "--curve-server-key was given {given} times for {brokers} brokers: give it once (the same \
         key for every broker) or once per -c, in the same order"
    )]
    ServerKeyCount {
        /// How many times it was given.
        given: usize,
        /// How many endpoints there are.
        brokers: usize,
    },
    /// A `--curve-server-key` that is neither a key nor a file.
    #[error(
        "--curve-server-key {text:?} is neither a 40-character Z85 key ({why}) nor a public key \
         file"
    )]
    ServerKey {
        /// The flag's value.
        text: String,
        /// Why it is not a key.
        why: String,
    },
    /// The password file cannot be read.
    #[error("cannot read the password file {}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The password file is readable by others.
    #[error(
        "others may read the password file {} (mode {mode:04o}); chmod o-rwx {} (or 600)",
        path.display(),
        path.display()
    )]
    PasswordFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The password file's first line is empty.
    #[error("the password file {} has an empty first line: the password is the first line", .0.display())]
    EmptyPasswordFile(PathBuf),
    /// An empty user name or password.
    #[error("the PLAIN {0} is empty")]
    Empty(&'static str),
    /// A user name or password longer than PLAIN carries.
    #[error("the PLAIN {what} has {bytes} bytes; PLAIN carries at most 255")]
    TooLong {
        /// "user name" or "password".
        what: &'static str,
        /// Its length.
        bytes: usize,
    },
    /// A CURVE key or key file, or no CURVE in this build.
    #[error(transparent)]
    Curve(#[from] curve::Error),
    /// libzmq refused a socket option.
    #[error(transparent)]
    Socket(#[from] SocketError),
}

impl Error {
    /// True when this build has no CURVE (the message says how to get a build with it).
    pub fn is_curve_unavailable(&self) -> bool {
        matches!(self, Error::Curve(curve::Error::Unavailable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// libzmq's own test keys (tests/testutil_security.cpp), a pair that belongs together.
    const PUBLIC: &str = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
    const SECRET: &str = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs";

    fn file_with(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        let mut file = fs::File::create(&path).expect("create");
        file.write_all(text.as_bytes()).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn args() -> CredentialArgs {
        CredentialArgs::default()
    }

    #[test]
    fn nothing_given_is_null_for_every_broker() {
        let loaded = args().load(3).expect("none");
        assert_eq!(loaded, vec![Credentials::None; 3]);
        assert_eq!(loaded[0].mechanism(), "NULL");
    }

    #[test]
    fn a_password_is_the_first_line_of_a_file_others_may_not_read() {
        let dir = tempfile::tempdir().expect("dir");
        let file = file_with(dir.path(), "pw", "s3cret\r\nignored\n", 0o640);
        let loaded = CredentialArgs {
            user: Some("alice".into()),
            password_file: Some(file.clone()),
            ..args()
        }
        .load(2)
        .expect("plain");
        let expected = Credentials::plain("alice", "s3cret").expect("valid");
        assert_eq!(loaded, vec![expected.clone(), expected]);
        assert_eq!(loaded[0].mechanism(), "PLAIN");
        assert!(!format!("{:?}", loaded[0]).contains("s3cret"));

        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = read_password(&file).expect_err("world-readable");
        assert!(error.to_string().contains("chmod o-rwx"), "{error}");

        let empty = file_with(dir.path(), "empty", "\nsecond line\n", 0o600);
        let error = read_password(&empty).expect_err("empty first line");
        assert!(error.to_string().contains("empty first line"), "{error}");

        let missing = dir.path().join("missing");
        let error = read_password(&missing).expect_err("missing");
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn plain_wants_both_halves_and_no_curve_beside_it() {
        let only_user = CredentialArgs {
            user: Some("alice".into()),
            ..args()
        };
        let error = only_user.load(1).expect_err("no password file");
        assert!(error.to_string().contains("--password-file"), "{error}");
        let only_file = CredentialArgs {
            password_file: Some("pw".into()),
            ..args()
        };
        assert!(only_file.load(1).is_err());
        let both = CredentialArgs {
            user: Some("alice".into()),
            curve_server_keys: vec![PUBLIC.into()],
            ..args()
        };
        let error = both.load(1).expect_err("both mechanisms");
        assert!(error.to_string().contains("do not mix"), "{error}");
    }

    #[test]
    fn plain_names_and_passwords_fit_one_length_byte_and_are_not_empty() {
        assert!(Credentials::plain(&"u".repeat(255), "p").is_ok());
        let error = Credentials::plain(&"u".repeat(256), "p").expect_err("too long");
        assert!(error.to_string().contains("256 bytes"), "{error}");
        assert!(matches!(
            Credentials::plain("", "p"),
            Err(Error::Empty("user name"))
        ));
        assert!(matches!(
            Credentials::plain("u", ""),
            Err(Error::Empty("password"))
        ));
    }

    #[test]
    fn a_server_key_is_z85_or_a_public_key_file() {
        assert_eq!(
            server_key(PUBLIC).expect("z85"),
            PublicKey::from_z85(PUBLIC).expect("key")
        );
        let dir = tempfile::tempdir().expect("dir");
        let file = file_with(
            dir.path(),
            "broker.key.pub",
            &format!("curve\n    public-key = \"{PUBLIC}\"\n"),
            0o644,
        );
        assert_eq!(
            server_key(file.to_str().expect("utf-8")).expect("file"),
            PublicKey::from_z85(PUBLIC).expect("key")
        );
        let error = server_key("not-a-key").expect_err("neither");
        assert!(
            error.to_string().contains("neither a 40-character Z85 key"),
            "{error}"
        );
    }

    #[test]
    fn curve_needs_both_flags_and_one_key_or_one_per_broker() {
        let dir = tempfile::tempdir().expect("dir");
        let key_file = file_with(
            dir.path(),
            "alice.key",
            &format!("curve\n    public-key = \"{PUBLIC}\"\n    secret-key = \"{SECRET}\"\n"),
            0o600,
        );
        let curve_args = |keys: &[&str]| CredentialArgs {
            curve_key_file: Some(key_file.clone()),
            curve_server_keys: keys.iter().map(|key| (*key).to_owned()).collect(),
            ..args()
        };
        let results = [
            curve_args(&[PUBLIC]).load(2),
            curve_args(&[PUBLIC, PUBLIC]).load(2),
        ];
        if curve::available().is_err() {
            // Without CURVE in this build, the error says how to get it, whatever else.
            for result in results {
                let error = result.expect_err("no CURVE here");
                assert!(error.is_curve_unavailable(), "{error}");
                assert!(error.to_string().contains("build/curve.toml"), "{error}");
            }
            let error = curve_args(&[PUBLIC, PUBLIC, PUBLIC])
                .load(2)
                .expect_err("no CURVE here");
            assert!(error.is_curve_unavailable(), "{error}");
            return;
        }
        for result in results {
            let loaded = result.expect("curve");
            assert_eq!(loaded.len(), 2);
            assert!(loaded.iter().all(|c| c.mechanism() == "CURVE"));
        }
        let error = curve_args(&[PUBLIC, PUBLIC, PUBLIC])
            .load(2)
            .expect_err("3 keys for 2 brokers");
        assert!(error.to_string().contains("once per -c"), "{error}");
        let error = CredentialArgs {
            curve_key_file: Some(key_file),
            ..args()
        }
        .load(1)
        .expect_err("no server key");
        assert!(error.to_string().contains("--curve-server-key"), "{error}");
    }

    #[test]
    fn a_failed_handshake_is_a_refusal_that_names_authentication() {
        let plain = Credentials::plain("alice", "pw").expect("valid");
        let event = Event::new(EventKind::HandshakeFailedAuth, 400, "tcp://b:1");
        let refusal = plain.refusal("tcp://b:1", &event).expect("a refusal");
        let text = refusal.to_string();
        assert!(
            text.starts_with("authentication refused by the broker at tcp://b:1 (PLAIN)"),
            "{text}"
        );
        assert!(
            text.contains("(400)") && text.contains("--password-file"),
            "{text}"
        );
        let mismatch = Event::new(EventKind::HandshakeFailedProtocol, 0x1100_0002, "tcp://b:1");
        let text = Credentials::None
            .refusal("tcp://b:1", &mismatch)
            .expect("a refusal")
            .to_string();
        assert!(
            text.contains("mechanism mismatch") && text.contains("--user"),
            "{text}"
        );
        // A cut-off handshake is the network or a broker going away, not a refusal of a
        // password or of no credentials at all.
        let cut = Event::new(EventKind::HandshakeFailedNoDetail, 104, "tcp://b:1");
        assert_eq!(plain.refusal("tcp://b:1", &cut), None);
        assert_eq!(Credentials::None.refusal("tcp://b:1", &cut), None);
        let fine = Event::new(EventKind::HandshakeSucceeded, 0, "tcp://b:1");
        assert_eq!(plain.refusal("tcp://b:1", &fine), None);
    }

    #[test]
    fn plain_credentials_get_through_a_plain_server_and_wrong_ones_are_refused() {
        // A PLAIN server with a ZAP handler of its own, the way the broker's works, over tcp.
        let context = zmq::Context::new();
        let zap = context.socket(zmq::REP).expect("zap");
        zap.bind("inproc://zeromq.zap.01").expect("bind zap");
        let handler = std::thread::spawn(move || {
            for _ in 0..2 {
                let request = zap.recv_multipart(0).expect("zap request");
                // version, request id, domain, address, identity, mechanism, user, password
                let ok = request[6] == b"alice" && request[7] == b"right";
                let (code, text): (&[u8], &[u8]) =
                    if ok { (b"200", b"OK") } else { (b"400", b"no") };
                zap.send_multipart([&b"1.0"[..], &request[1], code, text, b"alice", b""], 0)
                    .expect("zap reply");
            }
        });
        let server = context.socket(zmq::ROUTER).expect("router");
        server.set_plain_server(true).expect("plain server");
        server.set_linger(0).expect("linger");
        let endpoint = crate::bind(&server, "tcp://127.0.0.1:*")
            .expect("bind")
            .endpoint()
            .to_owned();
        let events = crate::monitor::Events::CONNECTION;
        let mut outcomes = Vec::new();
        for password in ["right", "wrong"] {
            let socket = context.socket(zmq::DEALER).expect("dealer");
            socket.set_linger(0).expect("linger");
            let credentials = Credentials::plain("alice", password).expect("valid");
            credentials.apply(&socket).expect("apply");
            let monitored =
                crate::monitor::Monitored::connect_socket(&context, socket, &endpoint, events)
                    .expect("connect");
            let outcome = loop {
                let event = monitored.monitor().recv().expect("an event");
                if event.kind == EventKind::HandshakeSucceeded {
                    break None;
                }
                if let Some(refusal) = credentials.refusal(&endpoint, &event) {
                    break Some(refusal);
                }
            };
            outcomes.push(outcome);
        }
        handler.join().expect("zap thread");
        assert_eq!(outcomes[0], None, "the right password got in");
        let refusal = outcomes[1].as_ref().expect("the wrong one is refused");
        assert!(refusal.to_string().contains("(400)"), "{refusal}");
    }
}
