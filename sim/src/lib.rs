//! A deterministic simulation of the whole MDP system: the real broker, worker and client cores
//! over an in-memory model of ZeroMQ's ROUTER, DEALER and REQ sockets, in virtual time, with
//! faults drawn from a seed; in the shape of quinn-proto's `Pair` test harness, and in the
//! discipline of deterministic simulation testing (FoundationDB, TigerBeetle): a failing seed is
//! a bug report that replays exactly.
//!
//! * [`time`]: the virtual clock and the queue of what is due when.
//! * [`net`]: the socket model (identities, ordering, gone peers, high-water marks, REQ's turns)
//!   and the network faults; checked against libzmq by `tests/differential.rs`.
//! * [`scenario`]: what a run is made of (the system, the load, the faults), and
//!   [`report`]: what it produced (the ledger of requests, the coverage, the first broken rule).
//! * [`world`]: the parties (the broker, workers, synchronous and asynchronous clients) driven as
//!   their socket loops drive them, the faults, and the checks run during and after each run.
//!
//! The tests: `tests/seeds.rs` runs thousands of random seeds, prints what they covered and, for
//! each failing seed, the command that replays it (`SIM_SEED=N cargo test -p sim --test seeds --
//! --nocapture replay`; add `SIM_TRACE=1` to see every message the broker received and sent);
//! `tests/drills.rs` runs the twins of the fault drills in `scripts/`; `tests/differential.rs`
//! checks the socket model against libzmq.

pub mod net;
pub mod report;
pub mod scenario;
pub mod time;
pub mod world;

pub use report::{Coverage, Report};
pub use scenario::{FaultKind, Scenario, ScriptedFault};
pub use world::run;
