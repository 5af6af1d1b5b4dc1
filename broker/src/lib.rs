//! A Majordomo Protocol broker: MDP/0.1 (rfc.zeromq.org spec 7) with the Majordomo Management
//! Interface (spec 8).
//!
//! Clients send requests for a service by name; workers register for a service and get those
//! requests one at a time, least recently used worker first. One ROUTER socket carries both
//! sub-protocols.
//!
//! A broker on a free port, with a worker and a client written frame by frame with the `mdp`
//! crate, so that every message the broker relays is in sight:
//!
//! ```
//! use mdp::worker::{FromWorker, ToWorker};
//! use std::thread;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut server = broker::Server::bind(
//!     &["tcp://127.0.0.1:*".to_owned()], // port 0: the system picks a free one
//!     broker::Config::default(),
//!     &Default::default(),
//! )?;
//! let endpoint = server.endpoints()[0].clone(); // tcp://127.0.0.1:<the port it got>
//! let stop = server.stop_handle();
//! let broker = thread::spawn(move || server.run());
//!
//! let context = zmq::Context::new();
//! let echo: mdp::ServiceName = "echo".parse()?;
//!
//! // A worker: a DEALER that says READY, then answers one REQUEST with its own body.
//! let worker = context.socket(zmq::DEALER)?;
//! worker.set_rcvtimeo(10_000)?; // fail, rather than hang, if nothing comes
//! worker.connect(&endpoint)?;
//! zsocket::send(&worker, FromWorker::Ready { service: echo.clone() }.encode(), 0)?;
//!
//! // A client: a REQ socket (it adds the empty delimiter itself).
//! let client = context.socket(zmq::REQ)?;
//! client.set_rcvtimeo(10_000)?;
//! client.connect(&endpoint)?;
//! zsocket::send(&client, mdp::client::Request::encode(&echo, vec!["hello".into()]), 0)?;
//!
//! // The broker hands the request on with the client's address, which the reply carries back.
//! loop {
//!     let frames = zsocket::recv(&worker, 0)?.ok_or("no request within 10 s")?;
//!     if let ToWorker::Request { client, body } = ToWorker::parse(frames)? {
//!         zsocket::send(&worker, FromWorker::encode_reply(client, body), 0)?;
//!         break;
//!     } // else a HEARTBEAT: read on
//! }
//! let frames = zsocket::recv(&client, 0)?.ok_or("no reply within 10 s")?;
//! let reply = mdp::client::Reply::parse(frames)?;
//! assert_eq!((reply.service, &reply.body[0][..]), (echo, &b"hello"[..]));
//!
//! stop.stop(); // run sends DISCONNECT to the worker and returns its counters
//! let stats = broker.join().expect("the broker thread")?;
//! assert_eq!((stats.requests_received, stats.replies_forwarded), (1, 1));
//! # Ok(())
//! # }
//! ```
//!
//! The crate has two layers, after the sans-IO style of `quinn-proto`, and a helper thread:
//! * [`core`]: the broker as a pure state machine. It is given the time and each message, and
//!   says what to send. No sockets, no clock: tested with a fake clock and fuzzed alone.
//! * [`server`]: the thin I/O loop: binds the ROUTER socket, waits in `recv` until a message or
//!   the core's next deadline, feeds the core, and sends what the core says.
//! * [`monitor`]: a thread that logs what happens to the ROUTER's connections (accepted, closed,
//!   refused), read from a ZeroMQ socket monitor: the only trace of a peer that libzmq cut off for
//!   a frame over `--max-message-size`.
//!
//! * [`live`]: with `--http ADDR`, the dashboard ([`dashboard`]): `/metrics`, `/status` and a
//!   live page, from a snapshot the loop publishes at most every 100 ms.
//!
//! The choices made where the specs are silent are listed in [`core`]'s documentation.

#![warn(missing_docs)]

pub mod access;
pub mod auth;
pub mod backlog;
pub mod core;
pub mod live;
pub mod monitor;
pub mod server;
mod service;
#[doc(hidden)]
pub mod testing;
pub mod zap;

pub use crate::core::{Broker, Config, Outgoing, Stats};
pub use crate::server::{Server, ServerError};
pub use zsocket::StopHandle;
