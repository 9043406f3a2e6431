//! [`PostgresStore`]: a server store on sqlx's PostgreSQL driver.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::sql::{self, Rows, SqlTable};
use super::{
    Lease, LeaseAttempt, LeaseStore, ListFilter, PendingIndex, Preload, PurgeExpired, Record,
    SessionStore, Version,
};
use crate::clock::Clock;
use crate::error::{Error, Result};

const BACKEND: &str = "postgres";

/// The advisory lock key under which stores create their tables ("stagecraft" in ASCII).
const MIGRATE_LOCK: i64 = 0x0073_7461_6763_7261;

fn db_err(e: sqlx::Error) -> Error {
    Error::store(BACKEND, e)
}

/// The longest key the store takes, in bytes: well within what the key column's B-tree
/// index holds whatever the key's bytes (about 2,700 after compression, which depends on
/// the key).
const MAX_KEY_BYTES: usize = 2048;

/// Refuses a key the key column cannot hold: one with a NUL (PostgreSQL text has no
/// NUL; the server would answer "invalid byte sequence"), or longer than
/// [`MAX_KEY_BYTES`] (the index would refuse some such keys and take others).
fn check_key(key: &str) -> Result<()> {
    let problem = if key.contains('\0') {
        "contains NUL (U+0000), which PostgreSQL text cannot hold".to_owned()
    } else if key.len() > MAX_KEY_BYTES {
        format!("is {} bytes long, the limit is {MAX_KEY_BYTES}", key.len())
    } else {
        return Ok(());
    };
    Err(Error::store(
        BACKEND,
        crate::error::Message(format!("a key {problem}")),
    ))
}

sql::queries!(
    /// The PostgreSQL statements, rendered for one table.
    struct Queries in "postgres" {
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
        create_lease_table,
        lease_renew,
        lease_release,
        lease_purge,
        lease_acquire,
        lease_acquire_load,
        lease_table_unlogged,
        insert_release,
        update_release,
        delete_release,
        create_take_function,
        take_function_exists,
        call_take,
        tables_exist,
        create_pending_index,
        pending_keys,
    }
);

/// Options for [`PostgresStore::connect_with`]: the table and whether the store hands out
/// leases (the options every server store takes, [`ServerOptions`](super::ServerOptions)).
///
/// ```no_run
/// use stagecraft::store::{PostgresOptions, PostgresStore};
/// # async fn f() -> stagecraft::Result<()> {
/// let options = PostgresOptions::new().table("bot_sessions");
/// // Creates (or finds) `bot_sessions` and `bot_sessions_lease`, and touches no other table.
/// let store = PostgresStore::connect_with("postgres://bot@localhost/bot", options).await?;
/// # Ok(()) }
/// ```
pub type PostgresOptions = super::sql::ServerOptions;

/// A session store in a PostgreSQL table (feature `postgres`).
///
/// One row per session (default table `stagecraft_sessions`: `session_key TEXT COLLATE
/// "C"` primary key, `data BYTEA`, `version BIGINT`, `expires_at BIGINT`).
/// [`save`](SessionStore::save) is `INSERT ... ON CONFLICT DO UPDATE ... WHERE` (for a new
/// record) or `UPDATE ... WHERE version = $expected`, checked by rows affected, so any
/// number of bot replicas can share the table. [`list`](SessionStore::list) uses `LIKE`
/// with `%`, `_` and `!` escaped. Keys cannot contain the NUL character (PostgreSQL
/// `TEXT` does not hold it).
///
/// TTL works as for [`SqliteStore`](super::SqliteStore): time comes from the store's
/// [`Clock`], expired rows are invisible, removed lazily and by
/// [`purge_expired`](Self::purge_expired).
///
/// ```no_run
/// use stagecraft::store::PostgresStore;
/// # async fn f() -> stagecraft::Result<()> {
/// let store = PostgresStore::connect("postgres://bot@localhost/bot").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    table: SqlTable<Queries>,
    leases: bool,
    /// Whether the table's lease function is there (found or made by
    /// [`migrate`](Self::migrate)): the lease is then taken and the record read without
    /// locking its row.
    take_function: Arc<std::sync::atomic::AtomicBool>,
}

