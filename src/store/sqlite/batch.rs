//! The SQLite store's batching: a grouped reader that answers the loads queued during a
//! query with one `IN (...)` query, and a group-commit writer that writes the saves
//! queued during a commit in the next transaction (with multi-row statements when their
//! keys are distinct). Both are tasks fed through channels; [`Grouped`] holds the
//! sending ends.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use tokio::sync::{mpsc, oneshot};

use super::queries::{Queries, SaveQuery, SaveRow};
use super::{BACKEND, save_result};
use crate::error::{Error, Message, Result};
use crate::store::Version;
use crate::store::sql::{self, Row3};

/// The grouped reader and the group-commit writer of one store. Their tasks run until
/// every handle to them is gone.
#[derive(Debug, Clone)]
pub(super) struct Grouped {
    reader: mpsc::Sender<ReadOp>,
    writer: mpsc::Sender<WriteOp>,
    /// Calls sent to the reader or the writer and not answered yet.
    waiting: Arc<AtomicUsize>,
}

/// Counts a call as waiting for the reader or the writer while it lives (an abandoned
/// call, whose future was dropped, stops counting too).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Grouped {
    /// Starts the reader and the writer on the current Tokio runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub(super) fn start(pool: &SqlitePool, queries: &Arc<Queries>) -> Self {
        let (writer, rx) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(writer_loop(pool.clone(), Arc::clone(queries), rx));
        let (reader, rx) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(reader_loop(pool.clone(), Arc::clone(queries), rx));
        Self {
            reader,
            writer,
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether some call waits for the reader or the writer now.
    pub(super) fn busy(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// The row of `key`, read by the grouped reader; `None` when the reader's runtime is
    /// gone (read directly then).
    pub(super) async fn read(&self, key: &str) -> Option<Result<Option<Row3>>> {
        let _waiting = Waiting::new(&self.waiting);
        let (reply, rx) = oneshot::channel();
        let op = ReadOp {
            key: key.to_owned(),
            reply,
        };
        self.reader.send(op).await.ok()?;
        Some(rx.await.unwrap_or_else(|_| {
            Err(Error::store(
                BACKEND,
                Message("the grouped reader stopped".into()),
            ))
        }))
    }

    /// A save written by the group-commit writer; `None` when the writer's runtime is
    /// gone (write directly then).
    pub(super) async fn write(&self, key: &str, save: SaveRow) -> Option<Result<Version>> {
        Some(
            self.send(key, Write::Save(save))
                .await?
                .and_then(Done::into_version),
        )
    }

    /// A lease operation done by the group-commit writer, in the transaction of the
    /// writes queued with it; `None` when the writer's runtime is gone.
    pub(super) async fn lease(&self, key: &str, op: LeaseOp) -> Option<Result<Done>> {
        self.send(key, Write::Lease(op)).await
    }

    async fn send(&self, key: &str, what: Write) -> Option<Result<Done>> {
        let _waiting = Waiting::new(&self.waiting);
        let (reply, rx) = oneshot::channel();
        let op = WriteOp {
            key: key.to_owned(),
            what,
            reply,
        };
        self.writer.send(op).await.ok()?;
        Some(rx.await.unwrap_or_else(|_| {
            Err(Error::store(
                BACKEND,
                Message("the group-commit writer stopped".into()),
            ))
        }))
    }
}

/// One sqlx error that several waiters get (the failure of the statement, transaction or
/// connection of their group, or of decoding a row they all asked for): each gets an [`Error::Store`] with this as its source, and
/// the sqlx error as its source in turn.
#[derive(Debug, Clone)]
struct SharedError {
    /// What failed, for all of them.
    what: &'static str,
    error: Arc<sqlx::Error>,
}

impl SharedError {
    fn new(what: &'static str, error: sqlx::Error) -> Self {
        Self {
            what,
            error: Arc::new(error),
        }
    }

    /// The error of one waiter.
    fn to_store(&self) -> Error {
        Error::store(BACKEND, self.clone())
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// A load handed to the grouped reader.
#[derive(Debug)]
struct ReadOp {
    key: String,
    reply: oneshot::Sender<Result<Option<Row3>>>,
}

/// Runs grouped reads until every handle to the store is gone: the loads that queued
/// while a query ran are answered by one `IN (...)` query.
async fn reader_loop(pool: SqlitePool, queries: Arc<Queries>, mut rx: mpsc::Receiver<ReadOp>) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut batch, MAX_GROUP).await > 0 {
        let mut keys: Vec<&str> = batch.iter().map(|op| op.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let text = queries.select_keys(keys.len());
        let mut query = sqlx::query(&text);
        for k in &keys {
            query = query.bind(*k);
        }
        let rows = query.fetch_all(&pool).await;
        match rows {
            Ok(rows) => {
                // Each key's row, or why it did not decode (for the waiters of that key).
                let mut found = HashMap::with_capacity(rows.len());
                // A row whose key does not decode cannot be matched to its waiters: every
                // waiter whose key was not found gets its error.
                let mut unmatched = None;
                for row in &rows {
                    match row.try_get::<String, _>(0) {
                        Ok(key) => {
                            let decoded = decode_row(row)
                                .map_err(|e| SharedError::new("a stored row did not decode", e));
                            found.insert(key, decoded);
                        }
                        Err(e) => {
                            unmatched = Some(SharedError::new("a stored key did not decode", e))
                        }
                    }
                }
                for op in batch.drain(..) {
                    let r = match (found.get(&op.key), &unmatched) {
                        (Some(Ok(row)), _) => Ok(Some(row.clone())),
                        (Some(Err(e)), _) | (None, Some(e)) => Err(e.to_store()),
                        (None, None) => Ok(None),
                    };
                    let _ = op.reply.send(r);
                }
            }
            Err(e) => {
                let failed = SharedError::new("the grouped read failed", e);
                for op in batch.drain(..) {
                    let _ = op.reply.send(Err(failed.to_store()));
                }
            }
        }
    }
}

/// The data, version and expiry of a row of the grouped read (after its key).
fn decode_row(row: &SqliteRow) -> std::result::Result<Row3, sqlx::Error> {
    Ok((row.try_get(1)?, row.try_get(2)?, row.try_get(3)?))
}

/// A write handed to the group-commit writer: a save or a lease operation, on `key`.
#[derive(Debug)]
struct WriteOp {
    key: String,
    what: Write,
    reply: oneshot::Sender<Result<Done>>,
}

/// What a [`WriteOp`] does.
#[derive(Debug)]
enum Write {
    Save(SaveRow),
    Lease(LeaseOp),
}

/// A lease operation on a key, timed by the wall clock when it runs (leases are shared
/// by every process on the file).
#[derive(Debug, Clone)]
pub(super) enum LeaseOp {
    /// Take the lease with this token for `ttl_ms` if no live lease is in the way, and
    /// read the key's row in the same statement (`load`: answer it; else it is ignored,
    /// even when it does not decode).
    Acquire {
        token: String,
        ttl_ms: i64,
        load: bool,
    },
    /// Extend the lease held with this token to `ttl_ms` from now, if it is still live.
    Renew { token: String, ttl_ms: i64 },
    /// Give back the lease held with this token.
    Release { token: String },
}

/// What a [`WriteOp`] did.
#[derive(Debug)]
pub(super) enum Done {
    /// The save wrote this version.
    Saved(Version),
    /// The lease was taken; the key's row as stored (`None`: no row).
    Taken(Option<Row3>),
    /// A live lease is in the way.
    Busy,
    /// Whether the renewal or release found the lease still held with its token.
    Held(bool),
}

impl Done {
    /// The version of a save.
    fn into_version(self) -> Result<Version> {
        match self {
            Self::Saved(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// The answer of a renewal or release.
    pub(super) fn into_held(self) -> Result<bool> {
        match self {
            Self::Held(held) => Ok(held),
            other => Err(unexpected(&other)),
        }
    }
}

/// A [`Done`] that does not answer the operation asked for (a bug, reported rather than
/// panicking).
pub(super) fn unexpected(done: &Done) -> Error {
    Error::store(
        BACKEND,
        Message(format!("the group-commit writer answered {done:?}")),
    )
}

/// The wall clock in milliseconds since the epoch: the time of leases, which several
/// processes compare (a store's own [`Clock`](crate::clock::Clock) may be virtual).
pub(super) fn wall_ms() -> i64 {
    use crate::clock::{Clock, SystemClock};
    SystemClock.now_ms()
}

/// Runs the lease operation `op` on `key` alone, in one autocommit statement (when the
/// store has no group-commit writer, or the operation came alone).
pub(super) async fn lease_alone(
    conn: &mut SqliteConnection,
    queries: &Queries,
    key: &str,
    op: &LeaseOp,
) -> Result<Done> {
    let ops = [(key, op)];
    let done = match op {
        LeaseOp::Acquire { .. } => acquire_many(conn, queries, &ops).await,
        LeaseOp::Release { .. } => release_many(conn, queries, &ops)
            .await
            .map(|done| done.into_iter().map(Ok).collect()),
        LeaseOp::Renew { token, ttl_ms } => renew(conn, queries, key, token, *ttl_ms)
            .await
            .map(|held| vec![Ok(Done::Held(held))]),
    };
    let mut done = done.map_err(|e| Error::store(BACKEND, e))?;
    done.pop().unwrap_or_else(|| {
        Err(Error::store(
            BACKEND,
            Message("a lease statement gave no answer".into()),
        ))
    })
}

/// How long the group-commit writer keeps its connection without a save to write.
const WRITER_KEEPS_CONNECTION: Duration = Duration::from_millis(5);

/// The most saves one group commit takes.
const MAX_GROUP: usize = 512;

/// Runs group commits until every handle to the store is gone.
///
/// The writer keeps its pooled connection from one group to the next while saves keep
/// coming (no checkout per group, and no ping when sqlx takes a connection back), and
/// gives it back after [`WRITER_KEEPS_CONNECTION`] without a save, so an idle store holds
/// no connection (and `Pool::close` does not wait for the writer).
async fn writer_loop(pool: SqlitePool, queries: Arc<Queries>, mut rx: mpsc::Receiver<WriteOp>) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    let mut conn: Option<sqlx::pool::PoolConnection<sqlx::Sqlite>> = None;
    loop {
        let received = if conn.is_some() {
            let next = rx.recv_many(&mut batch, MAX_GROUP);
            match tokio::time::timeout(WRITER_KEEPS_CONNECTION, next).await {
                Ok(n) => n,
                Err(_) => {
                    conn = None;
                    continue;
                }
            }
        } else {
            rx.recv_many(&mut batch, MAX_GROUP).await
        };
        if received == 0 {
            break;
        }
        let results = match &mut conn {
            Some(c) => commit_group(c, &queries, &batch).await,
            None => match pool.acquire().await {
                Ok(mut c) => {
                    let results = commit_group(&mut c, &queries, &batch).await;
                    conn = Some(c);
                    results
                }
                Err(e) => {
                    let failed = SharedError::new("no connection for the group commit", e);
                    batch.iter().map(|_| Err(failed.to_store())).collect()
                }
            },
        };
        if results
            .iter()
            .any(|r| matches!(r, Err(Error::Store { .. })))
        {
            // A failed connection is not kept.
            conn = None;
        }
        for (op, result) in batch.drain(..).zip(results) {
            let _ = op.reply.send(result);
        }
    }
}

/// The compare-and-set statement of a save of `key`, and the version it writes.
fn save_query<'q>(
    queries: &'q Queries,
    key: &'q str,
    save: &'q SaveRow,
) -> (Version, SaveQuery<'q>) {
    queries.save(key, save)
}

/// Writes `batch` in one transaction: its lease releases, renewals and takes (a few
/// multi-row statements), then its saves (multi-row statements when their keys are
/// distinct, else one conditional statement each, in order).
///
/// The operations of one group were all pending at once, so any order among them is one
/// they could have happened in; releases go first so that takes queued with them find
/// the keys free. Nobody learns an outcome before the transaction committed.
async fn commit_group(
    conn: &mut SqliteConnection,
    queries: &Queries,
    batch: &[WriteOp],
) -> Vec<Result<Done>> {
    let fail_all = |e: sqlx::Error| {
        let failed = SharedError::new("the group commit failed", e);
        batch.iter().map(|_| Err(failed.to_store())).collect()
    };
    if let [op] = batch {
        // Alone: an autocommit statement, without BEGIN and COMMIT round trips.
        return vec![run_alone(conn, queries, op).await];
    }
    let mut tx = match sqlx::Connection::begin(&mut *conn).await {
        Ok(tx) => tx,
        Err(e) => return fail_all(e),
    };
    let results = match write_group(&mut tx, queries, batch).await {
        Ok(results) => results,
        Err(e) => return fail_all(e),
    };
    match tx.commit().await {
        Ok(()) => results,
        Err(e) => fail_all(e),
    }
}

/// One write on its own, in autocommit.
async fn run_alone(conn: &mut SqliteConnection, queries: &Queries, op: &WriteOp) -> Result<Done> {
    match &op.what {
        Write::Save(save) => {
            let (version, query) = save_query(queries, &op.key, save);
            save_result(&op.key, version, query.execute(&mut *conn).await).map(Done::Saved)
        }
        Write::Lease(lease) => lease_alone(conn, queries, &op.key, lease).await,
    }
}

/// The statements of a group inside its transaction (see [`commit_group`]); an error
/// fails the whole group.
async fn write_group(
    tx: &mut SqliteConnection,
    queries: &Queries,
    batch: &[WriteOp],
) -> std::result::Result<Vec<Result<Done>>, sqlx::Error> {
    let mut results: Vec<Option<Result<Done>>> = batch.iter().map(|_| None).collect();
    let (mut releases, mut renewals, mut takes, mut saves) = (vec![], vec![], vec![], vec![]);
    for (i, op) in batch.iter().enumerate() {
        match &op.what {
            Write::Save(save) => saves.push((i, (op.key.as_str(), save))),
            Write::Lease(lease @ LeaseOp::Release { .. }) => {
                releases.push((i, (op.key.as_str(), lease)));
            }
            Write::Lease(lease @ LeaseOp::Renew { .. }) => {
                renewals.push((i, (op.key.as_str(), lease)));
            }
            Write::Lease(lease @ LeaseOp::Acquire { .. }) => {
                takes.push((i, (op.key.as_str(), lease)));
            }
        }
    }
    if !releases.is_empty() {
        let (at, ops) = split(&releases);
        for (i, done) in at.into_iter().zip(release_many(tx, queries, &ops).await?) {
            results[i] = Some(Ok(done));
        }
    }
    for &(i, (key, op)) in &renewals {
        if let LeaseOp::Renew { token, ttl_ms } = op {
            results[i] = Some(Ok(Done::Held(
                renew(tx, queries, key, token, *ttl_ms).await?,
            )));
        }
    }
    if !takes.is_empty() {
        let (at, ops) = split(&takes);
        for (i, done) in at.into_iter().zip(acquire_many(tx, queries, &ops).await?) {
            results[i] = Some(done);
        }
    }
    let mut seen = HashSet::with_capacity(saves.len());
    if saves.iter().all(|(_, (key, _))| seen.insert(*key)) {
        // Every key once: a few multi-row statements instead of one per save.
        let (at, ops): (Vec<usize>, Vec<(&str, &SaveRow)>) = saves.into_iter().unzip();
        for (i, r) in at.into_iter().zip(write_many(tx, queries, &ops).await?) {
            results[i] = Some(r.map(Done::Saved));
        }
    } else {
        for (i, (key, save)) in saves {
            let (version, query) = save_query(queries, key, save);
            let done = query.execute(&mut *tx).await;
            results[i] = Some(save_result(key, version, done).map(Done::Saved));
        }
    }
    Ok(results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Error::store(
                    BACKEND,
                    Message("a write of the group got no answer".into()),
                ))
            })
        })
        .collect())
}

