//! The Majordomo Protocol on the wire: MDP/0.1 (rfc.zeromq.org spec 7) and the Majordomo Management
//! Interface (spec 8).
//!
//! This crate knows frames and nothing else: no sockets are opened here, no clock is read. It turns
//! the frames a ZeroMQ socket delivers into typed messages (parsing returns a [`Result`], it never
//! panics on what a peer sent) and typed messages back into frames.
//!
//! A request's trip through a real broker (started here on a free port), every message built
//! and read with this crate: a worker's READY and REPLY, a client's REQUEST and the REPLY it gets.
//!
//! ```
//! use mdp::worker::{FromWorker, ToWorker};
//! use mdp::{client, dump, ServiceName};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut broker = broker::Server::bind(
//!     &["tcp://127.0.0.1:*".to_owned()],
//!     broker::Config::default(),
//!     &Default::default(),
//! )?;
//! let endpoint = broker.endpoints()[0].clone();
//! let stop = broker.stop_handle();
//! let broker = std::thread::spawn(move || broker.run());
//!
//! let context = zmq::Context::new();
//! let echo: ServiceName = "echo".parse()?;
//! let worker = context.socket(zmq::DEALER)?;
//! let caller = context.socket(zmq::DEALER)?;
//! for socket in [&worker, &caller] {
//!     socket.set_rcvtimeo(10_000)?; // fail, rather than hang, if nothing comes
//!     socket.connect(&endpoint)?;
//! }
//! // What a socket delivers, as the Frames the parsers take (an error after 10 s: EAGAIN).
//! let recv = |socket: &zmq::Socket| -> Result<mdp::Frames, zmq::Error> {
//!     Ok(socket.recv_multipart(0)?.into_iter().map(zmq::Message::from).collect())
//! };
//! // ["", "MDPW01", 0x01, "echo"]
//! worker.send_multipart(FromWorker::Ready { service: echo.clone() }.encode(), 0)?;
//! // ["", "MDPC01", "echo", "hello"]: on a DEALER the empty delimiter is ours to send.
//! caller.send_multipart(client::Request::encode_for_dealer(&echo, vec!["hello".into()]), 0)?;
//!
//! let (client_address, body) = loop {
//!     let frames = recv(&worker)?;
//!     println!("broker -> worker: {}", dump::Message(&frames));
//!     // ["", "MDPW01", 0x02, <client address>, "", "hello"]
//!     match ToWorker::parse(frames)? {
//!         ToWorker::Request { client, body } => break (client, body),
//!         _ => continue, // a HEARTBEAT
//!     }
//! };
//! // ["", "MDPW01", 0x03, <client address>, "", "hello"]: the address goes back unchanged.
//! worker.send_multipart(FromWorker::encode_reply(client_address, body), 0)?;
//!
//! // ["", "MDPC01", "echo", "hello"]
//! let reply = client::Reply::parse(recv(&caller)?)?;
//! assert_eq!(reply.service, echo);
//! assert_eq!(&reply.body[0][..], b"hello");
//! # stop.stop();
//! # broker.join().expect("the broker thread")?;
//! # Ok(())
//! # }
//! ```
//!
//! # The two sub-protocols
//!
//! Every MDP message starts with a six-byte protocol header that says which side of the broker it
//! belongs to:
//!
//! * `MDPC01` ([`CLIENT_HEADER`]): a client's REQUEST and the broker's REPLY to it.
//! * `MDPW01` ([`WORKER_HEADER`]): the worker dialog, whose next frame is a one-byte [`Command`].
//!
//! A ROUTER socket prepends the sender's identity to each message it receives, and a DEALER or
//! ROUTER peer puts an empty "delimiter" frame before the header. The parsers here take the frames
//! *after* the identity, starting with that empty frame, exactly as the broker's ROUTER hands them
//! over; [`client::Reply::parse`] also accepts them without the empty frame, as a REQ socket
//! delivers them.
//!
//! Frames move, they are not copied: bodies are kept as the [`zmq::Message`]s they arrived in, so
//! a broker can forward a request body to a worker without touching its bytes.

