//! The SQLite store's inline path: statements run on the caller's own thread, on a
//! connection of their own, and never wait.
//!
//! sqlx runs every SQLite statement on a worker thread of its connection, so each one
//! costs two thread hand-offs; for one chat whose updates come one after another, those
//! hops are most of an update's time. [`Inline`] holds a second connection to the same
//! file (rusqlite, on the same libsqlite3) with `busy_timeout = 0`: a statement either
//! runs at once, in microseconds, or meets a lock (another connection, or another process
//! on the file, is writing) and is handed back untouched (`None`) to the pooled path,
//! which waits its busy timeout. The statements are the store's own, so both paths
//! write the same rows with the same compare-and-set conditions, and SQLite orders them.
//!
//! The connection never checkpoints the WAL itself (a checkpoint syncs the database
//! file); every [`CHECKPOINT_EVERY`] commits it asks a checkpointer thread, with a
//! connection of its own, to checkpoint it: a passive checkpoint copies the pages
//! without stopping anyone, then a restarting one copies the few pages written
//! meanwhile and lets the next writer start the WAL from its beginning (a passive
//! checkpoint alone never catches up with a writer that keeps committing, and the WAL
//! would grow without end). While the second one runs, for a few milliseconds, inline
//! writes meet its lock and take the pooled path.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::BACKEND;
use super::batch::{Done, LeaseOp, wall_ms};
use super::queries::Queries;
use crate::error::{Error, Result};
use crate::store::Version;
use crate::store::sql::{Row3, SaveArgs, version_param};

/// Commits on the inline connection between two requests for a checkpoint (a commit of
/// one update writes two or three pages, so the WAL stays near SQLite's own default of
/// 1,000 pages before a checkpoint).
const CHECKPOINT_EVERY: u32 = 300;

/// How long the checkpointer's connection waits for a lock. A restarting checkpoint keeps
/// writers out while it waits for readers, so it gives up soon, and tries again at the
/// next request.
const CHECKPOINTER_BUSY_TIMEOUT: Duration = Duration::from_millis(50);

/// The inline connection of one store, and the channel to its checkpointer thread.
#[derive(Debug)]
pub(super) struct Inline {
    conn: Mutex<Conn>,
    /// Calls of [`alone`](Self::alone), to see whether another one came during a yield.
    arrivals: AtomicU64,
    checkpoints: mpsc::SyncSender<()>,
}

#[derive(Debug)]
struct Conn {
    conn: Connection,
    commits: u32,
}

/// What an inline attempt gives: `None` when it could not run now (the connection is in
/// use on another thread, or SQLite is locked), and the caller takes the pooled path;
/// else the result, errors included.
pub(super) type Attempt<T> = Option<Result<T>>;

fn db_err(e: rusqlite::Error) -> Error {
    Error::store(BACKEND, e)
}

/// A lock in the way: the statement did nothing, and runs again on the pooled path.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

impl Inline {
    /// Opens the inline connection to the database file at `path` (already created, in
    /// WAL mode, and migrated), with `synchronous = NORMAL`, and starts its
    /// checkpointer thread.
    ///
    /// # Errors
    /// [`Error::Store`] when the file cannot be opened or the thread cannot start.
    pub(super) fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(db_err)?;
        conn.busy_timeout(Duration::ZERO).map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(db_err)?;
        conn.set_prepared_statement_cache_capacity(32);
        let (checkpoints, rx) = mpsc::sync_channel(1);
        let file = path.to_path_buf();
        std::thread::Builder::new()
            .name("stagecraft-sqlite-checkpoint".into())
            .spawn(move || checkpointer(&file, &rx))
            .map_err(|e| Error::store(BACKEND, e))?;
        Ok(Self {
            conn: Mutex::new(Conn { conn, commits: 0 }),
            arrivals: AtomicU64::new(0),
            checkpoints,
        })
    }

    /// Whether this call is alone at the store: it yields once to the runtime, and no
    /// other call arrived meanwhile. Calls that come together (many chats in flight)
    /// then go to the group-commit writer, which writes them in one transaction; a call
    /// alone (one chat at a time) runs inline.
    pub(super) async fn alone(&self) -> bool {
        let mine = self
            .arrivals
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        tokio::task::yield_now().await;
        self.arrivals.load(Ordering::Relaxed) == mine
    }

    /// Runs `f` on the connection if it is free and nothing is locked.
    fn attempt<T>(&self, f: impl FnOnce(&mut Conn) -> rusqlite::Result<T>) -> Attempt<T> {
        let mut conn = self.conn.try_lock().ok()?;
        match f(&mut conn) {
            Ok(done) => Some(Ok(done)),
            Err(e) if is_busy(&e) => None,
            Err(e) => Some(Err(db_err(e))),
        }
    }

    /// The row of `key` as stored.
    pub(super) fn load(&self, q: &Queries, key: &str) -> Attempt<Option<Row3>> {
        self.attempt(|c| {
            c.conn
                .prepare_cached(&q.load)?
                .query_row([key], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional()
        })
    }

    /// A compare-and-set save (an insert when `save.expected` is `None`).
    pub(super) fn save(&self, q: &Queries, save: SaveArgs<'_>) -> Attempt<Version> {
        let written = self.attempt(|c| {
            let written = save_row(&c.conn, q, save)?;
            if written.is_some() {
                c.committed(&self.checkpoints);
            }
            Ok(written)
        })?;
        Some(written.and_then(|v| v.ok_or_else(|| conflict(save.key))))
    }

    /// A compare-and-set save and, once it is written, the release of the lease held
    /// with `token`, in one transaction. A conflict writes nothing and keeps the lease.
    pub(super) fn save_releasing(
        &self,
        q: &Queries,
        save: SaveArgs<'_>,
        token: &str,
    ) -> Attempt<Version> {
        let written = self.attempt(|c| {
            let tx = c
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(version) = save_row(&tx, q, save)? else {
                return Ok(None);
            };
            release(&tx, q, save.key, token)?;
            tx.commit()?;
            c.committed(&self.checkpoints);
            Ok(Some(version))
        })?;
        Some(written.and_then(|v| v.ok_or_else(|| conflict(save.key))))
    }

    /// A lease operation, timed by the wall clock now.
    pub(super) fn lease(&self, q: &Queries, key: &str, op: &LeaseOp) -> Attempt<Done> {
        let now = wall_ms();
        let done = self.attempt(|c| {
            let done = match op {
                LeaseOp::Acquire {
                    token,
                    ttl_ms,
                    load,
                } => {
                    // The take and the read in one write transaction: the read sees
                    // every commit made before the lease was taken, by any process.
                    let tx = c
                        .conn
                        .transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let expires = now.saturating_add((*ttl_ms).max(1));
                    let taken = tx
                        .prepare_cached(&q.lease_take)?
                        .execute(rusqlite::params![key, token, expires, now])?;
                    if taken == 0 {
                        // A live lease is in the way; nothing was written.
                        return Ok(Ok(Done::Busy));
                    }
                    let row = if *load {
                        tx.prepare_cached(&q.load)?
                            .query_row([key], |row| Ok((row.get(0), row.get(1), row.get(2))))
                            .optional()?
                    } else {
                        None
                    };
                    tx.commit()?;
                    match row {
                        None => Ok(Done::Taken(None)),
                        Some((Ok(data), Ok(version), Ok(expires_at))) => {
                            Ok(Done::Taken(Some((data, version, expires_at))))
                        }
                        Some((Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e))) => Err((token, e)),
                    }
                }
                LeaseOp::Renew { token, ttl_ms } => {
                    let renewed =
                        c.conn
                            .prepare_cached(&q.lease_renew)?
                            .execute(rusqlite::params![
                                key,
                                token,
                                now.saturating_add(*ttl_ms),
                                now
                            ])?;
                    Ok(Done::Held(renewed == 1))
                }
                LeaseOp::Release { token } => Ok(Done::Held(release(&c.conn, q, key, token)?)),
            };
            c.committed(&self.checkpoints);
            Ok(done)
        })?;
        Some(done.and_then(|done| match done {
            Ok(done) => Ok(done),
            // Taken, but the row does not decode: give the lease back (it is not handed
            // out, and would block the key until it expires).
            Err((token, e)) => {
                let undo = LeaseOp::Release {
                    token: token.clone(),
                };
                if let Some(Err(failed)) = self.lease(q, key, &undo) {
                    tracing::debug!(error = %failed, "could not give back a lease");
                }
                Err(db_err(e))
            }
        }))
    }
}

