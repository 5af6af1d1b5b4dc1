//! The launcher: the whole gist in one process. A broker, some processors and some clients run as
//! threads; this thread prints what they report and ends the run once every client has its reply.
//!
//! The order of events:
//!
//! 1. Bind the broker's two ROUTERs here, so a bad endpoint is an error before any thread starts.
//! 2. Start the broker thread and the processor threads. Each processor says `READY`.
//! 3. Wait until the broker has seen every processor's `READY` ([`Event::ProcessorJoined`]), then
//!    start the clients. ZeroMQ does not need this (a request would simply wait for a processor),
//!    but it makes the demo fair from the first request: each of the first requests goes to a
//!    different processor, so every processor gets work, even with a tiny `--unit-ms`.
//! 4. Write each line as it is reported, until every client has reported its reply.
//! 5. Raise the stop signal, join every thread; the broker removes its ipc files as it ends.
//!
//! Each client's load is drawn up front from one seeded random generator, so `--seed` gives the
//! same loads to the same clients whatever order the threads run in.

use std::collections::HashSet;
use std::io::Write;
use std::ops::RangeInclusive;
use std::time::Duration;

use log::{debug, info};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::broker::Broker;
use crate::client::{client_identity, run_client, ClientConfig};
use crate::endpoint::Endpoints;
use crate::error::Error;
use crate::event::{ClientReply, Event, TakenRequest};
use crate::processor::{processor_identity, run_processor, ProcessorConfig};
use crate::stop::StopSignal;
use crate::threads::RoleThreads;

/// The loads a client may ask for, in units, as in the gist (`1 + rand(3)`).
pub const LOADS: RangeInclusive<u32> = 1..=3;

/// The most clients one run may start. Each is a thread with its own socket, and libzmq allows
/// 1023 sockets per context by default.
pub const MAX_CLIENTS: usize = 500;

/// The most processors one run may start (see [`MAX_CLIENTS`]).
pub const MAX_PROCESSORS: usize = 100;

/// Everything the demo can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoConfig {
    /// How many clients, each sending one request (the gist: 10).
    pub clients: usize,
    /// How many processors (the gist: 3).
    pub processors: usize,
    /// How long one unit of load takes (the gist: one second).
    pub unit: Duration,
    /// Where the broker binds.
    pub endpoints: Endpoints,
    /// The seed for the clients' loads; `None` draws one (and logs it at `info`).
    pub seed: Option<u64>,
}

impl Default for DemoConfig {
    /// The gist's run: 10 clients, 3 processors, 1 s units, `frontend.ipc` and `backend.ipc`.
    fn default() -> Self {
        DemoConfig {
            clients: 10,
            processors: 3,
            unit: Duration::from_secs(1),
            endpoints: Endpoints::default(),
            seed: None,
        }
    }
}

impl DemoConfig {
    /// Checks the counts: at least one client and one processor, and not more than the limits.
    pub fn validate(&self) -> Result<(), Error> {
        check_count("clients", self.clients, MAX_CLIENTS)?;
        check_count("processors", self.processors, MAX_PROCESSORS)
    }
}

/// Checks that `count` is in `1..=max`.
pub(crate) fn check_count(setting: &'static str, count: usize, max: usize) -> Result<(), Error> {
    if count == 0 {
        return Err(Error::InvalidSetting {
            setting,
            reason: format!("need at least 1 ({setting} 0 would have nothing to do)"),
        });
    }
    if count > max {
        return Err(Error::InvalidSetting {
            setting,
            reason: format!("{count} is more than {max}, the most one run may start"),
        });
    }
    Ok(())
}

/// The loads of `count` clients, client 0 first, drawn from [`LOADS`] with `seed`. The same seed
/// gives the same loads (with the same version of `rand`).
pub fn choose_loads(count: usize, seed: u64) -> Vec<u32> {
    let mut generator = StdRng::seed_from_u64(seed);
    (0..count).map(|_| generator.random_range(LOADS)).collect()
}

/// What a demo did, in the order the lines were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    /// The seed the loads were drawn with.
    pub seed: u64,
    /// Every `REQ` line: which processor took which client's request.
    pub requests: Vec<TakenRequest>,
    /// Every `REP` line: one per client.
    pub replies: Vec<ClientReply>,
}

