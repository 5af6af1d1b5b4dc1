//! MDP/Worker (spec 7): the commands between the broker and a worker.
//!
//! ```text
//! every command:  [0] ""  [1] "MDPW01"  [2] command byte  then:
//!   READY      0x01  worker -> broker   [3] service name                  (exactly 4 frames)
//!   REQUEST    0x02  broker -> worker   [3] client address [4] "" [5+] body
//!   REPLY      0x03  worker -> broker   [3] client address [4] "" [5+] body
//!   HEARTBEAT  0x04  both ways          (exactly 3 frames)
//!   DISCONNECT 0x05  both ways          (exactly 3 frames)
//! ```
//!
//! Parsing is strict: a fixed-size command with extra frames, a body-carrying command without a
//! body, or a client address not followed by the empty delimiter is an error, because spec 7 says
//! exactly how many frames each command has and a peer that sends anything else is not speaking
//! MDP/0.1.

use crate::client::skip_delimiter;
use crate::dump::Printable;
use crate::{expect_delimiter, expect_end, next_frame, Command, Error, Frames, ServiceName};
use crate::{CLIENT_HEADER, WORKER_HEADER};

/// A command a worker sends to the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum FromWorker {
    /// "I serve this service": the first command of every worker conversation.
    Ready {
        /// The service the worker registers for.
        service: ServiceName,
    },
    /// The answer to the last REQUEST.
    Reply {
        /// The client address frame of the REQUEST it answers, handed back unchanged.
        client: Vec<u8>,
        /// The reply body, one frame or more, for the client.
        body: Frames,
    },
    /// "I am alive".
    Heartbeat,
    /// "Forget me": the worker is leaving and sends nothing further.
    Disconnect,
}

/// A command the broker sends to a worker.
#[derive(Debug, PartialEq, Eq)]
pub enum ToWorker {
    /// A request to serve; `client` is the envelope to hand back unchanged in the REPLY.
    Request {
        /// The client's address (its ROUTER identity at the broker).
        client: zmq::Message,
        /// The request body as the client sent it.
        body: Frames,
    },
    /// "I am alive".
    Heartbeat,
    /// "Forget me": the broker ends this conversation; the worker should reconnect with a new
    /// socket and READY.
    Disconnect,
}

/// Everything a broker can receive on its ROUTER socket, once the identity frame is taken off.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A client's REQUEST (`MDPC01`).
    Client(crate::client::Request),
    /// A worker's command (`MDPW01`).
    Worker(FromWorker),
}

impl Inbound {
    /// Parses the frames a ROUTER delivers after the sender's identity:
    /// `[""] [MDPC01 | MDPW01] ...`.
    pub fn parse(frames: Frames) -> Result<Inbound, Error> {
        let mut frames = frames.into_iter();
        skip_delimiter(&mut frames)?;
        let header = next_frame(&mut frames, "protocol header")?;
        match &header[..] {
            CLIENT_HEADER => {
                crate::client::Request::parse_after_header(frames).map(Inbound::Client)
            }
            WORKER_HEADER => FromWorker::parse_after_header(frames).map(Inbound::Worker),
            other => Err(Error::BadHeader(Printable::truncated(other))),
        }
    }
}

/// Reads the command frame: exactly one byte, one of the five commands.
fn parse_command(frames: &mut impl Iterator<Item = zmq::Message>) -> Result<Command, Error> {
    let frame = next_frame(frames, "command")?;
    match &frame[..] {
        [byte] => Command::from_byte(*byte).ok_or(Error::UnknownCommand(*byte)),
        other => Err(Error::BadCommandFrame(other.len())),
    }
}

/// Reads `[client address] [""] [body...]`, as REQUEST and REPLY carry it.
fn parse_envelope_and_body(
    frames: &mut impl Iterator<Item = zmq::Message>,
) -> Result<(zmq::Message, Frames), Error> {
    let client = next_frame(frames, "client address")?;
    if client.is_empty() {
        return Err(Error::EmptyClientAddress);
    }
    expect_delimiter(frames, "envelope delimiter")?;
    let body: Frames = frames.collect();
    if body.is_empty() {
        return Err(Error::MissingFrame("body"));
    }
    Ok((client, body))
}

impl FromWorker {
    fn parse_after_header(mut frames: impl Iterator<Item = zmq::Message>) -> Result<Self, Error> {
        let command = parse_command(&mut frames)?;
        let parsed = match command {
            Command::Ready => {
                let service = ServiceName::new(&next_frame(&mut frames, "service name")?)?;
                FromWorker::Ready { service }
            }
            Command::Reply => {
                let (client, body) = parse_envelope_and_body(&mut frames)?;
                return Ok(FromWorker::Reply {
                    client: client.to_vec(),
                    body,
                });
            }
            Command::Heartbeat => FromWorker::Heartbeat,
            Command::Disconnect => FromWorker::Disconnect,
            Command::Request => return Err(Error::UnexpectedCommand(command)),
        };
        expect_end(&mut frames, command)?;
        Ok(parsed)
    }

