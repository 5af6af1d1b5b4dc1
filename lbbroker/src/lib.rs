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
//! - `balancer`: the broker's decisions with no sockets at all: which socket to listen to, and
//!   which frames go where. This is where the least-recently-used (LRU) rule lives and is tested.
//! - `broker`: the thin loop around it: two ROUTER sockets, one wait, and the balancer.
//! - `peers`: the two kinds of REQ peers, processors and clients, and the lines they report.
//! - `roles`: runs them, each on its own thread like the gist's, and prints what they report:
//!   the whole demo in one process ([`run_demo`]), or one role alone ([`run_broker`],
//!   [`run_processors`], [`run_clients`]).
//! - `live`: with `--http`, what the broker counts and the snapshot of its queue it publishes
//!   for the [`dashboard`] (a live page, `/metrics`, `/status`).
//! - `endpoint`, `frames`, `error`: where the sockets live (and the ipc files they leave),
//!   frames as logs show them, the errors.
//!
//! Peers that leave, and identities used twice. A processor that stops is noticed the first time
//! a request is sent to it (the ROUTER refuses it): it leaves the ready queue and the request goes
//! to the next ready processor, or waits for one; a request is never dropped. A second processor
//! or client with an identity already in use *takes it over* (`ZMQ_ROUTER_HANDOVER` on both
//! ROUTERs): the newer connection gets the identity, the older one is cut off, and the broker logs
//! a warning. (The other choice, refusing the newcomer, is not open to a ROUTER: libzmq parks such
//! a peer silently, and nothing sent can reach it to tell it so.) The rules are in `balancer`.
//!
//! Sockets are read, written, waited on and stopped through the workspace's socket layer,
//! [`zsocket`]. Nothing here prints to stdout: roles report [`Event`]s over a channel and the
//! launching thread writes the gist's lines to whatever `std::io::Write` it was given.

mod balancer;
mod broker;
mod endpoint;
mod error;
mod frames;
mod live;
mod peers;
mod roles;

pub use broker::{Broker, BrokerStats};
pub use endpoint::{Endpoints, DEFAULT_BACKEND, DEFAULT_FRONTEND};
pub use error::{BindCause, Error};
pub use live::SERVICE as DASHBOARD_SERVICE;
pub use peers::{ClientReply, TakenRequest};
pub use roles::{
    run_broker, run_clients, run_demo, run_processors, ClientGroup, DemoConfig, DemoReport, Event,
    ProcessorGroup, MAX_CLIENTS, MAX_PROCESSORS,
};
/// The one stop API of the workspace: see [`zsocket::stop`].
pub use zsocket::{stop_pair, StopHandle, StopSignal};
