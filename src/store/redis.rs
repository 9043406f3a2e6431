//! [`RedisStore`]: a server store on redis-rs with a connection manager.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Script};
use async_trait::async_trait;

use super::{
    Lease, LeaseAttempt, LeaseStore, ListFilter, PendingIndex, Preload, Record, SessionStore,
    Version,
};
use crate::error::{Error, Message, Result};

const BACKEND: &str = "redis";

/// The default key prefix.
const DEFAULT_PREFIX: &str = "stagecraft:";

static SAVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("queries/redis/save.lua")));
static DELETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("queries/redis/delete.lua")));
static LEASE_RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("queries/redis/lease_renew.lua")));
static LEASE_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("queries/redis/lease_release.lua")));
static PENDING_KEYS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("queries/redis/pending_keys.lua")));

/// What follows the store prefix in the key of the index of due work (a sorted set of
/// session keys, scored by due time): `{prefix}\0due`. The NUL keeps it out of
/// [`SessionStore::list`].
const PENDING_MARK: &str = "\0due";

/// What follows the store prefix in a lease's key: `{prefix}\0lease:{key}`. The NUL keeps
/// leases apart from session keys (and out of [`SessionStore::list`]).
const LEASE_MARK: &str = "\0lease:";

/// The key of the index of due work of the store prefix `prefix`.
fn pending_key_of(prefix: &str) -> Arc<str> {
    Arc::from(format!("{prefix}{PENDING_MARK}"))
}

/// A record from its `d` and `v` fields.
fn record(key: &str, bytes: Option<Vec<u8>>, version: Option<Vec<u8>>) -> Result<Option<Record>> {
    match (bytes, version) {
        (None, None) => Ok(None),
        (Some(bytes), Some(version)) => {
            let version = std::str::from_utf8(&version)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::store(
                        BACKEND,
                        Message(format!(
                            "stored version {:?} is not a number",
                            String::from_utf8_lossy(&version)
                        )),
                    )
                })?;
            Ok(Some(Record {
                bytes,
                version: Version(version),
            }))
        }
        _ => Err(Error::store(
            BACKEND,
            Message(format!("record {key:?} lacks its data or version field")),
        )),
    }
}

fn ttl_param(ttl: Duration) -> u64 {
    super::capped_ttl_ms(ttl).max(1)
}

fn redis_err(e: ::redis::RedisError) -> Error {
    Error::store(BACKEND, e)
}

fn validate_prefix(prefix: &str) -> Result<()> {
    let bad = prefix
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '*' | '?' | '[' | ']' | '\\'));
    if let Some(c) = bad {
        return Err(Error::Config(format!(
            "Redis key prefix {prefix:?} contains {c:?}: whitespace and glob characters are not allowed"
        )));
    }
    if prefix.len() > 64 {
        return Err(Error::Config(format!(
            "Redis key prefix {prefix:?} is longer than 64 bytes"
        )));
    }
    Ok(())
}

