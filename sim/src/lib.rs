//! A deterministic simulation of the whole MDP system (work in progress).

pub mod net;
pub mod time;
