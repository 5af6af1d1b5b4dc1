//! The broker's two kinds of peers, both REQ sockets: the *processor* (the worker of this
//! pattern), connected to the backend, and the *client*, connected to the frontend. Each runs on
//! a thread of its own, like the gist's `scan_processor` and `client`, and reports the line the
//! gist would `printf` as an [`Event`] instead of printing it.
//!
//! REQ is the strict "send, then receive, then send" socket, which is why it works for both. A
//! processor's first message, `READY`, asks for work, and every reply after that asks for more. It
//! never learns who the clients are; it only sees the envelope the broker put in front of each
//! request and copies it into its reply, so the broker can route that reply back:
//!
//! ```text
//! receives  [CLIENT-3][][2]                      (the backend ROUTER and REQ took the rest)
//! prints    PROCESSOR-1: REQ  2 from CLIENT-3
//! works     2 units
//! sends     [CLIENT-3][][OK from PROCESSOR-1]    (same two envelope frames, new body)
//! ```
//!
//! A client knows nothing of processors. It sends its load, say `2`; its REQ socket adds the
//! empty delimiter (`[][2]` on the wire), the frontend ROUTER adds the client's identity
//! (`[CLIENT-3][][2]` for the broker), and on the way back the same two frames are taken off
//! again, so the client receives just `[OK from PROCESSOR-1]`.
//!
//! A client waits for its reply until the run is stopped, as the gist's do, or, given a timeout
//! (`lbbroker client --timeout MS`), until that much time has passed: then it fails with
//! [`Error::NoReply`], so that a user at a terminal is never stuck with a broker that cannot
//! answer (none there, no processor, or its identity taken over by another client).

use std::fmt;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{debug, warn};
use zsocket::{Frames, ResultExt, StopSignal, Woken};

use crate::balancer::READY;
use crate::error::Error;
use crate::frames::{describe, printable};
use crate::roles::Event;

/// A processor took a request; printed like the gist's `REQ` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenRequest {
    /// The processor's identity, e.g. `PROCESSOR-0`.
    pub processor: String,
    /// The request as it arrived: the load, e.g. `2`.
    pub load: String,
    /// The client it came from, read from the envelope, e.g. `CLIENT-7`.
    pub client: String,
}

impl fmt::Display for TakenRequest {
    /// `PROCESSOR-0: REQ  2 from CLIENT-7`, as `printf "%11s: REQ %2s from %s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>11}: REQ {:>2} from {}",
            self.processor, self.load, self.client
        )
    }
}

/// A client got its reply; printed like the gist's `REP` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReply {
    /// The client's identity, e.g. `CLIENT-7`.
    pub client: String,
    /// The reply, e.g. `OK from PROCESSOR-0`.
    pub reply: String,
}

impl fmt::Display for ClientReply {
    /// `   CLIENT-7: REP OK from PROCESSOR-0`, as `printf "%11s: REP %2s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>11}: REP {:>2}", self.client, self.reply)
    }
}

/// The identity of processor number `number`: `PROCESSOR-0`, `PROCESSOR-1`, ...
pub(crate) fn processor_identity(number: usize) -> String {
    format!("PROCESSOR-{number}")
}

/// The identity of client number `number`: `CLIENT-0`, `CLIENT-1`, ...
pub(crate) fn client_identity(number: usize) -> String {
    format!("CLIENT-{number}")
}

/// What one processor needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessorConfig {
    /// Its identity, set on the socket so the broker and the clients see a readable name.
    pub(crate) identity: String,
    /// The broker's backend endpoint.
    pub(crate) backend: String,
    /// How long one unit of load takes (the gist: one second).
    pub(crate) unit: Duration,
}

/// What one client needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientConfig {
    /// Its identity, which the processor prints as the request's origin.
    pub(crate) identity: String,
    /// The broker's frontend endpoint.
    pub(crate) frontend: String,
    /// How many units of work to ask for.
    pub(crate) load: u32,
    /// How long to wait for the reply before giving up; `None` waits until stopped.
    pub(crate) timeout: Option<Duration>,
}

