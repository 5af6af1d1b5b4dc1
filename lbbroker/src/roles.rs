//! Running the roles: each broker, processor and client on a thread of its own, like the gist's
//! `Thread.new`, and the one event loop that prints what they report. The demo (everything in one
//! process) and the one-role-per-terminal runs are the same loop over different sets of roles.
//!
//! A run, in order:
//!
//! 1. Check the settings; bind the broker's two ROUTERs here, if the run has a broker, so a bad
//!    endpoint is an error before any thread starts.
//! 2. Start the broker and the processors. Each processor says `READY`.
//! 3. Start the clients: at once, or, if the run has its own broker, once that broker has seen
//!    every processor's `READY` ([`Event::ProcessorJoined`]). ZeroMQ does not need this (a
//!    request would simply wait for a processor), but it makes the demo fair from the first
//!    request: each of the first requests goes to a different processor, so every processor gets
//!    work, even with a tiny `--unit-ms`.
//! 4. Write each line as it is reported. A run with clients is over when every client has its
//!    reply; a run of processors alone serves until it is stopped.
//! 5. Raise the stop and join every thread; the broker removes its ipc files as it ends.
//!
//! In the gist every thread calls `printf` itself. Here the roles send an [`Event`] over a
//! crossbeam channel instead, and the launching thread is the only one that writes: lines never
//! tear, tests can read them, and the launcher learns from the same events when the run is over.
//!
//! Stopping: every role waits (for a frame, or in its pretend work) on the same
//! [`zsocket::StopSignal`], a broadcast that wakes all of them at once. The caller owns the
//! [`zsocket::StopHandle`] (the binary raises it on Ctrl-C) and the run raises it itself when it is
//! over, or when it returns early with an error: dropping the [`Roles`] stops and joins every
//! thread, so no thread is ever left behind. The launcher itself waits only on the channel: each
//! role thread reports its end ([`Event::RoleEnded`]), so a stop reaches the launcher as the first
//! role that ends because of it.
//!
//! Each client's load is drawn up front from one seeded random generator, so `--seed` gives the
//! same loads to the same clients whatever order the threads run in.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zsocket::{StopHandle, StopSignal};

use crate::broker::{Broker, BrokerStats};
use crate::endpoint::Endpoints;
use crate::error::Error;
use crate::peers::{
    client_identity, processor_identity, run_client, run_processor, ClientConfig, ClientReply,
    ProcessorConfig, TakenRequest,
};

/// The loads a client may ask for, in units, as in the gist (`1 + rand(3)`).
const LOADS: RangeInclusive<u32> = 1..=3;

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
    /// Where the broker serves its dashboard (`--http`); `None`, the default, serves none.
    pub http: Option<SocketAddr>,
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
            http: None,
        }
    }
}

impl DemoConfig {
    /// Checks the counts: at least one client and one processor, and not more than the limits.
    fn validate(&self) -> Result<(), Error> {
        check_count("clients", self.clients, MAX_CLIENTS)?;
        check_count("processors", self.processors, MAX_PROCESSORS)
    }
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

/// A group of processors for [`run_processors`], as one terminal runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorGroup {
    /// How many processors.
    pub count: usize,
    /// The number in the first identity: with 3, the group is `PROCESSOR-3`, `-4`, ... Give each
    /// terminal its own range: of two peers with one identity, the broker serves only the newer.
    pub first_id: usize,
    /// The broker's backend endpoint.
    pub backend: String,
    /// How long one unit of load takes.
    pub unit: Duration,
}

/// A group of clients for [`run_clients`], as one terminal runs them.
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
    /// How long each client waits for its reply before the run fails with [`Error::NoReply`];
    /// `None` waits until stopped.
    pub timeout: Option<Duration>,
}

