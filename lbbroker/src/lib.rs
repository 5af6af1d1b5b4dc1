//! The load-balancing broker of the zguide, as the Ruby `lbbroker` gist shows it: clients and
//! processors that never know about each other, and a broker in the middle that hands each
//! request to the processor that has been waiting longest.
//!
//! ```text
//!   CLIENT-0..9 (REQ) --connect--> frontend ROUTER [broker] backend ROUTER <--connect-- PROCESSOR-0..2 (REQ)
//! ```
//!
//! The crate is laid out the way the pattern is explained:
//!
//! - [`balancer`]: the broker's decisions with no sockets at all: which socket to listen to, and
//!   which frames go where. This is where the least-recently-used (LRU) rule lives and is tested.
//! - [`broker`]: the thin loop around it: two ROUTER sockets, `zmq::poll`, and the balancer.
//! - [`processor`] and [`client`]: the two kinds of REQ peers, one thread each.
//! - [`demo`]: the launcher that runs everything as threads of one process, like the gist, and
//!   reports every output line to the caller; [`standalone`] runs one role alone.
//! - [`event`], [`stop`], [`frames`], [`endpoint`], [`error`]: the plumbing: what threads tell the
//!   printing thread, how they are told to stop, multipart messages, ipc socket files, errors.
//!
//! Nothing here prints to stdout: roles send [`event::Event`]s over a crossbeam channel and the
//! launching thread writes the gist's lines to whatever `std::io::Write` it was given.

pub mod balancer;
pub mod broker;
pub mod client;
pub mod demo;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod frames;
pub mod processor;
pub mod standalone;
pub mod stop;

mod threads;

pub use balancer::LoadBalancer;
pub use broker::{Broker, BrokerStats};
pub use demo::{run_demo, DemoConfig, DemoReport};
pub use endpoint::Endpoints;
pub use error::Error;
pub use event::{ClientReply, Event, TakenRequest};
pub use stop::{stop_pair, StopHandle, StopSignal};
