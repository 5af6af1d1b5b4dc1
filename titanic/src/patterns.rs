//! `--services`: which services Titanic stores requests for.
//!
//! Whoever may call `titanic.request` reaches, through Titanic, every service Titanic calls: with
//! an access list on the broker, Titanic would be a way around it. So Titanic takes its own list,
//! with the same rules as the broker's access patterns: a pattern is an exact service name
//! (`echo`), a prefix ending in `*` (`billing.*` matches `billing.charge` and `billing.`), or `*`
//! alone, every service. A request for any other service is refused with 400, before it is stored.
//! `mmi.*` and `titanic.*` are always refused: the broker answers `mmi.*` itself, and a request
//! Titanic sends to itself would come back as another stored request.

use std::fmt;

/// A list of service patterns. See the [module docs](self).
#[derive(Clone, PartialEq, Eq)]
pub struct ServicePatterns(Vec<Pattern>);

#[derive(Clone, PartialEq, Eq)]
enum Pattern {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
}

impl ServicePatterns {
    /// Every service (`*`).
    pub fn any() -> ServicePatterns {
        ServicePatterns(vec![Pattern::Prefix(Vec::new())])
    }

    /// Reads a comma-separated list: `echo,billing.*`. Errors say what is wrong in words.
    pub fn parse(text: &str) -> Result<ServicePatterns, String> {
        let mut patterns = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!("{text:?} has an empty pattern"));
            }
            let pattern = match item.strip_suffix('*') {
                Some(prefix) if prefix.contains('*') => {
                    return Err(format!("{item:?}: '*' may only end a pattern"))
                }
                Some(prefix) => Pattern::Prefix(prefix.as_bytes().to_vec()),
                None if item.contains('*') => {
                    return Err(format!("{item:?}: '*' may only end a pattern"))
                }
                None => Pattern::Exact(item.as_bytes().to_vec()),
            };
            patterns.push(pattern);
        }
        Ok(ServicePatterns(patterns))
    }

    /// True if Titanic may store a request for `service`.
    pub fn allows(&self, service: &[u8]) -> bool {
        if service.starts_with(b"mmi.") || service.starts_with(b"titanic.") {
            return false;
        }
        self.0.iter().any(|pattern| match pattern {
            Pattern::Exact(name) => name == service,
            Pattern::Prefix(prefix) => service.starts_with(prefix),
        })
    }
}

impl fmt::Display for ServicePatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, pattern) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            match pattern {
                Pattern::Exact(name) => write!(f, "{}", String::from_utf8_lossy(name))?,
                Pattern::Prefix(prefix) => write!(f, "{}*", String::from_utf8_lossy(prefix))?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ServicePatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServicePatterns({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_any() {
        let patterns = ServicePatterns::parse("echo, billing.*").unwrap();
        assert!(patterns.allows(b"echo"));
        assert!(!patterns.allows(b"echo2"));
        assert!(patterns.allows(b"billing.charge"));
        assert!(patterns.allows(b"billing."));
        assert!(!patterns.allows(b"billing"));
        assert!(ServicePatterns::parse("*").unwrap().allows(b"anything"));
        assert_eq!(patterns.to_string(), "echo,billing.*");
    }

    #[test]
    fn mmi_and_titanic_are_refused_even_under_a_star() {
        let any = ServicePatterns::any();
        assert!(any.allows(b"echo"));
        assert!(!any.allows(b"mmi.service"));
        assert!(!any.allows(b"titanic.request"));
        assert!(!ServicePatterns::parse("titanic.*")
            .unwrap()
            .allows(b"titanic.reply"));
    }

    #[test]
    fn malformed_lists_are_refused_in_words() {
        assert!(ServicePatterns::parse("")
            .unwrap_err()
            .contains("empty pattern"));
        assert!(ServicePatterns::parse("echo,,x").is_err());
        assert!(ServicePatterns::parse("a*b")
            .unwrap_err()
            .contains("may only end"));
        assert!(ServicePatterns::parse("a**")
            .unwrap_err()
            .contains("may only end"));
    }
}
