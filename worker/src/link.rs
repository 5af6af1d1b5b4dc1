//! The worker's link to the broker: one DEALER socket, the two heartbeat clocks, and reconnection.
//!
//! Spec 7 gives a worker exactly one DEALER socket per conversation with the broker. A
//! conversation starts with READY and ends when either side sends DISCONNECT or when the worker
//! stops hearing from the broker; the worker then closes the socket and opens a new one, which the
//! broker sees as a brand-new peer (a new ROUTER identity), and says READY again.
//!
//! Two clocks run per conversation:
//! * `heartbeat_at`: when the broker is next owed a sign of life from us. Any command we send
//!   counts (spec 7: "any received command except DISCONNECT acts as a heartbeat"), so a REPLY
//!   pushes it back and a busy worker sends no separate HEARTBEATs.
//! * `broker_expires_at`: when we give up on the broker, interval x liveness after we last heard
//!   a valid command from it.
//!
//! The [`Link`] itself never blocks on the clock: the caller's thread (in `Worker::recv`) and the
//! heartbeat thread take turns holding it behind a mutex and ask it what is due.

use std::time::{Duration, Instant};

use log::{debug, info, log_enabled, warn, Level};
use mdp::{dump, Command, Frames, ServiceName, WORKER_HEADER};

use crate::{Error, WorkerConfig};

/// How long a closing socket may keep trying to deliver our final DISCONNECT. Short, because a
/// broker that cannot take it within this time is gone anyway and will purge us by heartbeat.
const DISCONNECT_LINGER_MS: i32 = 100;

/// Everything about one worker's connection to the broker, shared by the caller's thread and the
/// heartbeat thread (one at a time).
pub(crate) struct Link {
    context: zmq::Context,
    endpoint: String,
    service: ServiceName,
    config: WorkerConfig,
    /// `None` between conversations: after a DISCONNECT or a silent broker, until the backoff
    /// delay has passed and a new socket is opened.
    socket: Option<zmq::Socket>,
    /// Counts conversations, so a reply can be matched to the conversation its request came in.
    conversation: u64,
    heartbeat_at: Instant,
    broker_expires_at: Instant,
    /// The wait before the next reconnection; doubles on each reconnection that is not followed by
    /// a command from the broker, and falls back to `config.reconnect_initial` once one arrives.
    reconnect_delay: Duration,
}

/// What a valid message from the broker means for the caller.
pub(crate) enum Received {
    /// A REQUEST: the client's address (kept to address the REPLY) and the body.
    Request { client: zmq::Message, body: Frames },
    /// A HEARTBEAT, a DISCONNECT or a malformed message: handled here, nothing for the caller.
    Nothing,
}

impl Link {
    /// A link that is not connected yet; [`Link::connect`] opens the first conversation.
    pub(crate) fn new(
        context: zmq::Context,
        endpoint: String,
        service: ServiceName,
        config: WorkerConfig,
    ) -> Link {
        let now = Instant::now();
        Link {
            context,
            endpoint,
            service,
            reconnect_delay: config.reconnect_initial,
            config,
            socket: None,
            conversation: 0,
            heartbeat_at: now,
            broker_expires_at: now,
        }
    }