/// Reads a request body as a load: a whole number of units, like `2`.
fn parse_load(body: &[u8]) -> Option<u32> {
    std::str::from_utf8(body).ok()?.trim().parse().ok()
}

/// Connects, says `READY`, then serves requests until `stop` is raised. Each request is reported
/// as an [`Event::RequestTaken`] before the work starts, as the gist prints before it sleeps.
/// Returns how many requests it answered.
pub(crate) fn run_processor(
    context: &zmq::Context,
    config: &ProcessorConfig,
    events: &Sender<Event>,
    stop: &StopSignal,
) -> Result<u64, Error> {
    let socket = connect_req(context, &config.identity, &config.backend)?;
    // The broker receives this as [PROCESSOR-n][][READY] and queues us as free.
    socket.send(READY, 0).doing("send READY")?;
    debug!(
        "{} connected to {} and sent READY",
        config.identity, config.backend
    );

    let mut answered = 0;
    while let Some(mut frames) = recv_unless_stopped(&socket, stop, None)?.into_message() {
        debug!("{} received {}", config.identity, describe(&frames));
        // [client][][request]: anything else means the broker broke its own framing, and a
        // REQ socket that cannot answer cannot take another request either.
        if frames.len() < 3 || !frames[1].is_empty() {
            return Err(Error::MissingEnvelope {
                processor: config.identity.clone(),
                frames: describe(&frames),
            });
        }
        let body = frames.split_off(2);
        let request = TakenRequest {
            processor: config.identity.clone(),
            load: as_text(&body),
            client: printable(&frames[0]),
        };
        let load = match body.as_slice() {
            [single] => parse_load(single),
            _ => None,
        };
        if events.send(Event::RequestTaken(request)).is_err() {
            // Nobody is listening any more: the run is over.
            break;
        }

        let answer = match load {
            Some(units) => {
                // The work: a pause of `units` units, cut short if we are told to stop.
                if stop.sleep(config.unit.saturating_mul(units))? {
                    break;
                }
                format!("OK from {}", config.identity)
            }
            None => {
                warn!(
                    "{}: the request is not a load: {}",
                    config.identity,
                    describe(&body)
                );
                format!(
                    "ERROR from {}: a request must be a whole number of units",
                    config.identity
                )
            }
        };
        // `frames` is still the envelope [client][]: the reply reuses it, so it goes back to
        // the client that asked.
        frames.push(zmq::Message::from(answer.as_str()));
        zsocket::send(&socket, frames, 0).map_err(zsocket::Error::from)?;
        answered += 1;
    }
    Ok(answered)
}

/// Sends the load, waits for the reply and reports it as an [`Event::ReplyReceived`], unless
/// `stop` is raised first, or the timeout passes ([`Error::NoReply`]).
pub(crate) fn run_client(
    context: &zmq::Context,
    config: &ClientConfig,
    events: &Sender<Event>,
    stop: &StopSignal,
) -> Result<(), Error> {
    let socket = connect_req(context, &config.identity, &config.frontend)?;
    // Queued by ZeroMQ until the connection is up, so the broker may start later.
    socket
        .send(config.load.to_string().as_str(), 0)
        .doing("send a request")?;

    let deadline = config
        .timeout
        .and_then(|timeout| Instant::now().checked_add(timeout));
    let frames = match recv_unless_stopped(&socket, stop, deadline)? {
        Received::Message(frames) => frames,
        Received::Stopped => return Ok(()),
        Received::TimedOut => {
            return Err(Error::NoReply {
                frontend: config.frontend.clone(),
                timeout: config.timeout.unwrap_or_default(),
            })
        }
    };
    debug!("{} received {}", config.identity, describe(&frames));
    let reply = ClientReply {
        client: config.identity.clone(),
        reply: as_text(&frames),
    };
    // If nobody listens any more, the run is over anyway.
    let _ = events.send(Event::ReplyReceived(reply));
    Ok(())
}

