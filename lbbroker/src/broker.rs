//! The broker's socket loop: two ROUTER sockets, one wait, and the [`LoadBalancer`] that decides
//! everything. This module only moves frames between the sockets and the balancer.
//!
//! Why two ROUTERs: a ROUTER remembers every peer by identity and can send to any one of them,
//! which is exactly what both sides need. The *frontend* ROUTER faces the clients, so a reply can
//! go back to the client that asked; the *backend* ROUTER faces the processors, so a request can go
//! to the processor the balancer picked (a DEALER there would deal requests round-robin, busy or
//! not). The frames each ROUTER adds and strips are drawn in [`crate::balancer`].
//!
//! Each turn of the loop asks the balancer whether a processor is free. If none is, only the
//! backend is waited on: the broker sleeps until a processor speaks (or the stop is raised), and
//! requests wait in the frontend's queue. The Ruby gist always polls both sockets and just skips
//! the frontend when no processor is free, so a waiting request keeps `poll` returning at once and
//! the broker spins (about 6 CPU-seconds in a 7-second run).
//!
//! With a dashboard ([`Broker::serve_dashboard`], `--http`), the loop also publishes a snapshot
//! of its queue after handling messages, at most every 100 ms (see [`crate::live`]); the wait
//! then ends at the publisher's deadline if nothing else ends it sooner, so the last change is
//! shown even when the broker falls quiet. The HTTP side runs on its own thread and never holds
//! the loop up.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use crossbeam_channel::Sender;
use log::{debug, info, warn};
use zsocket::{Frames, ResultExt, SendError, StopSignal, Woken};

use crate::balancer::{Action, Dropped, LoadBalancer, Notice, Outgoing};
use crate::endpoint::Endpoints;
use crate::error::Error;
use crate::frames::describe;
use crate::live::{Live, Tally};
use crate::roles::Event;
use zsocket::limit::LogLimit;

/// How many messages went through a broker, and how many it had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BrokerStats {
    /// Requests sent to a processor.
    pub requests_forwarded: u64,
    /// Replies sent to a client.
    pub replies_forwarded: u64,
    /// Messages dropped: malformed, replies to a client that had gone, or replies to a request
    /// that a newer client with the same identity replaced. (A request is never dropped: if
    /// its processor is gone it goes to another.)
    pub dropped: u64,
}

impl std::fmt::Display for BrokerStats {
    /// `6 requests forwarded, 6 replies forwarded, 0 messages dropped`, for the log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests forwarded, {} replies forwarded, {} messages dropped",
            self.requests_forwarded, self.replies_forwarded, self.dropped
        )
    }
}

/// A bound broker, ready to [`run`](Broker::run).
pub struct Broker {
    /// Faces the clients (their REQ sockets connect here).
    frontend: zmq::Socket,
    /// Faces the processors (their REQ sockets connect here).
    backend: zmq::Socket,
    frontend_endpoint: String,
    backend_endpoint: String,
    balancer: LoadBalancer,
    /// Where to report processors joining, if anyone wants to know (the demo launcher does).
    events: Option<Sender<Event>>,
    stats: BrokerStats,
    /// The counters the dashboard shows (kept with or without one).
    tally: Tally,
    /// The dashboard, with `--http`.
    live: Option<Live>,
    warn_limit: LogLimit,
    // Declared after the sockets, so they are dropped (closed) before their files are removed.
    _bindings: [zsocket::Binding; 2],
}

impl std::fmt::Debug for Broker {
    // By hand, because `zmq::Socket` has no `Debug`: the endpoints say which sockets these are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("frontend", &self.frontend_endpoint)
            .field("backend", &self.backend_endpoint)
            .field(
                "ready_processors",
                &self.balancer.ready_processors().collect::<Vec<_>>(),
            )
            .field("waiting_requests", &self.balancer.waiting_requests())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Creates both ROUTER sockets and binds them. Binding here, before any thread starts, means
    /// a bad endpoint is reported at once to the caller rather than from inside a thread.
    pub fn bind(context: &zmq::Context, endpoints: &Endpoints) -> Result<Broker, Error> {
        let (frontend, frontend_binding) =
            bind_router(context, "frontend ROUTER", &endpoints.frontend)?;
        // If the backend cannot bind, the frontend's binding is dropped on return and its file
        // removed again.
        let (backend, backend_binding) =
            bind_router(context, "backend ROUTER", &endpoints.backend)?;

        Ok(Broker {
            frontend_endpoint: frontend_binding.endpoint().to_owned(),
            backend_endpoint: backend_binding.endpoint().to_owned(),
            frontend,
            backend,
            balancer: LoadBalancer::new(),
            events: None,
            stats: BrokerStats::default(),
            tally: Tally::default(),
            live: None,
            warn_limit: LogLimit::default(),
            _bindings: [frontend_binding, backend_binding],
        })
    }

