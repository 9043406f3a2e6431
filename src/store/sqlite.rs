//! [`SqliteStore`]: an embedded store on sqlx's SQLite driver.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sql::{self, DEFAULT_TABLE, Row3, Rows, SqlTable};
use super::{ListFilter, PurgeExpired, Record, SessionStore, Version};
use crate::clock::Clock;
use crate::error::{Error, Message, Result};
use tokio::sync::{mpsc, oneshot};

const BACKEND: &str = "sqlite";

fn db_err(e: sqlx::Error) -> Error {
    Error::store(BACKEND, e)
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

sql::queries!(
    /// The SQLite statements, rendered for one table. The `_many` ones are templates
    /// for [`with_rows`].
    struct Queries in "sqlite" {
        create_table,
        create_index,
        load,
        insert,
        update,
        delete,
        current_version,
        delete_expired,
        list,
        purge,
        load_many,
        update_many,
        insert_many,
    }
);

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
    writer: Option<mpsc::Sender<WriteOp>>,
    reader: Option<mpsc::Sender<ReadOp>>,
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
        let text = with_rows(&queries.load_many, "?", keys.len());
        let mut query = sqlx::query(&text);
        for k in &keys {
            query = query.bind(*k);
        }
        let rows = query.fetch_all(&pool).await;
        match rows {
            Ok(rows) => {
                let mut found = std::collections::HashMap::with_capacity(rows.len());
                for row in rows {
                    let parsed = (|| -> std::result::Result<(String, Row3), sqlx::Error> {
                        Ok((
                            row.try_get(0)?,
                            (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?),
                        ))
                    })();
                    if let Ok((k, r)) = parsed {
                        found.insert(k, r);
                    }
                }
                for op in batch.drain(..) {
                    let r = found.get(&op.key).cloned();
                    let _ = op.reply.send(Ok(r));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for op in batch.drain(..) {
                    let _ = op
                        .reply
                        .send(Err(Error::store(BACKEND, Message(msg.clone()))));
                }
            }
        }
    }
}

/// A save handed to the group-commit writer.
#[derive(Debug)]
struct WriteOp {
    key: String,
    bytes: Vec<u8>,
    expected: Option<Version>,
    now: i64,
    expires_at: Option<i64>,
    reply: oneshot::Sender<Result<Version>>,
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
                Err(e) => batch
                    .iter()
                    .map(|_| Err(Error::store(BACKEND, Message(e.to_string()))))
                    .collect(),
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

/// The compare-and-set statement of one save, and the version it writes.
fn save_query<'q>(
    queries: &'q Queries,
    key: &'q str,
    bytes: &'q [u8],
    expected: Option<Version>,
    now: i64,
    expires_at: Option<i64>,
) -> (
    Version,
    sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
) {
    match expected {
        None => {
            let version = Version::initial();
            let q = sqlx::query(&queries.insert)
                .bind(key)
                .bind(bytes)
                .bind(sql::version_param(version))
                .bind(expires_at)
                .bind(now);
            (version, q)
        }
        Some(expected) => {
            let version = expected.next();
            let q = sqlx::query(&queries.update)
                .bind(bytes)
                .bind(sql::version_param(version))
                .bind(expires_at)
                .bind(key)
                .bind(sql::version_param(expected))
                .bind(now);
            (version, q)
        }
    }
}

/// A save's result from the rows its statement changed.
fn save_result(
    key: &str,
    version: Version,
    done: std::result::Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>,
) -> Result<Version> {
    if done.map_err(db_err)?.rows_affected() == 1 {
        Ok(version)
    } else {
        Err(Error::Conflict {
            key: key.to_owned(),
        })
    }
}

