//! CURVE (rfc.zeromq.org spec 26): encryption and authentication of a ZeroMQ connection by key
//! pairs, for networks where PLAIN's clear passwords and bodies will not do.
//!
//! Every program opens its CURVE sockets through this module:
//!
//! * [`available`]: whether this build's libzmq has CURVE. The default build does not (the `zmq`
//!   crate compiles libzmq without libsodium); the error says how to get a build that has it
//!   (`cargo build --config build/curve.toml`, against the system's libzmq). Every call below
//!   that needs CURVE checks it first, so a user gets that sentence, not libzmq's `EINVAL`.
//! * [`KeyPair`]: a key pair, drawn by libzmq ([`KeyPair::generate`]), written to a secret file
//!   (mode 0600) and a public one beside it ([`KeyPair::write`]), and read back
//!   ([`KeyPair::read`], which refuses a secret file that others may read, as ssh does).
//! * [`PublicKey`]: the 40 Z85 characters (spec 32) a peer is given, as a flag value or a
//!   `.pub` file ([`read_public_key`]).
//! * [`set_server`] / [`set_client`]: the socket options of each side, set before the socket
//!   binds or connects (libzmq fixes the mechanism of a connection when it is made).
//!
//! Key files are in the ZPL text form of czmq's certificates (`curve` section, `public-key` and
//! `secret-key` entries), so czmq's tools and ours read each other's files:
//!
//! ```text
//! #   ZeroMQ CURVE **secret** key pair (written by majordomo-rs)
//! curve
//!     public-key = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
//!     secret-key = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"
//! ```
//!
//! The secret file holds both halves (a client sets both on its socket); the public file,
//! `NAME.pub` beside the secret `NAME`, holds the public half only and is what a peer is given.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// How to get a build with CURVE, for the errors of a build without it.
pub const HOW_TO_GET_CURVE: &str = "this build's libzmq has no CURVE (the zmq crate compiles it \
without libsodium); build against the system's libzmq, which has it: apt-get install \
libzmq3-dev, then cargo build --release --config build/curve.toml (see the README, \"A build \
with CURVE\")";

/// The length of a key in bytes, and in Z85 characters.
const KEY_BYTES: usize = 32;
const KEY_CHARS: usize = 40;

/// Whether this build's libzmq has CURVE; if not, the error says how to get a build that has it.
pub fn available() -> Result<(), Error> {
    match zmq::has("curve") {
        Some(true) => Ok(()),
        _ => Err(Error::Unavailable),
    }
}

/// What went wrong with CURVE: no CURVE in this build, a key file, a key, or a socket option.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This build's libzmq has no CURVE.
    #[error("{HOW_TO_GET_CURVE}")]
    Unavailable,
    /// A key file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    File {
        /// What was being done: "read the key file", "create the secret key file".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key file that is not what it should be (its line, when one line is to blame).
    #[error("{}{}: {reason}", path.display(), line.map_or(String::new(), |line| format!(":{line}")))]
    BadFile {
        path: PathBuf,
        line: Option<usize>,
        reason: String,
    },
    /// A key that is not 40 Z85 characters.
    #[error(transparent)]
    BadKey(#[from] KeyError),
    /// libzmq refused a socket option, or could not draw a key pair.
    #[error(transparent)]
    Socket(#[from] crate::Error),
}

/// A key that is not 40 Z85 characters of a 32-byte key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 40 characters.
    #[error("a CURVE key is 40 Z85 characters, not {0}")]
    Length(usize),
    /// A character outside Z85's alphabet (spec 32).
    #[error("a CURVE key is 40 Z85 characters; {character:?} (character {position}) is not one")]
    Character { position: usize, character: char },
    /// Five characters whose value does not fit four bytes.
    #[error("not a Z85 key: characters {position} to {} are more than four bytes", position + 4)]
    Overflow { position: usize },
}

/// A CURVE public key: what a peer is given, what a broker's principals are named by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_BYTES]);

impl PublicKey {
    /// The key as its 40 Z85 characters.
    pub fn from_z85(text: &str) -> Result<PublicKey, KeyError> {
        z85::decode_key(text).map(PublicKey)
    }

