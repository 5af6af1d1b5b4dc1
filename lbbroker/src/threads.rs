//! Starting role threads, gathering what they report, stopping and joining them: the plumbing
//! the demo launcher and the standalone runners share.
//!
//! Every role thread gets the same kit: the shared `zmq::Context` (one per process is enough; its
//! I/O thread serves every socket), a sender for [`Event`]s, and the [`StopSignal`]. A thread
//! whose body returns an error reports it as [`Event::RoleFailed`] before it ends, so the thread
//! reading the events never waits for something a dead thread would have sent.

use std::thread::{self, JoinHandle};

use crossbeam_channel::{select, Receiver, Sender};

use crate::error::Error;
use crate::event::Event;
use crate::stop::{stop_pair, StopHandle, StopSignal};

/// What a role thread is given. (No `Debug`: `zmq::Context` has none.)
pub(crate) struct RoleKit {
    /// For creating the role's socket.
    pub(crate) context: zmq::Context,
    /// Where to report output lines and other events.
    pub(crate) events: Sender<Event>,
    /// Raised when the role must end.
    pub(crate) stop: StopSignal,
}

/// The role threads of one run, their event channel and the handle that stops them.
pub(crate) struct RoleThreads {
    context: zmq::Context,
    events_sender: Sender<Event>,
    events: Receiver<Event>,
    stop_handle: StopHandle,
    stop: StopSignal,
    threads: Vec<(String, JoinHandle<()>)>,
}

impl RoleThreads {
    pub(crate) fn new() -> Self {
        let (events_sender, events) = crossbeam_channel::unbounded();
        let (stop_handle, stop) = stop_pair();
        RoleThreads {
            context: zmq::Context::new(),
            events_sender,
            events,
            stop_handle,
            stop,
            threads: Vec::new(),
        }
    }

    /// The context the roles' sockets are made from.
    pub(crate) fn context(&self) -> &zmq::Context {
        &self.context
    }

    /// Another sender for the events channel (the broker reports processors joining on it).
    pub(crate) fn events_sender(&self) -> Sender<Event> {
        self.events_sender.clone()
    }

    /// Starts `body` on a thread named after `role`.
    pub(crate) fn spawn<F>(&mut self, role: String, body: F) -> Result<(), Error>
    where
        F: FnOnce(RoleKit) -> Result<(), Error> + Send + 'static,
    {
        let kit = RoleKit {
            context: self.context.clone(),
            events: self.events_sender.clone(),
            stop: self.stop.clone(),
        };
        let failures = self.events_sender.clone();
        let role_in_thread = role.clone();
        let handle = thread::Builder::new()
            .name(role.clone())
            .spawn(move || {
                if let Err(error) = body(kit) {
                    // If nobody listens any more, the run is over anyway.
                    let _ = failures.send(Event::RoleFailed {
                        role: role_in_thread,
                        error,
                    });
                }
            })
            .map_err(|source| Error::Spawn {
                role: role.clone(),
                source,
            })?;
        self.threads.push((role, handle));
        Ok(())
    }

    /// Waits for the next event; `None` once `interrupt` is raised and every event already
    /// sent has been taken. (The channel itself cannot close: `self` keeps a sender.)
    pub(crate) fn next_event(&self, interrupt: &StopSignal) -> Option<Event> {
        // Events that are already here come first: `select!` picks at random among ready
        // channels, and a line reported before Ctrl-C should still be printed.
        if let Ok(event) = self.events.try_recv() {
            return Some(event);
        }
        select! {
            recv(self.events) -> event => event.ok(),
            recv(interrupt.receiver()) -> _ => None,
        }
    }

    /// Raises the stop signal and waits for every thread to end. Each notices within one
    /// [`crate::stop::STOP_CHECK_INTERVAL`]; their sockets close as they end, all with linger 0,
    /// so dropping the context afterwards returns at once.
    pub(crate) fn stop_and_join(self) -> Result<(), Error> {
        let RoleThreads {
            stop_handle,
            threads,
            context,
            ..
        } = self;
        stop_handle.stop();
        let mut outcome = Ok(());
        for (role, handle) in threads {
            if handle.join().is_err() && outcome.is_ok() {
                outcome = Err(Error::Panicked { role });
            }
        }
        drop(context);
        outcome
    }
}