/// Runs the demo, writing the gist's lines to `out` as they happen. Returns once every client has
/// its reply and every thread has ended, or with an error once all threads have been stopped.
/// Raising `stop` (Ctrl-C in the binary) ends the run early with [`Error::Interrupted`]; the run
/// raises it itself when it ends.
pub fn run_demo(
    config: &DemoConfig,
    out: &mut dyn Write,
    stop: &StopHandle,
    stopped: &StopSignal,
) -> Result<DemoReport, Error> {
    config.validate()?;
    let seed = draw_seed(config.seed);
    let roles = Roles::new(stop, stopped);
    let broker = with_dashboard(
        Broker::bind(&roles.context, &config.endpoints)?,
        config.http,
    )?;
    let processors = processors(0, config.processors, broker.backend_endpoint(), config.unit);
    let clients = clients(0, config.clients, broker.frontend_endpoint(), seed, None);
    let (requests, replies) = roles.run(Some(broker), processors, clients, out)?;
    Ok(DemoReport {
        seed,
        requests,
        replies,
    })
}

/// Binds the broker (and its dashboard on `http`, if given) and forwards messages, on this
/// thread, until `stopped` is raised; removes its ipc files.
pub fn run_broker(
    endpoints: &Endpoints,
    http: Option<SocketAddr>,
    stopped: &StopSignal,
) -> Result<BrokerStats, Error> {
    let context = zmq::Context::new();
    let broker = with_dashboard(Broker::bind(&context, endpoints)?, http)?;
    // The one line a broker says at the default level while it runs, like `broker`'s.
    info!(
        "lbbroker broker is active: clients connect to {}, processors to {}",
        broker.frontend_endpoint(),
        broker.backend_endpoint()
    );
    broker.run(stopped)
}

/// `broker` with its dashboard on `http`, if given, and the line that says where it is. The
/// address is logged as bound, so `--http 127.0.0.1:0` says which port the system picked.
fn with_dashboard(broker: Broker, http: Option<SocketAddr>) -> Result<Broker, Error> {
    let Some(addr) = http else {
        return Ok(broker);
    };
    let broker = broker.serve_dashboard(addr)?;
    if let Some(bound) = broker.dashboard_addr() {
        info!("dashboard at http://{bound}/ (also /metrics and /status)");
    }
    Ok(broker)
}

/// Runs a group of processors, writing their `REQ` lines to `out`, until `stop` is raised.
/// Returns how many requests they took.
pub fn run_processors(
    group: &ProcessorGroup,
    out: &mut dyn Write,
    stop: &StopHandle,
    stopped: &StopSignal,
) -> Result<usize, Error> {
    check_count("processors", group.count, MAX_PROCESSORS)?;
    check_first_id(group.first_id, group.count)?;
    let processors = processors(group.first_id, group.count, &group.backend, group.unit);
    let (requests, _) = Roles::new(stop, stopped).run(None, processors, Vec::new(), out)?;
    Ok(requests.len())
}

/// Runs a group of clients, writing their `REP` lines to `out`, until each has its reply.
/// A stop before that is an [`Error::Interrupted`].
pub fn run_clients(
    group: &ClientGroup,
    out: &mut dyn Write,
    stop: &StopHandle,
    stopped: &StopSignal,
) -> Result<Vec<ClientReply>, Error> {
    check_count("clients", group.count, MAX_CLIENTS)?;
    check_first_id(group.first_id, group.count)?;
    let seed = draw_seed(group.seed);
    let clients = clients(
        group.first_id,
        group.count,
        &group.frontend,
        seed,
        group.timeout,
    );
    let (_, replies) = Roles::new(stop, stopped).run(None, Vec::new(), clients, out)?;
    Ok(replies)
}

/// One thing a role thread reports to the launcher.
#[derive(Debug)]
pub enum Event {
    /// The broker received a processor's `READY`: it is in the ready queue for the first time.
    ProcessorJoined {
        /// Its identity.
        processor: String,
    },
    /// A processor took a request (an output line).
    RequestTaken(TakenRequest),
    /// A client received its reply (an output line).
    ReplyReceived(ClientReply),
    /// A role's thread ended: a client with its reply, a role that saw the stop, or one that
    /// failed (then the launcher stops the others).
    RoleEnded {
        /// The role, e.g. `PROCESSOR-1`.
        role: String,
        /// How its body ended.
        outcome: Result<(), Error>,
    },
}

