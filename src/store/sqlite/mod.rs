//! [`SqliteStore`]: an embedded store on sqlx's SQLite driver.
//!
//! This file holds the options, the store and its trait impls; `batch` the grouped
//! reader and the group-commit writer; `queries` all of its SQL.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sql::{self, DEFAULT_TABLE, Rows, SqlTable};
use super::{
    Lease, LeaseAttempt, LeaseStore, ListFilter, PendingIndex, Preload, PurgeExpired, Record,
    SessionStore, Version,
};
use crate::clock::Clock;
use crate::error::{Error, Result};

mod batch;
mod inline;
mod queries;

use batch::{Done, Grouped, LeaseOp};
use inline::Inline;
use queries::{Queries, SaveRow};

const BACKEND: &str = "sqlite";

fn db_err(e: sqlx::Error) -> Error {
    Error::store(BACKEND, e)
}

/// A save's result from the rows its statement changed.
fn save_result(
    key: &str,
    version: Version,
    done: std::result::Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>,
) -> Result<Version> {
    sql::save_result(BACKEND, key, version, done)
}

/// How hard SQLite works to keep a commit through a power loss (`PRAGMA synchronous`).
///
/// In WAL mode (which [`SqliteStore::open`] turns on), [`Durability::Normal`] never
/// corrupts the database, but the last commits before an operating-system crash or power
/// loss may be rolled back; a process crash loses nothing. [`Durability::Full`] syncs the
/// WAL on every commit, so a commit survives a power loss too, at the cost of one `fsync`
/// per saved session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = NORMAL` (the default): fast; a power loss may lose the last commits.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is on disk before `save` returns.
    Full,
}

/// Options for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteOptions {
    durability: Durability,
    busy_timeout: Duration,
    max_connections: u32,
    table: String,
    group_commit: bool,
    leases: bool,
    inline: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(5),
            max_connections: 8,
            table: DEFAULT_TABLE.to_owned(),
            group_commit: true,
            leases: true,
            inline: true,
        }
    }
}

impl SqliteOptions {
    /// The default options: [`Durability::Normal`], a 5 s busy timeout, 8 connections,
    /// table `stagecraft_sessions`, group commit, statements on the caller's thread and
    /// per-key leases on.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `PRAGMA synchronous` (see [`Durability`]).
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long a write waits for another connection's write lock before failing.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The size of the connection pool (at least 1; in-memory databases always use 1).
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The table to keep sessions in (validated when the store opens).
    #[must_use]
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Group commit (on by default): saves that arrive while a commit is under way are
    /// written together in the next transaction, each still its own compare-and-set
    /// statement with its own result. Every `save` returns only after its transaction
    /// committed. It multiplies write throughput when many chats are in flight; a single
    /// chat sees no difference.
    #[must_use]
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// Statements on the caller's thread (on by default, for a database file with
    /// [`Durability::Normal`]): a second connection, which never waits for a lock, runs
    /// a load, a save or a lease statement at once on the thread that asks for it,
    /// instead of handing it to sqlx's worker thread and back. A statement that meets
    /// a lock (another process, or the pool, is writing), and calls that arrive together
    /// (many chats in flight: group commit writes them), take the pooled path as
    /// before. The results are the same either way: the statements, and their
    /// compare-and-set conditions, are the same. It makes one chat's updates, one after
    /// another, about twice as fast and more (see `docs/performance.md`).
    ///
    /// With [`Durability::Full`] it is off: each commit then waits for an `fsync`,
    /// which must not block the caller's thread. In-memory databases never use it.
    #[must_use]
    pub fn inline(mut self, on: bool) -> Self {
        self.inline = on;
        self
    }

    /// Per-key leases (on by default, see [`SqliteStore::with_leases`]): pipelines on the
    /// store take a key's lease before loading its session, so every process using the
    /// file handles the updates of one key one at a time. Turn them off only when a
    /// single process ever opens the file: then compare-and-set alone is enough, and
    /// updates cost fewer writes.
    #[must_use]
    pub fn leases(mut self, on: bool) -> Self {
        self.leases = on;
        self
    }
}

