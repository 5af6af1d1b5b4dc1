//! The broker's decisions, without sockets: when to listen to clients, which processor gets a
//! request, and which frames go where. The socket loop in [`crate::broker`] only carries frames
//! between `zmq` and this type, so everything that makes the pattern work is tested here alone.
//!
//! # The frames
//!
//! A REQ socket puts an empty *delimiter* frame in front of what the application sends, and takes
//! it off again on receipt. A ROUTER socket puts the sender's *identity* in front of every message
//! it receives, and, on sending, takes the first frame off and uses it to pick the connection.
//! With both sockets' identities set by their owners (`CLIENT-3`, `PROCESSOR-1`), a request for
//! two units of work travels like this:
//!
//! ```text
//! CLIENT-3 REQ sends                         [2]
//!   on the wire (REQ added the delimiter)    [][2]
//! frontend ROUTER gives the broker           [CLIENT-3][][2]            <- added CLIENT-3
//! broker sends on the backend ROUTER         [PROCESSOR-1][][CLIENT-3][][2]
//!   on the wire (ROUTER took PROCESSOR-1)    [][CLIENT-3][][2]
//! PROCESSOR-1 REQ receives                   [CLIENT-3][][2]            <- REQ took the delimiter
//! ```
//!
//! The broker adds exactly two frames, the processor's identity and a delimiter, so the processor
//! sees a message that *starts* with a REQ-style envelope (`[CLIENT-3][]`). It copies that envelope
//! into its answer, and the same steps run backwards:
//!
//! ```text
//! PROCESSOR-1 REQ sends                      [CLIENT-3][][OK from PROCESSOR-1]
//! backend ROUTER gives the broker            [PROCESSOR-1][][CLIENT-3][][OK from PROCESSOR-1]
//! broker sends on the frontend ROUTER        [CLIENT-3][][OK from PROCESSOR-1]   <- took 2 frames
//! CLIENT-3 REQ receives                      [OK from PROCESSOR-1]
//! ```
//!
//! A processor's first message is `[READY]`, which reaches the broker as `[PROCESSOR-1][][READY]`:
//! it carries no reply, it only says "I am free".
//!
//! # The rule
//!
//! Every message from a processor, `READY` or a reply, means that processor is free again, so its
//! identity goes to the *back* of `ready_processors`; every request goes to the processor at the
//! *front*, the one that has been free the longest (least recently used). A `VecDeque` with
//! `push_back`/`pop_front` is that queue; a `Vec` with `push`/`pop` would hand the next request to
//! the processor that finished *last*, which is not LRU.
//!
//! While no processor is free the broker must not read requests at all: [`LoadBalancer::wants_requests`]
//! tells the loop to leave the frontend out of `poll`, so requests wait inside the frontend ROUTER's
//! queue (and, once that fills up, in the clients' sockets) instead of in the broker's memory.

use std::collections::VecDeque;
use std::fmt;

use zsocket::Frames;

use crate::frames::printable;

/// The body of a processor's first message: "I have started and want work".
pub const READY: &[u8] = b"READY";

/// Which side of the broker a malformed message came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The frontend: a client's request.
    Client,
    /// The backend: a processor's `READY` or reply.
    Processor,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Processor => "processor",
        })
    }
}

/// Why a message could not be routed. The broker logs it and drops the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Fewer frames than the smallest valid message has.
    #[error("a {from} message needs at least {needed} frames, this one has {got}")]
    TooFewFrames {
        /// Where the message came from.
        from: Side,
        /// The smallest valid number of frames.
        needed: usize,
        /// How many frames it had.
        got: usize,
    },
    /// A frame that must be the empty delimiter was not empty.
    #[error(
        "frame {index} of a {from} message must be the empty delimiter, but it holds {len} bytes"
    )]
    NotADelimiter {
        /// Where the message came from.
        from: Side,
        /// Which frame, counting from 0.
        index: usize,
        /// How many bytes it held.
        len: usize,
    },
    /// A request was handed over while no processor was ready. The broker loop never does this:
    /// it does not even poll the frontend then (see [`LoadBalancer::wants_requests`]).
    #[error("a client request was read while no processor was ready; the frontend must not be polled then")]
    NoProcessorReady,
}