impl Event {
    /// The line this event prints, if it is one of the gist's.
    fn output_line(&self) -> Option<String> {
        match self {
            Event::RequestTaken(request) => Some(request.to_string()),
            Event::ReplyReceived(reply) => Some(reply.to_string()),
            Event::ProcessorJoined { .. } | Event::RoleEnded { .. } => None,
        }
    }
}

/// One role, ready to run on a thread of its own.
#[derive(Debug)]
enum Role {
    /// Boxed: a bound broker is much larger than a peer's settings.
    Broker(Box<Broker>),
    Processor(ProcessorConfig),
    Client(ClientConfig),
}

impl Role {
    fn name(&self) -> String {
        match self {
            Role::Broker(_) => "broker".to_owned(),
            Role::Processor(processor) => processor.identity.clone(),
            Role::Client(client) => client.identity.clone(),
        }
    }

    /// The role's life; it reports its lines to `events` and ends when `stopped` is raised (a
    /// client ends earlier, with its reply).
    fn run(
        self,
        context: &zmq::Context,
        events: &Sender<Event>,
        stopped: &StopSignal,
    ) -> Result<(), Error> {
        match self {
            Role::Broker(broker) => {
                let stats = broker.report_to(events.clone()).run(stopped)?;
                debug!("broker: {stats}");
            }
            Role::Processor(processor) => {
                let answered = run_processor(context, &processor, events, stopped)?;
                debug!("{} answered {answered} requests", processor.identity);
            }
            Role::Client(client) => run_client(context, &client, events, stopped)?,
        }
        Ok(())
    }
}

/// The role threads of one run, the channel they report on, and the stop they all wait on.
/// Dropping it raises the stop and joins every thread. (No `Debug`: `zmq::Context` has none.)
struct Roles {
    /// One context for every socket of the run; its I/O thread serves them all.
    context: zmq::Context,
    events: Receiver<Event>,
    events_sender: Sender<Event>,
    stop: StopHandle,
    stopped: StopSignal,
    threads: Vec<(String, JoinHandle<()>)>,
}

impl Roles {
    fn new(stop: &StopHandle, stopped: &StopSignal) -> Self {
        let (events_sender, events) = crossbeam_channel::unbounded();
        Roles {
            context: zmq::Context::new(),
            events,
            events_sender,
            stop: stop.clone(),
            stopped: stopped.clone(),
            threads: Vec::new(),
        }
    }