    /// The command this message carries.
    pub fn command(&self) -> Command {
        match self {
            FromWorker::Ready { .. } => Command::Ready,
            FromWorker::Reply { .. } => Command::Reply,
            FromWorker::Heartbeat => Command::Heartbeat,
            FromWorker::Disconnect => Command::Disconnect,
        }
    }

    /// The frames a worker sends on its DEALER socket, delimiter first.
    pub fn encode(self) -> Frames {
        match self {
            FromWorker::Ready { service } => {
                let mut frames = header(Command::Ready, 1);
                frames.push(service.to_frame());
                frames
            }
            FromWorker::Reply { client, body } => {
                FromWorker::encode_reply(zmq::Message::from(client), body)
            }
            FromWorker::Heartbeat => header(Command::Heartbeat, 0),
            FromWorker::Disconnect => header(Command::Disconnect, 0),
        }
    }

    /// The frames of a REPLY, as `FromWorker::Reply { .. }.encode()` makes them, for a worker
    /// that kept the client address as the `zmq::Message` its REQUEST brought: the address goes
    /// back as that same message, not copied into a `Vec<u8>` and out into a new message (an
    /// allocation or two per request, on the worker's hot path).
    pub fn encode_reply(client: zmq::Message, body: Frames) -> Frames {
        let mut frames = header(Command::Reply, 2 + body.len());
        frames.push(client);
        frames.push(zmq::Message::new());
        frames.extend(body);
        frames
    }
}

impl ToWorker {
    /// Parses what a worker's DEALER receives from the broker: `[""] ["MDPW01"] [command] ...`.
    pub fn parse(frames: Frames) -> Result<ToWorker, Error> {
        let mut frames = frames.into_iter();
        skip_delimiter(&mut frames)?;
        let header = next_frame(&mut frames, "protocol header")?;
        if &header[..] != WORKER_HEADER {
            return Err(Error::BadHeader(Printable::truncated(&header)));
        }
        let command = parse_command(&mut frames)?;
        let parsed = match command {
            Command::Request => {
                let (client, body) = parse_envelope_and_body(&mut frames)?;
                return Ok(ToWorker::Request { client, body });
            }
            Command::Heartbeat => ToWorker::Heartbeat,
            Command::Disconnect => ToWorker::Disconnect,
            Command::Ready | Command::Reply => return Err(Error::UnexpectedCommand(command)),
        };
        expect_end(&mut frames, command)?;
        Ok(parsed)
    }

    /// The command this message carries.
    pub fn command(&self) -> Command {
        match self {
            ToWorker::Request { .. } => Command::Request,
            ToWorker::Heartbeat => Command::Heartbeat,
            ToWorker::Disconnect => Command::Disconnect,
        }
    }

    /// The frames a broker sends on its ROUTER to reach `worker`: identity first, then the command.
    pub fn encode_for_router(self, worker: &[u8]) -> Frames {
        let body_len = match &self {
            ToWorker::Request { body, .. } => 2 + body.len(),
            _ => 0,
        };
        let mut frames = Vec::with_capacity(4 + body_len);
        frames.push(zmq::Message::from(worker));
        frames.extend(header(self.command(), body_len));
        if let ToWorker::Request { client, body } = self {
            frames.push(client);
            frames.push(zmq::Message::new());
            frames.extend(body);
        }
        frames
    }
}

