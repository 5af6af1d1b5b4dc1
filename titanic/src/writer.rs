//! Group commit, once for both stores: one writer thread per store takes every write waiting
//! when it wakes (up to [`MAX_BATCH`]), has the store's [`Backend`] apply them in one
//! transaction and commit it, and only then answers each caller. Requests that arrive together
//! share one transaction and one disk sync; a 200 goes out only after its commit.
//!
//! What differs between SQLite and PostgreSQL (the SQL, the connection, whether one failed
//! statement fails the whole transaction) is the [`Backend`]'s; the queue, the batching, the
//! counters and the answers are here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};

use crate::store::{StoreError, StoreStats, Submitted};

/// Most writes in one transaction.
pub const MAX_BATCH: usize = 1024;

/// The counters behind [`StoreStats`], shared by a store and its writer thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) refused_full: AtomicU64,
    pub(crate) stored: AtomicU64,
    /// Writes handed to the writer so far (queued, in its hands, or done).
    pub(crate) handed_over: AtomicU64,
}

impl Counters {
    pub(crate) fn stats(&self) -> StoreStats {
        StoreStats {
            submitted: self.submitted.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
        }
    }
}

/// What a store does with one batch of writes, on its writer thread.
pub(crate) trait Backend: Send + 'static {
    /// One write, as the store hands it over.
    type Write: Send + 'static;
    /// What one write came to.
    type Outcome: Send + 'static;

    /// Applies `writes` in one transaction and commits it. `stored` is the count of stored
    /// requests before the batch; the backend keeps it up to date as it applies submissions.
    /// Ok: each write's outcome, in order (a backend may fail one write and commit the rest);
    /// Err: the transaction failed, and nothing of it is stored.
    fn commit(
        &mut self,
        writes: &[Self::Write],
        stored: &mut u64,
    ) -> Result<Vec<Result<Self::Outcome, StoreError>>, StoreError>;

    /// The submission an outcome reports, if it is one, for the counters.
    fn submission(outcome: &Self::Outcome) -> Option<&Submitted>;
}

type Answer<O> = Sender<Result<O, StoreError>>;

/// A write and who waits for its outcome (no one, for an attempt count).
struct Queued<W, O>(W, Option<Answer<O>>);

/// The store's end of its writer thread: hands writes over, and on drop lets the thread finish
/// what is queued and waits for it.
pub(crate) struct WriterHandle<B: Backend> {
    writes: Option<Sender<Queued<B::Write, B::Outcome>>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl<B: Backend> WriterHandle<B> {
    /// Starts the writer thread `name` for `backend`, counting into `counters`.
    pub(crate) fn spawn(
        name: &str,
        backend: B,
        counters: Arc<Counters>,
    ) -> Result<WriterHandle<B>, StoreError> {
        let (writes, queue) = crossbeam_channel::unbounded();
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(backend, &thread_counters, &queue))
            .map_err(|error| StoreError::Database(format!("cannot start the writer: {error}")))?;
        Ok(WriterHandle {
            writes: Some(writes),
            thread: Some(thread),
            counters,
        })
    }

    /// Hands `write` over and waits for its outcome, which comes after its commit.
    pub(crate) fn write(&self, write: B::Write) -> Result<B::Outcome, StoreError> {
        let (answer, outcome) = crossbeam_channel::bounded(1);
        self.queue(Queued(write, Some(answer)))?;
        self.counters.handed_over.fetch_add(1, Ordering::Relaxed);
        outcome.recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Hands `write` over without waiting for it (an attempt count, which may lag).
    pub(crate) fn send(&self, write: B::Write) -> Result<(), StoreError> {
        self.queue(Queued(write, None))
    }

    fn queue(&self, queued: Queued<B::Write, B::Outcome>) -> Result<(), StoreError> {
        let writes = self.writes.as_ref().ok_or(StoreError::WriterGone)?;
        writes.send(queued).map_err(|_| StoreError::WriterGone)
    }
}

impl<B: Backend> Drop for WriterHandle<B> {
    fn drop(&mut self) {
        // The writer ends when the last sender is gone, after the writes already queued.
        self.writes = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("the store's writer thread panicked");
            }
        }
    }
}

/// The error for an outcome of the wrong kind (a bug, never a peer's doing).
pub(crate) fn unexpected(what: &'static str) -> StoreError {
    StoreError::Database(format!(
        "the writer answered {what} with another kind of outcome"
    ))
}

/// The writer thread: blocks for the first write, takes what else waits, commits; ends when
/// every sender is gone and the queue is empty.
fn run<B: Backend>(
    mut backend: B,
    counters: &Counters,
    queue: &Receiver<Queued<B::Write, B::Outcome>>,
) {
    let mut writes = Vec::with_capacity(64);
    let mut answers = Vec::with_capacity(64);
    while let Ok(Queued(write, answer)) = queue.recv() {
        writes.push(write);
        answers.push(answer);
        while writes.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(Queued(write, answer)) => {
                    writes.push(write);
                    answers.push(answer);
                }
                Err(_) => break,
            }
        }
        commit(&mut backend, counters, &writes, &mut answers);
        writes.clear();
    }
}

/// Has the backend apply and commit one batch, then counts it and answers each caller.
fn commit<B: Backend>(
    backend: &mut B,
    counters: &Counters,
    writes: &[B::Write],
    answers: &mut Vec<Option<Answer<B::Outcome>>>,
) {
    let count = writes.len();
    let mut stored = counters.stored.load(Ordering::Relaxed);
    match backend.commit(writes, &mut stored) {
        Ok(outcomes) => {
            let (mut submitted, mut refused) = (0, 0);
            for outcome in outcomes.iter().flatten() {
                match B::submission(outcome) {
                    Some(Submitted::Stored(_)) => submitted += 1,
                    Some(Submitted::Full) => refused += 1,
                    None => {}
                }
            }
            counters.stored.store(stored, Ordering::Relaxed);
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.writes.fetch_add(count as u64, Ordering::Relaxed);
            counters.submitted.fetch_add(submitted, Ordering::Relaxed);
            counters.refused_full.fetch_add(refused, Ordering::Relaxed);
            debug!("committed {count} writes in one transaction");
            for (answer, outcome) in answers.drain(..).zip(outcomes) {
                if let Some(answer) = answer {
                    let _ = answer.send(outcome);
                }
            }
        }
        Err(error) => {
            let text = match error {
                StoreError::Database(text) => text,
                other => other.to_string(),
            };
            warn!("a transaction of {count} writes failed, none of them is stored: {text}");
            for answer in answers.drain(..).flatten() {
                let _ = answer.send(Err(StoreError::Database(text.clone())));
            }
        }
    }
}