    /// Starts `role` on a thread named after it. Whatever way its body ends, the thread reports
    /// it as its last event, so the launcher never waits for a thread that is gone.
    fn spawn(&mut self, role: Role) -> Result<(), Error> {
        let name = role.name();
        let context = self.context.clone();
        let events = self.events_sender.clone();
        let stopped = self.stopped.clone();
        let role_in_thread = name.clone();
        let thread = thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let outcome = role.run(&context, &events, &stopped);
                // If nobody listens any more, the run is over anyway.
                let _ = events.send(Event::RoleEnded {
                    role: role_in_thread,
                    outcome,
                });
            })
            .map_err(|source| Error::Spawn {
                role: name.clone(),
                source,
            })?;
        self.threads.push((name, thread));
        Ok(())
    }

    /// Steps 2 to 5 of the module description: starts the roles, writes every line to `out`
    /// until the run is over (see the module docs for when that is), stops and joins every
    /// thread, and returns the lines.
    fn run(
        mut self,
        broker: Option<Broker>,
        processors: Vec<ProcessorConfig>,
        clients: Vec<ClientConfig>,
        out: &mut dyn Write,
    ) -> Result<(Vec<TakenRequest>, Vec<ClientReply>), Error> {
        // With a broker of its own, the run starts the clients once every processor has joined.
        let clients_wait_for = if broker.is_some() {
            processors.len()
        } else {
            0
        };
        if let Some(broker) = broker {
            self.spawn(Role::Broker(Box::new(broker)))?;
        }
        for processor in processors {
            self.spawn(Role::Processor(processor))?;
        }
        let client_count = clients.len();
        let mut waiting_clients = Some(clients);
        let mut joined_processors = HashSet::new();
        let (mut requests, mut replies) = (Vec::new(), Vec::new());
        loop {
            if joined_processors.len() >= clients_wait_for {
                for client in waiting_clients.take().into_iter().flatten() {
                    self.spawn(Role::Client(client))?;
                }
            }
            // The channel cannot close while `self` holds a sender; the `else` is for form.
            let Ok(event) = self.events.recv() else {
                break;
            };
            if let Some(line) = event.output_line() {
                write_line(out, &line)?;
            }
            match event {
                Event::ProcessorJoined { processor } => {
                    joined_processors.insert(processor);
                }
                Event::RequestTaken(request) => requests.push(request),
                Event::ReplyReceived(reply) => {
                    replies.push(reply);
                    if replies.len() == client_count {
                        break;
                    }
                }
                Event::RoleEnded {
                    role,
                    outcome: Err(error),
                } => {
                    return Err(Error::RoleFailed {
                        role,
                        source: Box::new(error),
                    })
                }
                // A client that has its reply ends on its own; any other role only on the stop.
                Event::RoleEnded {
                    outcome: Ok(()), ..
                } => {
                    if self.stopped.is_raised() {
                        break;
                    }
                }
            }
        }
        if replies.len() < client_count {
            return Err(Error::Interrupted {
                replies: replies.len(),
                clients: client_count,
            });
        }
        self.stop_and_join()?;
        Ok((requests, replies))
    }

    /// Raises the stop and waits for every thread to end. Each wakes at once; their sockets close
    /// as they end, all with linger 0, so dropping the context afterwards returns at once.
    fn stop_and_join(&mut self) -> Result<(), Error> {
        self.stop.stop();
        let mut outcome = Ok(());
        for (role, thread) in self.threads.drain(..) {
            if thread.join().is_err() && outcome.is_ok() {
                outcome = Err(Error::Panicked { role });
            }
        }
        outcome
    }
}