/// The places in the group and the operations of `ops`, apart.
#[allow(clippy::type_complexity)]
fn split<'a>(ops: &[(usize, (&'a str, &'a LeaseOp))]) -> (Vec<usize>, Vec<(&'a str, &'a LeaseOp)>) {
    ops.iter().copied().unzip()
}

/// Takes the leases of `ops` (all [`LeaseOp::Acquire`]) with one multi-row statement per
/// [`ROWS_PER_STATEMENT`], each reading its key's row in the same statement: the answer
/// of each, in order. A key whose row does not decode gets a store error, and the lease
/// taken for it is given back in the same transaction (the other keys are unaffected).
async fn acquire_many(
    conn: &mut SqliteConnection,
    queries: &Queries,
    ops: &[(&str, &LeaseOp)],
) -> std::result::Result<Vec<Result<Done>>, sqlx::Error> {
    let now = wall_ms();
    let mut taken = HashMap::with_capacity(ops.len());
    for chunk in ops.chunks(ROWS_PER_STATEMENT) {
        // Padded to a power of two by repeating the last row, so that a handful of
        // statement texts serve every group size (sqlx caches them). A repeated row
        // changes nothing: it meets the lease its first copy just took (or found), which
        // is live (the TTL is at least 1 ms), so it is neither written nor returned.
        let rows = chunk.len().next_power_of_two();
        let text = queries.acquire_leases(rows);
        let mut q = sqlx::query(&text);
        let padding = std::iter::repeat_n(chunk[chunk.len() - 1], rows - chunk.len());
        for (key, op) in chunk.iter().copied().chain(padding) {
            let (token, ttl_ms) = match op {
                LeaseOp::Acquire { token, ttl_ms, .. } => (token.as_str(), (*ttl_ms).max(1)),
                // Not a take: a row no answer is looked up for.
                _ => ("", 1),
            };
            q = q.bind(key).bind(token).bind(now.saturating_add(ttl_ms));
        }
        q = q.bind(now);
        for row in q.fetch_all(&mut *conn).await? {
            let token: String = row.try_get(0)?;
            taken.insert(token, decode_leased(&row));
        }
    }
    let mut answers = Vec::with_capacity(ops.len());
    let mut undo = Vec::new();
    for &(key, op) in ops {
        let LeaseOp::Acquire { token, load, .. } = op else {
            answers.push(Ok(Done::Busy));
            continue;
        };
        answers.push(match taken.remove(token) {
            None => Ok(Done::Busy),
            Some(Ok(row)) => Ok(Done::Taken(row.filter(|_| *load))),
            Some(Err(_)) if !load => Ok(Done::Taken(None)),
            Some(Err(e)) => {
                undo.push((
                    key,
                    LeaseOp::Release {
                        token: token.clone(),
                    },
                ));
                Err(Error::store(BACKEND, e))
            }
        });
    }
    if !undo.is_empty() {
        let undo: Vec<(&str, &LeaseOp)> = undo.iter().map(|(k, op)| (*k, op)).collect();
        release_many(conn, queries, &undo).await?;
    }
    Ok(answers)
}

