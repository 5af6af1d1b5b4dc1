//! What Titanic keeps on disk, behind one small trait so that the embedded store
//! ([`crate::sqlite::SqliteStore`], the default) is not the only one possible.
//!
//! A stored request has an id, the service it is for, its body frames (exact bytes, any number of
//! frames), a state (pending until its service replied, then done), the reply frames once done,
//! when it was created and when it expires, and how many times it was sent to its service.
//!
//! The promises every implementation keeps, which the rest of Titanic relies on:
//! * [`Store::submit`] returns only once the request is durable: after the transaction that
//!   holds it is on disk. `titanic.request` answers 200 after that, never before.
//! * [`Store::complete`] stores the reply and marks the request done in one transaction, and only
//!   if the request is still pending: a reply is never half written, and a request closed or
//!   expired meanwhile stays gone.
//! * Nothing but [`Store::close`] and [`Store::expire`] deletes: reading a reply does not.
//! * A request whose expiry has passed reads as unknown, whether or not it was deleted yet.
//!
//! Times are milliseconds since the Unix epoch, given by the caller (so tests choose them): they
//! must survive a restart, which an `Instant` does not.

use crate::id::RequestId;

/// Message frames as they are stored: each frame's exact bytes, in order.
pub type StoredFrames = Vec<Vec<u8>>;

/// What [`Store::submit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Stored and durable, under this id.
    Stored(RequestId),
    /// Not stored: the store holds its maximum number of requests already.
    Full,
}

/// What [`Store::reply`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyState {
    /// The service replied: these frames.
    Done(StoredFrames),
    /// Stored, not answered yet.
    Pending,
    /// No such request: never stored, closed, or expired.
    Unknown,
}

/// A request waiting to be dispatched, as the dispatcher needs it (the body is read when it is
/// sent, with [`Store::body`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    pub id: RequestId,
    pub service: Vec<u8>,
    pub expires_ms: u64,
    /// How many times it was sent to its service before.
    pub attempts: u32,
}

/// Counters of what the store did, since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Requests stored by [`Store::submit`].
    pub submitted: u64,
    /// Write transactions committed (each one sync to disk): with group commit, fewer than the
    /// writes they carried.
    pub commits: u64,
    /// Writes of any kind (submit, complete, close, attempt, expire) carried by those commits.
    pub writes: u64,
    /// Submissions refused because the store was full.
    pub refused_full: u64,
}

/// What can go wrong in a store: the database itself failed (disk full, file unreadable,
/// corrupt), or the store's writer has stopped. Titanic answers 500 ("retry later") then.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(String),
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("a stored message is malformed: {0}")]
    Corrupt(&'static str),
}