    /// Its 40 Z85 characters.
    pub fn to_z85(&self) -> String {
        z85::encode(&self.0)
    }

    /// Its 32 bytes: the binary form that socket options take and a ZAP request carries.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<PublicKey, KeyError> {
        PublicKey::from_z85(text)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

/// A CURVE key pair. Its secret half never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    public: PublicKey,
    secret: [u8; KEY_BYTES],
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .field("secret", &"(hidden)")
            .finish()
    }
}

impl KeyPair {
    /// A new key pair, drawn by libzmq (from libsodium's random source).
    pub fn generate() -> Result<KeyPair, Error> {
        available()?;
        let pair = zmq::CurveKeyPair::new()
            .map_err(|source| crate::Error::new("draw a CURVE key pair", source))?;
        Ok(KeyPair {
            public: PublicKey(pair.public_key),
            secret: pair.secret_key,
        })
    }

    /// The pair of these two keys, as Z85. Nothing checks that they belong together (libzmq
    /// 0.10's crate cannot derive one from the other): a mismatched pair fails the handshake.
    pub fn from_z85(public: &str, secret: &str) -> Result<KeyPair, KeyError> {
        Ok(KeyPair {
            public: PublicKey::from_z85(public)?,
            secret: z85::decode_key(secret)?,
        })
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Writes the pair to `secret_path` (mode 0600: the owner alone may read it) and the public
    /// half to [`public_key_path`]`(secret_path)`. Refuses to replace either file, so a key in
    /// use is never lost to a second `keygen`. Returns the public file's path.
    pub fn write(&self, secret_path: &Path) -> Result<PathBuf, Error> {
        let public_path = public_key_path(secret_path);
        for path in [secret_path, public_path.as_path()] {
            if path.exists() {
                return Err(Error::BadFile {
                    path: path.to_owned(),
                    line: None,
                    reason: "already exists; not replacing a key (remove it first to rotate)"
                        .to_owned(),
                });
            }
        }
        let secret_text = format!(
            "#   ZeroMQ CURVE **secret** key pair (written by majordomo-rs)\n\
             #   Keep it secret: mode 0600, never sent to a peer. Peers get {}.\n\
             curve\n    public-key = \"{}\"\n    secret-key = \"{}\"\n",
            public_path.display(),
            self.public.to_z85(),
            z85::encode(&self.secret),
        );
        write_new(
            secret_path,
            0o600,
            &secret_text,
            "create the secret key file",
        )?;
        let public_text = format!(
            "#   ZeroMQ CURVE public key (written by majordomo-rs); give it to peers\n\
             curve\n    public-key = \"{}\"\n",
            self.public.to_z85(),
        );
        write_new(
            &public_path,
            0o644,
            &public_text,
            "create the public key file",
        )?;
        Ok(public_path)
    }

    /// Reads a secret key file written by [`KeyPair::write`] (or czmq's `zcert_save_secret`).
    /// Refuses one that anyone but its owner may read, as ssh does with a private key: that key
    /// is no longer a secret.
    pub fn read(secret_path: &Path) -> Result<KeyPair, Error> {
        let metadata = fs::metadata(secret_path).map_err(|source| Error::File {
            action: "read the secret key file",
            path: secret_path.to_owned(),
            source,
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::BadFile {
                path: secret_path.to_owned(),
                line: None,
                reason: format!(
                    "others may read this secret key (mode {mode:04o}); chmod 600 {}",
                    secret_path.display()
                ),
            });
        }
        let entries = read_entries(secret_path, "read the secret key file")?;
        let public = entries.require(secret_path, "public-key")?;
        let secret = entries.require(secret_path, "secret-key")?;
        Ok(KeyPair {
            public: PublicKey(public),
            secret,
        })
    }
}

/// Where the public half of the key pair in `secret_path` is written: `NAME.pub`, as ssh-keygen.
pub fn public_key_path(secret_path: &Path) -> PathBuf {
    let mut name = secret_path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Reads a public key file (a `.pub` written by [`KeyPair::write`], a secret file, or czmq's
/// public certificate).
pub fn read_public_key(path: &Path) -> Result<PublicKey, Error> {
    let entries = read_entries(path, "read the public key file")?;
    Ok(PublicKey(entries.require(path, "public-key")?))
}

/// Makes `socket` a CURVE server with `keys`: every connection to or from it must then complete a
/// CURVE handshake with a client that knows `keys.public()`. Call it before `bind`.
pub fn set_server(socket: &zmq::Socket, keys: &KeyPair) -> Result<(), Error> {
    available()?;
    socket
        .set_curve_server(true)
        .map_err(|source| crate::Error::new("set ZMQ_CURVE_SERVER", source))?;
    socket
        .set_curve_secretkey(&keys.secret)
        .map_err(|source| crate::Error::new("set ZMQ_CURVE_SECRETKEY", source))?;
    Ok(())
}

/// Makes `socket` a CURVE client with its own `keys`, that talks only to a server whose public
/// key is `server`. Call it before `connect`.
pub fn set_client(socket: &zmq::Socket, keys: &KeyPair, server: &PublicKey) -> Result<(), Error> {
    available()?;
    socket
        .set_curve_serverkey(server.as_bytes())
        .map_err(|source| crate::Error::new("set ZMQ_CURVE_SERVERKEY", source))?;
    socket
        .set_curve_publickey(keys.public.as_bytes())
        .map_err(|source| crate::Error::new("set ZMQ_CURVE_PUBLICKEY", source))?;
    socket
        .set_curve_secretkey(&keys.secret)
        .map_err(|source| crate::Error::new("set ZMQ_CURVE_SECRETKEY", source))?;
    Ok(())
}

/// Creates `path` with `mode`, failing if it exists.
fn write_new(path: &Path, mode: u32, text: &str, action: &'static str) -> Result<(), Error> {
    let error = |source| Error::File {
        action,
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)
}

/// The keys of a key file's `curve` section, by name, with the line each was on.
struct Entries {
    public: Option<[u8; KEY_BYTES]>,
    secret: Option<[u8; KEY_BYTES]>,
}

impl Entries {
    fn require(&self, path: &Path, name: &str) -> Result<[u8; KEY_BYTES], Error> {
        let key = if name == "public-key" {
            self.public
        } else {
            self.secret
        };
        key.ok_or_else(|| Error::BadFile {
            path: path.to_owned(),
            line: None,
            reason: format!("no {name} in its curve section"),
        })
    }
}

/// Reads a ZPL key file: `#` comments, top-level section names (`metadata`, `curve`), indented
/// `name = "value"` entries under them. Under `curve`, `public-key` and `secret-key` are the only
/// names; `metadata` may hold anything (czmq puts free-form fields there).
fn read_entries(path: &Path, action: &'static str) -> Result<Entries, Error> {
    let text = fs::read_to_string(path).map_err(|source| Error::File {
        action,
        path: path.to_owned(),
        source,
    })?;
    let bad = |line: usize, reason: String| Error::BadFile {
        path: path.to_owned(),
        line: Some(line),
        reason,
    };
    let mut entries = Entries {
        public: None,
        secret: None,
    };
    let mut section = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if !raw.starts_with([' ', '\t']) {
            match content {
                "metadata" | "curve" => section = Some(content),
                _ => {
                    return Err(bad(
                        line,
                        format!("expected a section (curve, metadata), found {content:?}"),
                    ))
                }
            }
            continue;
        }
        let Some((name, value)) = content.split_once('=') else {
            return Err(bad(
                line,
                format!("expected name = \"value\", found {content:?}"),
            ));
        };
        let (name, value) = (name.trim(), value.trim());
        let value = value
            .strip_prefix('"')
            .and_then(|value| value.strip_suffix('"'))
            .unwrap_or(value);
        match (section, name) {
            (Some("metadata"), _) => {}
            (Some("curve"), "public-key" | "secret-key") => {
                let key = z85::decode_key(value).map_err(|error| bad(line, error.to_string()))?;
                let slot = if name == "public-key" {
                    &mut entries.public
                } else {
                    &mut entries.secret
                };
                if slot.replace(key).is_some() {
                    return Err(bad(line, format!("a second {name}")));
                }
            }
            (Some(_), _) => {
                return Err(bad(
                    line,
                    format!("unknown entry {name:?} (curve has public-key and secret-key)"),
                ))
            }
            (None, _) => return Err(bad(line, "an entry outside any section".to_owned())),
        }
    }
    Ok(entries)
}

/// Z85 (rfc.zeromq.org spec 32): four bytes, read as a big-endian number, as five characters of an
/// 85-letter alphabet, most significant first. Written here rather than through `zmq::z85_decode`,
/// which ignores libzmq's refusal of a bad character and returns whatever it decoded.
mod z85 {
    use super::{KeyError, KEY_BYTES, KEY_CHARS};

    const ALPHABET: &[u8; 85] =
        b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

    /// `bytes` (a multiple of four long) as Z85.
    pub(super) fn encode(bytes: &[u8]) -> String {
        let mut text = String::with_capacity(bytes.len() / 4 * 5);
        for chunk in bytes.chunks_exact(4) {
            let mut value = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let mut digits = [0u8; 5];
            for digit in digits.iter_mut().rev() {
                *digit = ALPHABET[(value % 85) as usize];
                value /= 85;
            }
            text.extend(digits.iter().map(|&digit| char::from(digit)));
        }
        text
    }

    /// The 32 bytes of a 40-character key.
    pub(super) fn decode_key(text: &str) -> Result<[u8; KEY_BYTES], KeyError> {
        let chars = text.chars().count();
        if chars != KEY_CHARS || text.len() != KEY_CHARS {
            return Err(KeyError::Length(chars));
        }
        let mut key = [0u8; KEY_BYTES];
        for (group, (digits, out)) in text
            .as_bytes()
            .chunks_exact(5)
            .zip(key.chunks_exact_mut(4))
            .enumerate()
        {
            let mut value: u64 = 0;
            for (offset, &digit) in digits.iter().enumerate() {
                let position = group * 5 + offset + 1;
                let Some(index) = ALPHABET.iter().position(|&letter| letter == digit) else {
                    return Err(KeyError::Character {
                        position,
                        character: char::from(digit),
                    });
                };
                value = value * 85 + index as u64;
            }
            let value = u32::try_from(value).map_err(|_| KeyError::Overflow {
                position: group * 5 + 1,
            })?;
            out.copy_from_slice(&value.to_be_bytes());
        }
        Ok(key)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn spec_32_test_vector() {
            // rfc.zeromq.org spec 32's example: these eight bytes are "HelloWorld".
            let bytes = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
            assert_eq!(encode(&bytes), "HelloWorld");
        }

        #[test]
        fn agrees_with_libzmq_both_ways() {
            // Bytes that reach every digit, including the largest group (0xFFFFFFFF).
            let mut key = [0u8; KEY_BYTES];
            for (index, byte) in key.iter_mut().enumerate() {
                *byte = (index as u8).wrapping_mul(37).wrapping_add(251);
            }
            key[..4].copy_from_slice(&[0xFF; 4]);
            let ours = encode(&key);
            let libzmq = zmq::z85_encode(&key).expect("32 bytes encode");
            assert_eq!(ours, libzmq);
            assert_eq!(decode_key(&ours), Ok(key));
            assert_eq!(zmq::z85_decode(&ours).expect("40 characters decode"), key);
        }

        #[test]
        fn refuses_what_is_not_a_key() {
            assert_eq!(decode_key("HelloWorld"), Err(KeyError::Length(10)));
            let mut text = "0".repeat(40);
            text.replace_range(12..13, "~");
            assert_eq!(
                decode_key(&text),
                Err(KeyError::Character {
                    position: 13,
                    character: '~'
                })
            );
            // "%nSc1" is 2^32, one more than four bytes hold; "%nSc0" is the largest.
            let largest = format!("%nSc0{}", "0".repeat(35));
            assert!(decode_key(&largest).is_ok());
            let over = format!("{}%nSc1{}", "0".repeat(5), "0".repeat(30));
            assert_eq!(decode_key(&over), Err(KeyError::Overflow { position: 6 }));
            // Multi-byte characters are not counted as several.
            assert_eq!(decode_key(&"é".repeat(20)), Err(KeyError::Length(20)));
        }
    }
}