/// The key's row read with a lease (its data, version and expiry after the token;
/// `NULL`s when the key has no record).
fn decode_leased(row: &SqliteRow) -> std::result::Result<Option<Row3>, sqlx::Error> {
    let data: Option<Vec<u8>> = row.try_get(1)?;
    let version: Option<i64> = row.try_get(2)?;
    let expires_at: Option<i64> = row.try_get(3)?;
    Ok(data.zip(version).map(|(d, v)| (d, v, expires_at)))
}

/// Releases the leases of `ops` (all [`LeaseOp::Release`]) with one multi-row statement
/// per [`ROWS_PER_STATEMENT`]: whether each was still held with its token, in order.
async fn release_many(
    conn: &mut SqliteConnection,
    queries: &Queries,
    ops: &[(&str, &LeaseOp)],
) -> std::result::Result<Vec<Done>, sqlx::Error> {
    let token_of = |op: &LeaseOp| match op {
        LeaseOp::Release { token } => Some(token.clone()),
        _ => None,
    };
    let mut released = HashSet::with_capacity(ops.len());
    for chunk in ops.chunks(ROWS_PER_STATEMENT) {
        // Padded to a power of two with rows that match nothing (NULLs), so that a
        // handful of statement texts serve every group size.
        let rows = chunk.len().next_power_of_two();
        let text = queries.release_leases(rows);
        let mut q = sqlx::query(&text);
        for &(key, op) in chunk {
            q = q.bind(key).bind(token_of(op));
        }
        for _ in chunk.len()..rows {
            q = q.bind(None::<&str>).bind(None::<String>);
        }
        for row in q.fetch_all(&mut *conn).await? {
            released.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(ops
        .iter()
        .map(|(_, op)| Done::Held(token_of(op).is_some_and(|t| released.contains(&t))))
        .collect())
}

/// Extends the lease of `key` held with `token` to `ttl_ms` from now, if it is live.
async fn renew(
    conn: &mut SqliteConnection,
    queries: &Queries,
    key: &str,
    token: &str,
    ttl_ms: i64,
) -> std::result::Result<bool, sqlx::Error> {
    let now = wall_ms();
    let done = sqlx::query(&queries.lease_renew)
        .bind(key)
        .bind(token)
        .bind(now.saturating_add(ttl_ms))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Rows per multi-row statement (7 parameters a row, far below SQLite's 32,766).
const ROWS_PER_STATEMENT: usize = 256;

/// Writes the saves of `batch` (distinct keys) with one multi-row compare-and-set
/// statement per [`ROWS_PER_STATEMENT`] updates and per as many inserts; the keys each
/// statement really wrote come back through `RETURNING`, the others are conflicts.
async fn write_many(
    tx: &mut SqliteConnection,
    queries: &Queries,
    batch: &[(&str, &SaveRow)],
) -> std::result::Result<Vec<Result<Version>>, sqlx::Error> {
    let versions: Vec<Version> = batch
        .iter()
        .map(|(_, op)| op.expected.map_or_else(Version::initial, Version::next))
        .collect();
    let mut written = HashSet::with_capacity(batch.len());
    let updates: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].1.expected.is_some())
        .collect();
    let inserts: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].1.expected.is_none())
        .collect();
    for chunk in updates.chunks(ROWS_PER_STATEMENT) {
        // Padded to a power of two with rows that match nothing (a NULL key), so that
        // a handful of statement texts serve every group size (sqlx caches them).
        let rows = chunk.len().next_power_of_two();
        let text = queries.update_rows(rows);
        let mut q = sqlx::query(&text);
        for &i in chunk {
            let (key, op) = batch[i];
            q = q
                .bind(key)
                .bind(op.bytes.as_slice())
                .bind(sql::version_param(versions[i]))
                .bind(op.expires_at)
                .bind(op.expected.map(sql::version_param))
                .bind(op.now)
                .bind(op.due);
        }
        for _ in chunk.len()..rows {
            q = q
                .bind(None::<&str>)
                .bind(None::<&[u8]>)
                .bind(None::<i64>)
                .bind(None::<i64>)
                .bind(None::<i64>)
                .bind(None::<i64>)
                .bind(None::<bool>);
        }
        for row in q.fetch_all(&mut *tx).await? {
            written.insert(row.try_get::<String, _>(0)?);
        }
    }
    for chunk in inserts.chunks(ROWS_PER_STATEMENT) {
        let text = queries.insert_rows(chunk.len());
        let mut q = sqlx::query(&text);
        for &i in chunk {
            let (key, op) = batch[i];
            q = q
                .bind(key)
                .bind(op.bytes.as_slice())
                .bind(sql::version_param(versions[i]))
                .bind(op.expires_at)
                .bind(op.due);
        }
        // A row in the way counts as absent only if it expired before every save here.
        let now = chunk.iter().map(|&i| batch[i].1.now).min().unwrap_or(0);
        q = q.bind(now);
        for row in q.fetch_all(&mut *tx).await? {
            written.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(batch
        .iter()
        .zip(versions)
        .map(|(&(key, _), version)| {
            if written.contains(key) {
                Ok(version)
            } else {
                Err(Error::Conflict {
                    key: key.to_owned(),
                })
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use super::*;
    use crate::store::SessionStore;

    fn op(key: &str, bytes: &[u8], expected: Option<Version>, now: i64) -> WriteOp {
        let save = SaveRow {
            bytes: bytes.to_vec(),
            expected,
            now,
            expires_at: None,
            due: None,
        };
        WriteOp {
            key: key.to_owned(),
            what: Write::Save(save),
            reply: oneshot::channel().0,
        }
    }

    fn lease_op(key: &str, op: LeaseOp) -> WriteOp {
        WriteOp {
            key: key.to_owned(),
            what: Write::Lease(op),
            reply: oneshot::channel().0,
        }
    }

    /// The version a save of a group wrote.
    fn saved(result: &Result<Done>) -> Version {
        match result {
            Ok(Done::Saved(v)) => *v,
            other => panic!("not a save: {other:?}"),
        }
    }

    /// One group with distinct keys goes through the multi-row statements: each save
    /// wins or conflicts as it would alone.
    #[tokio::test]
    async fn a_group_of_distinct_keys_is_written_by_multi_row_statements() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let now = store.table.now();
        let v_a = store.save("a", b"a0", None).await.unwrap();
        let v_b = store.save("b", b"b0", None).await.unwrap();
        store.save("b", b"b1", Some(v_b)).await.unwrap();
        store.save("d", b"d0", None).await.unwrap();
        // 300 more fresh keys: the updates and inserts span more than one statement.
        let mut batch = vec![
            op("a", b"a1", Some(v_a), now), // right version: wins
            op("b", b"b2", Some(v_b), now), // stale version: conflict
            op("c", b"c0", None, now),      // new key: wins
            op("d", b"d1", None, now),      // insert over a live record: conflict
            op("e", b"e1", Some(v_a), now), // update of a missing key: conflict
        ];
        for i in 0..300 {
            batch.push(op(&format!("n{i}"), b"n", None, now));
        }
        let mut conn = store.pool.acquire().await.unwrap();
        let results = commit_group(&mut conn, store.table.queries(), &batch).await;
        drop(conn);
        assert!(results[0].is_ok());
        assert!(results[1].as_ref().unwrap_err().is_conflict());
        assert!(results[2].is_ok());
        assert!(results[3].as_ref().unwrap_err().is_conflict());
        assert!(results[4].as_ref().unwrap_err().is_conflict());
        assert!(results[5..].iter().all(Result::is_ok));
        let loaded = |k: &'static str| {
            let store = store.clone();
            async move { store.load(k).await.unwrap().map(|l| (l.bytes, l.version)) }
        };
        assert_eq!(
            loaded("a").await,
            Some((b"a1".to_vec(), saved(&results[0])))
        );
        assert_eq!(loaded("b").await.unwrap().0, b"b1");
        assert_eq!(
            loaded("c").await,
            Some((b"c0".to_vec(), saved(&results[2])))
        );
        assert_eq!(loaded("d").await.unwrap().0, b"d0");
        assert_eq!(loaded("e").await, None);
        assert_eq!(store.load("n299").await.unwrap().unwrap().bytes, b"n");
    }

    /// An idle store holds no connection: closing its pool does not wait for the writer.
    #[tokio::test]
    async fn an_idle_store_holds_no_connection_and_closes() {
        let dir = std::env::temp_dir().join(format!("stagecraft-close-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(dir.join("close.db")).await.unwrap();
        let mut version = None;
        for i in 0..20 {
            version = Some(
                store
                    .save("k", format!("{i}").as_bytes(), version)
                    .await
                    .unwrap(),
            );
        }
        // Give connections back from the writer's last group (returned by a spawned task).
        let pool = store.pool();
        for _ in 0..200 {
            if pool.num_idle() == pool.size() as usize {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            pool.num_idle(),
            pool.size() as usize,
            "an idle store keeps a connection checked out"
        );
        let closed = tokio::time::timeout(Duration::from_secs(10), store.pool().close()).await;
        assert!(
            closed.is_ok(),
            "close() waited for a connection the writer kept"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Lease takes, releases and renewals join the saves of a group: of two takes of one
    /// key one wins, a take reads the record as the transaction sees it, a release with
    /// another token does nothing, and the one with the right token frees the key for a
    /// take in the same group.
    #[tokio::test]
    async fn lease_operations_join_a_group() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let now = store.table.now();
        let v = store.save("a", b"a0", None).await.unwrap();
        let take = |token: &str| LeaseOp::Acquire {
            token: token.to_owned(),
            ttl_ms: 60_000,
            load: true,
        };
        let release = |token: &str| LeaseOp::Release {
            token: token.to_owned(),
        };
        let mut conn = store.pool.acquire().await.unwrap();
        let held = lease_alone(&mut conn, store.table.queries(), "h", &take("h1")).await;
        assert!(matches!(held, Ok(Done::Taken(None))), "{held:?}");
        let batch = vec![
            lease_op("a", take("t1")),
            lease_op("a", take("t2")),
            op("b", b"b0", None, now),
            lease_op("h", take("h2")),
            lease_op("h", release("not-h1")),
            lease_op("h", release("h1")),
            lease_op(
                "a",
                LeaseOp::Renew {
                    token: "t9".into(),
                    ttl_ms: 1,
                },
            ),
        ];
        let results = commit_group(&mut conn, store.table.queries(), &batch).await;
        let results: Vec<Done> = results.into_iter().map(Result::unwrap).collect();
        match (&results[0], &results[1]) {
            (Done::Taken(Some((bytes, version, None))), Done::Busy)
            | (Done::Busy, Done::Taken(Some((bytes, version, None)))) => {
                assert_eq!(bytes, b"a0");
                assert_eq!(*version, sql::version_param(v));
            }
            other => panic!("two takes of one key: {other:?}"),
        }
        assert!(matches!(results[2], Done::Saved(_)), "{:?}", results[2]);
        // Released first in the group, so the take of `h` finds it free.
        assert!(matches!(results[3], Done::Taken(None)), "{:?}", results[3]);
        assert!(matches!(results[4], Done::Held(false)), "{:?}", results[4]);
        assert!(matches!(results[5], Done::Held(true)), "{:?}", results[5]);
        assert!(matches!(results[6], Done::Held(false)), "{:?}", results[6]);
    }

    /// A group where one key appears twice is written statement by statement, in order.
    #[tokio::test]
    async fn a_group_with_a_repeated_key_is_written_in_order() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let now = store.table.now();
        let v = store.save("a", b"a0", None).await.unwrap();
        let batch = vec![
            op("a", b"a1", Some(v), now),
            op("a", b"a2", Some(v.next()), now),
            op("b", b"b0", None, now),
        ];
        let mut conn = store.pool.acquire().await.unwrap();
        let results = commit_group(&mut conn, store.table.queries(), &batch).await;
        drop(conn);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(store.load("a").await.unwrap().unwrap().bytes, b"a2");
    }

    /// A failed group gives each of its saves an `Error::Store` whose sources lead to the
    /// sqlx error, not a copy of its text.
    #[tokio::test]
    async fn a_failed_group_keeps_the_sqlx_error_as_the_source() {
        use crate::store::sql::Statements;
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let missing = Queries::render("no_such_table");
        let now = store.table.now();
        let batch = vec![op("a", b"a", None, now), op("b", b"b", None, now)];
        let mut conn = store.pool.acquire().await.unwrap();
        let results = commit_group(&mut conn, &missing, &batch).await;
        assert_eq!(results.len(), 2);
        for result in results {
            let e = result.unwrap_err();
            assert!(e.is_store(), "{e:?}");
            let shared = std::error::Error::source(&e).expect("a source");
            assert_eq!(shared.to_string(), "the group commit failed");
            let cause = shared.source().expect("the sqlx error");
            assert!(cause.downcast_ref::<sqlx::Error>().is_some(), "{cause:?}");
        }
    }
}
