//! Frames as a person reads them, in logs and error messages.
//!
//! A ZeroMQ message is a list of frames that always travel together. The socket layer
//! ([`zsocket::recv`], [`zsocket::send`]) moves them as [`zmq::Message`]s without copying, and the
//! broker sends the very same `Message`s on: routing only ever adds or removes whole frames at the
//! front. What is left here is showing them: identities as text, or as hex when libzmq made them up.

use std::fmt::Write as _;

/// An identity (or any frame) as a person would like to read it: the text itself when it is
/// printable ASCII, like `CLIENT-3`; otherwise hex, like `0x0080e6a3b1` for the 5 opaque bytes
/// libzmq makes up for a peer that did not choose an identity.
pub(crate) fn printable(bytes: &[u8]) -> String {
    if bytes
        .iter()
        .all(|byte| byte.is_ascii_graphic() || *byte == b' ')
    {
        // All bytes are ASCII, so this conversion cannot fail; fall back to hex anyway.
        if let Ok(text) = std::str::from_utf8(bytes) {
            return text.to_owned();
        }
    }
    let mut hex = String::with_capacity(2 + 2 * bytes.len());
    hex.push_str("0x");
    for byte in bytes {
        // Writing to a String never fails.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// One log line for a whole message: each frame in brackets, the empty delimiter as `[]`.
/// For example `[PROCESSOR-1][][CLIENT-3][][2]`.
pub(crate) fn describe(frames: &[zmq::Message]) -> String {
    let mut line = String::new();
    for frame in frames {
        line.push('[');
        if !frame.is_empty() {
            line.push_str(&printable(frame));
        }
        line.push(']');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_identities_stay_text_and_opaque_ones_become_hex() {
        assert_eq!(printable(b"CLIENT-3"), "CLIENT-3");
        assert_eq!(printable(b"OK from PROCESSOR-1"), "OK from PROCESSOR-1");
        assert_eq!(printable(&[0x00, 0x80, 0xe6, 0xa3, 0xb1]), "0x0080e6a3b1");
        assert_eq!(printable(b""), "");
    }

    #[test]
    fn describe_shows_every_frame_and_the_empty_delimiters() {
        let frames: zsocket::Frames = vec![
            "PROCESSOR-1".into(),
            zmq::Message::new(),
            "CLIENT-3".into(),
            zmq::Message::new(),
            "2".into(),
        ];
        assert_eq!(describe(&frames), "[PROCESSOR-1][][CLIENT-3][][2]");
    }
}
