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
//!
//! # Peers that leave, and peers that come back
//!
//! A ROUTER does not say when a peer disconnects. It says so only when the broker sends to a
//! peer that is gone: with `ZMQ_ROUTER_MANDATORY` the send fails with `EHOSTUNREACH` and the
//! message comes back whole ([`zsocket::Refused`]). So a processor stopped while it waited for
//! work stays in the ready queue until a request is sent to it; then:
//!
//! * the processor leaves the ready queue, every entry of it ([`LoadBalancer::on_request_refused`]);
//! * the request goes to the next ready processor, or, if none is ready, waits in the balancer
//!   for the first one that is, ahead of any request not yet read. It is never dropped.
//!
//! A processor stopped *while it works* on a request cannot be noticed at all (this pattern has
//! no heartbeats), until its identity says `READY` again. The balancer keeps a copy of each
//! request a processor is working on for that case: when a busy processor says `READY`, the
//! request it had is sent to the next ready processor. A processor that never comes back keeps its
//! request; its client waits until its own timeout (`lbbroker client --timeout`).
//!
//! Two peers with one identity: libzmq's ROUTER silently ignores a second peer that connects with
//! an identity already in use, so nothing could ever be sent to it (it would hang). Both ROUTERs
//! of this broker set `ZMQ_ROUTER_HANDOVER` instead: the *new* connection takes the identity over
//! and the old one is cut off. The broker cannot see the handover itself, only its traces, and
//! logs a warning for each:
//!
//! * `READY` from a processor that is already ready or busy: it restarted, or a second processor
//!   took its identity. It keeps one place in the ready queue (at the back), never two, and the
//!   request it was working on, if any, goes to the next ready processor.
//! * a request from a client whose last request is not answered yet (a REQ client sends one at a
//!   time, so this is a second client with the same identity): the new request is served; the
//!   reply to the old one, if it comes, is dropped rather than given to the new client as its own.
//!
//! Everything is decided here and said as [`Action`]s, which the loop carries out in order.

use std::collections::{HashMap, VecDeque};
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
}

/// Frames the broker must send, and on which socket is said by the [`Action`] that holds them.
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

    /// The identity of the peer the ROUTER will deliver to (the first frame), as text.
    #[cfg(test)]
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

/// What the broker loop must do, in the order given.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send on the backend ROUTER: `[processor][][client][][request...]`. If the ROUTER refuses
    /// it because the processor is gone, give the frames back to
    /// [`LoadBalancer::on_request_refused`].
    ToProcessor(Outgoing),
    /// Send on the frontend ROUTER: `[client][][reply...]`. If the ROUTER refuses it because the
    /// client is gone, give the frames back to [`LoadBalancer::on_reply_refused`].
    ToClient(Outgoing),
    /// A processor said `READY` (the demo launcher waits for every processor's).
    Joined {
        /// Its identity, as text.
        processor: String,
    },
    /// Something the operator should know; nothing was lost.
    Notice(Notice),
    /// A message was dropped (the loop counts it).
    Dropped(Dropped),
}

/// Events the broker reports in its log, nothing lost; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A send to this processor failed: it is gone; the request goes to the next ready processor.
    ProcessorGone {
        /// The processor.
        processor: String,
        /// Whose request it was.
        client: String,
    },
    /// `READY` from a processor that was already ready or busy: a new connection has its identity.
    ProcessorTakenOver {
        /// The processor.
        processor: String,
        /// The client whose request it was working on, which now goes to the next ready processor.
        requeued: Option<String>,
    },
    /// A request from a client whose last one is unanswered: a new connection has its identity.
    ClientTakenOver {
        /// The client.
        client: String,
    },
}

impl Notice {
    /// Whether this notice is a warning (something is wrong with the peers) or just news.
    pub fn is_warning(&self) -> bool {
        !matches!(self, Notice::ProcessorGone { .. })
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::ProcessorGone { processor, client } => write!(
                f,
                "processor {processor} is gone; the request from {client} goes to the next ready processor"
            ),
            Notice::ProcessorTakenOver { processor, requeued } => {
                write!(
                    f,
                    "{processor} said READY again: it restarted, or a second processor took over \
                     the identity {processor} (the older connection is cut off)"
                )?;
                match requeued {
                    Some(client) => write!(
                        f,
                        "; the request from {client} it was working on goes to the next ready processor"
                    ),
                    None => Ok(()),
                }
            }
            Notice::ClientTakenOver { client } => write!(
                f,
                "{client} sent a request before its last one was answered: a new connection has \
                 that identity (the client started again, or a second client with the same \
                 identity, which cuts the older one off); the reply to the older request will \
                 be dropped"
            ),
        }
    }
}

