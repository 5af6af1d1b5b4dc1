//! The shared store: one PostgreSQL database (`--db postgres://...`) that several Titanic
//! processes, on several hosts, use at once. PostgreSQL, not this project, then carries the
//! durability and the replication (a standby server).
//!
//! # Durability and group commit
//! As in the embedded store ([`crate::sqlite`]): every write goes through one writer thread and
//! its one connection, which applies every write waiting by then (up to [`MAX_BATCH`]) in one
//! transaction and commits it; with the server's defaults (`fsync=on`, `synchronous_commit=on`)
//! COMMIT returns once the transaction's WAL is flushed to disk, and only then is each caller
//! answered. A `titanic.request` is answered 200 after that; a reply is stored in the same
//! transaction that marks its request done. Reads use their own connections and see only
//! committed transactions.
//!
//! # Leases: several processes, one request out at a time
//! A dispatch takes far longer than a transaction should, so a request is not locked while it is
//! out: the process that sends it first *claims* it, committing a lease (`lease_owner`,
//! `lease_expires_ms`) in a transaction that finds the row with `FOR UPDATE SKIP LOCKED`, so two
//! processes claiming together never wait on each other and only one gets it. The lease is
//! renewed while the request is out ([`crate::dispatch`] does it), and another process claims
//! the request only once the lease has run out. The process that holds it gives the try up when
//! its lease runs out unrenewed, counted from *before* it asked for the lease, so it has stopped
//! waiting before the store lets anyone else claim the request. Lease times are the processes'
//! own clocks (as every time in the store): keep the hosts' clocks in step (NTP) to well under the
//! margin between a renewal and the lease's end (two thirds of the lease).
//!
//! # Schema
//! ```sql
//! CREATE TABLE titanic_requests (
//!     id                TEXT PRIMARY KEY,  -- 32 lower-case hex digits
//!     service           BYTEA NOT NULL,
//!     body              BYTEA NOT NULL,    -- frames, each a 4-byte big-endian length + bytes
//!     state             TEXT NOT NULL,     -- 'pending' or 'done'
//!     reply             BYTEA,             -- encoded as body; NULL while pending
//!     created_ms        BIGINT NOT NULL,   -- Unix time in milliseconds
//!     expires_ms        BIGINT NOT NULL,
//!     attempts          INTEGER NOT NULL,  -- tries sent, by any process
//!     lease_owner       TEXT,              -- the process that has it out, if any
//!     lease_expires_ms  BIGINT
//! );
//! ```
//! Look into it with `psql`, e.g. `psql "$URL" -c "select id, convert_from(service, 'UTF8'),
//! state, attempts, lease_owner from titanic_requests"`.
//!
//! `--max-stored` is counted by each process from its own writes and recounted from the table at
//! every expiry sweep, so with several processes it is approximate between sweeps.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use log::warn;
use postgres::{Client, NoTls, Statement};

use crate::id::RequestId;
use crate::store::{
    decode_frames, encode_frames, PendingRequest, ReplyState, Store, StoreError, StoreStats,
    StoredFrames, Submitted,
};
pub use crate::writer::MAX_BATCH;
use crate::writer::{unexpected, Backend, Counters, WriterHandle};

const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7469746);
CREATE TABLE IF NOT EXISTS titanic_requests (
    id                TEXT PRIMARY KEY,
    service           BYTEA NOT NULL,
    body              BYTEA NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    reply             BYTEA,
    created_ms        BIGINT NOT NULL,
    expires_ms        BIGINT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_ms  BIGINT
);
CREATE INDEX IF NOT EXISTS titanic_requests_by_state ON titanic_requests (state, created_ms);
CREATE INDEX IF NOT EXISTS titanic_requests_by_expiry ON titanic_requests (expires_ms);
";

