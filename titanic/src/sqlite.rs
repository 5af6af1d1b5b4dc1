//! The embedded store: one SQLite database file, compiled in (rusqlite's `bundled` SQLite), so
//! there is nothing to install or to run beside Titanic.
//!
//! # Durability
//! The database is in WAL mode with `synchronous=FULL`: a transaction is committed when its
//! frames are appended to the write-ahead log *and the log is synced to disk*. A crash (of the
//! process or of the machine) loses no committed transaction, and SQLite's recovery discards a log
//! tail whose checksums do not match, so a half-written transaction is never read back.
//!
//! # Group commit
//! A sync to disk costs a millisecond or more, the same for one request as for a hundred, so all
//! writes go through **one writer thread**: it takes the first write that is waiting, then every
//! other one that is waiting by then (up to [`MAX_BATCH`]), applies them all in one transaction,
//! commits it (one sync), and only then answers each caller. Requests that arrive together, while
//! the previous sync is running, thus share the next one; a request that arrives alone is
//! committed alone, at once, without waiting for company. Reads go through their own connections
//! (WAL lets them run beside the writer) and see only committed transactions.
//!
//! # Schema
//! ```sql
//! CREATE TABLE requests (
//!     id          TEXT PRIMARY KEY,  -- 32 lower-case hex digits
//!     service     BLOB NOT NULL,     -- the service name, as sent
//!     body        BLOB NOT NULL,     -- the frames, each as a 4-byte big-endian length + bytes
//!     state       TEXT NOT NULL,     -- 'pending' or 'done'
//!     reply       BLOB,              -- the reply's frames, encoded as body; NULL while pending
//!     created_ms  INTEGER NOT NULL,  -- Unix time in milliseconds
//!     expires_ms  INTEGER NOT NULL,
//!     attempts    INTEGER NOT NULL   -- how many times it was sent to its service
//! );
//! ```
//! Look into it with the `sqlite3` tool, e.g.
//! `sqlite3 titanic.db "select id, cast(service as text), state, attempts from requests"`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use log::warn;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::id::RequestId;
use crate::store::{
    decode_frames, encode_frames, PendingRequest, ReplyState, Store, StoreError, StoreStats,
    StoredFrames, Submitted,
};
pub use crate::writer::MAX_BATCH;
use crate::writer::{unexpected, Backend, Counters, WriterHandle};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id          TEXT PRIMARY KEY,
    service     BLOB NOT NULL,
    body        BLOB NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    reply       BLOB,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS requests_by_state ON requests (state, created_ms);
CREATE INDEX IF NOT EXISTS requests_by_expiry ON requests (expires_ms);
";

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        StoreError::Database(error.to_string())
    }
}

/// The SQLite store. See the [module docs](self).
pub struct SqliteStore {
    path: std::path::PathBuf,
    writer: WriterHandle<Writer>,
    /// Idle read connections; one is opened when none is idle.
    readers: Mutex<Vec<Connection>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// One write, as the writer thread receives it, with where its outcome goes.
enum Write {
    Submit {
        id: RequestId,
        service: Vec<u8>,
        body: Vec<u8>,
        created_ms: u64,
        expires_ms: u64,
    },
    Complete {
        id: RequestId,
        reply: Vec<u8>,
    },
    Close(RequestId),
    Attempt(RequestId),
    Expire(u64),
}

enum Outcome {
    Submitted(Submitted),
    Completed(bool),
    Closed,
    Expired(u64),
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, with at most `max_stored` requests in it.
    pub fn open(path: &Path, max_stored: u64) -> Result<SqliteStore, StoreError> {
        let connection = Connection::open(path)?;
        let mode: String = connection.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "cannot use write-ahead logging on {} (journal mode {mode})",
                path.display()
            )));
        }
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        connection.execute_batch(SCHEMA)?;
        let stored: u64 = connection.query_row("SELECT count(*) FROM requests", [], |row| {
            row.get::<_, i64>(0)
        })? as u64;
        let counters = Arc::new(Counters::default());
        counters.stored.store(stored, Ordering::Relaxed);

        let writer = Writer {
            connection,
            max_stored,
        };
        Ok(SqliteStore {
            path: path.to_owned(),
            writer: WriterHandle::spawn("titanic-store-writer", writer, Arc::clone(&counters))?,
            readers: Mutex::new(Vec::new()),
            counters,
        })
    }

    fn write(&self, write: Write) -> Result<Outcome, StoreError> {
        self.writer.write(write)
    }

    fn read<T>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let connection = match idle {
            Some(connection) => connection,
            None => {
                let connection = Connection::open(&self.path)?;
                connection.busy_timeout(std::time::Duration::from_secs(10))?;
                connection
            }
        };
        let result = query(&connection);
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(connection);
        result
    }
}