/// A session store in an SQLite database (feature `sqlite`, on by default).
///
/// One row per session in a table (default `stagecraft_sessions`) with a `version`
/// column; [`save`](SessionStore::save) and [`delete`](SessionStore::delete) are single
/// conditional statements, so several pools, or several processes, on one database file
/// are safe.
///
/// Per-key leases (on by default, see [`with_leases`](Self::with_leases)) live in the
/// table `{table}_lease` of the same file, one row per leased key with its holder's
/// token and its expiry by the wall clock; every process on the file sees them, so a
/// pipeline on each handles the updates of one key one at a time. A lease is taken
/// with one `INSERT … ON CONFLICT DO UPDATE … RETURNING` statement that reads the key's
/// record too; with group commit, takes, renewals and releases join the saves in the
/// writer's transactions. A call that comes alone (one chat at a time) runs on the
/// caller's thread instead, on a connection that never waits, and falls back to the
/// pool when it meets a lock (see [`SqliteOptions::inline`]).
/// [`list`](SessionStore::list) compares key prefixes with `substr`, so `%` and `_` in a
/// prefix are literal.
///
/// With a TTL ([`with_ttl`](Self::with_ttl)), a record expires `ttl` after its last save:
/// its `expires_at` column (milliseconds since the epoch, read from the store's
/// [`Clock`]) is then past, and the row is invisible to `load` and `list` and treated as
/// absent by `save` and `delete`. Expired rows are removed lazily (when `load` meets
/// one, or a new record overwrites it) and by [`purge_expired`](Self::purge_expired),
/// which a bot should call now and then (e.g. hourly) to reclaim the space of sessions
/// that never come back.
///
/// ```
/// use stagecraft::store::{SessionStore, SqliteStore};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // A file path ("bot.db") in a real bot.
/// let store = SqliteStore::open("sqlite::memory:").await?;
/// let v1 = store.save("chat:1", b"{}", None).await?;
/// assert_eq!(store.load("chat:1").await?.unwrap().version, v1);
/// # Ok::<_, stagecraft::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    table: SqlTable<Queries>,
    /// The grouped reader and the group-commit writer, when group commit is on.
    grouped: Option<Grouped>,
    /// Whether [`SessionStore::leases`] hands the leases out.
    leases: bool,
    /// The connection that runs statements on the caller's thread, when it is on.
    inline: Option<Arc<Inline>>,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database file at `path` with the default
    /// [`SqliteOptions`], and creates the table. `"sqlite::memory:"` or `":memory:"`
    /// opens a private in-memory database (for tests); an `sqlite:` URL is accepted too.
    ///
    /// The file is put in WAL mode with `synchronous = NORMAL` and a 5 s busy timeout.
    /// Besides the pool, a connection that never waits runs the statements of calls
    /// that come alone on the caller's thread (see [`SqliteOptions::inline`]).
    ///
    /// # Errors
    /// [`Error::Store`] when the file cannot be opened or the table cannot be created.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Like [`open`](Self::open), with options.
    ///
    /// ```no_run
    /// use stagecraft::store::{Durability, SqliteOptions, SqliteStore};
    /// # async fn f() -> stagecraft::Result<()> {
    /// let options = SqliteOptions::new().durability(Durability::Full).table("bot_sessions");
    /// let store = SqliteStore::open_with("bot.db", options).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid table name; [`Error::Store`] when the file cannot
    /// be opened or the table cannot be created.
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        sql::validate_table(&options.table)?;
        let path = path.as_ref();
        let text = path.to_str().unwrap_or_default();
        let memory = matches!(text, ":memory:" | "sqlite::memory:" | "sqlite://:memory:")
            || (text.starts_with("sqlite:") && text.contains("mode=memory"));
        let connect = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(db_err)?
        } else if text.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(text)
                .map_err(db_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
        } else {
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
        };
        let connect =
            connect
                .busy_timeout(options.busy_timeout)
                .synchronous(match options.durability {
                    Durability::Normal => SqliteSynchronous::Normal,
                    Durability::Full => SqliteSynchronous::Full,
                });
        let file = connect.get_filename().to_path_buf();
        let pool = if memory {
            // One connection that never closes: the database lives as long as it does.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(options.max_connections)
        }
        // A connection to a local file does not go stale: no ping before each checkout
        // (with sqlx's default, every statement would cost a second worker round trip).
        .test_before_acquire(false)
        .connect_with(connect)
        .await
        .map_err(db_err)?;
        let mut store = Self::new(pool)
            .with_table(&options.table)?
            .with_leases(options.leases);
        store.migrate().await?;
        if options.inline && !memory && options.durability == Durability::Normal {
            store.inline = Some(Arc::new(Inline::open(&file)?));
        }
        if options.group_commit {
            store = store.with_group_commit();
        }
        Ok(store)
    }

    /// A store on a pool you configured yourself, using the table `stagecraft_sessions`.
    /// Does no I/O: call [`migrate`](Self::migrate) to create the table.
    #[must_use]
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            table: SqlTable::new(),
            grouped: None,
            leases: true,
            inline: None,
        }
    }

    /// Whether this store hands out per-key leases (default `true`; they live in the
    /// table `{table}_lease`, which [`migrate`](Self::migrate) creates). With `false`,
    /// [`leases`](SessionStore::leases) is `None`, so a pipeline on it takes no leases
    /// and relies on compare-and-set alone: safe only while one process uses the file
    /// (several lose updates to conflicts a few reruns do not resolve). (The store's
    /// [`LeaseStore`] methods, called on it directly, still take leases.)
    #[must_use]
    pub fn with_leases(mut self, on: bool) -> Self {
        self.leases = on;
        self
    }

    /// Turns on group commit (see [`SqliteOptions::group_commit`]): a writer task on the
    /// current Tokio runtime takes the saves, and a reader task answers the loads that
    /// queue up while a query runs with one `IN (...)` query. [`open`](Self::open) does this by default.
    ///
    /// # Panics
    /// Outside a Tokio runtime (it spawns the writer task).
    #[must_use]
    pub fn with_group_commit(mut self) -> Self {
        self.grouped = Some(Grouped::start(&self.pool, self.table.queries()));
        self
    }

    /// Uses the table `table` (`[A-Za-z_][A-Za-z0-9_]{0,62}`). Call
    /// [`migrate`](Self::migrate) afterwards if the table may not exist yet.
    ///
    /// # Errors
    /// [`Error::Config`] when the name is not valid.
    pub fn with_table(mut self, table: &str) -> Result<Self> {
        self.table = self.table.renamed(table)?;
        if self.grouped.take().is_some() {
            // The reader and the writer were started with the old table's queries.
            self = self.with_group_commit();
        }
        Ok(self)
    }

    /// Records expire `ttl` after their last save.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.table = self.table.with_ttl(ttl);
        self
    }

    /// Reads time from `clock` (for TTLs) instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.table = self.table.with_clock(clock);
        self
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The table name.
    #[must_use]
    pub fn table(&self) -> &str {
        self.table.name()
    }

    /// Creates the table, its index and the leases' table (`{table}_lease`) if they do
    /// not exist (idempotent).
    ///
    /// # Errors
    /// [`Error::Store`] when the statements fail.
    #[tracing::instrument(skip_all, fields(table = %self.table()), err)]
    pub async fn migrate(&self) -> Result<()> {
        let q = self.table.queries();
        self.rows()
            .run_all(&[&q.create_table, &q.create_index, &q.create_lease_table])
            .await?;
        // A table made by an earlier version has no `due_at` column yet. Two processes
        // adding it at once: the second finds it there. Replies an earlier layout
        // marked pending (a `pending` column) stay due.
        let has: i64 = sqlx::query_scalar(&q.has_due)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        if has == 0 {
            match sqlx::query(&q.add_due).execute(&self.pool).await {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.message().contains("duplicate column") => {}
                Err(e) => return Err(db_err(e)),
            }
            let old: i64 = sqlx::query_scalar(&q.has_pending)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
            if old > 0 {
                self.rows().run_all(&[&q.carry_pending]).await?;
            }
        }
        self.rows().run_all(&[&q.create_pending_index]).await
    }

    /// Deletes every expired row now and returns how many were deleted (expired
    /// leases, of holders that died, are deleted too, uncounted).
    ///
    /// Expired rows are already invisible; this reclaims their space. Call it
    /// periodically (e.g. hourly from a `tokio::time::interval` task) when a TTL is set.
    /// The same as [`PurgeExpired::purge_expired`], without importing the trait.
    ///
    /// # Errors
    /// [`Error::Store`] when a statement fails.
    #[tracing::instrument(skip_all, fields(table = %self.table()), err)]
    pub async fn purge_expired(&self) -> Result<u64> {
        let q = self.table.queries();
        let purged = self.rows().purge(&q.purge, self.table.now()).await?;
        // Leases expire by the wall clock, whatever clock the records use.
        self.rows().purge(&q.lease_purge, batch::wall_ms()).await?;
        Ok(purged)
    }

    /// Tries once to take `lease` for `ttl`, reading the key's row with it when `load`.
    async fn take_lease(&self, lease: &Lease, ttl: Duration, load: bool) -> Result<Done> {
        let op = LeaseOp::Acquire {
            token: lease.token().to_owned(),
            ttl_ms: sql::ttl_ms(ttl).max(1),
            load,
        };
        self.lease_op(lease.key(), op).await
    }

    /// Runs a lease operation: in the group-commit writer's next transaction, or alone
    /// on a pooled connection.
    async fn lease_op(&self, key: &str, op: LeaseOp) -> Result<Done> {
        if let Some(inline) = self.inline_now().await {
            if let Some(done) = inline.lease(self.table.queries(), key, &op) {
                return done;
            }
        }
        if let Some(grouped) = &self.grouped {
            if let Some(done) = grouped.lease(key, op.clone()).await {
                return done;
            }
            // The writer's runtime is gone: run it directly below.
        }
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        batch::lease_alone(&mut conn, self.table.queries(), key, &op).await
    }

    /// The compare-and-set save of `bytes` to `key`, written now (the store's clock).
    fn save_args<'a>(
        &self,
        key: &'a str,
        bytes: &'a [u8],
        expected: Option<Version>,
        due: Option<i64>,
    ) -> sql::SaveArgs<'a> {
        let now = self.table.now();
        sql::SaveArgs {
            key,
            bytes,
            expected,
            now,
            expires_at: self.table.expires_at(now),
            due,
        }
    }

    /// The inline connection, when this call should run on it: always when there is no
    /// group-commit writer; else when no call waits for the writer or the grouped
    /// reader, and the call is alone (see [`Inline::alone`]).
    async fn inline_now(&self) -> Option<&Inline> {
        let inline = self.inline.as_deref()?;
        if let Some(grouped) = &self.grouped {
            if grouped.busy() || !inline.alone().await {
                return None;
            }
        }
        Some(inline)
    }

    fn rows(&self) -> Rows<'_, sqlx::Sqlite> {
        Rows::new(&self.pool, BACKEND)
    }

    /// A compare-and-set save, putting the row in the index of due work at `due` or
    /// taking it out (`None`): in the group-commit writer's next transaction, or alone.
    async fn write(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
    ) -> Result<Version> {
        let args = self.save_args(key, bytes, expected, due);
        if let Some(inline) = self.inline_now().await {
            if let Some(result) = inline.save(self.table.queries(), args) {
                return result;
            }
        }
        if let Some(grouped) = &self.grouped {
            if let Some(result) = grouped.write(key, SaveRow::from(args)).await {
                return result;
            }
            // The writer's runtime is gone: write directly below.
        }
        let row = SaveRow::from(args);
        let (version, query) = self.table.queries().save(key, &row);
        save_result(key, version, query.execute(&self.pool).await)
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    fn cache_hint(&self) -> Option<crate::store::CacheHint> {
        self.table.cache_hint(true)
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn load(&self, key: &str) -> Result<Option<Record>> {
        let now = self.table.now();
        let q = self.table.queries();
        // Inline, else by the grouped reader, else alone on a pooled connection.
        let mut read = match self.inline_now().await {
            Some(inline) => inline.load(q, key),
            None => None,
        };
        if let (None, Some(grouped)) = (&read, &self.grouped) {
            read = grouped.read(key).await;
        }
        let row = match read {
            Some(row) => row?,
            None => self.rows().fetch_row(&q.load, key).await?,
        };
        self.rows()
            .live_record(&q.delete_expired, key, row, now)
            .await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>) -> Result<Version> {
        self.write(key, bytes, expected, None).await
    }

    /// Inline, the save and the release are one transaction (one commit); else the save
    /// and then the release, as the default does.
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save_releasing(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
        lease: &Lease,
    ) -> Result<Version> {
        if self.leases {
            if let Some(inline) = self.inline_now().await {
                let args = self.save_args(key, bytes, expected, due);
                let q = self.table.queries();
                if let Some(done) = inline.save_releasing(q, args, lease.token()) {
                    return done;
                }
            }
        }
        super::save_then_release(self, self.leases(), key, bytes, expected, due, lease).await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete(&self, key: &str, expected: Version) -> Result<()> {
        let q = self.table.queries();
        self.rows()
            .delete_row(
                &q.delete,
                &q.current_version,
                key,
                expected,
                self.table.now(),
            )
            .await
    }

    #[tracing::instrument(skip_all, fields(prefix = %filter.prefix), err(level = "debug"))]
    async fn list(&self, filter: &ListFilter) -> Result<Vec<String>> {
        let q = self.table.queries();
        self.rows()
            .list_keys(&q.list, &filter.prefix, self.table.now(), filter.limit)
            .await
    }

    fn pending(&self) -> Option<&dyn PendingIndex> {
        Some(self)
    }

    fn leases(&self) -> Option<&dyn LeaseStore> {
        self.leases.then_some(self as &dyn LeaseStore)
    }

    fn purge(&self) -> Option<&dyn PurgeExpired> {
        Some(self)
    }
}

#[async_trait]
impl PurgeExpired for SqliteStore {
    async fn purge_expired(&self) -> Result<u64> {
        SqliteStore::purge_expired(self).await
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease(&self, key: &str, ttl: Duration) -> Result<LeaseAttempt> {
        let lease = Lease::generate(key);
        match self.take_lease(&lease, ttl, false).await? {
            Done::Taken(_) => Ok(LeaseAttempt::Acquired(lease)),
            Done::Busy => Ok(LeaseAttempt::Busy),
            other => Err(batch::unexpected(&other)),
        }
    }

    /// Takes the lease and reads the record in one statement (`RETURNING` reads the
    /// key's row), inside the write transaction that takes the lease: it sees every
    /// commit made before, by any process on the file.
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease_and_load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<(LeaseAttempt, Preload)> {
        let now = self.table.now();
        let lease = Lease::generate(key);
        let row = match self.take_lease(&lease, ttl, true).await? {
            Done::Taken(row) => row,
            Done::Busy => return Ok((LeaseAttempt::Busy, Preload::NotRead)),
            other => return Err(batch::unexpected(&other)),
        };
        // Taken: a failure from here on gives the lease back (it is not handed out, and
        // would block the key until it expires).
        let q = self.table.queries();
        match self
            .rows()
            .live_record(&q.delete_expired, key, row, now)
            .await
        {
            Ok(record) => Ok((LeaseAttempt::Acquired(lease), Preload::Read(record))),
            Err(e) => {
                let _ = self.release_lease(&lease).await;
                Err(e)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let op = LeaseOp::Renew {
            token: lease.token().to_owned(),
            ttl_ms: sql::ttl_ms(ttl).max(1),
        };
        self.lease_op(lease.key(), op).await?.into_held()
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let op = LeaseOp::Release {
            token: lease.token().to_owned(),
        };
        self.lease_op(lease.key(), op).await?.into_held()
    }
}

#[async_trait]
impl PendingIndex for SqliteStore {
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save_pending(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: i64,
    ) -> Result<Version> {
        self.write(key, bytes, expected, Some(due)).await
    }

    async fn pending_keys(&self, now: i64, limit: usize) -> Result<Vec<String>> {
        let q = self.table.queries();
        self.rows()
            .pending_keys(&q.pending_keys, self.table.now(), limit, now)
            .await
    }
}