/// A REQ socket with `identity`, connected to `endpoint`. The identity is set before connecting
/// because it travels in the connection handshake; that is why this is not [`zsocket::connect`],
/// which connects at once.
fn connect_req(
    context: &zmq::Context,
    identity: &str,
    endpoint: &str,
) -> Result<zmq::Socket, Error> {
    let socket = context.socket(zmq::REQ).doing("create a REQ socket")?;
    socket.set_linger(0).doing("set ZMQ_LINGER")?;
    socket
        .set_identity(identity.as_bytes())
        .doing("set ZMQ_IDENTITY")?;
    socket.connect(endpoint).map_err(|source| Error::Connect {
        identity: identity.to_owned(),
        endpoint: endpoint.to_owned(),
        source,
    })?;
    Ok(socket)
}

/// What [`recv_unless_stopped`] ended with.
enum Received {
    Message(Frames),
    Stopped,
    TimedOut,
}

impl Received {
    /// The message, if one came: for a wait without a deadline, `None` means stopped.
    fn into_message(self) -> Option<Frames> {
        match self {
            Received::Message(frames) => Some(frames),
            Received::Stopped | Received::TimedOut => None,
        }
    }
}

/// The next whole message on `socket`, unless `stop` is raised or `deadline` passes first. The
/// thread sleeps until one of them wakes it.
fn recv_unless_stopped(
    socket: &zmq::Socket,
    stop: &StopSignal,
    deadline: Option<Instant>,
) -> Result<Received, Error> {
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            return Ok(Received::TimedOut);
        }
        match zsocket::wait(&[socket], Some(stop), deadline, now)? {
            Woken::Stopped => return Ok(Received::Stopped),
            Woken::Readable(_) => {
                if let Some(frames) = zsocket::recv(socket, zmq::DONTWAIT)? {
                    return Ok(Received::Message(frames));
                }
            }
            // The deadline passed (checked above), or a signal interrupted the wait.
            Woken::Timeout => {}
        }
    }
}

/// The frames of a body as one line of text, frames separated by spaces.
fn as_text(frames: &[zmq::Message]) -> String {
    frames
        .iter()
        .map(|frame| String::from_utf8_lossy(frame).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected strings are the lines of a real run of the Ruby gist.
    #[test]
    fn request_line_matches_the_gists_printf() {
        let request = TakenRequest {
            processor: "PROCESSOR-0".into(),
            load: "1".into(),
            client: "CLIENT-7".into(),
        };
        assert_eq!(request.to_string(), "PROCESSOR-0: REQ  1 from CLIENT-7");
    }

    #[test]
    fn reply_line_matches_the_gists_printf() {
        let reply = ClientReply {
            client: "CLIENT-7".into(),
            reply: "OK from PROCESSOR-0".into(),
        };
        assert_eq!(reply.to_string(), "   CLIENT-7: REP OK from PROCESSOR-0");
    }

    #[test]
    fn widths_are_minimums_like_printf() {
        let request = TakenRequest {
            processor: "PROCESSOR-12".into(),
            load: "100".into(),
            client: "C".into(),
        };
        assert_eq!(request.to_string(), "PROCESSOR-12: REQ 100 from C");
        let reply = ClientReply {
            client: "C".into(),
            reply: "x".into(),
        };
        assert_eq!(reply.to_string(), "          C: REP  x");
    }

    #[test]
    fn identities_are_numbered_like_the_gist() {
        assert_eq!(processor_identity(0), "PROCESSOR-0");
        assert_eq!(processor_identity(2), "PROCESSOR-2");
        assert_eq!(client_identity(0), "CLIENT-0");
        assert_eq!(client_identity(9), "CLIENT-9");
    }

    #[test]
    fn a_load_is_a_whole_number_of_units() {
        assert_eq!(parse_load(b"3"), Some(3));
        assert_eq!(parse_load(b" 1\n"), Some(1));
        assert_eq!(parse_load(b"two"), None);
        assert_eq!(parse_load(b"-1"), None);
        assert_eq!(parse_load(&[0xff]), None);
    }
}