impl From<postgres::Error> for StoreError {
    fn from(error: postgres::Error) -> StoreError {
        // The server's own message, which the error's Display leaves out.
        StoreError::Database(match error.as_db_error() {
            Some(server) => format!("{error}: {} ({})", server.message(), server.code().code()),
            None => error.to_string(),
        })
    }
}

fn connect(url: &str) -> Result<Client, StoreError> {
    Client::connect(url, NoTls)
        .map_err(|error| StoreError::Database(format!("cannot connect to PostgreSQL: {error}")))
}

/// The URL as it may be printed: without its password.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The PostgreSQL store. See the [module docs](self).
pub struct PgStore {
    url: String,
    writer: WriterHandle<Writer>,
    readers: Mutex<Vec<Client>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &redacted(&self.url))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

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
    Claim {
        id: RequestId,
        owner: String,
        now_ms: u64,
        lease_ms: u64,
    },
    Renew {
        ids: Vec<RequestId>,
        owner: String,
        now_ms: u64,
        lease_ms: u64,
    },
    Expire(u64),
}

enum Outcome {
    Submitted(Submitted),
    Done(bool),
    Renewed(Vec<RequestId>),
    Count(u64),
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or
    /// the key=value form), creates the table if it is missing, with at most `max_stored`
    /// requests stored.
    pub fn open(url: &str, max_stored: u64) -> Result<PgStore, StoreError> {
        let mut client = connect(url)?;
        {
            let mut transaction = client.transaction()?;
            transaction.batch_execute(SCHEMA)?;
            transaction.commit()?;
        }
        let stored = count(&mut client)?;
        let counters = Arc::new(Counters::default());
        counters.stored.store(stored, Ordering::Relaxed);
        let statements = Statements::prepare(&mut client)?;
        let writer = Writer {
            url: url.to_owned(),
            connection: Some((client, statements)),
            max_stored,
        };
        Ok(PgStore {
            url: url.to_owned(),
            writer: WriterHandle::spawn("titanic-pg-writer", writer, Arc::clone(&counters))?,
            readers: Mutex::new(Vec::new()),
            counters,
        })
    }

    fn write(&self, write: Write) -> Result<Outcome, StoreError> {
        self.writer.write(write)
    }

    fn read<T>(
        &self,
        query: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut client = match idle {
            Some(client) => client,
            None => connect(&self.url)?,
        };
        let result = query(&mut client);
        // A connection the server closed is dropped; the next read opens another.
        if !client.is_closed() {
            self.readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(client);
        }
        result
    }

    /// Writes handed to the writer so far.
    #[cfg(test)]
    fn handed_over(&self) -> u64 {
        self.counters.handed_over.load(Ordering::Relaxed)
    }
}

