//! A processor: the worker of this pattern, a REQ socket connected to the broker's backend.
//!
//! REQ is the strict "send, then receive, then send" socket, which is why it works as a worker:
//! its first message, `READY`, asks for work, and every reply after that asks for more. The
//! processor never learns who the clients are; it only sees the envelope the broker put in front
//! of each request and copies it into its reply, so the broker can route that reply back:
//!
//! ```text
//! receives  [CLIENT-3][][2]                      (the backend ROUTER and REQ took the rest)
//! prints    PROCESSOR-1: REQ  2 from CLIENT-3
//! works     2 units
//! sends     [CLIENT-3][][OK from PROCESSOR-1]    (same two envelope frames, new body)
//! ```

use std::time::Duration;

use crossbeam_channel::Sender;
use log::{debug, warn};

use crate::balancer::READY;
use crate::error::Error;
use crate::event::{Event, TakenRequest};
use crate::frames::{describe, printable, recv_frames, send_frames};
use crate::stop::{wait_for_message, StopSignal, Wake};

/// The identity of processor number `number`: `PROCESSOR-0`, `PROCESSOR-1`, ...
pub fn processor_identity(number: usize) -> String {
    format!("PROCESSOR-{number}")
}

/// What one processor needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorConfig {
    /// Its identity, set on the socket so the broker and the clients see a readable name.
    pub identity: String,
    /// The broker's backend endpoint.
    pub backend: String,
    /// How long one unit of load takes (the gist: one second).
    pub unit: Duration,
}

/// Reads a request body as a load: a whole number of units, like `2`.
pub fn parse_load(body: &[u8]) -> Option<u32> {
    std::str::from_utf8(body).ok()?.trim().parse().ok()
}

/// Connects, says `READY`, then serves requests until `stop` is raised. Each request is reported
/// as an [`Event::RequestTaken`] before the work starts, as the gist prints before it sleeps.
/// Returns how many requests it answered.
pub fn run_processor(
    context: &zmq::Context,
    config: &ProcessorConfig,
    events: &Sender<Event>,
    stop: &StopSignal,
) -> Result<u64, Error> {
    let socket = context
        .socket(zmq::REQ)
        .map_err(Error::zmq("creating a processor's REQ socket"))?;
    socket
        .set_linger(0)
        .map_err(Error::zmq("setting linger on a processor's socket"))?;
    // Set before connecting: the identity travels in the connection handshake.
    socket
        .set_identity(config.identity.as_bytes())
        .map_err(Error::zmq("setting a processor's identity"))?;
    socket
        .connect(&config.backend)
        .map_err(|source| Error::Connect {
            identity: config.identity.clone(),
            endpoint: config.backend.clone(),
            source,
        })?;

    // The broker receives this as [PROCESSOR-n][][READY] and queues us as free.
    socket.send(READY, 0).map_err(Error::zmq("sending READY"))?;
    debug!(
        "{} connected to {} and sent READY",
        config.identity, config.backend
    );

    let mut answered = 0;
    loop {
        if wait_for_message(&socket, stop).map_err(Error::zmq("waiting for a request"))?
            == Wake::Stopped
        {
            return Ok(answered);
        }
        let mut frames = recv_frames(&socket).map_err(Error::zmq("receiving a request"))?;
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
        let load_text = body
            .iter()
            .map(|frame| String::from_utf8_lossy(frame).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let request = TakenRequest {
            processor: config.identity.clone(),
            load: load_text,
            client: printable(&frames[0]),
        };
        let load = match body.as_slice() {
            [single] => parse_load(single),
            _ => None,
        };
        if events.send(Event::RequestTaken(request)).is_err() {
            // Nobody is listening any more: the run is over.
            return Ok(answered);
        }

        let answer = match load {
            Some(units) => {
                // The work: a pause of `units` units, cut short if we are told to stop.
                if stop.wait(config.unit.saturating_mul(units)) {
                    return Ok(answered);
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
        send_frames(&socket, frames).map_err(Error::zmq("sending a reply"))?;
        answered += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_numbered_like_the_gist() {
        assert_eq!(processor_identity(0), "PROCESSOR-0");
        assert_eq!(processor_identity(2), "PROCESSOR-2");
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
