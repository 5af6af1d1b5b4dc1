//! Fuzz target: any bytes become a broker configuration and a sequence of events (messages from a
//! few peers, mostly well-formed MDP/0.1 with mutations, plus clock jumps, ticks, undeliverable
//! reports and shutdowns; the format is on `broker::testing::decode`), which are fed to the broker
//! core. After every event `broker::testing::Driver` checks the core's invariants and what it
//! sent: to peers it heard from only, parsing back, nothing to a disconnected worker, counters
//! that add up, memory bounded. Any broken rule panics, which libFuzzer reports as a crash.
//!
//! The same events and checks run in the proptest `broker/tests/proptest_core.rs`; here they run
//! for as long as you let them, on inputs libFuzzer evolves towards new code paths.
#![no_main]

use broker::testing::{decode, Driver};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (config, events) = decode(data);
    Driver::run(config, &events);
});