impl Conn {
    /// Counts a commit, and asks for a checkpoint every [`CHECKPOINT_EVERY`] of them.
    fn committed(&mut self, checkpoints: &mpsc::SyncSender<()>) {
        self.commits += 1;
        if self.commits >= CHECKPOINT_EVERY {
            self.commits = 0;
            // Full: a request is already waiting.
            let _ = checkpoints.try_send(());
        }
    }
}

fn conflict(key: &str) -> Error {
    Error::Conflict {
        key: key.to_owned(),
    }
}

/// Runs the compare-and-set statement of one save: the version written, or `None` when
/// the stored version is not the expected one.
fn save_row(
    conn: &Connection,
    q: &Queries,
    save: SaveArgs<'_>,
) -> rusqlite::Result<Option<Version>> {
    let SaveArgs {
        key,
        bytes,
        expected,
        now,
        expires_at,
        due,
    } = save;
    let (version, changed) = match expected {
        None => {
            let version = Version::initial();
            let changed = conn.prepare_cached(&q.insert)?.execute(rusqlite::params![
                key,
                bytes,
                version_param(version),
                expires_at,
                now,
                due
            ])?;
            (version, changed)
        }
        Some(expected) => {
            let version = expected.next();
            let changed = conn.prepare_cached(&q.update)?.execute(rusqlite::params![
                bytes,
                version_param(version),
                expires_at,
                key,
                version_param(expected),
                now,
                due
            ])?;
            (version, changed)
        }
    };
    Ok((changed == 1).then_some(version))
}

/// Releases the lease of `key` held with `token`: whether it was still held with it.
fn release(conn: &Connection, q: &Queries, key: &str, token: &str) -> rusqlite::Result<bool> {
    let released = conn
        .prepare_cached(&q.lease_release)?
        .execute([key, token])?;
    Ok(released == 1)
}

/// The checkpointer thread: a passive and then a restarting checkpoint of `file` per
/// request, on a connection of its own, until the store is gone.
fn checkpointer(file: &Path, requests: &mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    while requests.recv().is_ok() {
        if conn.is_none() {
            match Connection::open_with_flags(
                file,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .and_then(|c| c.busy_timeout(CHECKPOINTER_BUSY_TIMEOUT).map(|()| c))
            {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "could not open a connection to checkpoint the WAL");
                    continue;
                }
            }
        }
        if let Some(c) = &conn {
            for mode in ["PASSIVE", "RESTART"] {
                let pragma = format!("PRAGMA wal_checkpoint({mode})");
                // One row: whether it was blocked, the WAL's frames, the frames copied.
                let done = c.query_row(&pragma, [], |row| row.get::<_, i64>(0));
                match done {
                    Ok(0) => {}
                    Ok(_) => tracing::debug!(mode, "a WAL checkpoint was blocked"),
                    Err(e) => tracing::debug!(mode, error = %e, "a WAL checkpoint failed"),
                }
            }
        }
    }
}