fn count(client: &mut Client) -> Result<u64, StoreError> {
    let row = client.query_one("SELECT count(*) FROM titanic_requests", &[])?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

fn pending_row(row: &postgres::Row) -> Option<PendingRequest> {
    let id: String = row.get(0);
    let Some(parsed) = RequestId::parse(id.as_bytes()) else {
        warn!("the store holds a request with a malformed id {id:?}: skipped");
        return None;
    };
    Some(PendingRequest {
        id: parsed,
        service: row.get(1),
        expires_ms: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
        attempts: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
    })
}

impl Store for PgStore {
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
        self.read(|client| {
            let row = client.query_opt(
                "SELECT state, reply, expires_ms FROM titanic_requests WHERE id = $1",
                &[&id.to_hex()],
            )?;
            let Some(row) = row else {
                return Ok(ReplyState::Unknown);
            };
            let state: String = row.get(0);
            let reply: Option<Vec<u8>> = row.get(1);
            let expires_ms: i64 = row.get(2);
            Ok(match reply {
                _ if expires_ms <= ms(now_ms) => ReplyState::Unknown,
                Some(reply) if state == "done" => ReplyState::Done(decode_frames(&reply)?),
                _ => ReplyState::Pending,
            })
        })
    }

    fn close(&self, id: &RequestId) -> Result<(), StoreError> {
        self.write(Write::Close(*id)).map(|_| ())
    }

    fn pending(&self, now_ms: u64) -> Result<Vec<PendingRequest>, StoreError> {
        self.read(|client| {
            let rows = client.query(
                "SELECT id, service, expires_ms, attempts FROM titanic_requests
                 WHERE state = 'pending' AND expires_ms > $1 ORDER BY created_ms",
                &[&ms(now_ms)],
            )?;
            Ok(rows.iter().filter_map(pending_row).collect())
        })
    }

    fn body(&self, id: &RequestId) -> Result<Option<StoredFrames>, StoreError> {
        self.read(|client| {
            let row = client.query_opt(
                "SELECT body FROM titanic_requests WHERE id = $1 AND state = 'pending'",
                &[&id.to_hex()],
            )?;
            row.map(|row| decode_frames(row.get::<_, &[u8]>(0)))
                .transpose()
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
            Outcome::Done(done) => Ok(done),
            _ => Err(unexpected("a completion")),
        }
    }

    fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        match self.write(Write::Expire(now_ms))? {
            Outcome::Count(count) => Ok(count),
            _ => Err(unexpected("an expiry")),
        }
    }

    fn stored(&self) -> u64 {
        self.counters.stored.load(Ordering::Relaxed)
    }

    fn stats(&self) -> StoreStats {
        self.counters.stats()
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim(
        &self,
        id: &RequestId,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<bool, StoreError> {
        let write = Write::Claim {
            id: *id,
            owner: owner.to_owned(),
            now_ms,
            lease_ms,
        };
        match self.write(write)? {
            Outcome::Done(taken) => Ok(taken),
            _ => Err(unexpected("a claim")),
        }
    }

    fn renew(
        &self,
        ids: &[RequestId],
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<RequestId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let write = Write::Renew {
            ids: ids.to_vec(),
            owner: owner.to_owned(),
            now_ms,
            lease_ms,
        };
        match self.write(write)? {
            Outcome::Renewed(renewed) => Ok(renewed),
            _ => Err(unexpected("a renewal")),
        }
    }

    fn claimable(&self, now_ms: u64, limit: usize) -> Result<Vec<PendingRequest>, StoreError> {
        self.read(|client| {
            let rows = client.query(
                "SELECT id, service, expires_ms, attempts FROM titanic_requests
                 WHERE state = 'pending' AND expires_ms > $1
                   AND (lease_owner IS NULL OR lease_expires_ms <= $1)
                 ORDER BY created_ms LIMIT $2",
                &[&ms(now_ms), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )?;
            Ok(rows.iter().filter_map(pending_row).collect())
        })
    }
}

/// The writer's statements, prepared once per connection.
struct Statements {
    insert: Statement,
    complete: Statement,
    close: Statement,
    attempt: Statement,
    claim: Statement,
    renew: Statement,
    expire: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            insert: client.prepare(
                "INSERT INTO titanic_requests (id, service, body, state, created_ms, expires_ms)
                 VALUES ($1, $2, $3, 'pending', $4, $5)",
            )?,
            complete: client.prepare(
                "UPDATE titanic_requests
                 SET state = 'done', reply = $2, lease_owner = NULL, lease_expires_ms = NULL
                 WHERE id = $1 AND state = 'pending'",
            )?,
            close: client.prepare("DELETE FROM titanic_requests WHERE id = $1")?,
            attempt: client
                .prepare("UPDATE titanic_requests SET attempts = attempts + 1 WHERE id = $1")?,
            // The row is found and locked with SKIP LOCKED: a row another process's transaction
            // holds right now (its own claim, renewal or completion) is not waited for, and is
            // not taken.
            claim: client.prepare(
                "UPDATE titanic_requests
                 SET lease_owner = $2, lease_expires_ms = $3::bigint + $4::bigint, attempts = attempts + 1
                 WHERE id = (
                     SELECT id FROM titanic_requests
                     WHERE id = $1 AND state = 'pending' AND expires_ms > $3
                       AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_ms <= $3)
                     FOR UPDATE SKIP LOCKED)",
            )?,
            renew: client.prepare(
                "UPDATE titanic_requests SET lease_expires_ms = $3::bigint + $4::bigint
                 WHERE id = ANY($1) AND lease_owner = $2 AND state = 'pending'
                 RETURNING id",
            )?,
            expire: client.prepare("DELETE FROM titanic_requests WHERE expires_ms <= $1")?,
        })
    }
}

