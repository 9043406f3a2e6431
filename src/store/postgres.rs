//! [`PostgresStore`]: a server store on sqlx's PostgreSQL driver.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::sql::{self, DEFAULT_TABLE};
use super::{
    Lease, LeaseAttempt, LeaseStore, ListFilter, Preload, PurgeExpired, Record, SessionStore,
    Version,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

const BACKEND: &str = "postgres";

fn db_err(e: sqlx::Error) -> Error {
    Error::store(BACKEND, e)
}

#[derive(Debug)]
struct Queries {
    create_table: String,
    create_index: String,
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
    lease_acquire: String,
    lease_acquire_load: String,
}

impl Queries {
    fn new(table: &str) -> Self {
        let r = |t: &str| sql::render(t, table);
        Self {
            create_table: r(include_str!("queries/postgres/create_table.sql")),
            create_index: r(include_str!("queries/postgres/create_index.sql")),
            load: r(include_str!("queries/postgres/load.sql")),
            insert: r(include_str!("queries/postgres/insert.sql")),
            update: r(include_str!("queries/postgres/update.sql")),
            delete: r(include_str!("queries/postgres/delete.sql")),
            current_version: r(include_str!("queries/postgres/current_version.sql")),
            delete_expired: r(include_str!("queries/postgres/delete_expired.sql")),
            list: r(include_str!("queries/postgres/list.sql")),
            purge: r(include_str!("queries/postgres/purge.sql")),
            create_lease_table: r(include_str!("queries/postgres/create_lease_table.sql")),
            lease_renew: r(include_str!("queries/postgres/lease_renew.sql")),
            lease_release: r(include_str!("queries/postgres/lease_release.sql")),
            lease_purge: r(include_str!("queries/postgres/lease_purge.sql")),
            lease_acquire: r(include_str!("queries/postgres/lease_acquire.sql")),
            lease_acquire_load: r(include_str!("queries/postgres/lease_acquire_load.sql")),
        }
    }
}

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
    table: Arc<str>,
    queries: Arc<Queries>,
    ttl_ms: Option<i64>,
    clock: Arc<dyn Clock>,
    leases: bool,
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
            table: Arc::from(DEFAULT_TABLE),
            queries: Arc::new(Queries::new(DEFAULT_TABLE)),
            ttl_ms: None,
            clock: Arc::new(SystemClock),
            leases: true,
        }
    }

    sql::sql_server_store_methods!("postgres");

    sql::sql_store_methods!(PgPool);

    /// Creates the table, its `expires_at` index and the leases' table
    /// (`{table}_lease`) if they do not exist (idempotent).
    ///
    /// # Errors
    /// [`Error::Store`] when the statements fail.
    #[tracing::instrument(skip_all, fields(table = %self.table), err)]
    pub async fn migrate(&self) -> Result<()> {
        sqlx::raw_sql(&self.queries.create_table)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        sqlx::raw_sql(&self.queries.create_index)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        sqlx::raw_sql(&self.queries.create_lease_table)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
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
        let now = self.clock.now_ms();
        let expires_at = self.expires_at(now);
        let (version, done) = match expected {
            None => {
                let version = Version::initial();
                let done = sqlx::query(&self.queries.insert)
                    .bind(key)
                    .bind(bytes)
                    .bind(sql::version_param(version))
                    .bind(expires_at)
                    .bind(now)
                    .execute(&self.pool)
                    .await;
                (version, done)
            }
            Some(expected) => {
                let version = expected.next();
                let done = sqlx::query(&self.queries.update)
                    .bind(bytes)
                    .bind(sql::version_param(version))
                    .bind(expires_at)
                    .bind(key)
                    .bind(sql::version_param(expected))
                    .bind(now)
                    .execute(&self.pool)
                    .await;
                (version, done)
            }
        };
        if done.map_err(db_err)?.rows_affected() == 1 {
            Ok(version)
        } else {
            Err(Error::Conflict {
                key: key.to_owned(),
            })
        }
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete(&self, key: &str, expected: Version) -> Result<()> {
        self.delete_row(key, expected).await
    }

    #[tracing::instrument(skip_all, fields(prefix = %filter.prefix), err(level = "debug"))]
    async fn list(&self, filter: &ListFilter) -> Result<Vec<String>> {
        self.list_keys(&sql::like_prefix(&filter.prefix), filter.limit)
            .await
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
        let lease = Lease::generate(key);
        let done = sqlx::query(&self.queries.lease_acquire)
            .bind(key)
            .bind(lease.token())
            .bind(sql::lease_ttl_ms(ttl))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(LeaseAttempt::taken(done.rows_affected() == 1, lease))
    }

    /// Takes the lease and reads the record in one statement (a data-modifying CTE).
    ///
    /// The statement's snapshot is taken before it may wait on the lease row, so it can
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
        let now = self.clock.now_ms();
        let lease = Lease::generate(key);
        let row = sqlx::query(&self.queries.lease_acquire_load)
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
        let data: Option<Vec<u8>> = row.try_get(1).map_err(db_err)?;
        let version: Option<i64> = row.try_get(2).map_err(db_err)?;
        let expires_at: Option<i64> = row.try_get(3).map_err(db_err)?;
        let Some(fetched) = data.zip(version).map(|(d, v)| (d, v, expires_at)) else {
            // Held now: a plain read sees everything committed before the lease was ours.
            return match self.load(key).await {
                Ok(record) => Ok((LeaseAttempt::Acquired(lease), Preload::Read(record))),
                Err(e) => {
                    // Not handed out, so given back here (else it would block the key
                    // until it expires).
                    let _ = self.release_row_lease(&lease).await;
                    Err(e)
                }
            };
        };
        let record = self.live_record(key, Some(fetched), now).await?;
        Ok((LeaseAttempt::Acquired(lease), Preload::Read(record)))
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let done = sqlx::query(&self.queries.lease_renew)
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
        self.release_row_lease(lease).await
    }
}
