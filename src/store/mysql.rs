//! [`MySqlStore`]: a server store on sqlx's MySQL driver (MySQL 8, MariaDB 10.5+).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::mysql::MySqlPool;

use super::sql::{self, Rows, SqlTable};
use super::{
    Lease, LeaseAttempt, LeaseStore, ListFilter, PendingIndex, Preload, PurgeExpired, Record,
    SessionStore, Version,
};
use crate::clock::Clock;
use crate::error::{Error, Message, Result};

const BACKEND: &str = "mysql";

/// The size of the `session_key VARBINARY` column.
const MAX_KEY_BYTES: usize = 1024;

fn db_err(e: sqlx::Error) -> Error {
    Error::store(BACKEND, e)
}

/// Refuses a key longer than the key column: outside strict SQL mode the server would
/// truncate it silently.
fn check_key_len(key: &str) -> Result<()> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::store(
            BACKEND,
            Message(format!(
                "a key is {} bytes long, the limit is {MAX_KEY_BYTES}",
                key.len()
            )),
        ));
    }
    Ok(())
}

fn is_duplicate_key(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A deadlock or lock wait timeout (InnoDB's answers to racing lease statements): the
/// lease is busy.
fn is_lock_contention(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40001" || c == "HY000" && db.message().contains("Lock wait timeout")))
}

sql::queries!(
    /// The MySQL statements, rendered for one table.
    struct Queries in "mysql" {
        create_table,
        load,
        insert,
        update,
        delete,
        current_version,
        delete_expired,
        list,
        purge,
        create_lease_table,
        lease_renew,
        lease_release,
        lease_purge,
        lease_insert,
        lease_take_expired,
        has_pending,
        has_due,
        add_due,
        carry_pending,
        pending_keys,
        create_take_routine,
        create_save_routine,
        routines_exist,
        call_take,
        call_save,
    }
);

/// Options for [`MySqlStore::connect_with`]: the table and whether the store hands out
/// leases (the options every server store takes, [`ServerOptions`](super::ServerOptions)).
///
/// ```no_run
/// use stagecraft::store::{MySqlOptions, MySqlStore};
/// # async fn f() -> stagecraft::Result<()> {
/// let options = MySqlOptions::new().table("bot_sessions");
/// // Creates (or finds) `bot_sessions` and `bot_sessions_lease`, and touches no other table.
/// let store = MySqlStore::connect_with("mysql://bot:secret@localhost/bot", options).await?;
/// # Ok(()) }
/// ```
pub type MySqlOptions = super::sql::ServerOptions;

/// A session store in a MySQL or MariaDB table (feature `mysql`).
///
/// One InnoDB row per session (default table `stagecraft_sessions`): `session_key
/// VARBINARY(1024)` primary key (so keys compare byte for byte: no case folding, no
/// trailing-space padding; at most 1024 bytes of UTF-8, longer keys are refused with
/// [`Error::Store`]), `data LONGBLOB`,
/// `version BIGINT`, `expires_at BIGINT`. A new record is a plain `INSERT` whose
/// duplicate-key error means a conflict (after removing an expired row in the way, once);
/// an update is `UPDATE ... WHERE version = ?` checked by rows matched.
/// [`list`](SessionStore::list) uses `LIKE` with `%`, `_` and `!` escaped.
///
/// TTL works as for [`SqliteStore`](super::SqliteStore): time comes from the store's
/// [`Clock`], expired rows are invisible, removed lazily and by
/// [`purge_expired`](Self::purge_expired).
///
/// ```no_run
/// use stagecraft::store::MySqlStore;
/// # async fn f() -> stagecraft::Result<()> {
/// let store = MySqlStore::connect("mysql://bot:secret@localhost/bot").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    table: SqlTable<Queries>,
    leases: bool,
    /// Whether the table's stored procedures are there (found or created by
    /// [`migrate`](Self::migrate)): the lease is then taken with the record's read, and
    /// given back with its save, in one round trip each.
    routines: Arc<AtomicBool>,
}

impl MySqlStore {
    /// A store on a pool you configured yourself, using the table `stagecraft_sessions`.
    /// Does no I/O: call [`migrate`](Self::migrate) to create the table.
    ///
    /// ```no_run
    /// use stagecraft::store::{MySqlStore, sqlx::mysql::MySqlPoolOptions};
    /// # async fn f() -> stagecraft::Result<()> {
    /// let pool = MySqlPoolOptions::new()
    ///     .max_connections(20)
    ///     .connect_lazy("mysql://bot:secret@localhost/bot")
    ///     .map_err(|e| stagecraft::Error::store("mysql", e))?;
    /// let store = MySqlStore::new(pool).with_table("bot_sessions")?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            pool,
            table: SqlTable::new(),
            leases: true,
            routines: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Connects a pool to `url` (`mysql://user:password@host/database`) and creates
    /// the table `stagecraft_sessions` (and its leases' table) if needed: the same as
    /// [`connect_with`](Self::connect_with) with the default [`MySqlOptions`].
    ///
    /// The pool has sqlx's defaults, except that a connection is checked (pinged)
    /// before use only after it was idle for a second, not before every statement.
    ///
    /// # Errors
    /// [`Error::Store`] when the server cannot be reached or the table cannot be created.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, MySqlOptions::default()).await
    }

    /// Connects like [`connect`](Self::connect) and creates the table of `options`
    /// (and its leases' table) if needed, touching no other table: a database user
    /// that owns (or was granted) only these two tables can start a store this way.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid table name (before connecting);
    /// [`Error::Store`] when the server cannot be reached or the tables cannot be
    /// created.
    pub async fn connect_with(url: &str, options: MySqlOptions) -> Result<Self> {
        sql::validate_table(&options.table)?;
        let store = Self::new(sql::connect(url, BACKEND).await?)
            .with_table(&options.table)?
            .with_leases(options.leases);
        store.migrate().await?;
        Ok(store)
    }

    /// Whether this store hands out per-key leases (default `true`; they live in the
    /// table `{table}_lease`, which [`migrate`](Self::migrate) creates). With `false`,
    /// [`leases`](SessionStore::leases) is `None`, so a pipeline on it takes no leases
    /// and relies on compare-and-set alone. (The store's [`LeaseStore`] methods, called
    /// on it directly, still take leases.)
    #[must_use]
    pub fn with_leases(mut self, on: bool) -> Self {
        self.leases = on;
        self
    }

    /// Uses the table `table` (`[A-Za-z_][A-Za-z0-9_]{0,62}`; always quoted, so
    /// case-sensitive where the server is). Call [`migrate`](Self::migrate)
    /// afterwards if the table may not exist yet.
    ///
    /// # Errors
    /// [`Error::Config`] when the name is not valid.
    pub fn with_table(mut self, table: &str) -> Result<Self> {
        self.table = self.table.renamed(table)?;
        // Another table's procedures: found (or made) by its migration.
        self.routines = Arc::new(AtomicBool::new(false));
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
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The table name.
    #[must_use]
    pub fn table(&self) -> &str {
        self.table.name()
    }

    /// Creates the table (with its `expires_at` index), the leases' table
    /// (`{table}_lease`) and two stored procedures (`{table}_take_v1`, which takes a
    /// lease and reads the record, and `{table}_save_v1`, a compare-and-set save that
    /// gives the lease back) if they do not exist (idempotent).
    ///
    /// The procedures make an update with leases cost two round trips instead of four.
    /// A user without the `CREATE ROUTINE` privilege can still migrate: the store then
    /// says so (a warning) and takes, reads, saves and releases in statements of their
    /// own. They run with the caller's privileges (`SQL SECURITY INVOKER`) and take
    /// their arguments as bound parameters.
    ///
    /// # Errors
    /// [`Error::Store`] when the statement fails.
    #[tracing::instrument(skip_all, fields(table = %self.table()), err)]
    pub async fn migrate(&self) -> Result<()> {
        let q = self.table.queries();
        self.rows()
            .run_all(&[&q.create_table, &q.create_lease_table])
            .await?;
        // A table made by an earlier version has no `due_at` column yet. Two processes
        // adding it at once: the second finds it there (duplicate column). Replies an
        // earlier layout marked pending (a `pending` column) stay due.
        let has: i64 = sqlx::query_scalar(&q.has_due)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        if has == 0 {
            match sqlx::query(&q.add_due).execute(&self.pool).await {
                Ok(_) => {}
                Err(sqlx::Error::Database(e))
                    if e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                        .is_some_and(|e| e.number() == 1060) => {}
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
        let found = self.make_routines().await?;
        self.routines.store(found, Ordering::Release);
        Ok(())
    }

    /// Finds or creates the table's stored procedures; `false` (with a warning) when
    /// the user may not create them.
    async fn make_routines(&self) -> Result<bool> {
        let q = self.table.queries();
        let count = || async {
            sqlx::query_scalar::<_, i64>(&q.routines_exist)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)
        };
        if count().await? == 2 {
            return Ok(true);
        }
        for create in [&q.create_take_routine, &q.create_save_routine] {
            let mut statement = create.clone();
            loop {
                match sqlx::raw_sql(&statement).execute(&self.pool).await {
                    Ok(_) => break,
                    Err(sqlx::Error::Database(e)) => {
                        match e
                            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                            .map(sqlx::mysql::MySqlDatabaseError::number)
                        {
                            // Made meanwhile by another process.
                            Some(1304) => break,
                            // A server without `CREATE PROCEDURE IF NOT EXISTS` (MySQL
                            // before 8.0.29).
                            Some(1064) if statement.contains(" IF NOT EXISTS ") => {
                                statement = statement.replacen(" IF NOT EXISTS ", " ", 1);
                            }
                            // No privilege to create routines.
                            Some(1044 | 1142 | 1227 | 1370) => {
                                tracing::warn!(target: "stagecraft::store", table = %self.table(),
                                    error = %e, "cannot create the store's stored procedures; \
                                    leases take separate round trips");
                                return Ok(false);
                            }
                            _ => return Err(db_err(sqlx::Error::Database(e))),
                        }
                    }
                    Err(e) => return Err(db_err(e)),
                }
            }
        }
        Ok(count().await? == 2)
    }

    fn has_routines(&self) -> bool {
        self.routines.load(Ordering::Acquire)
    }

    /// Deletes every expired row now and returns how many were deleted (expired
    /// leases, of holders that died, are deleted too, uncounted).
    ///
    /// Expired rows are already invisible; this reclaims their space. Call it
    /// periodically (e.g. hourly) when a TTL is set. The same as
    /// [`PurgeExpired::purge_expired`], without importing the trait.
    ///
    /// # Errors
    /// [`Error::Store`] when a statement fails.
    #[tracing::instrument(skip_all, fields(table = %self.table()), err)]
    pub async fn purge_expired(&self) -> Result<u64> {
        let q = self.table.queries();
        let purged = self.rows().purge(&q.purge, self.table.now()).await?;
        self.rows().execute(&q.lease_purge).await?;
        Ok(purged)
    }

    fn rows(&self) -> Rows<'_, sqlx::MySql> {
        Rows::new(&self.pool, BACKEND)
    }

    /// `INSERT`s a new record; `Ok(false)` when a row with this key exists.
    async fn insert(
        &self,
        key: &str,
        bytes: &[u8],
        version: Version,
        expires_at: Option<i64>,
        due: Option<i64>,
    ) -> Result<bool> {
        let done = sqlx::query(&self.table.queries().insert)
            .bind(key)
            .bind(bytes)
            .bind(sql::version_param(version))
            .bind(expires_at)
            .bind(due)
            .execute(&self.pool)
            .await;
        match done {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn delete_expired(&self, key: &str, now: i64) -> Result<u64> {
        let done = sqlx::query(&self.table.queries().delete_expired)
            .bind(key)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl SessionStore for MySqlStore {
    fn cache_hint(&self) -> Option<crate::store::CacheHint> {
        self.table.cache_hint(false)
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn load(&self, key: &str) -> Result<Option<Record>> {
        let now = self.table.now();
        let q = self.table.queries();
        let row = self.rows().fetch_row(&q.load, key).await?;
        self.rows()
            .live_record(&q.delete_expired, key, row, now)
            .await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>) -> Result<Version> {
        self.write(key, bytes, expected, None).await
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
        let now = self.table.now();
        let rows = sqlx::query(&self.table.queries().list)
            .bind(sql::like_prefix(&filter.prefix))
            .bind(now)
            .bind(sql::limit_param(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(key_of).collect()
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

    /// One `CALL` (the store's save procedure) when the procedures are there; else the
    /// save, then the release.
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save_releasing(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
        lease: &Lease,
    ) -> Result<Version> {
        if !self.has_routines() {
            return super::save_then_release(self, Some(self), key, bytes, expected, due, lease)
                .await;
        }
        check_key_len(key)?;
        let now = self.table.now();
        let version = expected.map_or_else(Version::initial, Version::next);
        let rows = sqlx::query(&self.table.queries().call_save)
            .bind(key)
            .bind(bytes)
            .bind(sql::version_param(version))
            .bind(self.table.expires_at(now))
            .bind(due)
            .bind(expected.map(sql::version_param))
            .bind(now)
            .bind(lease.token())
            .fetch_all(&self.pool)
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            // A deadlock or a lock wait that timed out: the procedure rolled its
            // transaction back, so nothing was written; the plain statements do it.
            Err(e) if is_lock_contention(&e) => {
                tracing::debug!(target: "stagecraft::store", key = %key, error = %e,
                    "the save procedure met lock contention; saving in statements of their own");
                return super::save_then_release(
                    self,
                    Some(self),
                    key,
                    bytes,
                    expected,
                    due,
                    lease,
                )
                .await;
            }
            Err(e) => return Err(db_err(e)),
        };
        let written: i64 = match rows.first() {
            Some(row) => row.try_get(0).map_err(db_err)?,
            None => {
                return Err(Error::store(
                    BACKEND,
                    Message("the save procedure returned no row".to_owned()),
                ));
            }
        };
        if written == 1 {
            Ok(version)
        } else {
            Err(Error::Conflict {
                key: key.to_owned(),
            })
        }
    }
}

/// The key of a row whose first column is `session_key`.
fn key_of(row: &sqlx::mysql::MySqlRow) -> Result<String> {
    let key: Vec<u8> = row.try_get(0).map_err(db_err)?;
    String::from_utf8(key)
        .map_err(|e| Error::store(BACKEND, Message(format!("stored key is not UTF-8: {e}"))))
}

#[async_trait]
impl PendingIndex for MySqlStore {
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
        let rows = sqlx::query(&self.table.queries().pending_keys)
            .bind(now)
            .bind(self.table.now())
            .bind(sql::limit_param(Some(limit)))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(key_of).collect()
    }
}

impl MySqlStore {
    /// A compare-and-set save, putting the row in the index of due work at `due` or
    /// taking it out (`None`).
    async fn write(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
    ) -> Result<Version> {
        check_key_len(key)?;
        let now = self.table.now();
        let expires_at = self.table.expires_at(now);
        let conflict = || Error::Conflict {
            key: key.to_owned(),
        };
        match expected {
            None => {
                let version = Version::initial();
                if self.insert(key, bytes, version, expires_at, due).await? {
                    return Ok(version);
                }
                // A row is in the way: if it expired, remove it and try once more; a
                // concurrent writer that gets there first makes this a conflict.
                if self.delete_expired(key, now).await? == 0 {
                    return Err(conflict());
                }
                if self.insert(key, bytes, version, expires_at, due).await? {
                    Ok(version)
                } else {
                    Err(conflict())
                }
            }
            Some(expected) => {
                let version = expected.next();
                // sqlx asks for CLIENT_FOUND_ROWS: rows affected counts matched rows.
                let done = sqlx::query(&self.table.queries().update)
                    .bind(bytes)
                    .bind(sql::version_param(version))
                    .bind(expires_at)
                    .bind(due)
                    .bind(key)
                    .bind(sql::version_param(expected))
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                if done.rows_affected() == 1 {
                    Ok(version)
                } else {
                    Err(conflict())
                }
            }
        }
    }
}

#[async_trait]
impl PurgeExpired for MySqlStore {
    async fn purge_expired(&self) -> Result<u64> {
        MySqlStore::purge_expired(self).await
    }
}

#[async_trait]
impl LeaseStore for MySqlStore {
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease(&self, key: &str, ttl: Duration) -> Result<LeaseAttempt> {
        check_key_len(key)?;
        let lease = Lease::generate(key);
        let ttl = sql::lease_ttl_ms(ttl);
        let inserted = sqlx::query(&self.table.queries().lease_insert)
            .bind(key)
            .bind(lease.token())
            .bind(ttl)
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => return Ok(LeaseAttempt::Acquired(lease)),
            Err(e) if is_duplicate_key(&e) || is_lock_contention(&e) => {}
            Err(e) => return Err(db_err(e)),
        }
        // A lease row exists: take it over if it expired (its holder died or is late).
        let taken = sqlx::query(&self.table.queries().lease_take_expired)
            .bind(lease.token())
            .bind(ttl)
            .bind(key)
            .execute(&self.pool)
            .await;
        match taken {
            Ok(done) => Ok(LeaseAttempt::taken(done.rows_affected() == 1, lease)),
            Err(e) if is_lock_contention(&e) => Ok(LeaseAttempt::Busy),
            Err(e) => Err(db_err(e)),
        }
    }

    /// One `CALL` (the store's take procedure) when the procedures are there; else the
    /// lease only.
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease_and_load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<(LeaseAttempt, Preload)> {
        if !self.has_routines() {
            return Ok((self.acquire_lease(key, ttl).await?, Preload::NotRead));
        }
        check_key_len(key)?;
        let lease = Lease::generate(key);
        let now = self.table.now();
        let called = sqlx::query(&self.table.queries().call_take)
            .bind(key)
            .bind(lease.token())
            .bind(sql::lease_ttl_ms(ttl))
            .fetch_all(&self.pool)
            .await;
        let rows = match called {
            Ok(rows) => rows,
            Err(e) if is_lock_contention(&e) => return Ok((LeaseAttempt::Busy, Preload::NotRead)),
            Err(e) => return Err(db_err(e)),
        };
        let Some(row) = rows.first() else {
            return Err(Error::store(
                BACKEND,
                Message("the lease procedure returned no row".to_owned()),
            ));
        };
        let taken: i64 = row.try_get(0).map_err(db_err)?;
        if taken != 1 {
            return Ok((LeaseAttempt::Busy, Preload::NotRead));
        }
        // Taken: a failure from here on gives the lease back (it is not handed out).
        let read = || -> Result<Option<(Vec<u8>, i64, Option<i64>)>> {
            let data: Option<Vec<u8>> = row.try_get(1).map_err(db_err)?;
            let version: Option<i64> = row.try_get(2).map_err(db_err)?;
            let expires_at: Option<i64> = row.try_get(3).map_err(db_err)?;
            Ok(data.zip(version).map(|(d, v)| (d, v, expires_at)))
        };
        let record = match read() {
            Ok(fetched) => {
                self.rows()
                    .live_record(&self.table.queries().delete_expired, key, fetched, now)
                    .await
            }
            Err(e) => Err(e),
        };
        match record {
            Ok(record) => Ok((LeaseAttempt::Acquired(lease), Preload::Read(record))),
            Err(e) => {
                let _ = self.release_lease(&lease).await;
                Err(e)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let done = sqlx::query(&self.table.queries().lease_renew)
            .bind(sql::lease_ttl_ms(ttl))
            .bind(lease.key())
            .bind(lease.token())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        self.rows()
            .release_lease(&self.table.queries().lease_release, lease)
            .await
    }
}
