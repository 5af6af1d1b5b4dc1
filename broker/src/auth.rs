//! The auth file of `broker --auth FILE`: who the principals are, how each proves it, and what
//! each may serve and call.
//!
//! ```toml
//! [[principal]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # PLAIN; from `broker hash-password`
//! serve = ["echo", "db.*"]    # services alice may register for as a worker
//! call = ["echo", "mmi.*"]    # services alice may request as a client
//! ```
//!
//! The file never holds a password, only its argon2 hash (a PHC string), so reading the file
//! does not let anyone log in. Everything is checked when the file is read, at start and on each
//! SIGHUP: TOML syntax, unknown fields, duplicate names, hashes, keys and patterns
//! ([`crate::access::Pattern`]). Every error names the file and the line.
//!
//! CURVE principals (`curve_public_key`, the 40 Z85 characters of the `.pub` file that
//! `broker keygen` or czmq writes) need a libzmq built with CURVE, which the default build is not
//! (the `zmq` crate builds libzmq without libsodium); in such a build they are an error that says
//! how to get one ([`zsocket::curve::HOW_TO_GET_CURVE`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;
use toml::Spanned;

use crate::access::{Access, Grants, Pattern};

/// The file as TOML sees it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    principal: Vec<Spanned<RawPrincipal>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    name: Spanned<String>,
    password_hash: Option<Spanned<String>>,
    curve_public_key: Option<Spanned<String>>,
    #[serde(default)]
    serve: Vec<Spanned<String>>,
    #[serde(default)]
    call: Vec<Spanned<String>>,
}

/// What an auth file says, checked.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Who may serve and call what, for the core.
    pub access: Access,
    /// Each principal's PLAIN password hash (a PHC string), for the ZAP handler.
    pub password_hashes: HashMap<String, String>,
    /// Each CURVE public key (32 bytes) and whose it is.
    pub curve_keys: HashMap<Vec<u8>, String>,
}