impl PostgresStore {
    /// A store on a pool you configured yourself, using the table `stagecraft_sessions`.
    /// Does no I/O: call [`migrate`](Self::migrate) to create the table.
    ///
    /// ```no_run
    /// use stagecraft::store::{PostgresStore, sqlx::postgres::PgPoolOptions};
    /// # async fn f() -> stagecraft::Result<()> {
    /// let pool = PgPoolOptions::new()
    ///     .max_connections(20)
    ///     .connect_lazy("postgres://bot@localhost/bot")
    ///     .map_err(|e| stagecraft::Error::store("postgres", e))?;
    /// let store = PostgresStore::new(pool).with_table("bot_sessions")?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            table: SqlTable::new(),
            leases: true,
            take_function: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Connects a pool to `url` (`postgres://user:password@host/database`) and creates
    /// the table `stagecraft_sessions` (and its leases' table) if needed: the same as
    /// [`connect_with`](Self::connect_with) with the default [`PostgresOptions`].
    ///
    /// The pool has sqlx's defaults, except that a connection is checked (pinged)
    /// before use only after it was idle for a second, not before every statement.
    ///
    /// # Errors
    /// [`Error::Store`] when the server cannot be reached or the table cannot be created.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects like [`connect`](Self::connect) and creates the table of `options`
    /// (and its leases' table) if needed, touching no other table: a database user
    /// that owns (or was granted) only these two tables can start a store this way.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid table name (before connecting);
    /// [`Error::Store`] when the server cannot be reached or the tables cannot be
    /// created.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self> {
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
    /// case-sensitive). Call [`migrate`](Self::migrate) afterwards if the table may not
    /// exist yet.
    ///
    /// # Errors
    /// [`Error::Config`] when the name is not valid.
    pub fn with_table(mut self, table: &str) -> Result<Self> {
        self.table = self.table.renamed(table)?;
        // Another table's function: found (or made) by its migration.
        self.take_function = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The table name.
    #[must_use]
    pub fn table(&self) -> &str {
        self.table.name()
    }

    /// Creates the table, its `expires_at` index and the leases' table
    /// (`{table}_lease`) if they do not exist (idempotent). When all three exist, it
    /// only looks them up, so a user without the `CREATE` privilege on the schema (one
    /// that owns only its tables) can run it.
    ///
    /// # Errors
    /// [`Error::Store`] when the statements fail.
    #[tracing::instrument(skip_all, fields(table = %self.table()), err)]
    pub async fn migrate(&self) -> Result<()> {
        let q = self.table.queries();
        // `CREATE … IF NOT EXISTS` needs the `CREATE` privilege on the schema even when
        // the table exists: a user that owns only its tables could not start. When they
        // are all there already, there is nothing to create.
        let exists = sqlx::query_scalar::<_, bool>(&q.tables_exist)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        if !exists {
            self.create_tables().await?;
        }
        let found = self.make_take_function().await?;
        self.take_function
            .store(found, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Finds or creates the table's lease function (`{table}_take_v1`); `false` (with a
    /// warning) when the user may not create it.
    async fn make_take_function(&self) -> Result<bool> {
        let q = self.table.queries();
        let exists = || async {
            sqlx::query_scalar::<_, bool>(&q.take_function_exists)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)
        };
        if exists().await? {
            return Ok(true);
        }
        // Serialised like the tables' creation (`CREATE OR REPLACE FUNCTION` racing
        // itself fails with "tuple concurrently updated").
        let script = format!(
            "SELECT pg_advisory_xact_lock({MIGRATE_LOCK});\n{};",
            q.create_take_function.trim().trim_end_matches(';')
        );
        match sqlx::raw_sql(&script).execute(&self.pool).await {
            Ok(_) => exists().await,
            Err(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c == "42501") => {
                tracing::warn!(target: "stagecraft::store", table = %self.table(), error = %e,
                    "cannot create the store's lease function; the lease is taken with a \
                    row lock on the record (a durable write)");
                Ok(false)
            }
            Err(e) => Err(db_err(e)),
        }
    }

    /// Creates the tables and indexes (the part of [`migrate`](Self::migrate) that needs
    /// the `CREATE` privilege).
    async fn create_tables(&self) -> Result<()> {
        let q = self.table.queries();
        // `CREATE … IF NOT EXISTS` is not safe against itself in PostgreSQL's catalog:
        // processes starting together on a fresh table fail with a duplicate key in
        // `pg_type`. A transaction-scoped advisory lock serialises the migrations of
        // every store on the database (they are short and run at start-up only). The
        // statements go as one simple query, which PostgreSQL runs as one transaction.
        let script = format!(
            "SELECT pg_advisory_xact_lock({MIGRATE_LOCK});\n{};\n{};\n{};\n{};\n{};",
            q.create_table.trim().trim_end_matches(';'),
            q.create_index.trim().trim_end_matches(';'),
            q.create_pending_index.trim().trim_end_matches(';'),
            q.create_lease_table.trim().trim_end_matches(';'),
            q.lease_table_unlogged.trim().trim_end_matches(';'),
        );
        // A migration by a client that takes no such lock (an older build, an operator)
        // can still win the race: the catalog's unique violation then means the table
        // exists now, and running the statements again finds it.
        let mut tries = 0;
        loop {
            tries += 1;
            match sqlx::raw_sql(&script).execute(&self.pool).await {
                Ok(_) => return Ok(()),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && tries < 3 => {
                    tracing::debug!(target: "stagecraft::store", table = %self.table(),
                        "the table was created meanwhile; migrating again");
                }
                Err(e) => return Err(db_err(e)),
            }
        }
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

    /// The record a lease-taking row read (its columns 1 to 3), as
    /// [`load`](SessionStore::load) returns it. Without the lease function
    /// (`function: false`) a row the statement could not see is read again: held now, a
    /// plain read sees everything committed before the lease was ours.
    async fn read_leased(
        &self,
        key: &str,
        row: &PgRow,
        now: i64,
        function: bool,
    ) -> Result<Option<Record>> {
        let data: Option<Vec<u8>> = row.try_get(1).map_err(db_err)?;
        let version: Option<i64> = row.try_get(2).map_err(db_err)?;
        let expires_at: Option<i64> = row.try_get(3).map_err(db_err)?;
        let fetched = data.zip(version).map(|(d, v)| (d, v, expires_at));
        if fetched.is_none() && !function {
            return self.load(key).await;
        }
        let q = self.table.queries();
        self.rows()
            .live_record(&q.delete_expired, key, fetched, now)
            .await
    }

    fn rows(&self) -> Rows<'_, sqlx::Postgres> {
        Rows::new(&self.pool, BACKEND)
    }

    /// A compare-and-set save, putting the row in the index of due work at `due` or
    /// taking it out (`None`).
    ///
    /// With `release`, the same statement gives the lease back once the record is
    /// written (a data-modifying CTE whose `DELETE` of the lease row runs only if the
    /// save wrote a row).
    async fn write(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
        release: Option<&Lease>,
    ) -> Result<Version> {
        check_key(key)?;
        let now = self.table.now();
        let expires_at = self.table.expires_at(now);
        let q = self.table.queries();
        let args = sql::SaveArgs {
            key,
            bytes,
            expected,
            now,
            expires_at,
            due,
        };
        let Some(lease) = release else {
            let (version, query) = sql::save_query(&q.insert, &q.update, args);
            return sql::save_result(BACKEND, key, version, query.execute(&self.pool).await);
        };
        // `SELECT 1 FROM saved`: the statement returns (and counts) one row when it wrote.
        let (version, query) = sql::save_query(&q.insert_release, &q.update_release, args);
        let query = query.bind(lease.token());
        sql::save_result(BACKEND, key, version, query.execute(&self.pool).await)
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    fn cache_hint(&self) -> Option<crate::store::CacheHint> {
        self.table.cache_hint(false)
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn load(&self, key: &str) -> Result<Option<Record>> {
        check_key(key)?;
        let now = self.table.now();
        let q = self.table.queries();
        let row = self.rows().fetch_row(&q.load, key).await?;
        self.rows()
            .live_record(&q.delete_expired, key, row, now)
            .await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>) -> Result<Version> {
        self.write(key, bytes, expected, None, None).await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete(&self, key: &str, expected: Version) -> Result<()> {
        check_key(key)?;
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
        let pattern = sql::like_prefix(&filter.prefix);
        self.rows()
            .list_keys(
                &self.table.queries().list,
                &pattern,
                self.table.now(),
                filter.limit,
            )
            .await
    }

    fn pending(&self) -> Option<&dyn PendingIndex> {
        Some(self)
    }

    /// One statement: the compare-and-set save and the release of the lease.
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save_releasing(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
        lease: &Lease,
    ) -> Result<Version> {
        self.write(key, bytes, expected, due, Some(lease)).await
    }

    /// One statement: the compare-and-set delete and the release of the lease (a
    /// second one only when the record was gone already).
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete_releasing(&self, key: &str, expected: Version, lease: &Lease) -> Result<()> {
        check_key(key)?;
        let q = self.table.queries();
        let now = self.table.now();
        let done = sqlx::query(&q.delete_release)
            .bind(key)
            .bind(sql::version_param(expected))
            .bind(now)
            .bind(lease.token())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        if done.rows_affected() > 0 {
            return Ok(());
        }
        // Nothing deleted: a conflict, or no record (then the lease goes back apart).
        let current = sqlx::query(&q.current_version)
            .bind(key)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        if current.is_some() {
            return Err(Error::Conflict {
                key: key.to_owned(),
            });
        }
        self.release_lease(lease).await?;
        Ok(())
    }

    fn leases(&self) -> Option<&dyn LeaseStore> {
        self.leases.then_some(self as &dyn LeaseStore)
    }

    fn purge(&self) -> Option<&dyn PurgeExpired> {
        Some(self)
    }
}

#[async_trait]
impl PurgeExpired for PostgresStore {
    async fn purge_expired(&self) -> Result<u64> {
        PostgresStore::purge_expired(self).await
    }
}

#[async_trait]
impl LeaseStore for PostgresStore {
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease(&self, key: &str, ttl: Duration) -> Result<LeaseAttempt> {
        check_key(key)?;
        let lease = Lease::generate(key);
        let done = sqlx::query(&self.table.queries().lease_acquire)
            .bind(key)
            .bind(lease.token())
            .bind(sql::lease_ttl_ms(ttl))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(LeaseAttempt::taken(done.rows_affected() == 1, lease))
    }

    /// Takes the lease and reads the record in one statement: a call of the lease
    /// function (`{table}_take_v1`, which [`migrate`](PostgresStore::migrate) creates)
    /// when there is one, else a data-modifying CTE.
    ///
    /// The CTE's snapshot is taken before it may wait on the lease row, so it can
    /// predate the previous holder's last save. The record is therefore read `FOR SHARE`
    /// after the lease is taken, which follows a row to its newest committed version.
    /// A row the snapshot cannot see at all (the previous holder created it) cannot be
    /// followed that way, and a row someone else holds locked is skipped (`SKIP LOCKED`:
    /// the statement holds the lease row and must not wait on another transaction):
    /// when no row comes back, a second, fresh read settles it. That costs one more
    /// round trip for a key without a record, never for an existing one.
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease_and_load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<(LeaseAttempt, Preload)> {
        check_key(key)?;
        let now = self.table.now();
        let q = self.table.queries();
        let lease = Lease::generate(key);
        // The lease function reads with a snapshot of its own, taken after the lease.
        let function = self
            .take_function
            .load(std::sync::atomic::Ordering::Acquire);
        let take = if function {
            &q.call_take
        } else {
            &q.lease_acquire_load
        };
        let row = sqlx::query(take)
            .bind(key)
            .bind(lease.token())
            .bind(sql::lease_ttl_ms(ttl))
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        let taken: bool = row.try_get(0).map_err(db_err)?;
        if !taken {
            return Ok((LeaseAttempt::Busy, Preload::NotRead));
        }
        // Taken: a failure from here on gives the lease back (it is not handed out, and
        // would block the key until it expires).
        match self.read_leased(key, &row, now, function).await {
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
            .bind(lease.key())
            .bind(lease.token())
            .bind(sql::lease_ttl_ms(ttl))
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

#[async_trait]
impl PendingIndex for PostgresStore {
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save_pending(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: i64,
    ) -> Result<Version> {
        self.write(key, bytes, expected, Some(due), None).await
    }

    async fn pending_keys(&self, now: i64, limit: usize) -> Result<Vec<String>> {
        let q = self.table.queries();
        self.rows()
            .pending_keys(&q.pending_keys, self.table.now(), limit, now)
            .await
    }
}