/// Writes `batch` in one transaction: one conditional statement per save.
async fn commit_group(
    conn: &mut sqlx::SqliteConnection,
    queries: &Queries,
    batch: &[WriteOp],
) -> Vec<Result<Version>> {
    let fail_all = |e: &sqlx::Error| {
        batch
            .iter()
            .map(|_| Err(Error::store(BACKEND, Message(e.to_string()))))
            .collect()
    };
    if let [op] = batch {
        // Alone: an autocommit statement, without BEGIN and COMMIT round trips.
        let (version, query) = save_query(
            queries,
            &op.key,
            &op.bytes,
            op.expected,
            op.now,
            op.expires_at,
        );
        return vec![save_result(
            &op.key,
            version,
            query.execute(&mut *conn).await,
        )];
    }
    let mut tx = match sqlx::Connection::begin(&mut *conn).await {
        Ok(tx) => tx,
        Err(e) => return fail_all(&e),
    };
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    if batch.iter().all(|op| seen.insert(op.key.as_str())) {
        // Every key once: a few multi-row statements instead of one per save.
        let results = match write_many(&mut tx, queries, batch).await {
            Ok(results) => results,
            Err(e) => return fail_all(&e),
        };
        return match tx.commit().await {
            Ok(()) => results,
            Err(e) => fail_all(&e),
        };
    }
    let mut results = Vec::with_capacity(batch.len());
    for op in batch {
        let (version, query) = save_query(
            queries,
            &op.key,
            &op.bytes,
            op.expected,
            op.now,
            op.expires_at,
        );
        let done = query.execute(&mut *tx).await;
        results.push(save_result(&op.key, version, done));
    }
    match tx.commit().await {
        Ok(()) => results,
        Err(e) => fail_all(&e),
    }
}

/// Rows per multi-row statement (6 parameters a row, far below SQLite's 32,766).
const ROWS_PER_STATEMENT: usize = 256;

