//! Helpers shared by the SQL stores: table-name validation, query templating, parameters.

use std::time::Duration;

use super::Version;
use crate::error::{Error, Message, Result};

/// The table used when none is configured.
pub(crate) const DEFAULT_TABLE: &str = "stagecraft_sessions";

/// Accepts `[A-Za-z_][A-Za-z0-9_]{0,62}`: the only string ever spliced into SQL.
pub(crate) fn validate_table(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "table name {name:?} is not valid: use 1 to 63 ASCII letters, digits or `_`, not starting with a digit"
        )))
    }
}

/// Replaces `{table}` (and `{index}`, the name of the expiry index, and `{lease_table}`,
/// the table of per-key leases) in a query template. `table` must have passed
/// [`validate_table`].
pub(crate) fn render(template: &str, table: &str) -> String {
    template
        .replace("{index}", &index_name(table))
        .replace("{lease_table}", &lease_table_name(table))
        .replace("{table}", table)
}

/// The leases' table: `{table}_lease`, shortened (with a hash) to stay within 63 bytes.
pub(crate) fn lease_table_name(table: &str) -> String {
    if table.len() <= 57 {
        format!("{table}_lease")
    } else {
        format!("{}_{:08x}_lease", &table[..40], fnv(table))
    }
}

/// FNV-1a, so that long names sharing 40 leading characters get distinct derived names.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A name for the table's `expires_at` index that stays within PostgreSQL's 63 bytes.
fn index_name(table: &str) -> String {
    if table.len() <= 50 {
        format!("{table}_expires_idx")
    } else {
        format!("{}_{:08x}_exp", &table[..40], fnv(table))
    }
}

/// `prefix` as a `LIKE` pattern matching the keys that start with it (`!` escapes).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn like_prefix(prefix: &str) -> String {
    // `!` rather than `\`: it means the same under every SQL mode (MySQL's
    // `NO_BACKSLASH_ESCAPES`, PostgreSQL's `standard_conforming_strings`).
    const LIKE_ESCAPE: char = '!';
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | LIKE_ESCAPE) {
            out.push(LIKE_ESCAPE);
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A version as a `BIGINT` parameter; `-1` (never stored) for versions no store hands out.
pub(crate) fn version_param(v: Version) -> i64 {
    i64::try_from(v.0).unwrap_or(-1)
}

/// A version read from a `BIGINT` column.
pub(crate) fn version_from_db(backend: &'static str, v: i64) -> Result<Version> {
    u64::try_from(v)
        .map(Version)
        .map_err(|_| Error::store(backend, Message(format!("stored version {v} is negative"))))
}

/// A lease TTL in milliseconds (saturating, at least 1).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn lease_ttl_ms(ttl: Duration) -> i64 {
    ttl_ms(ttl).max(1)
}

/// A TTL in milliseconds (saturating).
pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// How long a pooled connection may have been idle and still be handed out unchecked.
#[cfg(any(feature = "postgres", feature = "mysql"))]
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pool options of the server stores' `connect`.
///
/// sqlx's default (`test_before_acquire`) pings every connection it hands out: one more
/// round trip before every statement, on the update's path. sqlx also pings each
/// connection as it goes back to the pool, so a connection taken from the idle queue
/// answered a moment ago: only one idle for [`PING_AFTER_IDLE`] or longer (time enough for
/// the server to restart or a firewall to drop it) is pinged before use, and replaced when
/// the ping fails. One that dies within that second fails its statement, as it would had
/// it died during the statement.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn pool_options<DB: sqlx::Database>() -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// A `LIMIT` parameter.
pub(crate) fn limit_param(limit: Option<usize>) -> i64 {
    limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

/// Whether a row with this `expires_at` is live at `now`.
pub(crate) fn is_live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|e| e > now)
}

