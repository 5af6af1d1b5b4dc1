//! MDP/Client (spec 7): a client's REQUEST to the broker and the broker's REPLY.
//!
//! ```text
//! REQUEST  client -> broker      REPLY  broker -> client
//!   [0] ""        delimiter        [0] ""        delimiter (a REQ socket strips it)
//!   [1] "MDPC01"  header           [1] "MDPC01"  header
//!   [2] service                    [2] service
//!   [3+] body (one frame or more)  [3+] body
//! ```

use crate::{expect_delimiter, next_frame, Error, Frames, ServiceName, CLIENT_HEADER};

/// A client's REQUEST, as the broker's ROUTER delivers it (identity already taken off).
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// The service the client asks for: `echo`, or `mmi.service` for the broker itself.
    pub service: ServiceName,
    /// The request body: one frame or more, opaque to the broker.
    pub body: Frames,
}

impl Request {
    /// Parses the frames after the header: service name, then at least one body frame.
    pub(crate) fn parse_after_header(
        mut frames: impl Iterator<Item = zmq::Message>,
    ) -> Result<Request, Error> {
        let service = ServiceName::new(&next_frame(&mut frames, "service name")?)?;
        let body: Frames = frames.collect();
        if body.is_empty() {
            return Err(Error::MissingFrame("request body"));
        }
        Ok(Request { service, body })
    }

    /// The frames a client sends on a REQ socket (which adds the delimiter itself):
    /// `MDPC01`, service, body.
    pub fn encode(service: &ServiceName, body: Frames) -> Frames {
        let mut frames = Vec::with_capacity(body.len() + 2);
        frames.push(zmq::Message::from(CLIENT_HEADER));
        frames.push(service.to_frame());
        frames.extend(body);
        frames
    }

    /// The same with the empty delimiter first, for a DEALER socket.
    pub fn encode_for_dealer(service: &ServiceName, body: Frames) -> Frames {
        let mut frames = Vec::with_capacity(body.len() + 3);
        frames.push(zmq::Message::new());
        frames.push(zmq::Message::from(CLIENT_HEADER));
        frames.push(service.to_frame());
        frames.extend(body);
        frames
    }
}

/// The broker's REPLY to a client.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// The service that answered, as spec 7 has the broker repeat it.
    pub service: ServiceName,
    /// The reply body as the worker (or the broker, for `mmi.*`) sent it.
    pub body: Frames,
}

impl Reply {
    /// Parses a reply as a client receives it: with the empty delimiter first (DEALER) or without
    /// it (REQ, which strips it).
    pub fn parse(frames: Frames) -> Result<Reply, Error> {
        let mut frames = frames.into_iter().peekable();
        if frames.peek().is_some_and(|frame| frame.is_empty()) {
            frames.next();
        }
        let header = next_frame(&mut frames, "protocol header")?;
        if &header[..] != CLIENT_HEADER {
            return Err(Error::BadHeader(crate::dump::Printable::truncated(&header)));
        }
        let service = ServiceName::new(&next_frame(&mut frames, "service name")?)?;
        let body: Frames = frames.collect();
        if body.is_empty() {
            return Err(Error::MissingFrame("reply body"));
        }
        Ok(Reply { service, body })
    }

    /// The frames a broker sends on its ROUTER to return a reply to `client`:
    /// client identity, delimiter, `MDPC01`, service, body.
    pub fn encode_for_router(client: &[u8], service: &ServiceName, body: Frames) -> Frames {
        let mut frames = Vec::with_capacity(body.len() + 4);
        frames.push(zmq::Message::from(client));
        frames.push(zmq::Message::new());
        frames.push(zmq::Message::from(CLIENT_HEADER));
        frames.push(service.to_frame());
        frames.extend(body);
        frames
    }
}

/// Skips the empty delimiter a DEALER peer puts first; used by parsers of both sub-protocols.
pub(crate) fn skip_delimiter(frames: &mut impl Iterator<Item = zmq::Message>) -> Result<(), Error> {
    expect_delimiter(frames, "empty delimiter")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Frames {
        parts.iter().map(|part| zmq::Message::from(*part)).collect()
    }

    #[test]
    fn reply_parses_with_or_without_delimiter() {
        let with = Reply::parse(frames(&[b"", b"MDPC01", b"echo", b"hi"])).unwrap();
        let without = Reply::parse(frames(&[b"MDPC01", b"echo", b"hi"])).unwrap();
        assert_eq!(with, without);
        assert_eq!(with.service.as_bytes(), b"echo");
        assert_eq!(&with.body[0][..], b"hi");
    }

    #[test]
    fn reply_errors_name_the_missing_part() {
        assert_eq!(
            Reply::parse(frames(&[b"MDPC01", b"echo"])),
            Err(Error::MissingFrame("reply body"))
        );
        assert_eq!(
            Reply::parse(frames(&[])),
            Err(Error::MissingFrame("protocol header"))
        );
        assert!(matches!(
            Reply::parse(frames(&[b"MDPW01", b"echo", b"x"])),
            Err(Error::BadHeader(_))
        ));
    }

    #[test]
    fn request_encoding_is_what_spec_7_shows() {
        let service = ServiceName::new(b"echo").unwrap();
        let encoded = Request::encode_for_dealer(&service, frames(&[b"a", b"b"]));
        let expected = frames(&[b"", b"MDPC01", b"echo", b"a", b"b"]);
        assert_eq!(encoded, expected);
    }
}