/// Titanic's durable store. See the [module docs](self) for what every implementation promises.
///
/// Every method may block (on a transaction, on a disk sync); all take `&self` and are called from
/// many threads at once.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a new request for `service` with this body, created `now_ms`, expiring `ttl_ms`
    /// later. Returns once it is durable.
    fn submit(
        &self,
        service: &[u8],
        body: &[&[u8]],
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Submitted, StoreError>;

    /// The reply to `id`, if there is one yet, as of `now_ms` (an expired request is unknown).
    fn reply(&self, id: &RequestId, now_ms: u64) -> Result<ReplyState, StoreError>;

    /// Deletes `id` and its reply; nothing happens for an unknown id.
    fn close(&self, id: &RequestId) -> Result<(), StoreError>;

    /// Every pending request that has not expired by `now_ms`, oldest first.
    fn pending(&self, now_ms: u64) -> Result<Vec<PendingRequest>, StoreError>;

    /// The body of a pending request, to send it; `None` if it is no longer pending (answered,
    /// closed, expired and deleted).
    fn body(&self, id: &RequestId) -> Result<Option<StoredFrames>, StoreError>;

    /// Counts one more try of `id`. Need not be durable when it returns: the count is for
    /// inspection and for reports, and may lag by the last tries before a crash.
    fn record_attempt(&self, id: &RequestId) -> Result<(), StoreError>;

    /// Whether several Titanic processes may share this store: then a request is sent only
    /// under a lease ([`Store::claim`]), and each process looks for requests it did not store
    /// itself ([`Store::claimable`]). False for the embedded store (one process).
    fn shared(&self) -> bool {
        false
    }

    /// Takes the lease of pending request `id` for `owner` until `now_ms + lease_ms`, committed
    /// before it returns, and counts a try. True if taken: the request is pending, not expired,
    /// and not leased to another owner whose lease runs past `now_ms` (nor locked by another
    /// process's transaction at this moment). A store that is not [shared](Store::shared) has
    /// one process and grants every claim (it only counts the try).
    fn claim(
        &self,
        id: &RequestId,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<bool, StoreError> {
        let _ = (owner, now_ms, lease_ms);
        self.record_attempt(id)?;
        Ok(true)
    }

    /// Extends to `now_ms + lease_ms` the leases that `owner` still holds among `ids`, in one
    /// committed transaction; returns the ids renewed (those missing were answered, closed, or
    /// taken over after the lease ran out).
    fn renew(
        &self,
        ids: &[RequestId],
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<RequestId>, StoreError> {
        let _ = (owner, now_ms, lease_ms);
        Ok(ids.to_vec())
    }

    /// Up to `limit` pending, unexpired requests that no lease holds at `now_ms` (never leased,
    /// or the lease ran out), oldest first: what a process may claim.
    fn claimable(&self, now_ms: u64, limit: usize) -> Result<Vec<PendingRequest>, StoreError> {
        let mut pending = self.pending(now_ms)?;
        pending.truncate(limit);
        Ok(pending)
    }

    /// Stores the reply of a pending request and marks it done, in one durable transaction.
    /// False if the request was not pending any more (closed, expired, already answered).
    fn complete(&self, id: &RequestId, reply: &[&[u8]]) -> Result<bool, StoreError>;

    /// Deletes every request, answered or not, whose expiry is at or before `now_ms`; returns how
    /// many.
    fn expire(&self, now_ms: u64) -> Result<u64, StoreError>;

    /// How many requests are stored now, answered or not.
    fn stored(&self) -> u64;

    /// The counters.
    fn stats(&self) -> StoreStats;
}

/// Frames in one byte string: for each frame, its length as 4 bytes big-endian, then its bytes.
/// Frames are up to the broker's message size limit, far below 4 GiB.
pub fn encode_frames(frames: &[&[u8]]) -> Vec<u8> {
    let total = frames.iter().map(|frame| 4 + frame.len()).sum();
    let mut bytes = Vec::with_capacity(total);
    for frame in frames {
        let length = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(frame);
    }
    bytes
}

/// The inverse of [`encode_frames`]; an error, never a panic, for bytes it did not make.
pub fn decode_frames(mut bytes: &[u8]) -> Result<StoredFrames, StoreError> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let Some((length, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(StoreError::Corrupt("a frame length is cut short"));
        };
        let length = u32::from_be_bytes(*length) as usize;
        if rest.len() < length {
            return Err(StoreError::Corrupt(
                "a frame is shorter than its length says",
            ));
        }
        let (frame, rest) = rest.split_at(length);
        frames.push(frame.to_vec());
        bytes = rest;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_back_exactly_empty_ones_and_binary_included() {
        let frames: [&[u8]; 4] = [b"hello", b"", &[0, 255, 4, 0, 0, 0], b"x"];
        let decoded = decode_frames(&encode_frames(&frames)).unwrap();
        assert_eq!(decoded, frames.map(<[u8]>::to_vec));
        assert_eq!(
            decode_frames(&encode_frames(&[])).unwrap(),
            StoredFrames::new()
        );
    }

    #[test]
    fn truncated_frames_are_an_error() {
        let bytes = encode_frames(&[b"hello", b"world"]);
        for cut in 1..bytes.len() {
            let result = decode_frames(&bytes[..cut]);
            // Cutting at a frame boundary leaves a shorter but well-formed list.
            if cut == 9 {
                assert_eq!(result.unwrap(), vec![b"hello".to_vec()]);
            } else {
                assert!(result.is_err(), "cut at {cut}");
            }
        }
    }
}