/// The methods the SQL stores share word for word, generated inside each store's
/// `impl` (the pool type is the store's). Names such as `db_err`, `BACKEND`, `Row` and
/// `sqlx` resolve in the calling module.
macro_rules! sql_store_methods {
    ($pool:ty) => {
        /// Records expire `ttl` after their last save.
        #[must_use]
        pub fn with_ttl(mut self, ttl: std::time::Duration) -> Self {
            self.ttl_ms = Some(sql::ttl_ms(ttl));
            self
        }

        /// Reads time from `clock` (for TTLs) instead of the system clock.
        #[must_use]
        pub fn with_clock(mut self, clock: std::sync::Arc<dyn crate::clock::Clock>) -> Self {
            self.clock = clock;
            self
        }

        /// The connection pool.
        #[must_use]
        pub fn pool(&self) -> &$pool {
            &self.pool
        }

        /// The table name.
        #[must_use]
        pub fn table(&self) -> &str {
            &self.table
        }

        fn expires_at(&self, now: i64) -> Option<i64> {
            self.ttl_ms.map(|ttl| now.saturating_add(ttl))
        }

        /// Reads the row of `key`; an expired row is removed and reads as absent.
        #[allow(dead_code)] // SQLite reads through its grouped reader first
        async fn load_row(&self, key: &str) -> Result<Option<Record>> {
            let now = self.clock.now_ms();
            let row = self.fetch_row(key).await?;
            self.live_record(key, row, now).await
        }

        /// The data, version and expiry of the row of `key`, as stored.
        async fn fetch_row(&self, key: &str) -> Result<Option<(Vec<u8>, i64, Option<i64>)>> {
            let row = sqlx::query(&self.queries.load)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some((
                row.try_get(0).map_err(db_err)?,
                row.try_get(1).map_err(db_err)?,
                row.try_get(2).map_err(db_err)?,
            )))
        }

        /// The record of a fetched row, unless it expired at `now` (then it is removed).
        async fn live_record(
            &self,
            key: &str,
            row: Option<(Vec<u8>, i64, Option<i64>)>,
            now: i64,
        ) -> Result<Option<Record>> {
            let Some((bytes, version, expires_at)) = row else { return Ok(None) };
            if !sql::is_live(expires_at, now) {
                let removed = sqlx::query(&self.queries.delete_expired)
                    .bind(key)
                    .bind(now)
                    .execute(&self.pool)
                    .await;
                if let Err(e) = removed {
                    tracing::debug!(error = %e, "could not remove an expired session");
                }
                return Ok(None);
            }
            Ok(Some(Record { bytes, version: sql::version_from_db(BACKEND, version)? }))
        }

        /// Deletes the row of `key` if it has version `expected`; an absent or expired
        /// row is success, a live row with another version a conflict.
        async fn delete_row(&self, key: &str, expected: Version) -> Result<()> {
            let now = self.clock.now_ms();
            let done = sqlx::query(&self.queries.delete)
                .bind(key)
                .bind(sql::version_param(expected))
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            if done.rows_affected() > 0 {
                return Ok(());
            }
            let current = sqlx::query(&self.queries.current_version)
                .bind(key)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
            match current {
                Some(_) => Err(Error::Conflict { key: key.to_owned() }),
                None => Ok(()),
            }
        }

        /// The live keys matching `pattern` (the prefix as the list query binds it).
        #[allow(dead_code)] // MySQL keys are VARBINARY: it decodes them itself
        async fn list_keys(&self, pattern: &str, limit: Option<usize>) -> Result<Vec<String>> {
            let now = self.clock.now_ms();
            let rows = sqlx::query(&self.queries.list)
                .bind(pattern)
                .bind(now)
                .bind(sql::limit_param(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
            rows.iter().map(|row| row.try_get::<String, _>(0).map_err(db_err)).collect()
        }
    };
}

pub(crate) use sql_store_methods;

/// The methods the server SQL stores (PostgreSQL, MySQL) share: connecting, leases,
/// choosing the table, purging. `$scheme` is the URL scheme shown in the docs.
#[cfg(any(feature = "postgres", feature = "mysql"))]
macro_rules! sql_server_store_methods {
    ($scheme:literal) => {
        #[doc = concat!("Connects a pool to `url` (`", $scheme, "://user:password@host/database`) and")]
        /// creates the table `stagecraft_sessions` (and its leases' table) if needed.
        ///
        /// The pool has sqlx's defaults, except that a connection is checked (pinged)
        /// before use only after it was idle for a second, not before every statement.
        ///
        /// # Errors
        /// [`Error::Store`] when the server cannot be reached or the table cannot be created.
        pub async fn connect(url: &str) -> Result<Self> {
            let pool = sql::pool_options().connect(url).await.map_err(db_err)?;
            let store = Self::new(pool);
            store.migrate().await?;
            Ok(store)
        }

        /// Whether this store hands out per-key leases (default `true`; they live in the
        /// table `{table}_lease`, which [`migrate`](Self::migrate) creates). With `false`,
        /// [`leases`](SessionStore::leases) is `None`, so a pipeline on it takes no
        /// leases and relies on compare-and-set alone.
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
            sql::validate_table(table)?;
            self.table = std::sync::Arc::from(table);
            self.queries = std::sync::Arc::new(Queries::new(table));
            Ok(self)
        }

        /// Deletes every expired row now and returns how many were deleted (expired
        /// leases, of holders that died, are deleted too, uncounted).
        ///
        /// Expired rows are already invisible; this reclaims their space. Call it
        /// periodically (e.g. hourly) when a TTL is set.
        ///
        /// # Errors
        /// [`Error::Store`] when a statement fails.
        #[tracing::instrument(skip_all, fields(table = %self.table), err)]
        pub async fn purge_expired(&self) -> Result<u64> {
            let now = self.clock.now_ms();
            let done = sqlx::query(&self.queries.purge)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            sqlx::query(&self.queries.lease_purge)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            Ok(done.rows_affected())
        }

        /// Gives the lease back if `lease`'s token still holds it.
        async fn release_row_lease(&self, lease: &Lease) -> Result<bool> {
            let done = sqlx::query(&self.queries.lease_release)
                .bind(lease.key())
                .bind(lease.token())
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            Ok(done.rows_affected() == 1)
        }
    };
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) use sql_server_store_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for ok in ["a", "_", "sessions", "Bot_2", &"a".repeat(63)] {
            assert!(validate_table(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "a-b",
            "x; DROP TABLE y",
            "a\"b",
            "a`b",
            "ü",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(validate_table(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn index_names_fit() {
        assert_eq!(index_name("s"), "s_expires_idx");
        let long = "a".repeat(63);
        assert!(index_name(&long).len() <= 63);
        assert_ne!(index_name(&long), index_name(&"a".repeat(62)));
        assert_eq!(lease_table_name("s"), "s_lease");
        assert!(lease_table_name(&long).len() <= 63);
        assert!(lease_table_name(&"a".repeat(57)).len() <= 63);
        assert_ne!(lease_table_name(&long), lease_table_name(&"a".repeat(62)));
    }

    #[cfg(any(feature = "postgres", feature = "mysql"))]
    #[test]
    fn like_escaping() {
        assert_eq!(like_prefix("a%b_c!d"), "a!%b!_c!!d%");
    }
}