/// An auth file that cannot be used; its message names the file and, where there is one, the
/// line.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file could not be read.
    #[error("cannot read the auth file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A principal or rule in the file is wrong.
    #[error("{}, line {line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line it starts on.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl AuthConfig {
    /// Reads and checks the auth file at `path`.
    pub fn load(path: &Path) -> Result<AuthConfig, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        AuthConfig::parse(&text).map_err(|error| error.in_file(path))
    }

    /// Checks the text of an auth file.
    pub fn parse(text: &str) -> Result<AuthConfig, ParseError> {
        let raw: RawFile = toml::from_str(text).map_err(|error| ParseError::Syntax {
            // toml's message says where, with the line quoted; keep it on one line.
            message: error.to_string().trim_end().replace('\n', "\n    "),
        })?;
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let invalid = |offset: usize, message: String| ParseError::Invalid {
            line: line_of(offset),
            message,
        };
        let mut config = AuthConfig::default();
        let mut principals = Vec::new();
        for entry in raw.principal {
            let entry_start = entry.span().start;
            let principal = entry.into_inner();
            let name = principal.name.get_ref().clone();
            if name.is_empty() {
                return Err(invalid(principal.name.span().start, "empty name".into()));
            }
            if principals.iter().any(|(other, _)| *other == name) {
                return Err(invalid(
                    principal.name.span().start,
                    format!("principal {name:?} is named twice"),
                ));
            }
            if principal.password_hash.is_none() && principal.curve_public_key.is_none() {
                return Err(invalid(
                    entry_start,
                    format!(
                        "principal {name:?} has neither password_hash (PLAIN) nor \
                         curve_public_key (CURVE), so it could never log in"
                    ),
                ));
            }
            if let Some(hash) = &principal.password_hash {
                check_hash(hash.get_ref())
                    .map_err(|message| invalid(hash.span().start, message))?;
                config
                    .password_hashes
                    .insert(name.clone(), hash.get_ref().clone());
            }
            if let Some(key) = &principal.curve_public_key {
                let bytes = check_curve_key(key.get_ref())
                    .map_err(|message| invalid(key.span().start, message))?;
                if let Some(other) = config.curve_keys.insert(bytes, name.clone()) {
                    return Err(invalid(
                        key.span().start,
                        format!("this key is also {other:?}'s: a key names one principal"),
                    ));
                }
            }
            let patterns = |list: &[Spanned<String>], field: &str| {
                list.iter()
                    .map(|pattern| {
                        Pattern::parse(pattern.get_ref()).map_err(|error| {
                            invalid(
                                pattern.span().start,
                                format!("{field} pattern {:?}: {error}", pattern.get_ref()),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let grants = Grants {
                serve: patterns(&principal.serve, "serve")?,
                call: patterns(&principal.call, "call")?,
            };
            principals.push((name, grants));
        }
        config.access = Access::new(principals);
        Ok(config)
    }
}

/// [`AuthConfig::parse`]'s error, before it knows the file's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not valid TOML.
    #[error("{message}")]
    Syntax {
        /// What the TOML parser said.
        message: String,
    },
    /// A principal or rule is wrong.
    #[error("line {line}: {message}")]
    Invalid {
        /// The line it starts on.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl ParseError {
    fn in_file(self, path: &Path) -> AuthFileError {
        let path = path.to_owned();
        match self {
            ParseError::Syntax { message } => AuthFileError::Syntax { path, message },
            ParseError::Invalid { line, message } => AuthFileError::Invalid {
                path,
                line,
                message,
            },
        }
    }
}

fn check_hash(text: &str) -> Result<(), String> {
    let hash = PasswordHash::new(text).map_err(|error| {
        format!("password_hash is not a PHC hash string ({error}); make one with `broker hash-password`")
    })?;
    match hash.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => Ok(()),
        other => Err(format!(
            "password_hash uses {other}; this broker checks argon2 hashes only (`broker hash-password`)"
        )),
    }
}

fn check_curve_key(text: &str) -> Result<Vec<u8>, String> {
    zsocket::curve::available().map_err(|error| format!("curve_public_key: {error}"))?;
    zsocket::curve::PublicKey::from_z85(text)
        .map(|key| key.as_bytes().to_vec())
        .map_err(|error| format!("curve_public_key: {error}"))
}

/// True if the libzmq this program runs on has CURVE.
pub fn curve_available() -> bool {
    zsocket::curve::available().is_ok()
}

/// True if `password` is the one `hash` (a PHC string from the auth file) was made from.
/// Costs one argon2 hash: tens of milliseconds, on purpose.
pub fn verify_password(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|hash| Argon2::default().verify_password(password, &hash).is_ok())
}

/// The argon2id hash of `password`, with a fresh random salt, as a PHC string for the auth
/// file (what `broker hash-password` prints).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|error| error.to_string())?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| error.to_string())
}

/// A hash as cheap as argon2 allows (8 KiB, one pass), for tests that log in many times in a
/// debug build. Never for a real auth file.
#[doc(hidden)]
pub fn weak_hash_for_tests(password: &[u8]) -> String {
    let salt_bytes: [u8; 16] = rand::random();
    let hash = argon2::Params::new(8, 1, 1, None)
        .ok()
        .zip(SaltString::encode_b64(&salt_bytes).ok())
        .and_then(|(params, salt)| {
            Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(password, &salt)
                .ok()
                .map(|hash| hash.to_string())
        });
    hash.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdp::ServiceName;

    fn name(text: &str) -> ServiceName {
        ServiceName::new(text.as_bytes()).expect("a valid name")
    }

    fn file_with(hash: &str) -> String {
        format!(
            "[[principal]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nserve = [\"echo\", \"db.*\"]\ncall = [\"echo\", \"mmi.*\"]\n\n[[principal]]\nname = \"bob\"\npassword_hash = \"{hash}\"\ncall = [\"*\"]\n"
        )
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password(b"secret").expect("hashes");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, b"secret"));
        assert!(!verify_password(&hash, b"Secret"));
        assert!(!verify_password("not a hash", b"secret"));
        // A fresh salt each time.
        assert_ne!(hash, hash_password(b"secret").expect("hashes"));
    }

    #[test]
    fn a_good_file_gives_the_rules_and_the_hashes() {
        let hash = weak_hash_for_tests(b"pw");
        let config = AuthConfig::parse(&file_with(&hash)).expect("parses");
        assert_eq!(config.password_hashes.len(), 2);
        let access = &config.access;
        assert!(access.may_serve(Some("alice"), &name("db.write")));
        assert!(access.may_call(Some("alice"), &name("mmi.service")));
        assert!(!access.may_serve(Some("bob"), &name("echo")));
        assert!(access.may_call(Some("bob"), &name("anything")));
    }

    fn error_of(text: &str) -> ParseError {
        AuthConfig::parse(text).expect_err("refused")
    }

    #[test]
    fn every_mistake_is_refused_naming_the_line() {
        let hash = weak_hash_for_tests(b"pw");
        let good = file_with(&hash);
        // Line 4 is alice's serve list.
        let bad_pattern = good.replace("\"db.*\"", "\"*.db\"");
        assert!(
            matches!(error_of(&bad_pattern), ParseError::Invalid { line: 4, ref message } if message.contains("*.db")),
            "{:?}",
            error_of(&bad_pattern)
        );
        let bad_hash = good.replacen(&hash, "plain-text-password", 1);
        assert!(matches!(
            error_of(&bad_hash),
            ParseError::Invalid { line: 3, .. }
        ));
        let unknown_field = good.replace("call = [\"*\"]", "calls = [\"*\"]");
        let ParseError::Syntax { message } = error_of(&unknown_field) else {
            panic!("not a syntax error");
        };
        assert!(
            message.contains("line 10") && message.contains("calls"),
            "{message}"
        );
        let twice = good.replace("\"bob\"", "\"alice\"");
        assert!(matches!(
            error_of(&twice),
            ParseError::Invalid { line: 8, .. }
        ));
        let broken = good.replace("serve = [", "serve = ");
        assert!(matches!(error_of(&broken), ParseError::Syntax { .. }));
        let no_secret = "[[principal]]\nname = \"carol\"\ncall = [\"*\"]\n";
        assert!(matches!(
            error_of(no_secret),
            ParseError::Invalid { line: 1, .. }
        ));
        let md5 = good.replacen(&hash, "$md5$abc", 1);
        assert!(matches!(
            error_of(&md5),
            ParseError::Invalid { line: 3, .. }
        ));
    }

    #[test]
    fn a_curve_principal_in_a_build_without_curve_says_how_to_get_one() {
        if curve_available() {
            return;
        }
        let text = "[[principal]]\nname = \"billing\"\ncurve_public_key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\n";
        let ParseError::Invalid { line, message } = error_of(text) else {
            panic!("not refused by line");
        };
        assert_eq!(line, 3);
        assert!(
            message.contains("CURVE") && message.contains("README"),
            "{message}"
        );
    }

    #[test]
    fn a_curve_principal_is_named_by_its_key_and_a_key_names_one_principal() {
        if !curve_available() {
            return;
        }
        let key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
        let one = format!("[[principal]]\nname = \"billing\"\ncurve_public_key = \"{key}\"\n");
        let config = AuthConfig::parse(&one).expect("parses");
        let bytes = zsocket::curve::PublicKey::from_z85(key).expect("a key");
        assert_eq!(
            config.curve_keys.get(bytes.as_bytes().as_slice()),
            Some(&"billing".to_string())
        );
        let twice =
            format!("{one}\n[[principal]]\nname = \"other\"\ncurve_public_key = \"{key}\"\n");
        assert!(matches!(
            error_of(&twice),
            ParseError::Invalid { line: 7, ref message } if message.contains("billing")
        ));
        // Not Z85: '~' is outside the alphabet (libzmq's own decoder would let it through).
        let bad = one.replace("rq:", "rq~");
        assert!(matches!(
            error_of(&bad),
            ParseError::Invalid { line: 3, ref message } if message.contains("Z85")
        ));
    }

    #[test]
    fn an_empty_file_names_nobody() {
        let config = AuthConfig::parse("").expect("parses");
        assert!(config.access.is_empty());
    }
}
