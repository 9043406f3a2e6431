//! What the SQL stores share: their table ([`SqlTable`]: name, statements, TTL, clock),
//! the row calls ([`Rows`]), the statement tables ([`queries!`]), table-name validation,
//! query templating and parameters.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{CacheHint, Record, Version};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Message, Result};

#[cfg(any(feature = "postgres", feature = "mysql"))]
use super::Lease;

/// The table used when none is configured.
pub(crate) const DEFAULT_TABLE: &str = "stagecraft_sessions";

/// Options of a server store's `connect_with` (`PostgresStore`, `MySqlStore`): the
/// table and whether the store hands out leases.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerOptions {
    pub(crate) table: String,
    pub(crate) leases: bool,
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            table: DEFAULT_TABLE.to_owned(),
            leases: true,
        }
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl ServerOptions {
    /// The default options: table `stagecraft_sessions`, leases on.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The table to keep sessions in (validated before connecting); its leases live in
    /// `{table}_lease`.
    #[must_use]
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Whether the store hands out per-key leases (see the store's `with_leases`).
    #[must_use]
    pub fn leases(mut self, on: bool) -> Self {
        self.leases = on;
        self
    }
}

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

/// Replaces `{table}` (and `{index}`, the name of the expiry index, `{due_index}`, the
/// name of the index of due work (pending replies, timers), and `{lease_table}`, the table of per-key
/// leases) in a query template. `table` must have passed [`validate_table`].
pub(crate) fn render(template: &str, table: &str) -> String {
    template
        .replace("{index}", &index_name(table))
        .replace("{due_index}", &due_index_name(table))
        .replace("{lease_table}", &lease_table_name(table))
        .replace("{routine}", &routine_name(table))
        .replace("{table}", table)
}

/// The stem of the names of the table's stored routines (MySQL procedures such as
/// `{routine}_take_v1`): the table's name, shortened (with a hash) to leave room for a
/// suffix within 64 bytes.
fn routine_name(table: &str) -> String {
    if table.len() <= 48 {
        table.to_owned()
    } else {
        format!("{}_{:08x}", &table[..39], fnv(table))
    }
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

/// A name for the table's index of due work (`due_at`), within PostgreSQL's 63 bytes.
fn due_index_name(table: &str) -> String {
    if table.len() <= 54 {
        format!("{table}_due_idx")
    } else {
        format!("{}_{:08x}_due", &table[..40], fnv(table))
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

/// A TTL in milliseconds, at most [`MAX_TTL_MS`](super::MAX_TTL_MS) (100 years).
pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(super::capped_ttl_ms(ttl)).unwrap_or(i64::MAX)
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

/// Declares the statements of one SQL backend: a struct with one `String` per statement,
/// each read at compile time from `src/store/queries/{backend}/{name}.sql` and rendered
/// for a table by `render(table)`.
///
/// ```text
/// sql::queries!(
///     /// The SQLite statements, rendered for one table.
///     struct Queries in "sqlite" { create_table, load, insert }
/// );
/// let q = Queries::render("stagecraft_sessions");
/// ```
macro_rules! queries {
    ($(#[$doc:meta])* struct $name:ident in $backend:literal { $($query:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name {
            $(
                #[doc = concat!("`queries/", $backend, "/", stringify!($query), ".sql`")]
                pub(crate) $query: String,
            )+
        }

        impl $crate::store::sql::Statements for $name {
            fn render(table: &str) -> Self {
                Self {
                    $(
                        $query: $crate::store::sql::render(
                            include_str!(concat!(
                                env!("CARGO_MANIFEST_DIR"),
                                "/src/store/queries/",
                                $backend,
                                "/",
                                stringify!($query),
                                ".sql"
                            )),
                            table,
                        ),
                    )+
                }
            }
        }
    };
}

pub(crate) use queries;

/// The statements of a SQL backend, rendered for one table (declared with [`queries!`]).
pub(crate) trait Statements: fmt::Debug + Send + Sync + Sized + 'static {
    /// Every statement with `{table}` (and the names derived from it) filled in. `table`
    /// must have passed [`validate_table`].
    fn render(table: &str) -> Self;
}

/// The table of a SQL store: its name, its statements rendered for it, the TTL of its
/// records and the clock that measures it. Clones share the statements.
#[derive(Debug)]
pub(crate) struct SqlTable<Q> {
    name: Arc<str>,
    queries: Arc<Q>,
    ttl_ms: Option<i64>,
    clock: Arc<dyn Clock>,
}

impl<Q> Clone for SqlTable<Q> {
    fn clone(&self) -> Self {
        Self {
            name: Arc::clone(&self.name),
            queries: Arc::clone(&self.queries),
            ttl_ms: self.ttl_ms,
            clock: Arc::clone(&self.clock),
        }
    }
}

impl<Q: Statements> SqlTable<Q> {
    /// The table [`DEFAULT_TABLE`], records without a TTL, the system clock.
    pub(crate) fn new() -> Self {
        Self {
            name: Arc::from(DEFAULT_TABLE),
            queries: Arc::new(Q::render(DEFAULT_TABLE)),
            ttl_ms: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The table `name`, with the statements rendered for it.
    ///
    /// # Errors
    /// [`Error::Config`] when the name is not valid (see [`validate_table`]).
    pub(crate) fn renamed(self, name: &str) -> Result<Self> {
        validate_table(name)?;
        Ok(Self {
            name: Arc::from(name),
            queries: Arc::new(Q::render(name)),
            ..self
        })
    }

    /// Records expire `ttl` after their last save.
    pub(crate) fn with_ttl(self, ttl: Duration) -> Self {
        Self {
            ttl_ms: Some(ttl_ms(ttl)),
            ..self
        }
    }

    /// Time (for TTLs) comes from `clock`.
    pub(crate) fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// The table name.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The statements.
    pub(crate) fn queries(&self) -> &Arc<Q> {
        &self.queries
    }

    /// The clock's time, in milliseconds since the epoch.
    pub(crate) fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The `expires_at` of a record saved at `now` (`None`: it never expires).
    pub(crate) fn expires_at(&self, now: i64) -> Option<i64> {
        self.ttl_ms.map(|ttl| now.saturating_add(ttl))
    }

    /// The store's [`CacheHint`]: records live the TTL after their last save, by the clock.
    pub(crate) fn cache_hint(&self, write_through_by_default: bool) -> Option<CacheHint> {
        CacheHint::from_ttl_ms(self.ttl_ms, &self.clock, write_through_by_default)
    }
}

/// The number of rows a statement changed (each sqlx driver's query result has its own
/// `rows_affected`).
pub(crate) trait RowsAffected {
    /// Rows inserted, updated or deleted (MySQL: matched, as sqlx asks for
    /// `CLIENT_FOUND_ROWS`).
    fn rows_affected(&self) -> u64;
}

#[cfg(feature = "sqlite")]
impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

#[cfg(feature = "postgres")]
impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

#[cfg(feature = "mysql")]
impl RowsAffected for sqlx::mysql::MySqlQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// A stored row: data, version, expiry.
pub(crate) type Row3 = (Vec<u8>, i64, Option<i64>);

/// The row calls the SQL stores share, on the pool of one of them. The statements are
/// the store's own; the bounds say that the database has the column types they use
/// (text keys, binary data, 64-bit integer versions and expiries).
#[derive(Debug)]
pub(crate) struct Rows<'p, DB: Database> {
    pool: &'p Pool<DB>,
    backend: &'static str,
}

impl<'p, DB> Rows<'p, DB>
where
    DB: Database,
    DB::QueryResult: RowsAffected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// The row calls of the store `backend` on `pool`.
    pub(crate) fn new(pool: &'p Pool<DB>, backend: &'static str) -> Self {
        Self { pool, backend }
    }

    fn err(&self, e: sqlx::Error) -> Error {
        Error::store(self.backend, e)
    }

    /// Runs `statements` (DDL, no parameters) one after the other.
    pub(crate) async fn run_all(&self, statements: &[&str]) -> Result<()> {
        for statement in statements {
            sqlx::raw_sql(statement)
                .execute(self.pool)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Runs the statement `sql` without parameters; returns the rows it affected.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub(crate) async fn execute(&self, sql: &str) -> Result<u64> {
        let done = sqlx::query(sql)
            .execute(self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(RowsAffected::rows_affected(&done))
    }

    /// The data, version and expiry of the row of `key`, as stored (`load` binds the key).
    pub(crate) async fn fetch_row(&self, load: &str, key: &str) -> Result<Option<Row3>> {
        let row = sqlx::query(load)
            .bind(key)
            .fetch_optional(self.pool)
            .await
            .map_err(|e| self.err(e))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((
            row.try_get(0).map_err(|e| self.err(e))?,
            row.try_get(1).map_err(|e| self.err(e))?,
            row.try_get(2).map_err(|e| self.err(e))?,
        )))
    }

    /// The record of a fetched row, unless it expired at `now`; then it is removed with
    /// `delete_expired` (binds the key and `now`) and reads as absent.
    pub(crate) async fn live_record(
        &self,
        delete_expired: &str,
        key: &str,
        row: Option<Row3>,
        now: i64,
    ) -> Result<Option<Record>> {
        let Some((bytes, version, expires_at)) = row else {
            return Ok(None);
        };
        if !is_live(expires_at, now) {
            let removed = sqlx::query(delete_expired)
                .bind(key)
                .bind(now)
                .execute(self.pool)
                .await;
            if let Err(e) = removed {
                tracing::debug!(error = %e, "could not remove an expired session");
            }
            return Ok(None);
        }
        Ok(Some(Record {
            bytes,
            version: version_from_db(self.backend, version)?,
        }))
    }

    /// Deletes the row of `key` if it has version `expected`, with `delete` (binds the
    /// key, the version and `now`); an absent or expired row is success, a live row with
    /// another version (`current_version` binds the key and `now`) a conflict.
    pub(crate) async fn delete_row(
        &self,
        delete: &str,
        current_version: &str,
        key: &str,
        expected: Version,
        now: i64,
    ) -> Result<()> {
        let done = sqlx::query(delete)
            .bind(key)
            .bind(version_param(expected))
            .bind(now)
            .execute(self.pool)
            .await
            .map_err(|e| self.err(e))?;
        if RowsAffected::rows_affected(&done) > 0 {
            return Ok(());
        }
        let current = sqlx::query(current_version)
            .bind(key)
            .bind(now)
            .fetch_optional(self.pool)
            .await
            .map_err(|e| self.err(e))?;
        match current {
            Some(_) => Err(Error::Conflict {
                key: key.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The keys `list` returns for `pattern` (the prefix as it binds it), live at `now`.
    /// (MySQL keys are `VARBINARY`: that store decodes them itself.)
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) async fn list_keys(
        &self,
        list: &str,
        pattern: &str,
        now: i64,
        limit: Option<usize>,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(list)
            .bind(pattern)
            .bind(now)
            .bind(limit_param(limit))
            .fetch_all(self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).map_err(|e| self.err(e)))
            .collect()
    }

    /// Up to `limit` keys of live rows whose work is due by `due_by`, earliest first,
    /// with `pending_keys` (binds `now`, the limit and `due_by`).
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) async fn pending_keys(
        &self,
        pending_keys: &str,
        now: i64,
        limit: usize,
        due_by: i64,
    ) -> Result<Vec<String>> {
        sqlx::query_scalar(pending_keys)
            .bind(now)
            .bind(limit_param(Some(limit)))
            .bind(due_by)
            .fetch_all(self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    /// Deletes the rows expired at `now` with `purge` (binds `now`); returns how many.
    pub(crate) async fn purge(&self, purge: &str, now: i64) -> Result<u64> {
        let done = sqlx::query(purge)
            .bind(now)
            .execute(self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(RowsAffected::rows_affected(&done))
    }

    /// Gives `lease` back with `lease_release` (binds the key and the token) if its token
    /// still holds it.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub(crate) async fn release_lease(&self, lease_release: &str, lease: &Lease) -> Result<bool> {
        let done = sqlx::query(lease_release)
            .bind(lease.key())
            .bind(lease.token())
            .execute(self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(RowsAffected::rows_affected(&done) == 1)
    }
}

/// One compare-and-set save: the key, the record, the version it expects (`None`: a new
/// record), the time it is written at, when it expires and when its work falls due
/// (the index of due work; `None`: nothing due).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SaveArgs<'q> {
    pub(crate) key: &'q str,
    pub(crate) bytes: &'q [u8],
    pub(crate) expected: Option<Version>,
    pub(crate) now: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) due: Option<i64>,
}

/// The compare-and-set statement of one save, and the version it writes: `insert`
/// (binds key, data, version, expiry, `now` and `due`) for a new record (`expected`
/// is `None`), else `update` (binds data, new version, expiry, key, `expected`, `now` and
/// `due`). `due` puts the row in the index of due work, or takes it out.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn save_query<'q, DB>(
    insert: &'q str,
    update: &'q str,
    save: SaveArgs<'q>,
) -> (Version, Query<'q, DB, DB::Arguments<'q>>)
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
{
    let SaveArgs {
        key,
        bytes,
        expected,
        now,
        expires_at,
        due,
    } = save;
    match expected {
        None => {
            let version = Version::initial();
            let q = sqlx::query(insert)
                .bind(key)
                .bind(bytes)
                .bind(version_param(version))
                .bind(expires_at)
                .bind(now)
                .bind(due);
            (version, q)
        }
        Some(expected) => {
            let version = expected.next();
            let q = sqlx::query(update)
                .bind(bytes)
                .bind(version_param(version))
                .bind(expires_at)
                .bind(key)
                .bind(version_param(expected))
                .bind(now)
                .bind(due);
            (version, q)
        }
    }
}

/// A save's result from the rows its statement changed: `version` when it wrote one,
/// else a conflict.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn save_result<R: RowsAffected>(
    backend: &'static str,
    key: &str,
    version: Version,
    done: std::result::Result<R, sqlx::Error>,
) -> Result<Version> {
    let done = done.map_err(|e| Error::store(backend, e))?;
    if done.rows_affected() == 1 {
        Ok(version)
    } else {
        Err(Error::Conflict {
            key: key.to_owned(),
        })
    }
}

/// A pool connected to `url` with [`pool_options`] (the server stores' `connect`).
///
/// # Errors
/// [`Error::Store`] when the URL is invalid or the server does not answer.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn connect<DB: Database>(url: &str, backend: &'static str) -> Result<Pool<DB>> {
    // One connection first, on its own: a pool that cannot connect waits out its
    // acquire timeout (30 s) and then reports only that it timed out, where this says
    // why (refused, unknown host, authentication) within seconds.
    let connecting = <DB::Connection as sqlx::Connection>::connect(url);
    let first = tokio::time::timeout(CONNECT_TIMEOUT, connecting).await;
    match first {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
        }
        Ok(Err(e)) => return Err(Error::store(backend, e)),
        Err(_) => {
            return Err(Error::store(
                backend,
                Message(format!(
                    "the server did not answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )),
            ));
        }
    }
    pool_options()
        .connect(url)
        .await
        .map_err(|e| Error::store(backend, e))
}

/// How long `connect` waits for the server's first answer.
#[cfg(any(feature = "postgres", feature = "mysql"))]
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
            "a'b",
            "a\0b",
            "\0",
            "ключ",
            "🦀",
            "a b",
            &"a".repeat(64),
            &"é".repeat(40),
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
