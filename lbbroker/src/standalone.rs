//! One role alone, so the pattern can be shown with the broker, the processors and the clients in
//! separate terminals (or on separate machines, with `tcp://` endpoints). Start them in any order:
//! ZeroMQ queues a connecting peer's messages until the other side binds.
//!
//! The broker and the processors serve until `interrupt` is raised (Ctrl-C in the binary); the
//! clients end once each has its reply.

use std::io::Write;
use std::time::Duration;

use log::{debug, info};

use crate::broker::{Broker, BrokerStats};
use crate::client::{client_identity, run_client, ClientConfig};
use crate::demo::{check_count, choose_loads, write_line, MAX_CLIENTS, MAX_PROCESSORS};
use crate::endpoint::Endpoints;
use crate::error::Error;
use crate::event::{ClientReply, Event};
use crate::processor::{processor_identity, run_processor, ProcessorConfig};
use crate::stop::StopSignal;
use crate::threads::RoleThreads;

/// Binds the broker and forwards messages until `interrupt` is raised; removes its ipc files.
pub fn run_broker(endpoints: &Endpoints, interrupt: &StopSignal) -> Result<BrokerStats, Error> {
    let context = zmq::Context::new();
    let broker = Broker::bind(&context, endpoints)?;
    info!(
        "broker: clients connect to {}, processors to {}",
        broker.frontend_endpoint(),
        broker.backend_endpoint()
    );
    broker.run(interrupt)
}

/// A group of processors for [`run_processors`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorGroup {
    /// How many processors.
    pub count: usize,
    /// The number in the first identity: with 3, the group is `PROCESSOR-3`, `-4`, ... Give each
    /// terminal its own range: two peers with one identity cannot both talk to one ROUTER.
    pub first_id: usize,
    /// The broker's backend endpoint.
    pub backend: String,
    /// How long one unit of load takes.
    pub unit: Duration,
}

/// Runs a group of processors, writing their `REQ` lines to `out`, until `interrupt` is raised.
/// Returns how many requests they took.
pub fn run_processors(
    group: &ProcessorGroup,
    out: &mut dyn Write,
    interrupt: &StopSignal,
) -> Result<usize, Error> {
    check_count("processors", group.count, MAX_PROCESSORS)?;
    check_first_id(group.first_id, group.count)?;
    let mut roles = RoleThreads::new();
    let outcome = serve_processors(group, &mut roles, out, interrupt);
    let joined = roles.stop_and_join();
    let taken = outcome?;
    joined?;
    Ok(taken)
}

fn serve_processors(
    group: &ProcessorGroup,
    roles: &mut RoleThreads,
    out: &mut dyn Write,
    interrupt: &StopSignal,
) -> Result<usize, Error> {
    for number in group.first_id..group.first_id + group.count {
        let processor = ProcessorConfig {
            identity: processor_identity(number),
            backend: group.backend.clone(),
            unit: group.unit,
        };
        roles.spawn(processor.identity.clone(), move |kit| {
            let answered = run_processor(&kit.context, &processor, &kit.events, &kit.stop)?;
            debug!("{} answered {answered} requests", processor.identity);
            Ok(())
        })?;
    }
    let mut taken = 0;
    // Processors never finish on their own: only an interrupt or a failure ends this loop.
    while let Some(event) = roles.next_event(interrupt) {
        match event {
            Event::RequestTaken(request) => {
                write_line(out, &request)?;
                taken += 1;
            }
            Event::RoleFailed { role, error } => {
                return Err(Error::RoleFailed {
                    role,
                    source: Box::new(error),
                })
            }
            Event::ProcessorJoined { .. } | Event::ReplyReceived(_) => {}
        }
    }
    Ok(taken)
}

/// A group of clients for [`run_clients`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientGroup {
    /// How many clients, one request each.
    pub count: usize,
    /// The number in the first identity (see [`ProcessorGroup::first_id`]).
    pub first_id: usize,
    /// The broker's frontend endpoint.
    pub frontend: String,
    /// The seed for the loads; `None` draws one.
    pub seed: Option<u64>,
}

/// Runs a group of clients, writing their `REP` lines to `out`, until each has its reply.
/// An interrupt before that is an [`Error::Interrupted`].
pub fn run_clients(
    group: &ClientGroup,
    out: &mut dyn Write,
    interrupt: &StopSignal,
) -> Result<Vec<ClientReply>, Error> {
    check_count("clients", group.count, MAX_CLIENTS)?;
    check_first_id(group.first_id, group.count)?;
    let seed = group.seed.unwrap_or_else(rand::random);
    info!("client loads drawn with seed {seed} (pass --seed {seed} to repeat them)");
    let mut roles = RoleThreads::new();
    let mut replies = Vec::with_capacity(group.count);
    let outcome = await_replies(group, seed, &mut roles, &mut replies, out, interrupt);
    let joined = roles.stop_and_join();
    outcome?;
    joined?;
    Ok(replies)
}

/// Checks that the identities `first_id..first_id + count` can all be numbered.
fn check_first_id(first_id: usize, count: usize) -> Result<(), Error> {
    match first_id.checked_add(count) {
        Some(_) => Ok(()),
        None => Err(Error::InvalidSetting {
            setting: "first-id",
            reason: format!("{first_id} leaves no room for {count} more numbers"),
        }),
    }
}

fn await_replies(
    group: &ClientGroup,
    seed: u64,
    roles: &mut RoleThreads,
    replies: &mut Vec<ClientReply>,
    out: &mut dyn Write,
    interrupt: &StopSignal,
) -> Result<(), Error> {
    let loads = choose_loads(group.count, seed);
    for (offset, load) in loads.into_iter().enumerate() {
        let client = ClientConfig {
            identity: client_identity(group.first_id + offset),
            frontend: group.frontend.clone(),
            load,
        };
        roles.spawn(client.identity.clone(), move |kit| {
            run_client(&kit.context, &client, &kit.events, &kit.stop).map(|_| ())
        })?;
    }
    while replies.len() < group.count {
        match roles.next_event(interrupt) {
            None => {
                return Err(Error::Interrupted {
                    replies: replies.len(),
                    clients: group.count,
                })
            }
            Some(Event::ReplyReceived(reply)) => {
                write_line(out, &reply)?;
                replies.push(reply);
            }
            Some(Event::RoleFailed { role, error }) => {
                return Err(Error::RoleFailed {
                    role,
                    source: Box::new(error),
                })
            }
            Some(Event::ProcessorJoined { .. } | Event::RequestTaken(_)) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_id_too_large_to_count_from_is_refused_before_anything_starts() {
        let group = ProcessorGroup {
            count: 2,
            first_id: usize::MAX,
            backend: "ipc://unused.ipc".to_owned(),
            unit: Duration::from_millis(1),
        };
        let error = run_processors(&group, &mut Vec::new(), &StopSignal::never()).unwrap_err();
        assert!(matches!(
            error,
            Error::InvalidSetting {
                setting: "first-id",
                ..
            }
        ));
    }
}