/// Runs the demo, writing the gist's lines to `out` as they happen. Returns once every client has
/// its reply and every thread has ended, or with an error once all threads have been stopped.
/// Raising `interrupt` (Ctrl-C in the binary) ends the run early with [`Error::Interrupted`];
/// pass [`StopSignal::never`] when nothing should interrupt it.
pub fn run_demo(
    config: &DemoConfig,
    out: &mut dyn Write,
    interrupt: &StopSignal,
) -> Result<DemoReport, Error> {
    config.validate()?;
    let seed = config.seed.unwrap_or_else(rand::random);
    info!("client loads drawn with seed {seed} (pass --seed {seed} to repeat them)");
    let mut report = DemoReport {
        seed,
        requests: Vec::new(),
        replies: Vec::new(),
    };

    let mut roles = RoleThreads::new();
    let outcome = drive(config, &mut roles, &mut report, out, interrupt);
    // Whatever happened, no thread is left behind: stop and join them all first.
    let joined = roles.stop_and_join();
    outcome?;
    joined?;
    Ok(report)
}

/// Steps 1 to 4 of the module description; the caller does step 5 whatever this returns.
fn drive(
    config: &DemoConfig,
    roles: &mut RoleThreads,
    report: &mut DemoReport,
    out: &mut dyn Write,
    interrupt: &StopSignal,
) -> Result<(), Error> {
    let broker = Broker::bind(roles.context(), &config.endpoints)?.report_to(roles.events_sender());
    let frontend = broker.frontend_endpoint().to_owned();
    let backend = broker.backend_endpoint().to_owned();
    roles.spawn("broker".to_owned(), move |kit| {
        let stats = broker.run(&kit.stop)?;
        debug!("broker: {stats:?}");
        Ok(())
    })?;

    for number in 0..config.processors {
        let processor = ProcessorConfig {
            identity: processor_identity(number),
            backend: backend.clone(),
            unit: config.unit,
        };
        roles.spawn(processor.identity.clone(), move |kit| {
            let answered = run_processor(&kit.context, &processor, &kit.events, &kit.stop)?;
            debug!("{} answered {answered} requests", processor.identity);
            Ok(())
        })?;
    }

    let loads = choose_loads(config.clients, report.seed);
    let mut joined_processors = HashSet::new();
    let mut clients_started = false;
    while report.replies.len() < config.clients {
        let Some(event) = roles.next_event(interrupt) else {
            return Err(Error::Interrupted {
                replies: report.replies.len(),
                clients: config.clients,
            });
        };
        match event {
            Event::ProcessorJoined { processor } => {
                joined_processors.insert(processor);
                if !clients_started && joined_processors.len() >= config.processors {
                    clients_started = true;
                    for (number, load) in loads.iter().copied().enumerate() {
                        let client = ClientConfig {
                            identity: client_identity(number),
                            frontend: frontend.clone(),
                            load,
                        };
                        roles.spawn(client.identity.clone(), move |kit| {
                            run_client(&kit.context, &client, &kit.events, &kit.stop).map(|_| ())
                        })?;
                    }
                }
            }
            Event::RequestTaken(request) => {
                write_line(out, &request)?;
                report.requests.push(request);
            }
            Event::ReplyReceived(reply) => {
                write_line(out, &reply)?;
                report.replies.push(reply);
            }
            Event::RoleFailed { role, error } => {
                return Err(Error::RoleFailed {
                    role,
                    source: Box::new(error),
                })
            }
        }
    }
    Ok(())
}

/// Writes one line and flushes it, so lines show up as they happen even through a pipe.
pub(crate) fn write_line(out: &mut dyn Write, line: &dyn std::fmt::Display) -> Result<(), Error> {
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_gists_run() {
        let config = DemoConfig::default();
        assert_eq!((config.clients, config.processors), (10, 3));
        assert_eq!(config.unit, Duration::from_secs(1));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn zero_clients_or_processors_is_refused_with_a_reason() {
        let no_clients = DemoConfig {
            clients: 0,
            ..DemoConfig::default()
        };
        let error = no_clients.validate().expect_err("0 clients is invalid");
        assert!(error
            .to_string()
            .starts_with("invalid clients: need at least 1"));

        let no_processors = DemoConfig {
            processors: 0,
            ..DemoConfig::default()
        };
        assert!(no_processors.validate().is_err());

        let too_many = DemoConfig {
            clients: MAX_CLIENTS + 1,
            ..DemoConfig::default()
        };
        assert!(too_many.validate().is_err());
    }

    #[test]
    fn loads_are_between_one_and_three_and_repeat_with_the_seed() {
        let loads = choose_loads(1000, 7);
        assert!(loads.iter().all(|load| LOADS.contains(load)));
        // All three loads show up, so the range is really used.
        for load in LOADS {
            assert!(loads.contains(&load));
        }
        assert_eq!(choose_loads(10, 42), choose_loads(10, 42));
        assert_ne!(choose_loads(20, 1), choose_loads(20, 2));
    }
}
