//! A Majordomo Protocol broker: MDP/0.1 (rfc.zeromq.org spec 7) with the Majordomo Management
//! Interface (spec 8).
//!
//! Clients send requests for a service by name; workers register for a service and get those
//! requests one at a time, least recently used worker first. One ROUTER socket carries both
//! sub-protocols.
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