/// Writes the saves of `batch` (distinct keys) with one multi-row compare-and-set
/// statement per [`ROWS_PER_STATEMENT`] updates and per as many inserts; the keys each
/// statement really wrote come back through `RETURNING`, the others are conflicts.
async fn write_many(
    tx: &mut sqlx::SqliteConnection,
    queries: &Queries,
    batch: &[WriteOp],
) -> std::result::Result<Vec<Result<Version>>, sqlx::Error> {
    let versions: Vec<Version> = batch
        .iter()
        .map(|op| op.expected.map_or_else(Version::initial, Version::next))
        .collect();
    let mut written = std::collections::HashSet::with_capacity(batch.len());
    let updates: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].expected.is_some())
        .collect();
    let inserts: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].expected.is_none())
        .collect();
    for chunk in updates.chunks(ROWS_PER_STATEMENT) {
        // Padded to a power of two with rows that match nothing (a NULL key), so that
        // a handful of statement texts serve every group size (sqlx caches them).
        let rows = chunk.len().next_power_of_two();
        let text = with_rows(&queries.update_many, "(?,?,?,?,?,?)", rows);
        let mut q = sqlx::query(&text);
        for &i in chunk {
            let op = &batch[i];
            q = q
                .bind(op.key.as_str())
                .bind(op.bytes.as_slice())
                .bind(sql::version_param(versions[i]))
                .bind(op.expires_at)
                .bind(op.expected.map(sql::version_param))
                .bind(op.now);
        }
        for _ in chunk.len()..rows {
            q = q
                .bind(None::<&str>)
                .bind(None::<&[u8]>)
                .bind(None::<i64>)
                .bind(None::<i64>)
                .bind(None::<i64>)
                .bind(None::<i64>);
        }
        for row in q.fetch_all(&mut *tx).await? {
            written.insert(row.try_get::<String, _>(0)?);
        }
    }
    for chunk in inserts.chunks(ROWS_PER_STATEMENT) {
        let text = with_rows(&queries.insert_many, "(?,?,?,?)", chunk.len());
        let mut q = sqlx::query(&text);
        for &i in chunk {
            let op = &batch[i];
            q = q
                .bind(op.key.as_str())
                .bind(op.bytes.as_slice())
                .bind(sql::version_param(versions[i]))
                .bind(op.expires_at);
        }
        // A row in the way counts as absent only if it expired before every save here.
        let now = chunk.iter().map(|&i| batch[i].now).min().unwrap_or(0);
        q = q.bind(now);
        for row in q.fetch_all(&mut *tx).await? {
            written.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(batch
        .iter()
        .zip(versions)
        .map(|(op, version)| {
            if written.contains(&op.key) {
                Ok(version)
            } else {
                Err(Error::Conflict {
                    key: op.key.clone(),
                })
            }
        })
        .collect())
}

/// `template` with `{rows}` replaced by `n` copies of `row`, comma-separated (the
/// placeholders of a multi-row statement).
fn with_rows(template: &str, row: &str, n: usize) -> String {
    let (head, tail) = template.split_once("{rows}").unwrap_or((template, ""));
    let mut text = String::with_capacity(template.len() + n * (row.len() + 1));
    text.push_str(head);
    for i in 0..n {
        if i > 0 {
            text.push(',');
        }
        text.push_str(row);
    }
    text.push_str(tail);
    text
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
            writer: None,
            reader: None,
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
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        let queries = self.table.queries();
        tokio::spawn(writer_loop(self.pool.clone(), Arc::clone(queries), rx));
        self.writer = Some(tx);
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(reader_loop(self.pool.clone(), Arc::clone(queries), rx));
        self.reader = Some(tx);
        self
    }

    /// Uses the table `table` (`[A-Za-z_][A-Za-z0-9_]{0,62}`). Call
    /// [`migrate`](Self::migrate) afterwards if the table may not exist yet.
    ///
    /// # Errors
    /// [`Error::Config`] when the name is not valid.
    pub fn with_table(mut self, table: &str) -> Result<Self> {
        self.table = self.table.renamed(table)?;
        self.reader = None;
        if self.writer.take().is_some() {
            // The writer was started with the old table's queries.
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
        let grouped = match &self.reader {
            Some(reader) => {
                let (reply, rx) = oneshot::channel();
                match reader
                    .send(ReadOp {
                        key: key.to_owned(),
                        reply,
                    })
                    .await
                {
                    Ok(()) => Some(rx.await.unwrap_or_else(|_| {
                        Err(Error::store(
                            BACKEND,
                            Message("the grouped reader stopped".into()),
                        ))
                    })?),
                    Err(_) => None,
                }
            }
            None => None,
        };
        let q = self.table.queries();
        let row = match grouped {
            Some(row) => row,
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
        let op_reply = if let Some(writer) = &self.writer {
            let (reply, rx) = oneshot::channel();
            let op = WriteOp {
                key: key.to_owned(),
                bytes: bytes.to_vec(),
                expected,
                now,
                expires_at,
                reply,
            };
            match writer.send(op).await {
                Ok(()) => Some(rx),
                // The writer's runtime is gone: write directly below.
                Err(_) => None,
            }
        } else {
            None
        };
        if let Some(rx) = op_reply {
            return rx.await.unwrap_or_else(|_| {
                Err(Error::store(
                    BACKEND,
                    Message("the group-commit writer stopped".into()),
                ))
            });
        }
        let queries = self.table.queries();
        let (version, query) = save_query(queries, key, bytes, expected, now, expires_at);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, bytes: &[u8], expected: Option<Version>, now: i64) -> WriteOp {
        WriteOp {
            key: key.to_owned(),
            bytes: bytes.to_vec(),
            expected,
            now,
            expires_at: None,
            reply: oneshot::channel().0,
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
            Some((b"a1".to_vec(), *results[0].as_ref().unwrap()))
        );
        assert_eq!(loaded("b").await.unwrap().0, b"b1");
        assert_eq!(
            loaded("c").await,
            Some((b"c0".to_vec(), *results[2].as_ref().unwrap()))
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
}