/// Frames the broker must send, and on which socket is said by the method that produced them.
/// The first frame is the identity the ROUTER routes by.
#[derive(Debug, PartialEq, Eq)]
pub struct Outgoing {
    frames: Frames,
}

impl Outgoing {
    /// The frames, first to last, for inspection.
    pub fn frames(&self) -> &[zmq::Message] {
        &self.frames
    }

    /// The identity of the peer the ROUTER will deliver to (the first frame), as text for logs.
    pub fn destination(&self) -> String {
        self.frames
            .first()
            .map(|frame| printable(frame))
            .unwrap_or_default()
    }

    /// Hands the frames over to be sent.
    pub fn into_frames(self) -> Frames {
        self.frames
    }
}

/// What a message from a processor meant.
#[derive(Debug, PartialEq, Eq)]
pub enum ProcessorMessage {
    /// `[READY]`: a processor has started; it is now at the back of the ready queue.
    Joined {
        /// The processor's identity, as text.
        processor: String,
    },
    /// An answer for a client: send it on the frontend ROUTER. The processor is ready again.
    Reply(Outgoing),
}

/// The least-recently-used queue of ready processors and the framing rules around it.
#[derive(Debug, Default)]
pub struct LoadBalancer {
    /// Identity frames of the processors waiting for work; the one waiting longest is in front.
    ready_processors: VecDeque<zmq::Message>,
}

impl LoadBalancer {
    /// A balancer with no processor ready yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the loop should poll the frontend for requests: only while a processor is free.
    pub fn wants_requests(&self) -> bool {
        !self.ready_processors.is_empty()
    }

    /// The identities of the ready processors, the next one to get work first.
    pub fn ready_processors(&self) -> impl Iterator<Item = String> + '_ {
        self.ready_processors
            .iter()
            .map(|identity| printable(identity))
    }

    /// Takes a message the backend ROUTER received, `[processor][][READY]` or
    /// `[processor][][client][][reply...]`, and puts the processor at the back of the queue.
    ///
    /// A malformed message is refused and its processor is *not* queued: it broke the protocol,
    /// so nothing it says about being ready can be trusted.
    pub fn on_processor_message(
        &mut self,
        mut frames: Frames,
    ) -> Result<ProcessorMessage, EnvelopeError> {
        check_envelope(&frames, Side::Processor, 3)?;
        // frames = [processor, "", rest...]; take the processor's envelope off the front. After
        // the split, `frames` is exactly [processor, ""] (the check saw at least 3 frames).
        let rest = frames.split_off(2);
        let processor = frames.swap_remove(0);

        let message = if rest.len() == 1 && &*rest[0] == READY {
            ProcessorMessage::Joined {
                processor: printable(&processor),
            }
        } else {
            // The rest is the reply with the client's envelope the processor copied:
            // [client, "", reply...]. Check it, so the frontend ROUTER gets a routable message.
            check_envelope(&rest, Side::Processor, 3).map_err(|error| shift_index(error, 2))?;
            ProcessorMessage::Reply(Outgoing { frames: rest })
        };
        self.ready_processors.push_back(processor);
        Ok(message)
    }

    /// Takes a request the frontend ROUTER received, `[client][][request...]`, and addresses it
    /// to the processor that has been ready the longest:
    /// `[processor][][client][][request...]`, to send on the backend ROUTER.
    ///
    /// The request's own frames are moved, not copied: the broker only puts two frames in front.
    pub fn on_client_request(&mut self, frames: Frames) -> Result<Outgoing, EnvelopeError> {
        check_envelope(&frames, Side::Client, 3)?;
        let processor = self
            .ready_processors
            .pop_front()
            .ok_or(EnvelopeError::NoProcessorReady)?;
        let mut addressed = Vec::with_capacity(frames.len() + 2);
        addressed.push(processor);
        addressed.push(zmq::Message::new());
        addressed.extend(frames);
        Ok(Outgoing { frames: addressed })
    }
}

