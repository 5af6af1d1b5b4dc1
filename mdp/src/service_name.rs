//! Service names: the key that joins a client's request to the workers that serve it.

use crate::dump::Printable;
use crate::Error;

/// A service name as it travels in frame 2 of a client REQUEST and frame 3 of a worker READY.
///
/// Spec 7 calls it a "printable string"; this crate accepts any bytes (and prints the unprintable
/// ones as hex in logs), but not an empty name and not one longer than [`ServiceName::MAX_LEN`]
/// bytes, so a peer cannot make the broker keep a multi-megabyte key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName(Box<[u8]>);

impl ServiceName {
    /// Longest service name accepted, in bytes.
    pub const MAX_LEN: usize = 255;

    /// The prefix of the names the broker answers itself (spec 8).
    pub const MMI_PREFIX: &'static [u8] = b"mmi.";

    /// Checks a service name frame.
    pub fn new(bytes: &[u8]) -> Result<ServiceName, Error> {
        if bytes.is_empty() {
            Err(Error::EmptyServiceName)
        } else if bytes.len() > Self::MAX_LEN {
            Err(Error::ServiceNameTooLong(bytes.len()))
        } else {
            Ok(ServiceName(bytes.into()))
        }
    }

    /// The name's bytes, as sent on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True for names in the `mmi.` namespace, which only the broker may serve (spec 8).
    pub fn is_mmi(&self) -> bool {
        self.0.starts_with(Self::MMI_PREFIX)
    }

    /// The name as a frame, ready to send.
    pub fn to_frame(&self) -> zmq::Message {
        zmq::Message::from(&self.0[..])
    }
}

impl std::str::FromStr for ServiceName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        ServiceName::new(s.as_bytes())
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Printable::fmt_bytes(&self.0, f)
    }
}

impl std::fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceName({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_and_overlong_names() {
        assert_eq!(ServiceName::new(b""), Err(Error::EmptyServiceName));
        assert_eq!(
            ServiceName::new(&[b'a'; 256]),
            Err(Error::ServiceNameTooLong(256))
        );
        assert!(ServiceName::new(&[b'a'; 255]).is_ok());
    }

    #[test]
    fn mmi_namespace_is_the_prefix_only() {
        assert!(ServiceName::new(b"mmi.service").unwrap().is_mmi());
        assert!(ServiceName::new(b"mmi.").unwrap().is_mmi());
        assert!(!ServiceName::new(b"mmi").unwrap().is_mmi());
        assert!(!ServiceName::new(b"echo.mmi.").unwrap().is_mmi());
    }

    #[test]
    fn displays_unprintable_bytes_as_hex() {
        let name = ServiceName::new(b"echo\x00\xff").unwrap();
        assert_eq!(name.to_string(), "echo\\x00\\xff");
    }
}
