//! [`MySqlStore`]: a server store on sqlx's MySQL driver (MySQL 8, MariaDB 10.5+).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::mysql::MySqlPool;

use super::sql::{self, DEFAULT_TABLE};
use super::{
    Lease, LeaseAttempt, LeaseStore, ListFilter, PurgeExpired, Record, SessionStore, Version,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Message, Result};

const BACKEND: &str = "mysql";

/// The size of the `session_key VARBINARY` column.
const MAX_KEY_BYTES: usize = 1024;

fn db_err(e: sqlx::Error) -> Error {
    Error::store(BACKEND, e)
}

fn is_duplicate_key(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A deadlock or lock wait timeout (InnoDB's answers to racing lease statements): the
/// lease is busy.
fn is_lock_contention(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40001" || c == "HY000" && db.message().contains("Lock wait timeout")))
}

#[derive(Debug)]
struct Queries {
    create_table: String,
    load: String,
    insert: String,
    update: String,
    delete: String,
    current_version: String,
    delete_expired: String,
    list: String,
    purge: String,
    create_lease_table: String,
    lease_renew: String,
    lease_release: String,
    lease_purge: String,
    lease_insert: String,
    lease_take_expired: String,
}

impl Queries {
    fn new(table: &str) -> Self {
        let r = |t: &str| sql::render(t, table);
        Self {
            create_table: r(include_str!("queries/mysql/create_table.sql")),
            load: r(include_str!("queries/mysql/load.sql")),
            insert: r(include_str!("queries/mysql/insert.sql")),
            update: r(include_str!("queries/mysql/update.sql")),
            delete: r(include_str!("queries/mysql/delete.sql")),
            current_version: r(include_str!("queries/mysql/current_version.sql")),
            delete_expired: r(include_str!("queries/mysql/delete_expired.sql")),
            list: r(include_str!("queries/mysql/list.sql")),
            purge: r(include_str!("queries/mysql/purge.sql")),
            create_lease_table: r(include_str!("queries/mysql/create_lease_table.sql")),
            lease_renew: r(include_str!("queries/mysql/lease_renew.sql")),
            lease_release: r(include_str!("queries/mysql/lease_release.sql")),
            lease_purge: r(include_str!("queries/mysql/lease_purge.sql")),
            lease_insert: r(include_str!("queries/mysql/lease_insert.sql")),
            lease_take_expired: r(include_str!("queries/mysql/lease_take_expired.sql")),
        }
    }
}

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
    table: Arc<str>,
    queries: Arc<Queries>,
    ttl_ms: Option<i64>,
    clock: Arc<dyn Clock>,
    leases: bool,
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
            table: Arc::from(DEFAULT_TABLE),
            queries: Arc::new(Queries::new(DEFAULT_TABLE)),
            ttl_ms: None,
            clock: Arc::new(SystemClock),
            leases: true,
        }
    }

    sql::sql_server_store_methods!("mysql");

    sql::sql_store_methods!(MySqlPool);

    /// Creates the table (with its `expires_at` index) and the leases' table
    /// (`{table}_lease`) if they do not exist (idempotent).
    ///
    /// # Errors
    /// [`Error::Store`] when the statement fails.
    #[tracing::instrument(skip_all, fields(table = %self.table), err)]
    pub async fn migrate(&self) -> Result<()> {
        sqlx::raw_sql(&self.queries.create_table)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        sqlx::raw_sql(&self.queries.create_lease_table)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// `INSERT`s a new record; `Ok(false)` when a row with this key exists.
    async fn insert(
        &self,
        key: &str,
        bytes: &[u8],
        version: Version,
        expires_at: Option<i64>,
    ) -> Result<bool> {
        let done = sqlx::query(&self.queries.insert)
            .bind(key)
            .bind(bytes)
            .bind(sql::version_param(version))
            .bind(expires_at)
            .execute(&self.pool)
            .await;
        match done {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn delete_expired(&self, key: &str, now: i64) -> Result<u64> {
        let done = sqlx::query(&self.queries.delete_expired)
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
        crate::store::CacheHint::from_ttl_ms(self.ttl_ms, &self.clock, false)
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn load(&self, key: &str) -> Result<Option<Record>> {
        self.load_row(key).await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>) -> Result<Version> {
        if key.len() > MAX_KEY_BYTES {
            // Refused here: outside strict SQL mode the server would truncate it silently.
            return Err(Error::store(
                BACKEND,
                Message(format!(
                    "a key is {} bytes long, the limit is {MAX_KEY_BYTES}",
                    key.len()
                )),
            ));
        }
        let now = self.clock.now_ms();
        let expires_at = self.expires_at(now);
        let conflict = || Error::Conflict {
            key: key.to_owned(),
        };
        match expected {
            None => {
                let version = Version::initial();
                if self.insert(key, bytes, version, expires_at).await? {
                    return Ok(version);
                }
                // A row is in the way: if it expired, remove it and try once more; a
                // concurrent writer that gets there first makes this a conflict.
                if self.delete_expired(key, now).await? == 0 {
                    return Err(conflict());
                }
                if self.insert(key, bytes, version, expires_at).await? {
                    Ok(version)
                } else {
                    Err(conflict())
                }
            }
            Some(expected) => {
                let version = expected.next();
                // sqlx asks for CLIENT_FOUND_ROWS: rows affected counts matched rows.
                let done = sqlx::query(&self.queries.update)
                    .bind(bytes)
                    .bind(sql::version_param(version))
                    .bind(expires_at)
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

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete(&self, key: &str, expected: Version) -> Result<()> {
        self.delete_row(key, expected).await
    }

    #[tracing::instrument(skip_all, fields(prefix = %filter.prefix), err(level = "debug"))]
    async fn list(&self, filter: &ListFilter) -> Result<Vec<String>> {
        let now = self.clock.now_ms();
        let rows = sqlx::query(&self.queries.list)
            .bind(sql::like_prefix(&filter.prefix))
            .bind(now)
            .bind(sql::limit_param(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let key: Vec<u8> = row.try_get(0).map_err(db_err)?;
                String::from_utf8(key).map_err(|e| {
                    Error::store(BACKEND, Message(format!("stored key is not UTF-8: {e}")))
                })
            })
            .collect()
    }

    fn leases(&self) -> Option<&dyn LeaseStore> {
        self.leases.then_some(self as &dyn LeaseStore)
    }

    fn purge(&self) -> Option<&dyn PurgeExpired> {
        Some(self)
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
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::store(
                BACKEND,
                Message(format!(
                    "a key is {} bytes long, the limit is {MAX_KEY_BYTES}",
                    key.len()
                )),
            ));
        }
        let lease = Lease::generate(key);
        let ttl = sql::lease_ttl_ms(ttl);
        let inserted = sqlx::query(&self.queries.lease_insert)
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
        let taken = sqlx::query(&self.queries.lease_take_expired)
            .bind(lease.token())
            .bind(ttl)
            .bind(key)
            .execute(&self.pool)
            .await;
        match taken {
            Ok(done) if done.rows_affected() == 1 => Ok(LeaseAttempt::Acquired(lease)),
            Ok(_) => Ok(LeaseAttempt::Busy),
            Err(e) if is_lock_contention(&e) => Ok(LeaseAttempt::Busy),
            Err(e) => Err(db_err(e)),
        }
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let done = sqlx::query(&self.queries.lease_renew)
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
        self.release_row_lease(lease).await
    }
}
