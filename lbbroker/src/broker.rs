//! The broker's socket loop: two ROUTER sockets, one `zmq::poll`, and the [`LoadBalancer`] that
//! decides everything. This module only moves frames between the sockets and the balancer.
//!
//! Why two ROUTERs: a ROUTER remembers every peer by identity and can send to any one of them,
//! which is exactly what both sides need. The *frontend* ROUTER faces the clients, so a reply can
//! go back to the client that asked; the *backend* ROUTER faces the processors, so a request can go
//! to the processor the balancer picked (a DEALER there would deal requests round-robin, busy or
//! not). The frames each ROUTER adds and strips are drawn in [`crate::balancer`].
//!
//! Each turn of the loop asks the balancer whether a processor is free. If none is, only the
//! backend is polled: the broker sleeps in `poll` until a processor speaks, and requests wait in
//! the frontend's queue. The Ruby gist always polls both sockets and just skips the frontend when
//! no processor is free, so a waiting request keeps `poll` returning at once and the broker spins
//! (about 6 CPU-seconds in a 7-second run).

use crossbeam_channel::Sender;
use log::{debug, warn};

use crate::balancer::{LoadBalancer, ProcessorMessage};
use crate::endpoint::{Endpoints, SocketFile};
use crate::error::Error;
use crate::event::Event;
use crate::frames::{describe, recv_frames, send_frames};
use crate::stop::{StopSignal, STOP_CHECK_INTERVAL_MS};

/// How many messages went through a broker, and how many it had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BrokerStats {
    /// Requests sent to a processor.
    pub requests_forwarded: u64,
    /// Replies sent to a client.
    pub replies_forwarded: u64,
    /// Messages dropped: malformed, or addressed to a peer that had gone.
    pub dropped: u64,
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
    // Declared after the sockets, so they are dropped (closed) before their files are removed.
    _socket_files: Vec<SocketFile>,
}

impl std::fmt::Debug for Broker {
    // By hand, because `zmq::Socket` has no `Debug`: the endpoints say which sockets these are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("frontend", &self.frontend_endpoint)
            .field("backend", &self.backend_endpoint)
            .field("balancer", &self.balancer)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Creates both ROUTER sockets and binds them. Binding here, before any thread starts, means
    /// a bad endpoint is reported at once to the caller rather than from inside a thread.
    pub fn bind(context: &zmq::Context, endpoints: &Endpoints) -> Result<Broker, Error> {
        let mut socket_files = Vec::with_capacity(2);
        let frontend = bind_router(context, "frontend ROUTER", &endpoints.frontend)?;
        socket_files.push(SocketFile::created_by(&endpoints.frontend));
        // If the backend cannot bind, `socket_files` is dropped on return and the frontend's
        // file is removed again.
        let backend = bind_router(context, "backend ROUTER", &endpoints.backend)?;
        socket_files.push(SocketFile::created_by(&endpoints.backend));

        Ok(Broker {
            frontend_endpoint: last_endpoint(&frontend, &endpoints.frontend),
            backend_endpoint: last_endpoint(&backend, &endpoints.backend),
            frontend,
            backend,
            balancer: LoadBalancer::new(),
            events: None,
            stats: BrokerStats::default(),
            _socket_files: socket_files,
        })
    }

    /// Sends an [`Event::ProcessorJoined`] to `events` whenever a processor says `READY`.
    pub fn report_to(mut self, events: Sender<Event>) -> Broker {
        self.events = Some(events);
        self
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
        while !stop.is_raised() {
            let listen_to_clients = self.balancer.wants_requests();
            let (processor_spoke, client_spoke) = {
                let mut items = [
                    self.backend.as_poll_item(zmq::POLLIN),
                    self.frontend.as_poll_item(zmq::POLLIN),
                ];
                // The frontend is in the poll set only while a processor is free: this is what
                // keeps the broker asleep, rather than spinning, while all processors are busy.
                let polled = if listen_to_clients { 2 } else { 1 };
                match zmq::poll(&mut items[..polled], STOP_CHECK_INTERVAL_MS) {
                    Ok(_) => {}
                    // Interrupted by a signal (Ctrl-C): look at `stop` and poll again.
                    Err(zmq::Error::EINTR) => continue,
                    Err(source) => {
                        return Err(Error::Zmq {
                            doing: "polling the broker's sockets",
                            source,
                        })
                    }
                }
                (
                    items[0].is_readable(),
                    listen_to_clients && items[1].is_readable(),
                )
            };
            // The backend first: a processor that just became free can take the request that is
            // waiting on the frontend in the same turn.
            if processor_spoke {
                self.handle_processor_message()?;
            }
            if client_spoke {
                self.handle_client_request()?;
            }
        }
        debug!("broker stopping: {:?}", self.stats);
        Ok(self.stats)
    }