impl Store for SqliteStore {
    fn submit(
        &self,
        service: &[u8],
        body: &[&[u8]],
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Submitted, StoreError> {
        let write = Write::Submit {
            id: RequestId::random(),
            service: service.to_vec(),
            body: encode_frames(body),
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
        };
        match self.write(write)? {
            Outcome::Submitted(submitted) => Ok(submitted),
            _ => Err(unexpected("a submission")),
        }
    }

    fn reply(&self, id: &RequestId, now_ms: u64) -> Result<ReplyState, StoreError> {
        self.read(|connection| {
            let row: Option<(String, Option<Vec<u8>>, i64)> = connection
                .prepare_cached("SELECT state, reply, expires_ms FROM requests WHERE id = ?1")?
                .query_row([id.to_hex()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            Ok(match row {
                None => ReplyState::Unknown,
                Some((_, _, expires_ms)) if expires_ms as u64 <= now_ms => ReplyState::Unknown,
                Some((state, Some(reply), _)) if state == "done" => {
                    ReplyState::Done(decode_frames(&reply)?)
                }
                Some(_) => ReplyState::Pending,
            })
        })
    }

    fn close(&self, id: &RequestId) -> Result<(), StoreError> {
        match self.write(Write::Close(*id))? {
            Outcome::Closed => Ok(()),
            _ => Err(unexpected("a close")),
        }
    }

    fn pending(&self, now_ms: u64) -> Result<Vec<PendingRequest>, StoreError> {
        self.read(|connection| {
            let mut statement = connection.prepare_cached(
                "SELECT id, service, expires_ms, attempts FROM requests
                 WHERE state = 'pending' AND expires_ms > ?1 ORDER BY created_ms",
            )?;
            let rows = statement.query_map([now_ms as i64], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?;
            let mut pending = Vec::new();
            for row in rows {
                let (id, service, expires_ms, attempts) = row?;
                let Some(id) = RequestId::parse(id.as_bytes()) else {
                    warn!("the store holds a request with a malformed id {id:?}: skipped");
                    continue;
                };
                pending.push(PendingRequest {
                    id,
                    service,
                    expires_ms: expires_ms as u64,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                });
            }
            Ok(pending)
        })
    }

    fn body(&self, id: &RequestId) -> Result<Option<StoredFrames>, StoreError> {
        self.read(|connection| {
            let body: Option<Vec<u8>> = connection
                .prepare_cached("SELECT body FROM requests WHERE id = ?1 AND state = 'pending'")?
                .query_row([id.to_hex()], |row| row.get(0))
                .optional()?;
            body.map(|body| decode_frames(&body)).transpose()
        })
    }

    fn record_attempt(&self, id: &RequestId) -> Result<(), StoreError> {
        self.writer.send(Write::Attempt(*id))
    }

    fn complete(&self, id: &RequestId, reply: &[&[u8]]) -> Result<bool, StoreError> {
        let write = Write::Complete {
            id: *id,
            reply: encode_frames(reply),
        };
        match self.write(write)? {
            Outcome::Completed(done) => Ok(done),
            _ => Err(unexpected("a completion")),
        }
    }

    fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        match self.write(Write::Expire(now_ms))? {
            Outcome::Expired(count) => Ok(count),
            _ => Err(unexpected("an expiry")),
        }
    }

    fn stored(&self) -> u64 {
        self.counters.stored.load(Ordering::Relaxed)
    }

    fn stats(&self) -> StoreStats {
        self.counters.stats()
    }
}

/// The writer thread's state: the one connection that writes.
struct Writer {
    connection: Connection,
    max_stored: u64,
}

impl Backend for Writer {
    type Write = Write;
    type Outcome = Outcome;

    /// Applies the batch in one transaction; a write that fails is answered with its error and
    /// the others are committed.
    fn commit(
        &mut self,
        writes: &[Write],
        stored: &mut u64,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let outcomes = writes
            .iter()
            .map(|write| apply(&transaction, write, stored, self.max_stored))
            .collect();
        transaction.commit()?;
        Ok(outcomes)
    }

    fn submission(outcome: &Outcome) -> Option<&Submitted> {
        match outcome {
            Outcome::Submitted(submitted) => Some(submitted),
            _ => None,
        }
    }
}

/// One write inside the batch's transaction. `stored` is the count of stored requests so far.
fn apply(
    transaction: &rusqlite::Transaction<'_>,
    write: &Write,
    stored: &mut u64,
    max_stored: u64,
) -> Result<Outcome, StoreError> {
    match write {
        Write::Submit {
            id,
            service,
            body,
            created_ms,
            expires_ms,
        } => {
            if *stored >= max_stored {
                return Ok(Outcome::Submitted(Submitted::Full));
            }
            transaction
                .prepare_cached(
                    "INSERT INTO requests (id, service, body, state, created_ms, expires_ms)
                     VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
                )?
                .execute(params![
                    id.to_hex(),
                    service,
                    body,
                    *created_ms as i64,
                    *expires_ms as i64
                ])?;
            *stored += 1;
            Ok(Outcome::Submitted(Submitted::Stored(*id)))
        }
        Write::Complete { id, reply } => {
            let changed = transaction
                .prepare_cached(
                    "UPDATE requests SET state = 'done', reply = ?2
                     WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![id.to_hex(), reply])?;
            Ok(Outcome::Completed(changed == 1))
        }
        Write::Close(id) => {
            let deleted = transaction
                .prepare_cached("DELETE FROM requests WHERE id = ?1")?
                .execute([id.to_hex()])?;
            *stored = stored.saturating_sub(deleted as u64);
            Ok(Outcome::Closed)
        }
        Write::Attempt(id) => {
            transaction
                .prepare_cached("UPDATE requests SET attempts = attempts + 1 WHERE id = ?1")?
                .execute([id.to_hex()])?;
            Ok(Outcome::Closed)
        }
        Write::Expire(now_ms) => {
            let deleted = transaction
                .prepare_cached("DELETE FROM requests WHERE expires_ms <= ?1")?
                .execute([*now_ms as i64])?;
            *stored = stored.saturating_sub(deleted as u64);
            Ok(Outcome::Expired(deleted as u64))
        }
    }
}

#[cfg(test)]
mod tests;
