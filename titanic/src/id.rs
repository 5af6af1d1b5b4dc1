//! Request ids: what `titanic.request` hands back and `titanic.reply` and `titanic.close` take.
//!
//! Spec 9 wants "32 hexadecimal characters". Ours are random version-4 UUIDs (RFC 9562) written
//! without hyphens, drawn from the thread's cryptographically secure generator: the id is all a
//! client needs to read or close a reply, so one client must not be able to guess another's.
//! Ids are written in lower case; one typed in upper case is accepted and means the same request.

use std::fmt;

/// One stored request's id: 16 bytes, shown as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId([u8; 16]);

impl RequestId {
    /// A new random id (UUID version 4, variant 1).
    pub fn random() -> RequestId {
        let mut bytes: [u8; 16] = rand::random();
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        RequestId(bytes)
    }

    /// Reads an id as a client sends it: exactly 32 hex digits, either case. `None` for anything
    /// else, which no stored request can have.
    pub fn parse(text: &[u8]) -> Option<RequestId> {
        if text.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *byte = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
        }
        Some(RequestId(bytes))
    }

    /// The 32 hex digits, as they go in a frame and in the database.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_32_lower_case_hex_digits_of_a_version_4_uuid() {
        let id = RequestId::random();
        let hex = id.to_hex();
        assert_eq!(hex.len(), 32);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // The version nibble (13th digit) and the variant (17th digit: 8, 9, a or b).
        assert_eq!(&hex[12..13], "4");
        assert!("89ab".contains(&hex[16..17]), "{hex}");
        assert_eq!(RequestId::parse(hex.as_bytes()), Some(id));
    }

    #[test]
    fn ids_differ() {
        let ids: std::collections::HashSet<RequestId> =
            (0..1000).map(|_| RequestId::random()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn parsing_takes_either_case_and_refuses_anything_but_32_hex_digits() {
        let lower = b"0123456789abcdef0123456789abcdef";
        let upper = b"0123456789ABCDEF0123456789ABCDEF";
        assert_eq!(RequestId::parse(lower), RequestId::parse(upper));
        assert_eq!(
            RequestId::parse(upper).unwrap().to_hex().as_bytes(),
            &lower[..]
        );
        assert_eq!(RequestId::parse(&lower[..31]), None);
        assert_eq!(RequestId::parse(b"0123456789abcdef0123456789abcdeg"), None);
        assert_eq!(
            RequestId::parse(b"01234567-89ab-cdef-0123-456789abcd"),
            None
        );
        assert_eq!(RequestId::parse(b""), None);
    }
}