    /// Sends an [`Event::ProcessorJoined`] to `events` whenever a processor says `READY`.
    pub fn report_to(mut self, events: Sender<Event>) -> Broker {
        self.events = Some(events);
        self
    }

    /// Serves the dashboard on `addr` (`/`, `/metrics`, `/status`) while the broker runs. The
    /// address is bound here, so one in use is an error before the broker starts.
    pub fn serve_dashboard(mut self, addr: SocketAddr) -> Result<Broker, Error> {
        self.live = Some(Live::start(addr, Instant::now())?);
        Ok(self)
    }

    /// Where the dashboard listens, if it has one (with the port the system picked for port 0).
    pub fn dashboard_addr(&self) -> Option<SocketAddr> {
        self.live.as_ref().map(Live::local_addr)
    }

    /// The endpoint clients should connect to. For `tcp://127.0.0.1:*` this is the port the
    /// system picked, so connect here rather than to the endpoint that was bound.
    pub fn frontend_endpoint(&self) -> &str {
        &self.frontend_endpoint
    }

    /// The endpoint processors should connect to (see [`Broker::frontend_endpoint`]).
    pub fn backend_endpoint(&self) -> &str {
        &self.backend_endpoint
    }

    /// Forwards requests and replies until `stop` is raised, then closes the sockets and removes
    /// the ipc files it created.
    pub fn run(mut self, stop: &StopSignal) -> Result<BrokerStats, Error> {
        loop {
            let woken = {
                // The frontend is waited on only while a processor is free: this is what keeps
                // the broker asleep, rather than spinning, while all processors are busy.
                let sockets = [&self.backend, &self.frontend];
                let listened = if self.balancer.wants_requests() { 2 } else { 1 };
                let deadline = self.live.as_ref().and_then(Live::next_deadline);
                zsocket::wait(&sockets[..listened], Some(stop), deadline, Instant::now())?
            };
            let ready = match woken {
                Woken::Stopped => break,
                Woken::Readable(ready) => ready,
                // The dashboard's deadline, or a signal (Ctrl-C) interrupted the wait: publish if
                // due, look at `stop` and wait again.
                Woken::Timeout => Vec::new(),
            };
            // The backend first: a processor that just became free can take the request that is
            // waiting on the frontend in the same turn.
            if ready.contains(&0) {
                self.handle_processor_message()?;
            }
            if ready.contains(&1) {
                self.handle_client_request()?;
            }
            if let Some(live) = &mut self.live {
                live.publish_if_due(Instant::now(), &self.balancer, &self.tally);
            }
        }
        debug!("broker stopping: {}", self.stats);
        Ok(self.stats)
    }

    /// One message from the backend: `[processor][][READY]` or `[processor][][client][][reply]`.
    fn handle_processor_message(&mut self) -> Result<(), Error> {
        let Some(frames) = zsocket::recv(&self.backend, zmq::DONTWAIT)? else {
            return Ok(());
        };
        debug!("backend  -> broker: {}", describe(&frames));
        self.tally.broker.messages_in += 1;
        let mut actions = Vec::new();
        self.balancer.on_processor_message(frames, &mut actions);
        self.carry_out(actions)
    }

    /// One request from the frontend, `[client][][request]`, for the LRU processor.
    fn handle_client_request(&mut self) -> Result<(), Error> {
        let Some(frames) = zsocket::recv(&self.frontend, zmq::DONTWAIT)? else {
            return Ok(());
        };
        debug!("frontend -> broker: {}", describe(&frames));
        self.tally.broker.messages_in += 1;
        let client = frames.first().map(|identity| identity.to_vec());
        let mut actions = Vec::new();
        self.balancer.on_client_request(frames, &mut actions);
        // The balancer takes every request it does not drop as malformed.
        let malformed = actions
            .iter()
            .any(|action| matches!(action, Action::Dropped(Dropped::Malformed(_))));
        if !malformed {
            self.tally.queue.received += 1;
            if let (Some(live), Some(client)) = (&mut self.live, client) {
                live.request_in(client, Instant::now());
            }
        }
        self.carry_out(actions)
    }

