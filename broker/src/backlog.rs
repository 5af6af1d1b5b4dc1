//! Messages for peers that read slower than their messages come: held by the broker, in order,
//! within a byte budget, instead of dropped.
//!
//! The broker never blocks on a send (`ZMQ_DONTWAIT`), so when a client's pipe at the ROUTER is
//! full (its high-water mark, 1,000 messages, plus what the kernel buffers), the send fails with
//! `EAGAIN`. Before this module the reply was then dropped: a client with 1,000 requests in
//! flight through 4 x 16 worker slots, replies of 4 KiB, lost 161 to 375 of 100,000 (BENCHMARKS,
//! worker slots), although it was reading, only not as fast as 64 workers answered. Now the
//! reply waits here, and so does every later message for that peer (so their order holds), and
//! the loop sends them as the peer's pipe drains: at each pass, and every [`RETRY`] while any
//! wait. A ROUTER says nothing when a pipe has room again, hence the retry.
//!
//! Bounded: what waits here is counted like a queued request ([`crate::core::request_cost`]'s
//! overheads per message and per frame) against a limit of its own, the broker's
//! `--max-queued-bytes`; past it, the message is dropped and logged as before ("peer is not
//! reading"). A peer that goes away loses what waited for it (`EHOSTUNREACH`: nobody is left to
//! read it). Messages for workers never come here: a worker that does not read is the core's to
//! handle ([`crate::core::Broker::refused`]).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use mdp::Frames;
use zsocket::SendError;

use crate::core::{FRAME_OVERHEAD, REQUEST_OVERHEAD};
use crate::service::Identity;

/// How often the loop tries again while messages wait.
pub const RETRY: Duration = Duration::from_millis(5);

/// What one waiting message is counted as: its frames' bytes and the fixed overheads.
fn cost(frames: &Frames) -> usize {
    REQUEST_OVERHEAD
        + frames
            .iter()
            .map(|frame| FRAME_OVERHEAD + frame.len())
            .sum::<usize>()
}

/// The messages waiting, per peer, in the order they were to be sent.
#[derive(Debug)]
pub struct Backlog {
    waiting: HashMap<Identity, VecDeque<Frames>>,
    bytes: usize,
    limit: usize,
}

/// What one [`Backlog::flush`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Messages sent.
    pub sent: usize,
    /// Messages dropped because their peer was gone.
    pub dropped: usize,
    /// The peers whose messages were dropped.
    pub gone: Vec<Identity>,
}