/// A message the broker dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// A malformed message from a client or a processor.
    Malformed(EnvelopeError),
    /// A reply whose client is gone (it disconnected while its request was worked on).
    ClientGone {
        /// The client.
        client: String,
    },
    /// A reply to a request of a client whose identity a newer connection has taken over: the
    /// newer client is waiting for the reply to *its* request, not this one.
    StaleReply {
        /// The client.
        client: String,
        /// The processor that sent it.
        processor: String,
    },
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dropped::Malformed(error) => write!(f, "dropped a {} message: {error}", error.side()),
            Dropped::ClientGone { client } => write!(f, "reply dropped: client {client} is gone"),
            Dropped::StaleReply { client, processor } => write!(
                f,
                "reply from {processor} dropped: it answers an earlier request of {client}, \
                 whose identity a newer client has taken over"
            ),
        }
    }
}

impl EnvelopeError {
    /// Where the malformed message came from.
    fn side(&self) -> Side {
        match self {
            EnvelopeError::TooFewFrames { from, .. }
            | EnvelopeError::NotADelimiter { from, .. } => *from,
        }
    }
}

/// A request a processor is working on.
#[derive(Debug)]
struct InFlight {
    /// The client's identity.
    client: Vec<u8>,
    /// A copy of `[client][][request...]`, to send to another processor if this one turns out to
    /// be gone (it says `READY` again). Loads are a few bytes; the original frames were moved on.
    request: Frames,
    /// The client has sent a newer request since (its identity was taken over): the reply to
    /// this one must not reach it.
    superseded: bool,
}

/// The least-recently-used queue of ready processors, the requests waiting for one, and who is
/// working on what.
#[derive(Debug, Default)]
pub struct LoadBalancer {
    /// Identity frames of the processors waiting for work, each once; the one waiting longest is
    /// in front.
    ready_processors: VecDeque<zmq::Message>,
    /// Requests `[client][][request...]` already read from the frontend whose processor was gone,
    /// oldest first. They go out before the frontend is read again.
    waiting_requests: VecDeque<Frames>,
    /// Each busy processor's request, by processor identity.
    busy_processors: HashMap<Vec<u8>, InFlight>,
    /// The processor each client's unanswered request went to, by client identity.
    clients_in_flight: HashMap<Vec<u8>, Vec<u8>>,
}

impl LoadBalancer {
    /// A balancer with no processor ready yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the loop should poll the frontend for requests: only while a processor is free
    /// and no request read earlier is still waiting for one.
    pub fn wants_requests(&self) -> bool {
        !self.ready_processors.is_empty() && self.waiting_requests.is_empty()
    }