#![warn(missing_docs)]

pub mod client;
pub mod dump;
mod error;
pub mod failure;
pub mod mmi;
mod service_name;
pub mod tries;
pub mod worker;

pub use error::Error;
pub use service_name::ServiceName;

/// The frames of one multipart message, in order.
pub type Frames = Vec<zmq::Message>;

/// Protocol header of MDP/Client 0.1 (spec 7): first frame after the delimiter of a REQUEST or REPLY.
pub const CLIENT_HEADER: &[u8] = b"MDPC01";

/// Protocol header of MDP/Worker 0.1 (spec 7): first frame after the delimiter of a worker command.
pub const WORKER_HEADER: &[u8] = b"MDPW01";

/// The heartbeat interval the spec's reference implementation uses, in milliseconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 2500;

/// How many missed heartbeats make a peer dead (spec 7 says "usually 3-5").
pub const DEFAULT_HEARTBEAT_LIVENESS: u32 = 3;

/// The one-byte command frame of an MDP/Worker message (frame 2 in spec 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    /// Worker -> broker: "I serve this service". Exactly once, first.
    Ready = 0x01,
    /// Broker -> worker: a client's request, with the client's address.
    Request = 0x02,
    /// Worker -> broker: the answer to the last REQUEST, with the client's address.
    Reply = 0x03,
    /// Either way: "I am alive".
    Heartbeat = 0x04,
    /// Either way: "forget me"; no further commands follow.
    Disconnect = 0x05,
}

impl Command {
    /// The command for a command byte, or `None` if the byte is not one of spec 7's five.
    pub fn from_byte(byte: u8) -> Option<Command> {
        match byte {
            0x01 => Some(Command::Ready),
            0x02 => Some(Command::Request),
            0x03 => Some(Command::Reply),
            0x04 => Some(Command::Heartbeat),
            0x05 => Some(Command::Disconnect),
            _ => None,
        }
    }

    /// The byte that stands for this command on the wire.
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// The command's name as the spec writes it.
    pub fn name(self) -> &'static str {
        match self {
            Command::Ready => "READY",
            Command::Request => "REQUEST",
            Command::Reply => "REPLY",
            Command::Heartbeat => "HEARTBEAT",
            Command::Disconnect => "DISCONNECT",
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Takes the next frame, or says which frame was missing.
pub(crate) fn next_frame(
    frames: &mut impl Iterator<Item = zmq::Message>,
    name: &'static str,
) -> Result<zmq::Message, Error> {
    frames.next().ok_or(Error::MissingFrame(name))
}

/// Takes the next frame and checks it is the empty delimiter.
pub(crate) fn expect_delimiter(
    frames: &mut impl Iterator<Item = zmq::Message>,
    name: &'static str,
) -> Result<(), Error> {
    let frame = next_frame(frames, name)?;
    if frame.is_empty() {
        Ok(())
    } else {
        Err(Error::NotEmpty {
            frame: name,
            len: frame.len(),
        })
    }
}

/// Checks that no frame is left over after a fixed-size command.
pub(crate) fn expect_end(
    frames: &mut impl Iterator<Item = zmq::Message>,
    after: Command,
) -> Result<(), Error> {
    match frames.count() {
        0 => Ok(()),
        extra => Err(Error::TrailingFrames {
            command: after,
            extra,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_bytes_round_trip_and_unknown_bytes_are_none() {
        for byte in 0..=u8::MAX {
            match Command::from_byte(byte) {
                Some(command) => assert_eq!(command.byte(), byte),
                None => assert!(byte == 0 || byte > 5, "byte {byte} should be a command"),
            }
        }
        assert_eq!(Command::Heartbeat.to_string(), "HEARTBEAT");
    }
}
