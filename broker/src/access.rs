//! Who may serve and who may call which service: the rules of `broker --auth`, as data.
//!
//! ZAP (rfc.zeromq.org spec 27) tells who a peer is: libzmq puts the principal's name on every
//! message of an authenticated connection (the `User-Id` property). What that principal may do
//! is decided here, in the sans-IO core's terms: [`Access::may_serve`] for a worker's READY,
//! [`Access::may_call`] for a client's REQUEST (`mmi.*` included: asking the broker is calling a
//! service). The rules come from the auth file ([`crate::auth`]); tests build them directly.
//!
//! A pattern is an exact service name, a prefix ending in `*` (`db.*` matches `db.read` and
//! `db.`, not `db`), or `*` alone for every service. A peer with no principal, or one the rules
//! do not name, may do nothing.

use std::collections::HashMap;

use mdp::ServiceName;

/// One service pattern; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// This name only.
    Exact(Vec<u8>),
    /// Every name that starts with these bytes (the pattern without its `*`).
    Prefix(Vec<u8>),
    /// Every service.
    Any,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error("an empty pattern matches nothing; use \"*\" for every service")]
    Empty,
    #[error("`*` may only end a pattern (\"db.*\") or stand alone (\"*\")")]
    /// A `*` stands somewhere other than at the end.
    MisplacedStar,
    #[error("a service name is at most 255 bytes")]
    /// Longer than a service name may be.
    TooLong,
}

impl Pattern {
    /// Reads a pattern as the auth file spells it.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > 255 {
            return Err(PatternError::TooLong);
        }
        if text == "*" {
            return Ok(Pattern::Any);
        }
        match text.strip_suffix('*') {
            Some(prefix) if !prefix.contains('*') => {
                Ok(Pattern::Prefix(prefix.as_bytes().to_vec()))
            }
            Some(_) => Err(PatternError::MisplacedStar),
            None if text.contains('*') => Err(PatternError::MisplacedStar),
            None => Ok(Pattern::Exact(text.as_bytes().to_vec())),
        }
    }

    /// True if the service's name matches.
    pub fn matches(&self, service: &[u8]) -> bool {
        match self {
            Pattern::Exact(name) => name[..] == *service,
            Pattern::Prefix(prefix) => service.starts_with(prefix),
            Pattern::Any => true,
        }
    }
}

/// What one principal may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Services it may register for as a worker.
    pub serve: Vec<Pattern>,
    /// Services it may request as a client.
    pub call: Vec<Pattern>,
}

/// The rules for every principal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    principals: HashMap<String, Grants>,
}

impl Access {
    /// Rules from (principal, grants) pairs.
    pub fn new(principals: impl IntoIterator<Item = (String, Grants)>) -> Access {
        Access {
            principals: principals.into_iter().collect(),
        }
    }

    /// The grants of one principal, if the rules name it.
    pub fn grants(&self, principal: &str) -> Option<&Grants> {
        self.principals.get(principal)
    }

    /// How many principals the rules name.
    pub fn len(&self) -> usize {
        self.principals.len()
    }

    /// True if the rules name no principal (then nobody may do anything).
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
    }

    /// May this principal register as a worker for `service`?
    pub fn may_serve(&self, principal: Option<&str>, service: &ServiceName) -> bool {
        self.granted(principal, service, |grants| &grants.serve)
    }

    /// May this principal send a request for `service` (`mmi.*` included)?
    pub fn may_call(&self, principal: Option<&str>, service: &ServiceName) -> bool {
        self.granted(principal, service, |grants| &grants.call)
    }

    fn granted(
        &self,
        principal: Option<&str>,
        service: &ServiceName,
        which: impl Fn(&Grants) -> &Vec<Pattern>,
    ) -> bool {
        principal
            .and_then(|name| self.principals.get(name))
            .is_some_and(|grants| {
                which(grants)
                    .iter()
                    .any(|pattern| pattern.matches(service.as_bytes()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ServiceName {
        ServiceName::new(text.as_bytes()).expect("a valid name")
    }

    #[test]
    fn patterns_are_a_name_a_prefix_with_a_star_or_a_star() {
        assert_eq!(Pattern::parse("echo"), Ok(Pattern::Exact(b"echo".to_vec())));
        assert_eq!(Pattern::parse("db.*"), Ok(Pattern::Prefix(b"db.".to_vec())));
        assert_eq!(Pattern::parse("*"), Ok(Pattern::Any));
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert_eq!(Pattern::parse("*.db"), Err(PatternError::MisplacedStar));
        assert_eq!(Pattern::parse("d*b"), Err(PatternError::MisplacedStar));
        assert_eq!(Pattern::parse("db.**"), Err(PatternError::MisplacedStar));
        assert_eq!(Pattern::parse(&"x".repeat(256)), Err(PatternError::TooLong));
    }

    #[test]
    fn a_prefix_matches_what_starts_with_it_and_nothing_shorter() {
        let db = Pattern::parse("db.*").expect("valid");
        assert!(db.matches(b"db.read"));
        assert!(db.matches(b"db."));
        assert!(!db.matches(b"db"));
        assert!(!db.matches(b"dbx.read"));
        let echo = Pattern::parse("echo").expect("valid");
        assert!(echo.matches(b"echo"));
        assert!(!echo.matches(b"echo2"));
        assert!(!echo.matches(b"ech"));
    }

    #[test]
    fn serve_and_call_are_separate_and_unknown_principals_may_do_nothing() {
        let access = Access::new([(
            "alice".to_string(),
            Grants {
                serve: vec![Pattern::parse("db.*").expect("valid")],
                call: vec![Pattern::parse("echo").expect("valid")],
            },
        )]);
        assert!(access.may_serve(Some("alice"), &name("db.read")));
        assert!(!access.may_call(Some("alice"), &name("db.read")));
        assert!(access.may_call(Some("alice"), &name("echo")));
        assert!(!access.may_serve(Some("alice"), &name("echo")));
        assert!(!access.may_call(Some("alice"), &name("mmi.service")));
        assert!(!access.may_call(Some("bob"), &name("echo")));
        assert!(!access.may_call(None, &name("echo")));
        assert!(!access.may_serve(None, &name("db.read")));
    }
}