    /// The identities of the ready processors, the next one to get work first.
    pub fn ready_processors(&self) -> impl Iterator<Item = String> + '_ {
        self.ready_processors
            .iter()
            .map(|identity| printable(identity))
    }

    /// How many requests read from the frontend wait for a processor.
    pub fn waiting_requests(&self) -> usize {
        self.waiting_requests.len()
    }

    /// How many processors are ready (each is in the queue once).
    pub fn ready_count(&self) -> usize {
        self.ready_processors.len()
    }

    /// The identities of the processors working on a request, as text, sorted (a busy
    /// processor has no place in any queue, so the order is only for reading).
    pub fn busy_processors(&self) -> Vec<String> {
        let mut busy: Vec<String> = self
            .busy_processors
            .keys()
            .map(|identity| printable(identity))
            .collect();
        busy.sort_unstable();
        busy
    }

    /// How many processors are working on a request.
    pub fn busy_count(&self) -> usize {
        self.busy_processors.len()
    }

    /// Takes a message the backend ROUTER received, `[processor][][READY]` or
    /// `[processor][][client][][reply...]`, and puts the processor at the back of the queue.
    ///
    /// A malformed message is refused and its processor is *not* queued: it broke the protocol,
    /// so nothing it says about being ready can be trusted.
    pub fn on_processor_message(&mut self, mut frames: Frames, out: &mut Vec<Action>) {
        if let Err(error) = check_envelope(&frames, Side::Processor, 3) {
            out.push(Action::Dropped(Dropped::Malformed(error)));
            return;
        }
        // frames = [processor, "", rest...]; take the processor's envelope off the front. After
        // the split, `frames` is exactly [processor, ""] (the check saw at least 3 frames).
        let rest = frames.split_off(2);
        let processor = frames.swap_remove(0);

        if rest.len() == 1 && &*rest[0] == READY {
            self.on_ready(&processor, out);
        } else {
            // The rest is the reply with the client's envelope the processor copied:
            // [client, "", reply...]. Check it, so the frontend ROUTER gets a routable message.
            if let Err(error) = check_envelope(&rest, Side::Processor, 3) {
                out.push(Action::Dropped(Dropped::Malformed(shift_index(error, 2))));
                return;
            }
            self.on_reply(&processor, rest, out);
        }
        // One place in the queue per processor, whatever it said before.
        self.forget_ready(&processor);
        self.ready_processors.push_back(processor);
        self.dispatch(out);
    }

    /// `READY`: a processor that is new, or back (see the module docs).
    fn on_ready(&mut self, processor: &zmq::Message, out: &mut Vec<Action>) {
        let was_ready = self
            .ready_processors
            .iter()
            .any(|ready| ready[..] == processor[..]);
        let was_busy = self.busy_processors.remove(&processor[..]);
        if was_ready || was_busy.is_some() {
            let requeued = was_busy.and_then(|in_flight| self.requeue(processor, in_flight));
            out.push(Action::Notice(Notice::ProcessorTakenOver {
                processor: printable(processor),
                requeued,
            }));
        }
        out.push(Action::Joined {
            processor: printable(processor),
        });
    }

    /// A lost request goes back to the front of the waiting requests, unless its client has
    /// moved on; returns the client, as text, if it went back.
    fn requeue(&mut self, processor: &[u8], in_flight: InFlight) -> Option<String> {
        if in_flight.superseded {
            return None;
        }
        if self
            .clients_in_flight
            .get(&in_flight.client)
            .map(Vec::as_slice)
            == Some(processor)
        {
            self.clients_in_flight.remove(&in_flight.client);
        }
        let client = printable(&in_flight.client);
        self.waiting_requests.push_front(in_flight.request);
        Some(client)
    }

    /// A processor's answer `[client][][reply...]`: on to the client, unless it is stale.
    fn on_reply(&mut self, processor: &[u8], reply: Frames, out: &mut Vec<Action>) {
        let client = &reply[0][..];
        if let Some(in_flight) = self.busy_processors.remove(processor) {
            if in_flight.superseded {
                out.push(Action::Dropped(Dropped::StaleReply {
                    client: printable(client),
                    processor: printable(processor),
                }));
                return;
            }
        }
        if self.clients_in_flight.get(client).map(Vec::as_slice) == Some(processor) {
            self.clients_in_flight.remove(client);
        }
        // A reply the balancer did not expect (a request sent by an earlier broker) still goes
        // to its client: that client may well be waiting for it.
        out.push(Action::ToClient(Outgoing { frames: reply }));
    }

    /// Takes a request the frontend ROUTER received, `[client][][request...]`, and addresses it
    /// to the processor that has been ready the longest:
    /// `[processor][][client][][request...]`, to send on the backend ROUTER. With no processor
    /// ready (the loop does not read requests then, but one may have been read just before),
    /// the request waits for the next one.
    ///
    /// The request's own frames are moved on, not copied: the broker only puts two frames in
    /// front. (It keeps a copy of its few bytes while a processor works on it, in case that
    /// processor turns out to be gone: see the module docs.)
    pub fn on_client_request(&mut self, frames: Frames, out: &mut Vec<Action>) {
        if let Err(error) = check_envelope(&frames, Side::Client, 3) {
            out.push(Action::Dropped(Dropped::Malformed(error)));
            return;
        }
        let client = &frames[0][..];
        let mut taken_over = false;
        if let Some(processor) = self.clients_in_flight.remove(client) {
            if let Some(in_flight) = self.busy_processors.get_mut(&processor) {
                in_flight.superseded = true;
            }
            taken_over = true;
        }
        let waiting_before = self.waiting_requests.len();
        self.waiting_requests
            .retain(|request| request[0][..] != *client);
        if taken_over || self.waiting_requests.len() < waiting_before {
            out.push(Action::Notice(Notice::ClientTakenOver {
                client: printable(client),
            }));
        }
        self.waiting_requests.push_back(frames);
        self.dispatch(out);
    }

    /// The backend ROUTER refused `[processor][][client][][request...]`: that processor is gone.
    /// It leaves the ready queue, and the request goes to the next ready processor or waits for
    /// one, ahead of everything else.
    pub fn on_request_refused(&mut self, mut frames: Frames, out: &mut Vec<Action>) {
        if frames.len() < 5 {
            // Not a message this balancer made; nothing to give back.
            return;
        }
        let request = frames.split_off(2);
        let processor = &frames[0];
        self.forget_ready(processor);
        let client = request[0].to_vec();
        let superseded = self
            .busy_processors
            .remove(&processor[..])
            .is_some_and(|in_flight| in_flight.superseded);
        if self.clients_in_flight.get(&client).map(Vec::as_slice) == Some(&processor[..]) {
            self.clients_in_flight.remove(&client);
        }
        if !superseded {
            out.push(Action::Notice(Notice::ProcessorGone {
                processor: printable(processor),
                client: printable(&client),
            }));
            self.waiting_requests.push_front(request);
        }
        self.dispatch(out);
    }

    /// The frontend ROUTER refused `[client][][reply...]`: that client is gone.
    pub fn on_reply_refused(&mut self, frames: Frames, out: &mut Vec<Action>) {
        let client = frames
            .first()
            .map(|frame| printable(frame))
            .unwrap_or_default();
        out.push(Action::Dropped(Dropped::ClientGone { client }));
    }

    /// Every processor entry with this identity leaves the ready queue.
    fn forget_ready(&mut self, processor: &[u8]) {
        self.ready_processors
            .retain(|ready| ready[..] != *processor);
    }

    /// Sends waiting requests, oldest first, to ready processors, longest ready first.
    fn dispatch(&mut self, out: &mut Vec<Action>) {
        while !self.ready_processors.is_empty() {
            let Some(request) = self.waiting_requests.pop_front() else {
                break;
            };
            let Some(processor) = self.ready_processors.pop_front() else {
                break;
            };
            let client = request[0].to_vec();
            self.clients_in_flight
                .insert(client.clone(), processor.to_vec());
            self.busy_processors.insert(
                processor.to_vec(),
                InFlight {
                    client,
                    request: request
                        .iter()
                        .map(|frame| zmq::Message::from(&frame[..]))
                        .collect(),
                    superseded: false,
                },
            );
            let mut addressed = Vec::with_capacity(request.len() + 2);
            addressed.push(processor);
            addressed.push(zmq::Message::new());
            addressed.extend(request);
            out.push(Action::ToProcessor(Outgoing { frames: addressed }));
        }
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

    /// What the balancer decided for one input.
    fn processor_says(balancer: &mut LoadBalancer, parts: &[&str]) -> Vec<Action> {
        let mut out = Vec::new();
        balancer.on_processor_message(frames(parts), &mut out);
        out
    }

    fn client_asks(balancer: &mut LoadBalancer, parts: &[&str]) -> Vec<Action> {
        let mut out = Vec::new();
        balancer.on_client_request(frames(parts), &mut out);
        out
    }

    fn ready(balancer: &mut LoadBalancer, processor: &str) {
        let out = processor_says(balancer, &[processor, "", "READY"]);
        assert_eq!(
            out,
            [Action::Joined {
                processor: processor.to_owned()
            }]
        );
    }

    /// The one request the balancer sends for this input; fails if it sends anything else.
    fn only_request(out: Vec<Action>) -> Outgoing {
        match <[Action; 1]>::try_from(out) {
            Ok([Action::ToProcessor(request)]) => request,
            Ok([other]) => panic!("expected one request, got {other:?}"),
            Err(out) => panic!("expected one request, got {out:?}"),
        }
    }

    fn dispatch(balancer: &mut LoadBalancer, client: &str, load: &str) -> Outgoing {
        only_request(client_asks(balancer, &[client, "", load]))
    }

    /// The request's frames given back by the backend ROUTER, as a refused send does.
    fn refused(balancer: &mut LoadBalancer, request: Outgoing) -> Vec<Action> {
        let mut out = Vec::new();
        balancer.on_request_refused(request.into_frames(), &mut out);
        out
    }

    fn ready_list(balancer: &LoadBalancer) -> Vec<String> {
        balancer.ready_processors().collect()
    }

    #[test]
    fn the_dashboard_sees_who_is_ready_and_who_is_busy() {
        let mut balancer = LoadBalancer::new();
        for processor in ["PROCESSOR-2", "PROCESSOR-0", "PROCESSOR-1"] {
            ready(&mut balancer, processor);
        }
        dispatch(&mut balancer, "CLIENT-0", "1");
        dispatch(&mut balancer, "CLIENT-1", "1");
        assert_eq!(ready_list(&balancer), ["PROCESSOR-1"]);
        assert_eq!(balancer.ready_count(), 1);
        assert_eq!(balancer.busy_processors(), ["PROCESSOR-0", "PROCESSOR-2"]);
        assert_eq!(balancer.busy_count(), 2);
        processor_says(&mut balancer, &["PROCESSOR-2", "", "CLIENT-0", "", "OK"]);
        assert_eq!(ready_list(&balancer), ["PROCESSOR-1", "PROCESSOR-2"]);
        assert_eq!(balancer.busy_processors(), ["PROCESSOR-0"]);
    }

    #[test]
    fn with_no_processor_ready_the_frontend_is_not_polled() {
        let balancer = LoadBalancer::new();
        assert!(!balancer.wants_requests());
    }

    #[test]
    fn with_no_processor_ready_a_request_waits_for_one_not_misrouted() {
        let mut balancer = LoadBalancer::new();
        assert_eq!(client_asks(&mut balancer, &["CLIENT-0", "", "1"]), []);
        assert_eq!(balancer.waiting_requests(), 1);
        let out = processor_says(&mut balancer, &["PROCESSOR-0", "", "READY"]);
        let [Action::Joined { .. }, Action::ToProcessor(request)] = &out[..] else {
            panic!("expected the join, then the waiting request: {out:?}");
        };
        assert_eq!(
            texts(request.frames()),
            ["PROCESSOR-0", "", "CLIENT-0", "", "1"]
        );
        assert_eq!(balancer.waiting_requests(), 0);
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
        let out = processor_says(
            &mut balancer,
            &["PROCESSOR-0", "", "CLIENT-0", "", "OK from PROCESSOR-0"],
        );
        assert!(matches!(&out[..], [Action::ToClient(_)]), "{out:?}");
        assert_eq!(ready_list(&balancer), ["PROCESSOR-1", "PROCESSOR-0"]);
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
        let outgoing = only_request(client_asks(
            &mut balancer,
            &["CLIENT-3", "", "part 1", "part 2"],
        ));
        assert_eq!(
            texts(outgoing.frames()),
            ["PROCESSOR-1", "", "CLIENT-3", "", "part 1", "part 2"]
        );
    }

    #[test]
    fn a_reply_loses_the_processor_envelope_and_keeps_the_client_one() {
        let mut balancer = LoadBalancer::new();
        let out = processor_says(
            &mut balancer,
            &["PROCESSOR-1", "", "CLIENT-3", "", "OK from PROCESSOR-1"],
        );
        let [Action::ToClient(outgoing)] = &out[..] else {
            panic!("expected a reply, got {out:?}");
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
        let out = processor_says(&mut balancer, &["PROCESSOR-0", "", "READY"]);
        assert!(matches!(&out[..], [Action::Joined { .. }]), "{out:?}");
    }

    fn dropped_as(out: Vec<Action>) -> EnvelopeError {
        match <[Action; 1]>::try_from(out) {
            Ok([Action::Dropped(Dropped::Malformed(error))]) => error,
            other => panic!("expected one malformed message dropped, got {other:?}"),
        }
    }

    #[test]
    fn malformed_messages_are_refused_and_queue_nobody() {
        let mut balancer = LoadBalancer::new();
        assert_eq!(
            dropped_as(processor_says(&mut balancer, &["PROCESSOR-0", "READY"])),
            EnvelopeError::TooFewFrames {
                from: Side::Processor,
                needed: 3,
                got: 2
            }
        );
        assert_eq!(
            dropped_as(processor_says(
                &mut balancer,
                &["PROCESSOR-0", "x", "READY"]
            )),
            EnvelopeError::NotADelimiter {
                from: Side::Processor,
                index: 1,
                len: 1
            }
        );
        // A reply whose client envelope lost its delimiter could not be routed back.
        assert_eq!(
            dropped_as(processor_says(
                &mut balancer,
                &["PROCESSOR-0", "", "CLIENT-0", "OK", "!"]
            )),
            EnvelopeError::NotADelimiter {
                from: Side::Processor,
                index: 3,
                len: 2
            }
        );
        assert_eq!(
            dropped_as(processor_says(
                &mut balancer,
                &["PROCESSOR-0", "", "CLIENT-0", ""]
            )),
            EnvelopeError::TooFewFrames {
                from: Side::Processor,
                needed: 5,
                got: 4
            }
        );
        assert!(!balancer.wants_requests());

        ready(&mut balancer, "PROCESSOR-0");
        assert_eq!(
            dropped_as(client_asks(&mut balancer, &["CLIENT-0", ""])),
            EnvelopeError::TooFewFrames {
                from: Side::Client,
                needed: 3,
                got: 2
            }
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
        assert_eq!(
            Dropped::Malformed(error).to_string(),
            "dropped a client message: frame 1 of a client message must be the empty delimiter, \
             but it holds 4 bytes"
        );
    }

    // Issue #16, item 2: a processor that leaves.

    /// The issue's run: a processor stopped while it waited for work stays in the queue; the
    /// next request is refused by the ROUTER and must reach the next ready processor.
    #[test]
    fn a_request_refused_by_a_gone_processor_goes_to_the_next_ready_one() {
        let mut balancer = LoadBalancer::new();
        ready(&mut balancer, "PROCESSOR-0");
        ready(&mut balancer, "PROCESSOR-1");
        let lost = dispatch(&mut balancer, "CLIENT-0", "1");
        assert_eq!(lost.destination(), "PROCESSOR-0");

        let out = refused(&mut balancer, lost);
        let [Action::Notice(notice), Action::ToProcessor(again)] = &out[..] else {
            panic!("expected a notice and the request again: {out:?}");
        };
        assert_eq!(
            notice,
            &Notice::ProcessorGone {
                processor: "PROCESSOR-0".into(),
                client: "CLIENT-0".into()
            }
        );
        assert!(!notice.is_warning());
        assert_eq!(
            texts(again.frames()),
            ["PROCESSOR-1", "", "CLIENT-0", "", "1"]
        );
        assert!(ready_list(&balancer).is_empty());
    }

    #[test]
    fn a_request_refused_with_no_other_processor_waits_for_the_next_one() {
        let mut balancer = LoadBalancer::new();
        ready(&mut balancer, "PROCESSOR-0");
        let lost = dispatch(&mut balancer, "CLIENT-0", "2");
        let out = refused(&mut balancer, lost);
        assert!(matches!(&out[..], [Action::Notice(_)]), "{out:?}");
        // It waits in the balancer, so the frontend stays unread until it is sent.
        assert_eq!(balancer.waiting_requests(), 1);
        assert!(!balancer.wants_requests());

        let out = processor_says(&mut balancer, &["PROCESSOR-1", "", "READY"]);
        let [Action::Joined { .. }, Action::ToProcessor(request)] = &out[..] else {
            panic!("expected the join and the waiting request: {out:?}");
        };
        assert_eq!(
            texts(request.frames()),
            ["PROCESSOR-1", "", "CLIENT-0", "", "2"]
        );
        assert_eq!(balancer.waiting_requests(), 0);
    }

    #[test]
    fn a_gone_processor_leaves_the_queue_with_every_entry() {
        let mut balancer = LoadBalancer::new();
        ready(&mut balancer, "PROCESSOR-0");
        // It says READY again (restarted while it waited for work): still one place, at the back.
        ready(&mut balancer, "PROCESSOR-1");
        let out = processor_says(&mut balancer, &["PROCESSOR-0", "", "READY"]);
        assert!(
            matches!(
                &out[..],
                [
                    Action::Notice(Notice::ProcessorTakenOver { requeued: None, .. }),
                    Action::Joined { .. }
                ]
            ),
            "{out:?}"
        );
        assert_eq!(ready_list(&balancer), ["PROCESSOR-1", "PROCESSOR-0"]);

        let to_1 = dispatch(&mut balancer, "CLIENT-0", "1");
        let to_0 = dispatch(&mut balancer, "CLIENT-1", "1");
        assert_eq!(to_0.destination(), "PROCESSOR-0");
        // PROCESSOR-0 is gone; with PROCESSOR-1 busy, CLIENT-1's request waits.
        refused(&mut balancer, to_0);
        assert!(ready_list(&balancer).is_empty());
        assert_eq!(balancer.waiting_requests(), 1);
        // PROCESSOR-1 answers and gets CLIENT-1's request: no entry of PROCESSOR-0 is left to
        // lose it to.
        let out = processor_says(&mut balancer, &["PROCESSOR-1", "", "CLIENT-0", "", "OK"]);
        let [Action::ToClient(reply), Action::ToProcessor(request)] = &out[..] else {
            panic!("expected the reply and CLIENT-1's request: {out:?}");
        };
        assert_eq!(reply.destination(), "CLIENT-0");
        assert_eq!(to_1.destination(), "PROCESSOR-1");
        assert_eq!(
            texts(request.frames()),
            ["PROCESSOR-1", "", "CLIENT-1", "", "1"]
        );
    }

    /// Restarts over and over leave one entry each, so no request is lost to a stale one.
    #[test]
    fn duplicate_ready_messages_never_lose_requests() {
        let mut balancer = LoadBalancer::new();
        for _ in 0..3 {
            processor_says(&mut balancer, &["PROCESSOR-0", "", "READY"]);
            processor_says(&mut balancer, &["PROCESSOR-1", "", "READY"]);
        }
        assert_eq!(ready_list(&balancer), ["PROCESSOR-0", "PROCESSOR-1"]);
        // PROCESSOR-0 is gone for good: its one entry goes with the first refusal, and every
        // request ends up with PROCESSOR-1.
        let mut to_processor_1 = 0;
        for client in ["CLIENT-0", "CLIENT-1", "CLIENT-2"] {
            let mut out = client_asks(&mut balancer, &[client, "", "1"]);
            while let Some(Action::ToProcessor(request)) = out.pop() {
                if request.destination() == "PROCESSOR-0" {
                    out = refused(&mut balancer, request);
                } else {
                    to_processor_1 += 1;
                    let answer =
                        processor_says(&mut balancer, &["PROCESSOR-1", "", client, "", "OK"]);
                    assert!(matches!(&answer[..], [Action::ToClient(_)]), "{answer:?}");
                }
            }
        }
        assert_eq!(to_processor_1, 3);
        assert_eq!(balancer.waiting_requests(), 0);
    }

    /// A busy processor that says READY again lost the request it was working on (it restarted,
    /// or another processor took its identity): that request goes to the next ready processor.
    #[test]
    fn a_busy_processor_that_says_ready_again_hands_its_request_on() {
        let mut balancer = LoadBalancer::new();
        ready(&mut balancer, "PROCESSOR-0");
        dispatch(&mut balancer, "CLIENT-0", "3");
        ready(&mut balancer, "PROCESSOR-1");

        let out = processor_says(&mut balancer, &["PROCESSOR-0", "", "READY"]);
        let [Action::Notice(notice), Action::Joined { .. }, Action::ToProcessor(request)] =
            &out[..]
        else {
            panic!("expected a warning, the join and the request again: {out:?}");
        };
        assert_eq!(
            notice,
            &Notice::ProcessorTakenOver {
                processor: "PROCESSOR-0".into(),
                requeued: Some("CLIENT-0".into())
            }
        );
        assert!(notice.is_warning());
        assert_eq!(
            texts(request.frames()),
            ["PROCESSOR-1", "", "CLIENT-0", "", "3"]
        );
        assert_eq!(ready_list(&balancer), ["PROCESSOR-0"]);
    }

    /// Two clients with one identity: the newer one is served, the reply to the older request
    /// is not handed to it as its own.
    #[test]
    fn a_client_taken_over_gets_only_the_reply_to_its_own_request() {
        let mut balancer = LoadBalancer::new();
        ready(&mut balancer, "PROCESSOR-0");
        ready(&mut balancer, "PROCESSOR-1");
        dispatch(&mut balancer, "CLIENT-0", "old");

        let out = client_asks(&mut balancer, &["CLIENT-0", "", "new"]);
        let [Action::Notice(notice), Action::ToProcessor(request)] = &out[..] else {
            panic!("expected a warning and the new request: {out:?}");
        };
        assert_eq!(
            notice,
            &Notice::ClientTakenOver {
                client: "CLIENT-0".into()
            }
        );
        assert_eq!(request.destination(), "PROCESSOR-1");

        let stale = processor_says(
            &mut balancer,
            &["PROCESSOR-0", "", "CLIENT-0", "", "OK old"],
        );
        assert_eq!(
            stale,
            [Action::Dropped(Dropped::StaleReply {
                client: "CLIENT-0".into(),
                processor: "PROCESSOR-0".into()
            })]
        );
        let fresh = processor_says(
            &mut balancer,
            &["PROCESSOR-1", "", "CLIENT-0", "", "OK new"],
        );
        let [Action::ToClient(reply)] = &fresh[..] else {
            panic!("expected the reply to the new request: {fresh:?}");
        };
        assert_eq!(texts(reply.frames()), ["CLIENT-0", "", "OK new"]);
        assert_eq!(ready_list(&balancer), ["PROCESSOR-0", "PROCESSOR-1"]);
    }

    #[test]
    fn a_reply_the_frontend_refuses_is_dropped_naming_the_client() {
        let mut balancer = LoadBalancer::new();
        let mut out = Vec::new();
        balancer.on_reply_refused(frames(&["CLIENT-0", "", "OK"]), &mut out);
        assert_eq!(
            out,
            [Action::Dropped(Dropped::ClientGone {
                client: "CLIENT-0".into()
            })]
        );
    }

    #[test]
    fn notices_read_as_sentences() {
        let gone = Notice::ProcessorGone {
            processor: "PROCESSOR-0".into(),
            client: "CLIENT-3".into(),
        };
        assert_eq!(
            gone.to_string(),
            "processor PROCESSOR-0 is gone; the request from CLIENT-3 goes to the next ready processor"
        );
        let taken = Notice::ProcessorTakenOver {
            processor: "PROCESSOR-0".into(),
            requeued: Some("CLIENT-3".into()),
        };
        assert_eq!(
            taken.to_string(),
            "PROCESSOR-0 said READY again: it restarted, or a second processor took over the \
             identity PROCESSOR-0 (the older connection is cut off); the request from CLIENT-3 it \
             was working on goes to the next ready processor"
        );
    }

    /// Many runs of peers that come and go at random, from seeds: whatever happens, a processor
    /// is in the ready queue at most once, never gets a request while it works on one, and once
    /// every processor is back, every client has the reply to its latest request. No request
    /// goes into the void.
    #[test]
    fn no_request_is_lost_however_processors_come_and_go() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        struct Processor {
            identity: String,
            alive: bool,
            /// The request it works on: (client, body).
            holding: Option<(String, String)>,
        }

        /// Carries out the balancer's actions the way the sockets would: a request for a
        /// processor that is gone comes back refused.
        fn carry_out(
            balancer: &mut LoadBalancer,
            processors: &mut [Processor],
            answered: &mut Vec<(String, String)>,
            actions: Vec<Action>,
        ) {
            let mut actions = VecDeque::from(actions);
            while let Some(action) = actions.pop_front() {
                let mut more = Vec::new();
                match action {
                    Action::ToProcessor(request) => {
                        let frames = texts(request.frames());
                        let processor = processors
                            .iter_mut()
                            .find(|processor| processor.identity == frames[0])
                            .expect("sent to a processor that exists");
                        if processor.alive {
                            assert!(
                                processor.holding.is_none(),
                                "{} got a second request: {frames:?}",
                                processor.identity
                            );
                            processor.holding = Some((frames[2].clone(), frames[4].clone()));
                        } else {
                            balancer.on_request_refused(request.into_frames(), &mut more);
                        }
                    }
                    Action::ToClient(reply) => {
                        let frames = texts(reply.frames());
                        answered.push((frames[0].clone(), frames[2].clone()));
                    }
                    Action::Joined { .. } | Action::Notice(_) => {}
                    Action::Dropped(dropped) => panic!("dropped: {dropped}"),
                }
                actions.extend(more);
            }
            let ready: Vec<String> = balancer.ready_processors().collect();
            let unique: std::collections::BTreeSet<&String> = ready.iter().collect();
            assert_eq!(unique.len(), ready.len(), "a processor twice: {ready:?}");
        }

        for seed in 0..200 {
            let mut random = StdRng::seed_from_u64(seed);
            let mut balancer = LoadBalancer::new();
            let mut processors: Vec<Processor> = (0..3)
                .map(|number| Processor {
                    identity: format!("PROCESSOR-{number}"),
                    alive: true,
                    holding: None,
                })
                .collect();
            // Each client's latest request body, while it waits for the reply.
            let mut waiting_clients: HashMap<String, String> = HashMap::new();
            let mut answered = Vec::new();
            let mut sent = 0;
            let identities: Vec<String> = processors
                .iter()
                .map(|processor| processor.identity.clone())
                .collect();
            for identity in identities {
                let mut out = Vec::new();
                balancer.on_processor_message(frames(&[&identity, "", "READY"]), &mut out);
                carry_out(&mut balancer, &mut processors, &mut answered, out);
            }

            let step = |balancer: &mut LoadBalancer,
                        processors: &mut Vec<Processor>,
                        answered: &mut Vec<(String, String)>,
                        waiting_clients: &mut HashMap<String, String>,
                        event: u32,
                        pick: usize,
                        sent: &mut u32| {
                let mut out = Vec::new();
                let processor = &mut processors[pick % 3];
                match event {
                    // A client with no request out sends one.
                    0..=3 => {
                        let client = format!("CLIENT-{}", pick % 5);
                        if waiting_clients.contains_key(&client) {
                            return;
                        }
                        *sent += 1;
                        let body = format!("request {sent}");
                        balancer.on_client_request(frames(&[&client, "", &body]), &mut out);
                        waiting_clients.insert(client, body);
                    }
                    // A working processor answers.
                    4..=6 => {
                        let Some((client, body)) = processor.holding.take() else {
                            return;
                        };
                        let reply = [processor.identity.as_str(), "", &client, "", &body];
                        balancer.on_processor_message(frames(&reply), &mut out);
                    }
                    // A processor stops, idle or at work; the broker is not told.
                    7 => {
                        processor.alive = false;
                        processor.holding = None;
                    }
                    // A stopped processor starts again and says READY.
                    _ => {
                        if processor.alive {
                            return;
                        }
                        processor.alive = true;
                        let ready = [processor.identity.as_str(), "", "READY"];
                        balancer.on_processor_message(frames(&ready), &mut out);
                    }
                }
                carry_out(balancer, processors, answered, out);
            };

            for _ in 0..60 {
                let event = random.random_range(0..10);
                let pick = random.random_range(0..15);
                step(
                    &mut balancer,
                    &mut processors,
                    &mut answered,
                    &mut waiting_clients,
                    event,
                    pick,
                    &mut sent,
                );
                for (client, body) in answered.drain(..) {
                    assert_eq!(
                        waiting_clients.remove(&client).as_deref(),
                        Some(body.as_str()),
                        "seed {seed}: {client} got a reply it was not waiting for"
                    );
                }
            }
            // Every processor comes back and works until there is nothing left to do.
            for pick in 0..3 {
                step(
                    &mut balancer,
                    &mut processors,
                    &mut answered,
                    &mut waiting_clients,
                    9,
                    pick,
                    &mut sent,
                );
            }
            for _ in 0..100 {
                for pick in 0..3 {
                    step(
                        &mut balancer,
                        &mut processors,
                        &mut answered,
                        &mut waiting_clients,
                        4,
                        pick,
                        &mut sent,
                    );
                }
            }
            for (client, body) in answered.drain(..) {
                assert_eq!(
                    waiting_clients.remove(&client).as_deref(),
                    Some(body.as_str()),
                    "seed {seed}"
                );
            }
            assert!(
                waiting_clients.is_empty(),
                "seed {seed}: no reply for {waiting_clients:?}"
            );
            assert_eq!(balancer.waiting_requests(), 0, "seed {seed}");
        }
    }
}