impl Drop for Roles {
    /// A run that returns early (an error, a failed role) still leaves no thread behind.
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// The processors `PROCESSOR-first..`, connecting to `backend`.
fn processors(first: usize, count: usize, backend: &str, unit: Duration) -> Vec<ProcessorConfig> {
    (first..first + count)
        .map(|number| ProcessorConfig {
            identity: processor_identity(number),
            backend: backend.to_owned(),
            unit,
        })
        .collect()
}

/// The clients `CLIENT-first..`, connecting to `frontend`, with loads drawn with `seed`.
fn clients(
    first: usize,
    count: usize,
    frontend: &str,
    seed: u64,
    timeout: Option<Duration>,
) -> Vec<ClientConfig> {
    choose_loads(count, seed)
        .into_iter()
        .enumerate()
        .map(|(offset, load)| ClientConfig {
            identity: client_identity(first + offset),
            frontend: frontend.to_owned(),
            load,
            timeout,
        })
        .collect()
}

/// The seed given, or a new one; logged so that a run can be repeated.
fn draw_seed(given: Option<u64>) -> u64 {
    let seed = given.unwrap_or_else(rand::random);
    info!("client loads drawn with seed {seed} (pass --seed {seed} to repeat them)");
    seed
}

/// The loads of `count` clients, client 0 first, drawn from [`LOADS`] with `seed`. The same seed
/// gives the same loads (with the same version of `rand`).
fn choose_loads(count: usize, seed: u64) -> Vec<u32> {
    let mut generator = StdRng::seed_from_u64(seed);
    (0..count).map(|_| generator.random_range(LOADS)).collect()
}

/// Checks that `count` is in `1..=max`.
fn check_count(setting: &'static str, count: usize, max: usize) -> Result<(), Error> {
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

/// Writes one line and flushes it, so lines show up as they happen even through a pipe.
fn write_line(out: &mut dyn Write, line: &str) -> Result<(), Error> {
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

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

    #[test]
    fn a_first_id_too_large_to_count_from_is_refused_before_anything_starts() {
        let group = ProcessorGroup {
            count: 2,
            first_id: usize::MAX,
            backend: "ipc://unused.ipc".to_owned(),
            unit: Duration::from_millis(1),
        };
        let (stop, stopped) = zsocket::stop_pair().expect("a socket pair");
        let error = run_processors(&group, &mut Vec::new(), &stop, &stopped).unwrap_err();
        assert!(matches!(
            error,
            Error::InvalidSetting {
                setting: "first-id",
                ..
            }
        ));
    }

    #[test]
    fn only_requests_and_replies_are_printed() {
        let joined = Event::ProcessorJoined {
            processor: "PROCESSOR-0".into(),
        };
        assert_eq!(joined.output_line(), None);
    }

    /// The stop-on-drop property, and that the stop is a broadcast: every thread of a run wakes
    /// from its wait at once, and the stop stays raised for all of them.
    #[test]
    fn dropping_the_roles_wakes_and_joins_every_thread() {
        let (stop, stopped) = zsocket::stop_pair().expect("a socket pair");
        // Not raised yet, a wait runs its whole time.
        assert!(matches!(stopped.sleep(Duration::from_millis(1)), Ok(false)));
        let mut roles = Roles::new(&stop, &stopped);
        let (results_sender, results) = crossbeam_channel::unbounded();
        // Every thread has looked at the stop before the roles are dropped.
        let all_started = std::sync::Arc::new(std::sync::Barrier::new(4));
        for number in 0..3 {
            let stopped = stopped.clone();
            let results_sender = results_sender.clone();
            let all_started = std::sync::Arc::clone(&all_started);
            let thread = thread::spawn(move || {
                let raised_before = stopped.is_raised();
                all_started.wait();
                let started = Instant::now();
                let woken = stopped.sleep(Duration::from_secs(60)).ok();
                // Looking does not consume the stop: it stays raised.
                let raised_after = stopped.is_raised();
                let _ =
                    results_sender.send((raised_before, woken, started.elapsed(), raised_after));
            });
            roles.threads.push((format!("sleeper-{number}"), thread));
        }
        all_started.wait();
        drop(roles);
        assert!(stopped.is_raised());
        drop(results_sender);
        let results: Vec<_> = results.iter().collect();
        assert_eq!(results.len(), 3);
        for (raised_before, woken, slept, raised_after) in results {
            assert!(!raised_before);
            assert_eq!(woken, Some(true));
            assert!(slept < Duration::from_secs(30), "{slept:?}");
            assert!(raised_after);
        }
    }

    /// A run that returns early because one role failed still stops and joins the others: here
    /// a processor waiting for a broker that never comes.
    #[test]
    fn a_failed_role_ends_the_run_and_stops_the_others() {
        let (stop, stopped) = zsocket::stop_pair().expect("a socket pair");
        let processors = processors(0, 1, "tcp://127.0.0.1:1", Duration::from_millis(1));
        let clients = clients(0, 1, "tcpx://no-such-transport", 1, None);
        let error = Roles::new(&stop, &stopped)
            .run(None, processors, clients, &mut Vec::new())
            .expect_err("the client cannot connect");
        assert!(
            matches!(&error, Error::RoleFailed { role, .. } if role == "CLIENT-0"),
            "{error:?}"
        );
        assert!(stopped.is_raised());
    }
}