impl Backlog {
    /// An empty backlog that holds at most `limit` bytes (as `cost` counts them).
    pub fn new(limit: usize) -> Backlog {
        Backlog {
            waiting: HashMap::new(),
            bytes: 0,
            limit,
        }
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// True when messages wait for `peer`: a new one must wait behind them.
    pub fn holds(&self, peer: &[u8]) -> bool {
        self.waiting.contains_key(peer)
    }

    /// The bytes waiting, as counted against the limit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many messages wait, for all peers.
    pub fn len(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// Holds `frames` (identity first) behind what waits for the same peer; gives it back if
    /// the limit would be passed.
    pub fn push(&mut self, frames: Frames) -> Result<(), Frames> {
        let this = cost(&frames);
        if self.bytes + this > self.limit {
            return Err(frames);
        }
        let Some(peer) = frames.first().map(|frame| frame.to_vec()) else {
            return Ok(());
        };
        self.bytes += this;
        self.waiting.entry(peer).or_default().push_back(frames);
        Ok(())
    }

    /// Sends what waits with `send`, each peer's messages in order until one is refused: a full
    /// pipe (`EAGAIN`) keeps that message and the rest for the next flush; a gone peer
    /// (`EHOSTUNREACH`, or any other failure) loses all that waited for it.
    pub fn flush(&mut self, mut send: impl FnMut(Frames) -> Result<(), SendError>) -> Flushed {
        let mut flushed = Flushed::default();
        let bytes = &mut self.bytes;
        self.waiting.retain(|peer, queue| {
            while let Some(frames) = queue.pop_front() {
                let this = cost(&frames);
                match send(frames) {
                    Ok(()) => {
                        *bytes -= this;
                        flushed.sent += 1;
                    }
                    Err(SendError::Refused(refused)) if refused.error == zmq::Error::EAGAIN => {
                        queue.push_front(refused.frames);
                        return true;
                    }
                    Err(_) => {
                        *bytes -= this;
                        flushed.dropped += 1 + queue.len();
                        *bytes -= queue.iter().map(cost).sum::<usize>();
                        queue.clear();
                        flushed.gone.push(peer.clone());
                        return false;
                    }
                }
            }
            false
        });
        if self.waiting.capacity() > 64 && self.waiting.len() < self.waiting.capacity() / 4 {
            self.waiting.shrink_to(self.waiting.len() * 2);
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(peer: &[u8], body: &[u8]) -> Frames {
        vec![zmq::Message::from(peer), zmq::Message::from(body)]
    }

    fn refused(frames: Frames, error: zmq::Error) -> Result<(), SendError> {
        Err(SendError::Refused(zsocket::Refused { frames, error }))
    }

    #[test]
    fn messages_wait_in_order_per_peer_until_the_pipe_takes_them() {
        let mut backlog = Backlog::new(1 << 20);
        for body in [b"1", b"2", b"3"] {
            backlog.push(message(b"A", body)).unwrap();
        }
        backlog.push(message(b"B", b"x")).unwrap();
        assert!(backlog.holds(b"A") && backlog.holds(b"B") && !backlog.holds(b"C"));
        // A's pipe takes one message, then is full again; B's takes everything.
        let mut sent = Vec::new();
        let flushed = backlog.flush(|frames| {
            let peer = frames[0].to_vec();
            if peer == b"A" && sent.iter().any(|(p, _): &(Vec<u8>, Vec<u8>)| p == b"A") {
                return refused(frames, zmq::Error::EAGAIN);
            }
            sent.push((peer, frames[1].to_vec()));
            Ok(())
        });
        assert_eq!(flushed.sent, 2);
        sent.sort();
        assert_eq!(
            sent,
            vec![
                (b"A".to_vec(), b"1".to_vec()),
                (b"B".to_vec(), b"x".to_vec())
            ]
        );
        assert!(backlog.holds(b"A") && !backlog.holds(b"B"));
        assert_eq!(backlog.len(), 2);
        let mut rest = Vec::new();
        backlog.flush(|frames| {
            rest.push(frames[1].to_vec());
            Ok(())
        });
        assert_eq!(rest, vec![b"2".to_vec(), b"3".to_vec()]);
        assert!(backlog.is_empty());
        assert_eq!(backlog.bytes(), 0);
    }

    #[test]
    fn a_gone_peer_loses_what_waited_for_it() {
        let mut backlog = Backlog::new(1 << 20);
        backlog.push(message(b"A", b"1")).unwrap();
        backlog.push(message(b"A", b"2")).unwrap();
        let flushed = backlog.flush(|frames| refused(frames, zmq::Error::EHOSTUNREACH));
        assert_eq!(flushed.dropped, 2);
        assert_eq!(flushed.gone, vec![b"A".to_vec()]);
        assert!(backlog.is_empty());
        assert_eq!(backlog.bytes(), 0);
    }

    #[test]
    fn past_the_limit_a_message_is_given_back() {
        let one = cost(&message(b"A", &[0; 100]));
        let mut backlog = Backlog::new(2 * one);
        backlog.push(message(b"A", &[0; 100])).unwrap();
        backlog.push(message(b"B", &[0; 100])).unwrap();
        assert!(backlog.push(message(b"A", &[0; 100])).is_err());
        assert_eq!(backlog.bytes(), 2 * one);
    }
}