    /// Does what the balancer said, in order. A send the ROUTER refuses because its peer is gone
    /// goes back to the balancer, and what it decides then is done too.
    fn carry_out(&mut self, actions: Vec<Action>) -> Result<(), Error> {
        if let Some(live) = &mut self.live {
            live.changed();
        }
        let mut actions = VecDeque::from(actions);
        while let Some(action) = actions.pop_front() {
            let mut more = Vec::new();
            match action {
                Action::ToProcessor(request) => {
                    debug!("broker -> backend:  {}", describe(request.frames()));
                    match forward(&self.backend, request)? {
                        None => {
                            self.stats.requests_forwarded += 1;
                            self.tally.queue.dispatched += 1;
                            self.tally.broker.messages_out += 1;
                        }
                        Some(refused) => self.balancer.on_request_refused(refused, &mut more),
                    }
                }
                Action::ToClient(reply) => {
                    debug!("broker -> frontend: {}", describe(reply.frames()));
                    let client = reply.frames().first().map(|identity| identity.to_vec());
                    match forward(&self.frontend, reply)? {
                        None => {
                            self.stats.replies_forwarded += 1;
                            self.tally.queue.answered += 1;
                            self.tally.broker.messages_out += 1;
                            if let (Some(live), Some(client)) = (&mut self.live, client) {
                                live.reply_out(&client, Instant::now());
                            }
                        }
                        Some(refused) => {
                            // The client is gone: its request is over, unmeasured.
                            if let (Some(live), Some(client)) = (&mut self.live, &client) {
                                live.reply_dropped(client);
                            }
                            self.balancer.on_reply_refused(refused, &mut more);
                        }
                    }
                }
                Action::Joined { processor } => {
                    debug!("{processor} is ready for work");
                    self.tally.broker.workers_registered += 1;
                    if let Some(events) = &self.events {
                        // The launcher may already be gone when the broker is shutting down.
                        let _ = events.send(Event::ProcessorJoined { processor });
                    }
                }
                Action::Notice(notice) => {
                    if let Notice::ProcessorGone { .. } = notice {
                        self.tally.broker.workers_disconnected += 1;
                    }
                    if notice.is_warning() {
                        self.warn(&notice);
                    } else {
                        info!("{notice}");
                    }
                }
                Action::Dropped(dropped) => {
                    self.stats.dropped += 1;
                    match &dropped {
                        Dropped::Malformed(_) => self.tally.broker.malformed += 1,
                        Dropped::ClientGone { .. } | Dropped::StaleReply { .. } => {
                            self.tally.queue.replies_dropped += 1;
                        }
                    }
                    self.warn(&dropped);
                }
            }
            actions.extend(more);
        }
        Ok(())
    }

    /// A warning a peer can cause, at most once a second (see [`LogLimit`]).
    fn warn(&mut self, what: &dyn std::fmt::Display) {
        match self.warn_limit.allow(Instant::now()) {
            Some(0) => warn!("{what}"),
            Some(held_back) => warn!("{what} (and {held_back} more warnings in the debug log)"),
            None => debug!("{what}"),
        }
    }
}

/// Sends `outgoing` on `router`: `None` if it went, the frames back if its peer is gone (with
/// `ZMQ_ROUTER_MANDATORY` the router says `EHOSTUNREACH` instead of dropping them silently).
fn forward(router: &zmq::Socket, outgoing: Outgoing) -> Result<Option<Frames>, Error> {
    match zsocket::send(router, outgoing.into_frames(), 0) {
        Ok(()) => Ok(None),
        Err(SendError::Refused(refused)) if refused.error == zmq::Error::EHOSTUNREACH => {
            Ok(Some(refused.frames))
        }
        Err(error) => Err(zsocket::Error::from(error).into()),
    }
}

/// A ROUTER socket bound to `endpoint`, set up for a clean shutdown and honest errors, and the
/// endpoint as libzmq resolved it (a wildcard TCP port becomes a number).
fn bind_router(
    context: &zmq::Context,
    socket: &'static str,
    endpoint: &str,
) -> Result<(zmq::Socket, zsocket::Binding), Error> {
    let router = context
        .socket(zmq::ROUTER)
        .doing("create a ROUTER socket")?;
    // libzmq's default linger is "forever": closing a socket with unsent messages would make
    // dropping the Context wait for peers that may never come back.
    router.set_linger(0).doing("set ZMQ_LINGER")?;
    // By default a ROUTER silently drops a message for an identity it does not know; with this
    // it says so (EHOSTUNREACH), and the broker logs what was lost.
    router
        .set_router_mandatory(true)
        .doing("set ZMQ_ROUTER_MANDATORY")?;
    // By default a ROUTER ignores a second peer with an identity already in use, and that peer
    // waits forever for messages that cannot reach it. With this the newer connection takes the
    // identity over (a restarted processor or client is the usual case); the balancer notices
    // and says so (see crate::balancer).
    router
        .set_router_handover(true)
        .doing("set ZMQ_ROUTER_HANDOVER")?;
    let bound = zsocket::bind(&router, endpoint).map_err(|error| Error::Bind {
        socket,
        endpoint: endpoint.to_owned(),
        source: error.into(),
    })?;
    Ok((router, bound))
}