/// `s` with the characters `SCAN MATCH` treats specially escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A session store in Redis (feature `redis`).
///
/// Each session is a hash at `{prefix}{key}` (prefix `stagecraft:` by default) with the
/// fields `d` (the record) and `v` (its version). [`save`](SessionStore::save) and
/// [`delete`](SessionStore::delete) are Lua scripts (run with `EVALSHA`, loaded on first
/// use), so the version check and the write are one atomic step on the server.
/// [`list`](SessionStore::list) walks `SCAN MATCH {prefix}{escaped prefix}*` and strips the
/// store's prefix; it is O(keys in the database), meant for maintenance, not per update.
///
/// With a TTL ([`with_ttl`](Self::with_ttl)), every save sets `PEXPIRE`, so Redis itself
/// drops a record `ttl` after its last save, by the server's clock (no `purge` needed).
///
/// Leases (on by default, see [`with_leases`](Self::with_leases)): the lease of a key is
/// the string `{prefix}\0lease:{key}` holding the holder's random token, taken with
/// `SET … NX PX ttl`, renewed (`PEXPIRE`) and released (`DEL`) by Lua scripts that first
/// check the token. Redis expires it by itself when its holder dies.
///
/// ```no_run
/// use stagecraft::store::RedisStore;
/// # async fn f() -> stagecraft::Result<()> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?.with_prefix("mybot:")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    /// The key of the index of due work, `{prefix}\0due`.
    pending_key: Arc<str>,
    ttl_ms: Option<u64>,
    leases: bool,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("ttl_ms", &self.ttl_ms)
            .field("leases", &self.leases)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[:password@]host[:port][/db]`, `rediss://` with TLS
    /// features of `redis` enabled) through a [`ConnectionManager`] that reconnects on its
    /// own. A connection attempt times out after 5 s and is not retried by the manager:
    /// while the server is down each call fails with the connection's error (refused,
    /// timed out), and the first call after the server answers again reconnects. (With
    /// the manager's own retries, every call waited for the retry schedule, 1 s then
    /// 2 s, and service came back only when the schedule did, seconds after the server.)
    /// Build the [`ConnectionManager`] yourself and use [`new`](Self::new) for another
    /// policy.
    ///
    /// # Errors
    /// [`Error::Store`] when the URL is invalid or the server does not answer.
    pub async fn connect(url: &str) -> Result<Self> {
        let client = Client::open(url).map_err(redis_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(5))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(redis_err)?;
        Ok(Self::new(conn))
    }

    /// A store on a connection manager you built yourself, with the prefix `stagecraft:`.
    #[must_use]
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            prefix: Arc::from(DEFAULT_PREFIX),
            pending_key: pending_key_of(DEFAULT_PREFIX),
            ttl_ms: None,
            leases: true,
        }
    }

    /// Whether this store hands out per-key leases (default `true`). With `false`,
    /// [`leases`](SessionStore::leases) is `None`, so a pipeline on it takes no leases
    /// and relies on compare-and-set alone. (The store's [`LeaseStore`] methods, called
    /// on it directly, still take leases.)
    #[must_use]
    pub fn with_leases(mut self, on: bool) -> Self {
        self.leases = on;
        self
    }

    /// Keeps records under `prefix` instead of `stagecraft:` (at most 64 bytes, no
    /// whitespace, no `*?[]\`).
    ///
    /// # Errors
    /// [`Error::Config`] when the prefix is not valid.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        validate_prefix(prefix)?;
        self.prefix = Arc::from(prefix);
        self.pending_key = pending_key_of(prefix);
        Ok(self)
    }

    /// Records expire `ttl` after their last save (Redis `PEXPIRE`, server time;
    /// at least 1 ms).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl_ms = Some(ttl_param(ttl));
        self
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The connection manager (clones share its connection).
    #[must_use]
    pub fn connection(&self) -> &ConnectionManager {
        &self.conn
    }

    fn lease_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + LEASE_MARK.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(LEASE_MARK);
        full.push_str(key);
        full
    }

    fn pending_key(&self) -> &str {
        &self.pending_key
    }

    /// A compare-and-set save, putting the key in the index of due work at `due` or
    /// taking it out (`None`), and giving `release` back once written (same script).
    async fn write(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
        release: Option<&Lease>,
    ) -> Result<Version> {
        let mut conn = self.conn.clone();
        let version = expected.map_or_else(Version::initial, Version::next);
        let expected = expected.map(|v| v.0.to_string()).unwrap_or_default();
        let mut invocation = SAVE.key(self.full_key(key));
        invocation
            .key(self.pending_key())
            .arg(bytes)
            .arg(expected)
            .arg(version.0.to_string())
            .arg(self.ttl_ms.unwrap_or(0))
            .arg(key)
            .arg(due.map(|d| d.to_string()).unwrap_or_default());
        if let Some(lease) = release {
            invocation
                .key(self.lease_key(lease.key()))
                .arg(lease.token());
        }
        let written: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if written == 1 {
            Ok(version)
        } else {
            Err(Error::Conflict {
                key: key.to_owned(),
            })
        }
    }

    /// A compare-and-set delete, giving `release` back once the record is gone (same
    /// script).
    async fn remove(&self, key: &str, expected: Version, release: Option<&Lease>) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut invocation = DELETE.key(self.full_key(key));
        invocation
            .key(self.pending_key())
            .arg(expected.0.to_string())
            .arg(key);
        if let Some(lease) = release {
            invocation
                .key(self.lease_key(lease.key()))
                .arg(lease.token());
        }
        let gone: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if gone == 1 {
            Ok(())
        } else {
            Err(Error::Conflict {
                key: key.to_owned(),
            })
        }
    }

    fn full_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    fn cache_hint(&self) -> Option<super::CacheHint> {
        // Redis counts the TTL down on the server from the save; the system clock
        // measures the same span from just before it.
        let ttl = self.ttl_ms.map(std::time::Duration::from_millis);
        Some(super::CacheHint::new(
            ttl,
            Arc::new(crate::clock::SystemClock),
            false,
        ))
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn load(&self, key: &str) -> Result<Option<Record>> {
        let mut conn = self.conn.clone();
        let (bytes, version): (Option<Vec<u8>>, Option<Vec<u8>>) = ::redis::cmd("HMGET")
            .arg(self.full_key(key))
            .arg("d")
            .arg("v")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        record(key, bytes, version)
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>) -> Result<Version> {
        self.write(key, bytes, expected, None, None).await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete(&self, key: &str, expected: Version) -> Result<()> {
        self.remove(key, expected, None).await
    }

    /// One script: the compare-and-set save and the release of the lease.
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

    /// One script: the compare-and-set delete and the release of the lease.
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete_releasing(&self, key: &str, expected: Version, lease: &Lease) -> Result<()> {
        self.remove(key, expected, Some(lease)).await
    }

    #[tracing::instrument(skip_all, fields(prefix = %filter.prefix), err(level = "debug"))]
    async fn list(&self, filter: &ListFilter) -> Result<Vec<String>> {
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut keys = Vec::new();
        if limit == 0 {
            return Ok(keys);
        }
        let mut conn = self.conn.clone();
        let pattern = format!(
            "{}{}*",
            glob_escape(&self.prefix),
            glob_escape(&filter.prefix)
        );
        let mut seen = HashSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            for raw in batch {
                // SCAN may return a key twice; keys that are not UTF-8 are not ours.
                let Ok(full) = String::from_utf8(raw) else {
                    continue;
                };
                let Some(key) = full.strip_prefix(&*self.prefix) else {
                    continue;
                };
                if key.starts_with(LEASE_MARK) || key == PENDING_MARK {
                    continue;
                }
                if seen.insert(key.to_owned()) {
                    keys.push(key.to_owned());
                    if keys.len() >= limit {
                        return Ok(keys);
                    }
                }
            }
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    fn pending(&self) -> Option<&dyn PendingIndex> {
        Some(self)
    }

    fn leases(&self) -> Option<&dyn LeaseStore> {
        self.leases.then_some(self as &dyn LeaseStore)
    }
}

#[async_trait]
impl LeaseStore for RedisStore {
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease(&self, key: &str, ttl: Duration) -> Result<LeaseAttempt> {
        let mut conn = self.conn.clone();
        let lease = Lease::generate(key);
        let set: Option<String> = ::redis::cmd("SET")
            .arg(self.lease_key(key))
            .arg(lease.token())
            .arg("NX")
            .arg("PX")
            .arg(ttl_param(ttl))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(LeaseAttempt::taken(set.is_some(), lease))
    }

    /// `SET NX PX` and `HMGET`, pipelined: one round trip, and cheaper for the server
    /// than a script. The read comes after the take, so once the lease is ours it sees
    /// the last holder's save (given back in the same script as its save); a writer
    /// that takes no lease is caught by compare-and-set. When the lease is busy, what
    /// was read is dropped.
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease_and_load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<(LeaseAttempt, Preload)> {
        let mut conn = self.conn.clone();
        let lease = Lease::generate(key);
        type Taken = (Option<String>, (Option<Vec<u8>>, Option<Vec<u8>>));
        let (taken, (bytes, version)): Taken = ::redis::pipe()
            .cmd("SET")
            .arg(self.lease_key(key))
            .arg(lease.token())
            .arg("NX")
            .arg("PX")
            .arg(ttl_param(ttl))
            .cmd("HMGET")
            .arg(self.full_key(key))
            .arg("d")
            .arg("v")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if taken.is_none() {
            return Ok((LeaseAttempt::Busy, Preload::NotRead));
        }
        match record(key, bytes, version) {
            Ok(record) => Ok((LeaseAttempt::Acquired(lease), Preload::Read(record))),
            Err(e) => {
                // Not handed out, so given back here (else it would block the key until
                // it expires).
                let _ = self.release_lease(&lease).await;
                Err(e)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let mut conn = self.conn.clone();
        let renewed: i64 = LEASE_RENEW
            .key(self.lease_key(lease.key()))
            .arg(lease.token())
            .arg(ttl_param(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(renewed == 1)
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let mut conn = self.conn.clone();
        let released: i64 = LEASE_RELEASE
            .key(self.lease_key(lease.key()))
            .arg(lease.token())
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(released == 1)
    }
}

#[async_trait]
impl PendingIndex for RedisStore {
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
        let mut conn = self.conn.clone();
        let keys: Vec<Vec<u8>> = PENDING_KEYS
            .key(self.pending_key())
            .arg(&*self.prefix)
            .arg(limit)
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        keys.into_iter()
            .map(|k| {
                String::from_utf8(k).map_err(|e| {
                    Error::store(BACKEND, Message(format!("stored key is not UTF-8: {e}")))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for ok in ["", "stagecraft:", "bot:1:", &"p".repeat(64)] {
            assert!(validate_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["a b", "a*", "a?", "a[", "a]", "a\\", "x\n", &"p".repeat(65)] {
            assert!(
                matches!(validate_prefix(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