/// `[""] ["MDPW01"] [command]`, with room for `more` frames after it.
fn header(command: Command, more: usize) -> Frames {
    let mut frames = Vec::with_capacity(3 + more);
    frames.push(zmq::Message::new());
    frames.push(zmq::Message::from(WORKER_HEADER));
    frames.push(zmq::Message::from(&[command.byte()][..]));
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Request;

    fn frames(parts: &[&[u8]]) -> Frames {
        parts.iter().map(|part| zmq::Message::from(*part)).collect()
    }

    fn service(name: &str) -> ServiceName {
        name.parse().unwrap()
    }

    #[test]
    fn parses_each_worker_command() {
        let cases: Vec<(Vec<&[u8]>, FromWorker)> = vec![
            (
                vec![b"", b"MDPW01", b"\x01", b"echo"],
                FromWorker::Ready {
                    service: service("echo"),
                },
            ),
            (
                vec![b"", b"MDPW01", b"\x03", b"C1", b"", b"ok", b"more"],
                FromWorker::Reply {
                    client: b"C1".to_vec(),
                    body: frames(&[b"ok", b"more"]),
                },
            ),
            (vec![b"", b"MDPW01", b"\x04"], FromWorker::Heartbeat),
            (vec![b"", b"MDPW01", b"\x05"], FromWorker::Disconnect),
        ];
        for (wire, expected) in cases {
            assert_eq!(
                Inbound::parse(frames(&wire)),
                Ok(Inbound::Worker(expected)),
                "{wire:?}"
            );
        }
    }

    #[test]
    fn parses_a_client_request() {
        let parsed = Inbound::parse(frames(&[b"", b"MDPC01", b"echo", b"a", b"b"])).unwrap();
        assert_eq!(
            parsed,
            Inbound::Client(Request {
                service: service("echo"),
                body: frames(&[b"a", b"b"])
            })
        );
    }

    /// The eight malformed messages that crash the Go and C reference brokers.
    #[test]
    fn malformed_messages_are_typed_errors() {
        let cases: Vec<(Vec<&[u8]>, Error)> = vec![
            (vec![], Error::MissingFrame("empty delimiter")),
            (
                vec![b"MDPC01", b"echo", b"x"],
                Error::NotEmpty {
                    frame: "empty delimiter",
                    len: 6,
                },
            ),
            (vec![b"", b"MDPC01"], Error::MissingFrame("service name")),
            (
                vec![b"", b"MDPC01", b"echo"],
                Error::MissingFrame("request body"),
            ),
            (vec![b"", b"MDPW01"], Error::MissingFrame("command")),
            (
                vec![b"", b"MDPW01", b"\x01"],
                Error::MissingFrame("service name"),
            ),
            (
                vec![b"", b"MDPW01", b"\x03"],
                Error::MissingFrame("client address"),
            ),
            (
                vec![b"", b"MDPW01", b"\x03", b"C1", b"x", b"ok"],
                Error::NotEmpty {
                    frame: "envelope delimiter",
                    len: 1,
                },
            ),
            (
                vec![b"", b"MDPW01", b"\x03", b"C1", b""],
                Error::MissingFrame("body"),
            ),
            (vec![b"", b"MDPW01", b"\x09"], Error::UnknownCommand(9)),
            (vec![b"", b"MDPW01", b""], Error::BadCommandFrame(0)),
            (vec![b"", b"MDPW01", b"\x01\x02"], Error::BadCommandFrame(2)),
            (
                vec![b"", b"MDPW01", b"\x02", b"C1", b"", b"x"],
                Error::UnexpectedCommand(Command::Request),
            ),
            (
                vec![b"", b"MDPW01", b"\x04", b"extra"],
                Error::TrailingFrames {
                    command: Command::Heartbeat,
                    extra: 1,
                },
            ),
            (vec![b"", b"MDPW01", b"\x01", b""], Error::EmptyServiceName),
            (
                vec![b"", b"MDPC02", b"echo"],
                Error::BadHeader(Printable(b"MDPC02".to_vec())),
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(Inbound::parse(frames(&wire)), Err(expected), "{wire:?}");
        }
    }

    #[test]
    fn worker_commands_round_trip_through_the_wire_format() {
        let commands = || {
            vec![
                FromWorker::Ready {
                    service: service("echo"),
                },
                FromWorker::Reply {
                    client: b"\x00\x80\x00\x00\x01".to_vec(),
                    body: frames(&[b"x"]),
                },
                FromWorker::Heartbeat,
                FromWorker::Disconnect,
            ]
        };
        for (command, expected) in commands().into_iter().zip(commands()) {
            assert_eq!(
                Inbound::parse(command.encode()),
                Ok(Inbound::Worker(expected))
            );
        }
    }

    #[test]
    fn a_reply_encoded_from_the_requests_address_is_the_same_reply() {
        let address = b"\x00\x80\x00\x00\x01";
        let from_message =
            FromWorker::encode_reply(zmq::Message::from(&address[..]), frames(&[b"a", b"b"]));
        let from_bytes = FromWorker::Reply {
            client: address.to_vec(),
            body: frames(&[b"a", b"b"]),
        }
        .encode();
        assert_eq!(from_message, from_bytes);
    }

    #[test]
    fn broker_to_worker_round_trip() {
        let request = ToWorker::Request {
            client: zmq::Message::from(&b"C1"[..]),
            body: frames(&[b"hello"]),
        };
        let mut wire = request.encode_for_router(b"W1");
        assert_eq!(&wire.remove(0)[..], b"W1");
        assert_eq!(
            ToWorker::parse(wire),
            Ok(ToWorker::Request {
                client: zmq::Message::from(&b"C1"[..]),
                body: frames(&[b"hello"]),
            })
        );
        for command in [ToWorker::Heartbeat, ToWorker::Disconnect] {
            let expected = command.command();
            let mut wire = command.encode_for_router(b"W1");
            wire.remove(0);
            assert_eq!(ToWorker::parse(wire).map(|c| c.command()), Ok(expected));
        }
        assert_eq!(
            ToWorker::parse(frames(&[b"", b"MDPW01", b"\x01", b"echo"])),
            Err(Error::UnexpectedCommand(Command::Ready))
        );
    }
}