    /// One message from the backend: `[processor][][READY]` or `[processor][][client][][reply]`.
    fn handle_processor_message(&mut self) -> Result<(), Error> {
        let frames =
            recv_frames(&self.backend).map_err(Error::zmq("receiving from a processor"))?;
        debug!("backend  -> broker: {}", describe(&frames));
        match self.balancer.on_processor_message(frames) {
            Ok(ProcessorMessage::Joined { processor }) => {
                debug!("{processor} is ready for work");
                if let Some(events) = &self.events {
                    // The launcher may already be gone when the broker is shutting down.
                    let _ = events.send(Event::ProcessorJoined { processor });
                }
            }
            Ok(ProcessorMessage::Reply(reply)) => {
                let client = reply.destination();
                debug!("broker -> frontend: {}", describe(reply.frames()));
                match send_frames(&self.frontend, reply.into_frames()) {
                    Ok(()) => self.stats.replies_forwarded += 1,
                    // The client disconnected while its request was being worked on.
                    Err(zmq::Error::EHOSTUNREACH) => {
                        warn!("reply dropped: client {client} is gone");
                        self.stats.dropped += 1;
                    }
                    Err(source) => {
                        return Err(Error::Zmq {
                            doing: "sending a reply to a client",
                            source,
                        })
                    }
                }
            }
            Err(error) => {
                warn!("dropped a processor message: {error}");
                self.stats.dropped += 1;
            }
        }
        Ok(())
    }

    /// One request from the frontend, `[client][][request]`, sent on to the LRU processor.
    fn handle_client_request(&mut self) -> Result<(), Error> {
        let frames = recv_frames(&self.frontend).map_err(Error::zmq("receiving from a client"))?;
        debug!("frontend -> broker: {}", describe(&frames));
        match self.balancer.on_client_request(frames) {
            Ok(request) => {
                let processor = request.destination();
                debug!("broker -> backend:  {}", describe(request.frames()));
                match send_frames(&self.backend, request.into_frames()) {
                    Ok(()) => self.stats.requests_forwarded += 1,
                    // Only a processor that is not a REQ socket can vanish between its READY and
                    // its request; the request is lost and its client will wait.
                    Err(zmq::Error::EHOSTUNREACH) => {
                        warn!("request dropped: processor {processor} is gone");
                        self.stats.dropped += 1;
                    }
                    Err(source) => {
                        return Err(Error::Zmq {
                            doing: "sending a request to a processor",
                            source,
                        })
                    }
                }
            }
            Err(error) => {
                warn!("dropped a client request: {error}");
                self.stats.dropped += 1;
            }
        }
        Ok(())
    }
}

/// A ROUTER socket bound to `endpoint`, set up for a clean shutdown and honest errors.
fn bind_router(
    context: &zmq::Context,
    socket: &'static str,
    endpoint: &str,
) -> Result<zmq::Socket, Error> {
    let router = context
        .socket(zmq::ROUTER)
        .map_err(Error::zmq("creating a ROUTER socket"))?;
    // libzmq's default linger is "forever": closing a socket with unsent messages would make
    // dropping the Context wait for peers that may never come back.
    router
        .set_linger(0)
        .map_err(Error::zmq("setting linger on a ROUTER socket"))?;
    // By default a ROUTER silently drops a message for an identity it does not know; with this
    // it says so (EHOSTUNREACH), and the broker logs what was lost.
    router
        .set_router_mandatory(true)
        .map_err(Error::zmq("setting ROUTER_MANDATORY"))?;
    router.bind(endpoint).map_err(|source| Error::Bind {
        socket,
        endpoint: endpoint.to_owned(),
        source,
    })?;
    Ok(router)
}

/// The endpoint as libzmq resolved it (a wildcard TCP port becomes a number), or as given.
fn last_endpoint(socket: &zmq::Socket, given: &str) -> String {
    match socket.get_last_endpoint() {
        Ok(Ok(endpoint)) if !endpoint.is_empty() => endpoint,
        _ => given.to_owned(),
    }
}