struct Writer {
    url: String,
    /// None after the connection failed; opened again for the next batch.
    connection: Option<(Client, Statements)>,
    max_stored: u64,
}

impl Writer {
    fn connection(&mut self) -> Result<&mut (Client, Statements), StoreError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|(client, _)| client.is_closed())
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            let mut client = connect(&self.url)?;
            let statements = Statements::prepare(&mut client)?;
            self.connection = Some((client, statements));
        }
        self.connection.as_mut().ok_or(StoreError::WriterGone)
    }
}

impl Backend for Writer {
    type Write = Write;
    type Outcome = Outcome;

    /// Applies the batch in one transaction: a failed statement fails the whole transaction,
    /// and every caller is told.
    fn commit(
        &mut self,
        writes: &[Write],
        stored: &mut u64,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        let max_stored = self.max_stored;
        let (client, statements) = self.connection()?;
        let mut transaction = client.transaction()?;
        let mut outcomes = Vec::with_capacity(writes.len());
        for write in writes {
            outcomes.push(Ok(apply(
                &mut transaction,
                statements,
                write,
                stored,
                max_stored,
            )?));
        }
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

fn apply(
    transaction: &mut postgres::Transaction<'_>,
    statements: &Statements,
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
            transaction.execute(
                &statements.insert,
                &[
                    &id.to_hex(),
                    service,
                    body,
                    &ms(*created_ms),
                    &ms(*expires_ms),
                ],
            )?;
            *stored += 1;
            Ok(Outcome::Submitted(Submitted::Stored(*id)))
        }
        Write::Complete { id, reply } => {
            let changed = transaction.execute(&statements.complete, &[&id.to_hex(), reply])?;
            Ok(Outcome::Done(changed == 1))
        }
        Write::Close(id) => {
            let deleted = transaction.execute(&statements.close, &[&id.to_hex()])?;
            *stored = stored.saturating_sub(deleted);
            Ok(Outcome::Count(deleted))
        }
        Write::Attempt(id) => {
            transaction.execute(&statements.attempt, &[&id.to_hex()])?;
            Ok(Outcome::Count(1))
        }
        Write::Claim {
            id,
            owner,
            now_ms,
            lease_ms,
        } => {
            let taken = transaction.execute(
                &statements.claim,
                &[&id.to_hex(), owner, &ms(*now_ms), &ms(*lease_ms)],
            )?;
            Ok(Outcome::Done(taken == 1))
        }
        Write::Renew {
            ids,
            owner,
            now_ms,
            lease_ms,
        } => {
            let hex: Vec<String> = ids.iter().map(RequestId::to_hex).collect();
            let rows = transaction.query(
                &statements.renew,
                &[&hex, owner, &ms(*now_ms), &ms(*lease_ms)],
            )?;
            let renewed = rows
                .iter()
                .filter_map(|row| RequestId::parse(row.get::<_, &str>(0).as_bytes()))
                .collect();
            Ok(Outcome::Renewed(renewed))
        }
        Write::Expire(now_ms) => {
            let deleted = transaction.execute(&statements.expire, &[&ms(*now_ms)])?;
            // Other processes store requests too: the count is taken again from the table.
            let row = transaction.query_one("SELECT count(*) FROM titanic_requests", &[])?;
            *stored = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            Ok(Outcome::Count(deleted))
        }
    }
}

#[cfg(test)]
mod tests;