    /// Opens a new DEALER socket, connects it and sends READY: the start of a conversation.
    ///
    /// ZeroMQ connects in the background, so this does not wait for the broker: READY is queued
    /// and goes out as soon as the TCP (or ipc) connection is up.
    pub(crate) fn connect(&mut self) -> Result<(), Error> {
        let socket = self
            .context
            .socket(zmq::DEALER)
            .map_err(Error::zmq("create a socket"))?;
        // Never let a closing socket hold up the process: whatever is still queued when a
        // conversation ends is stale (heartbeats) or will be resent (nothing else is queued).
        socket.set_linger(0).map_err(Error::zmq("set linger"))?;
        socket
            .connect(&self.endpoint)
            .map_err(|source| Error::Connect {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        self.socket = Some(socket);
        self.conversation += 1;
        if self.conversation == 1 {
            info!(
                "worker for service {} connecting to broker at {}",
                self.service, self.endpoint
            );
        } else {
            info!(
                "reconnected to broker at {}, sending READY for {} again",
                self.endpoint, self.service
            );
        }
        self.send_command(Command::Ready, Some(self.service.to_frame()))?;
        let now = Instant::now();
        self.heartbeat_at = now + self.config.heartbeat_interval;
        self.broker_expires_at = now + self.broker_patience();
        Ok(())
    }

    /// Ends the conversation without a word: used after the broker's DISCONNECT (spec 7: send
    /// nothing further) and when the broker has gone silent (nobody to tell).
    pub(crate) fn close(&mut self) {
        self.socket = None;
    }

    /// Ends the conversation politely: DISCONNECT, then close. Used when the worker shuts down.
    pub(crate) fn disconnect(&mut self) {
        if self.socket.is_some() {
            if let Err(error) = self.send_command(Command::Disconnect, None) {
                debug!("could not send DISCONNECT: {error}");
            }
        }
        if let Some(socket) = self.socket.take() {
            // Give the DISCONNECT a moment to leave; the context's shutdown waits at most this.
            let _ = socket.set_linger(DISCONNECT_LINGER_MS);
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.socket.is_some()
    }

    pub(crate) fn socket(&self) -> Option<&zmq::Socket> {
        self.socket.as_ref()
    }

    pub(crate) fn conversation(&self) -> u64 {
        self.conversation
    }

    /// How long to wait before the next reconnection; each call doubles the following wait, up
    /// to `config.reconnect_max`.
    pub(crate) fn take_reconnect_delay(&mut self) -> Duration {
        let delay = self.reconnect_delay;
        self.reconnect_delay = (delay * 2).min(self.config.reconnect_max);
        delay
    }

    /// True once the broker has been silent for interval x liveness.
    pub(crate) fn broker_is_silent(&self, now: Instant) -> bool {
        now >= self.broker_expires_at
    }

    /// The next moment something is due: a heartbeat to send or the broker's expiry.
    pub(crate) fn next_deadline(&self) -> Instant {
        self.heartbeat_at.min(self.broker_expires_at)
    }

    /// After a long request the broker's silence means nothing (some brokers do not heartbeat a
    /// busy worker), so the countdown starts again when the worker is ready to listen.
    pub(crate) fn restart_broker_countdown(&mut self, now: Instant) {
        self.broker_expires_at = now + self.broker_patience();
    }

    fn broker_patience(&self) -> Duration {
        self.config.heartbeat_interval * self.config.liveness
    }

    /// Sends a HEARTBEAT if one is due. Called by whichever thread holds the link.
    pub(crate) fn heartbeat_if_due(&mut self, now: Instant) -> Result<(), Error> {
        if self.socket.is_some() && now >= self.heartbeat_at {
            self.send_command(Command::Heartbeat, None)?;
            self.heartbeat_at = now + self.config.heartbeat_interval;
        }
        Ok(())
    }

    /// Receives one whole message if one is waiting, without blocking.
    pub(crate) fn try_recv(&mut self) -> Result<Option<Frames>, Error> {
        let Some(socket) = &self.socket else {
            return Ok(None);
        };
        let first = match socket.recv_msg(zmq::DONTWAIT) {
            Ok(frame) => frame,
            Err(zmq::Error::EAGAIN) => return Ok(None),
            Err(source) => {
                return Err(Error::Zmq {
                    action: "receive",
                    source,
                })
            }
        };
        // ZeroMQ delivers a multipart message whole, so the other frames are already here.
        let mut frames = vec![first];
        while socket.get_rcvmore().map_err(Error::zmq("read RCVMORE"))? {
            frames.push(socket.recv_msg(0).map_err(Error::zmq("receive"))?);
        }
        if log_enabled!(Level::Debug) {
            debug!("broker -> worker: {}", dump::Message(&frames));
        }
        Ok(Some(frames))
    }

    /// Acts on one message from the broker. A REQUEST is handed to the caller; HEARTBEAT only
    /// proves the broker alive; DISCONNECT ends the conversation; a malformed message is logged
    /// and dropped, because nothing a peer sends may crash us.
    pub(crate) fn handle(&mut self, frames: Frames, now: Instant) -> Received {
        let command = match mdp::worker::ToWorker::parse(frames) {
            Ok(command) => command,
            Err(error) => {
                warn!("dropped a malformed message from the broker: {error}");
                return Received::Nothing;
            }
        };
        match command {
            mdp::worker::ToWorker::Disconnect => {
                info!("broker sent DISCONNECT; will register again");
                self.close();
                Received::Nothing
            }
            mdp::worker::ToWorker::Heartbeat => {
                self.heard_from_broker(now);
                Received::Nothing
            }
            mdp::worker::ToWorker::Request { client, body } => {
                self.heard_from_broker(now);
                Received::Request { client, body }
            }
        }
    }

    fn heard_from_broker(&mut self, now: Instant) {
        self.broker_expires_at = now + self.broker_patience();
        // The broker accepted this conversation, so the next reconnection need not wait long.
        self.reconnect_delay = self.config.reconnect_initial;
    }

    /// Sends `REPLY` with the client's address exactly as it came in the REQUEST: the broker
    /// routes the body back to that client by it.
    pub(crate) fn send_reply(
        &mut self,
        conversation: u64,
        client: zmq::Message,
        body: Frames,
        now: Instant,
    ) -> Result<(), Error> {
        let socket = match &self.socket {
            Some(socket) if conversation == self.conversation => socket,
            _ => {
                // The broker that sent the request has forgotten us (it disconnected us, or we
                // gave up on it); a REPLY in a new conversation would only earn a DISCONNECT.
                // The client resends after its timeout.
                warn!("dropped a reply: the conversation its request came in has ended");
                return Ok(());
            }
        };
        if log_enabled!(Level::Debug) {
            let command = [Command::Reply.byte()];
            let mut shown: Vec<&[u8]> = vec![b"", WORKER_HEADER, &command, &client, b""];
            shown.extend(body.iter().map(|frame| &frame[..]));
            debug!("worker -> broker: {}", dump::Message(&shown));
        }
        let send = |frame: zmq::Message, flags: i32| {
            socket.send(frame, flags).map_err(Error::zmq("send REPLY"))
        };
        send_header(socket, Command::Reply, true)?;
        send(client, zmq::SNDMORE)?;
        send(zmq::Message::new(), zmq::SNDMORE)?;
        let last = body.len().saturating_sub(1);
        if body.is_empty() {
            // Spec 7 requires at least one body frame: an empty reply is one empty frame.
            send(zmq::Message::new(), 0)?;
        }
        for (index, frame) in body.into_iter().enumerate() {
            send(frame, if index == last { 0 } else { zmq::SNDMORE })?;
        }
        // The REPLY is a sign of life: no HEARTBEAT needed for another interval. And the broker
        // may have been silent while we were busy, so its countdown starts again now.
        self.heartbeat_at = now + self.config.heartbeat_interval;
        self.restart_broker_countdown(now);
        Ok(())
    }

    /// Sends a command that has at most one frame after the command byte (READY's service name).
    fn send_command(&self, command: Command, last: Option<zmq::Message>) -> Result<(), Error> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        if log_enabled!(Level::Debug) {
            let command_byte = [command.byte()];
            let mut shown: Vec<&[u8]> = vec![b"", WORKER_HEADER, &command_byte];
            if let Some(frame) = &last {
                shown.push(frame);
            }
            debug!("worker -> broker: {}", dump::Message(&shown));
        }
        send_header(socket, command, last.is_some())?;
        if let Some(frame) = last {
            socket.send(frame, 0).map_err(Error::zmq("send"))?;
        }
        Ok(())
    }
}

/// `[""] ["MDPW01"] [command]`, the start of every MDP/Worker message.
fn send_header(socket: &zmq::Socket, command: Command, more: bool) -> Result<(), Error> {
    let failed = Error::zmq("send");
    socket
        .send(zmq::Message::new(), zmq::SNDMORE)
        .map_err(failed)?;
    socket.send(WORKER_HEADER, zmq::SNDMORE).map_err(failed)?;
    let flags = if more { zmq::SNDMORE } else { 0 };
    socket.send(&[command.byte()][..], flags).map_err(failed)
}