/// Checks that `frames` starts with `[identity][]` and has at least `needed` frames.
fn check_envelope(frames: &[zmq::Message], from: Side, needed: usize) -> Result<(), EnvelopeError> {
    if frames.len() < needed {
        return Err(EnvelopeError::TooFewFrames {
            from,
            needed,
            got: frames.len(),
        });
    }
    if !frames[1].is_empty() {
        return Err(EnvelopeError::NotADelimiter {
            from,
            index: 1,
            len: frames[1].len(),
        });
    }
    Ok(())
}

/// Reports a frame number counted in the whole message, not in the part that was checked.
fn shift_index(error: EnvelopeError, offset: usize) -> EnvelopeError {
    match error {
        EnvelopeError::TooFewFrames { from, needed, got } => EnvelopeError::TooFewFrames {
            from,
            needed: needed + offset,
            got: got + offset,
        },
        EnvelopeError::NotADelimiter { from, index, len } => EnvelopeError::NotADelimiter {
            from,
            index: index + offset,
            len,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds frames from text; `""` is the empty delimiter.
    fn frames(parts: &[&str]) -> Frames {
        parts.iter().map(|part| zmq::Message::from(*part)).collect()
    }

    /// The frames as text, to compare with what the comments above promise.
    fn texts(frames: &[zmq::Message]) -> Vec<String> {
        frames.iter().map(|frame| printable(frame)).collect()
    }

    fn ready(balancer: &mut LoadBalancer, processor: &str) {
        let message = balancer.on_processor_message(frames(&[processor, "", "READY"]));
        assert_eq!(
            message,
            Ok(ProcessorMessage::Joined {
                processor: processor.to_owned()
            })
        );
    }

    fn dispatch(balancer: &mut LoadBalancer, client: &str, load: &str) -> Outgoing {
        balancer
            .on_client_request(frames(&[client, "", load]))
            .expect("a processor is ready")
    }

    #[test]
    fn with_no_processor_ready_the_frontend_is_not_polled() {
        let balancer = LoadBalancer::new();
        assert!(!balancer.wants_requests());
    }

    #[test]
    fn with_no_processor_ready_a_request_is_refused_not_misrouted() {
        let mut balancer = LoadBalancer::new();
        let refused = balancer.on_client_request(frames(&["CLIENT-0", "", "1"]));
        assert_eq!(refused, Err(EnvelopeError::NoProcessorReady));
    }

    #[test]
    fn ready_processor_opens_the_frontend_and_a_dispatch_closes_it_again() {
        let mut balancer = LoadBalancer::new();
        ready(&mut balancer, "PROCESSOR-0");
        assert!(balancer.wants_requests());
        dispatch(&mut balancer, "CLIENT-0", "1");
        assert!(!balancer.wants_requests());
    }

    #[test]
    fn first_ready_processor_gets_the_next_request() {
        let mut balancer = LoadBalancer::new();
        ready(&mut balancer, "PROCESSOR-2");
        ready(&mut balancer, "PROCESSOR-0");
        ready(&mut balancer, "PROCESSOR-1");

        let destinations: Vec<String> = ["CLIENT-0", "CLIENT-1", "CLIENT-2"]
            .iter()
            .map(|client| dispatch(&mut balancer, client, "1").destination())
            .collect();
        assert_eq!(destinations, ["PROCESSOR-2", "PROCESSOR-0", "PROCESSOR-1"]);
    }

    #[test]
    fn a_processor_that_replies_goes_to_the_back_of_the_queue() {
        let mut balancer = LoadBalancer::new();
        ready(&mut balancer, "PROCESSOR-0");
        ready(&mut balancer, "PROCESSOR-1");
        assert_eq!(
            dispatch(&mut balancer, "CLIENT-0", "1").destination(),
            "PROCESSOR-0"
        );

        // PROCESSOR-0 finishes; PROCESSOR-1 has been waiting longer, so it is next (LIFO, as a
        // Vec with pop would do, would pick PROCESSOR-0 again).
        balancer
            .on_processor_message(frames(&[
                "PROCESSOR-0",
                "",
                "CLIENT-0",
                "",
                "OK from PROCESSOR-0",
            ]))
            .expect("a well-formed reply");
        assert_eq!(
            balancer.ready_processors().collect::<Vec<_>>(),
            ["PROCESSOR-1", "PROCESSOR-0"]
        );
        assert_eq!(
            dispatch(&mut balancer, "CLIENT-1", "1").destination(),
            "PROCESSOR-1"
        );
        assert_eq!(
            dispatch(&mut balancer, "CLIENT-2", "1").destination(),
            "PROCESSOR-0"
        );
    }

    #[test]
    fn a_request_gets_the_processor_envelope_in_front_of_the_client_envelope() {
        let mut balancer = LoadBalancer::new();
        ready(&mut balancer, "PROCESSOR-1");
        let outgoing = dispatch(&mut balancer, "CLIENT-3", "2");
        assert_eq!(
            texts(outgoing.frames()),
            ["PROCESSOR-1", "", "CLIENT-3", "", "2"]
        );
    }

    #[test]
    fn a_request_of_several_frames_is_forwarded_whole() {
        let mut balancer = LoadBalancer::new();
        ready(&mut balancer, "PROCESSOR-1");
        let outgoing = balancer
            .on_client_request(frames(&["CLIENT-3", "", "part 1", "part 2"]))
            .expect("a processor is ready");
        assert_eq!(
            texts(outgoing.frames()),
            ["PROCESSOR-1", "", "CLIENT-3", "", "part 1", "part 2"]
        );
    }

    #[test]
    fn a_reply_loses_the_processor_envelope_and_keeps_the_client_one() {
        let mut balancer = LoadBalancer::new();
        let message = balancer
            .on_processor_message(frames(&[
                "PROCESSOR-1",
                "",
                "CLIENT-3",
                "",
                "OK from PROCESSOR-1",
            ]))
            .expect("a well-formed reply");
        let ProcessorMessage::Reply(outgoing) = message else {
            panic!("expected a reply, got {message:?}");
        };
        assert_eq!(outgoing.destination(), "CLIENT-3");
        assert_eq!(
            texts(outgoing.frames()),
            ["CLIENT-3", "", "OK from PROCESSOR-1"]
        );
    }

    #[test]
    fn ready_is_not_forwarded_to_any_client() {
        let mut balancer = LoadBalancer::new();
        let message = balancer.on_processor_message(frames(&["PROCESSOR-0", "", "READY"]));
        assert!(matches!(message, Ok(ProcessorMessage::Joined { .. })));
    }

    #[test]
    fn malformed_messages_are_refused_and_queue_nobody() {
        let mut balancer = LoadBalancer::new();
        assert_eq!(
            balancer.on_processor_message(frames(&["PROCESSOR-0", "READY"])),
            Err(EnvelopeError::TooFewFrames {
                from: Side::Processor,
                needed: 3,
                got: 2
            })
        );
        assert_eq!(
            balancer.on_processor_message(frames(&["PROCESSOR-0", "x", "READY"])),
            Err(EnvelopeError::NotADelimiter {
                from: Side::Processor,
                index: 1,
                len: 1
            })
        );
        // A reply whose client envelope lost its delimiter could not be routed back.
        assert_eq!(
            balancer.on_processor_message(frames(&["PROCESSOR-0", "", "CLIENT-0", "OK", "!"])),
            Err(EnvelopeError::NotADelimiter {
                from: Side::Processor,
                index: 3,
                len: 2
            })
        );
        assert_eq!(
            balancer.on_processor_message(frames(&["PROCESSOR-0", "", "CLIENT-0", ""])),
            Err(EnvelopeError::TooFewFrames {
                from: Side::Processor,
                needed: 5,
                got: 4
            })
        );
        assert!(!balancer.wants_requests());

        ready(&mut balancer, "PROCESSOR-0");
        assert_eq!(
            balancer.on_client_request(frames(&["CLIENT-0", ""])),
            Err(EnvelopeError::TooFewFrames {
                from: Side::Client,
                needed: 3,
                got: 2
            })
        );
        // The refused request did not use up the ready processor.
        assert!(balancer.wants_requests());
    }

    #[test]
    fn errors_read_as_sentences() {
        let error = EnvelopeError::NotADelimiter {
            from: Side::Client,
            index: 1,
            len: 4,
        };
        assert_eq!(
            error.to_string(),
            "frame 1 of a client message must be the empty delimiter, but it holds 4 bytes"
        );
    }
}
