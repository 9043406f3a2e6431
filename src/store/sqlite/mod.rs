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
use super::{ListFilter, PurgeExpired, Record, SessionStore, Version};
use crate::clock::Clock;
use crate::error::{Error, Result};

mod batch;
mod queries;

use batch::Grouped;
use queries::Queries;

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
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(5),
            max_connections: 8,
            table: DEFAULT_TABLE.to_owned(),
            group_commit: true,
        }
    }
}

impl SqliteOptions {
    /// The default options: [`Durability::Normal`], a 5 s busy timeout, 8 connections,
    /// table `stagecraft_sessions`.
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
}

/// A session store in an SQLite database (feature `sqlite`, on by default).
///
/// One row per session in a table (default `stagecraft_sessions`) with a `version`
/// column; [`save`](SessionStore::save) and [`delete`](SessionStore::delete) are single
/// conditional statements, so several pools, or several processes, on one database file
/// are safe. [`list`](SessionStore::list) compares key prefixes with `substr`, so `%`
/// and `_` in a prefix are literal.
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
}

impl SqliteStore {
    /// Opens (creating it if needed) the database file at `path` with the default
    /// [`SqliteOptions`], and creates the table. `"sqlite::memory:"` or `":memory:"`
    /// opens a private in-memory database (for tests); an `sqlite:` URL is accepted too.
    ///
    /// The file is put in WAL mode with `synchronous = NORMAL` and a 5 s busy timeout.
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
        let mut store = Self::new(pool).with_table(&options.table)?;
        store.migrate().await?;
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
        }
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

    /// Creates the table and its index if they do not exist (idempotent).
    ///
    /// # Errors
    /// [`Error::Store`] when the statements fail.
    #[tracing::instrument(skip_all, fields(table = %self.table()), err)]
    pub async fn migrate(&self) -> Result<()> {
        let q = self.table.queries();
        self.rows()
            .run_all(&[&q.create_table, &q.create_index])
            .await
    }

    /// Deletes every expired row now and returns how many were deleted.
    ///
    /// Expired rows are already invisible; this reclaims their space. Call it
    /// periodically (e.g. hourly from a `tokio::time::interval` task) when a TTL is set.
    /// The same as [`PurgeExpired::purge_expired`], without importing the trait.
    ///
    /// # Errors
    /// [`Error::Store`] when the statement fails.
    #[tracing::instrument(skip_all, fields(table = %self.table()), err)]
    pub async fn purge_expired(&self) -> Result<u64> {
        self.rows()
            .purge(&self.table.queries().purge, self.table.now())
            .await
    }

    fn rows(&self) -> Rows<'_, sqlx::Sqlite> {
        Rows::new(&self.pool, BACKEND)
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
        let grouped = match &self.grouped {
            Some(grouped) => grouped.read(key).await,
            None => None,
        };
        let q = self.table.queries();
        let row = match grouped {
            Some(row) => row?,
            None => self.rows().fetch_row(&q.load, key).await?,
        };
        self.rows()
            .live_record(&q.delete_expired, key, row, now)
            .await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>) -> Result<Version> {
        let now = self.table.now();
        let expires_at = self.table.expires_at(now);
        if let Some(grouped) = &self.grouped {
            if let Some(result) = grouped.write(key, bytes, expected, now, expires_at).await {
                return result;
            }
            // The writer's runtime is gone: write directly below.
        }
        let (version, query) = self
            .table
            .queries()
            .save(key, bytes, expected, now, expires_at);
        save_result(key, version, query.execute(&self.pool).await)
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
