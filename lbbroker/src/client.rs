//! A client: a REQ socket connected to the broker's frontend that sends one request and waits for
//! its reply, exactly once, like the gist's.
//!
//! The client knows nothing of processors. It sends its load, say `2`; its REQ socket adds the
//! empty delimiter (`[][2]` on the wire), the frontend ROUTER adds the client's identity
//! (`[CLIENT-3][][2]` for the broker), and on the way back the same two frames are taken off
//! again, so the client receives just `[OK from PROCESSOR-1]`.

use crossbeam_channel::Sender;
use log::debug;

use crate::error::Error;
use crate::event::{ClientReply, Event};
use crate::frames::{describe, recv_frames};
use crate::stop::{wait_for_message, StopSignal, Wake};

/// The identity of client number `number`: `CLIENT-0`, `CLIENT-1`, ...
pub fn client_identity(number: usize) -> String {
    format!("CLIENT-{number}")
}

/// What one client needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Its identity, which the processor prints as the request's origin.
    pub identity: String,
    /// The broker's frontend endpoint.
    pub frontend: String,
    /// How many units of work to ask for.
    pub load: u32,
}

/// Sends the load, waits for the reply and reports it as an [`Event::ReplyReceived`].
/// Returns the reply, or `None` if `stop` was raised first.
pub fn run_client(
    context: &zmq::Context,
    config: &ClientConfig,
    events: &Sender<Event>,
    stop: &StopSignal,
) -> Result<Option<ClientReply>, Error> {
    let socket = context
        .socket(zmq::REQ)
        .map_err(Error::zmq("creating a client's REQ socket"))?;
    socket
        .set_linger(0)
        .map_err(Error::zmq("setting linger on a client's socket"))?;
    socket
        .set_identity(config.identity.as_bytes())
        .map_err(Error::zmq("setting a client's identity"))?;
    socket
        .connect(&config.frontend)
        .map_err(|source| Error::Connect {
            identity: config.identity.clone(),
            endpoint: config.frontend.clone(),
            source,
        })?;

    // Queued by ZeroMQ until the connection is up, so the broker may start later.
    socket
        .send(config.load.to_string().as_str(), 0)
        .map_err(Error::zmq("sending a request"))?;

    if wait_for_message(&socket, stop).map_err(Error::zmq("waiting for a reply"))? == Wake::Stopped
    {
        return Ok(None);
    }
    let frames = recv_frames(&socket).map_err(Error::zmq("receiving a reply"))?;
    debug!("{} received {}", config.identity, describe(&frames));
    let reply = ClientReply {
        client: config.identity.clone(),
        reply: frames
            .iter()
            .map(|frame| String::from_utf8_lossy(frame).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    };
    // If nobody listens any more, the reply still counts for the caller.
    let _ = events.send(Event::ReplyReceived(reply.clone()));
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_numbered_like_the_gist() {
        assert_eq!(client_identity(0), "CLIENT-0");
        assert_eq!(client_identity(9), "CLIENT-9");
    }
}
