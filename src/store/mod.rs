//! Session stores: where session records live between updates.
//!
//! Every store keeps a [`Version`] per record and checks it on every write
//! (compare-and-set): [`SessionStore::save`] with a stale version fails with
//! [`Error::Conflict`](crate::Error::Conflict) instead of silently overwriting the newer record.
//! That is what makes two bot replicas on one database safe.
//!
//! What only some stores can do is a trait of its own, handed out by the store:
//! per-key leases ([`LeaseStore`], from [`SessionStore::leases`]: SQLite, Redis,
//! PostgreSQL, MySQL, MongoDB), purging expired records ([`PurgeExpired`], from
//! [`SessionStore::purge`]: memory, the SQL stores and MongoDB) and the index of records
//! holding undelivered replies ([`PendingIndex`], from [`SessionStore::pending`]: every
//! built-in store).
//!
//! [`open`] opens any of them from a URL (`memory`, `sqlite:bot.db`, `redis://...`,
//! `postgres://...`, `mysql://...`), as a bot's configuration or an operator tool has it.
//!
//! | store | feature | persistence |
//! |---|---|---|
//! | [`MemoryStore`] | always | process memory, optional TTL |
#![cfg_attr(
    feature = "sqlite",
    doc = "| [`SqliteStore`] | `sqlite` (default) | embedded file |"
)]
#![cfg_attr(
    feature = "postgres",
    doc = "| [`PostgresStore`] | `postgres` | server |"
)]
#![cfg_attr(feature = "mysql", doc = "| [`MySqlStore`] | `mysql` | server |")]
#![cfg_attr(feature = "redis", doc = "| [`RedisStore`] | `redis` | server |")]
#![cfg_attr(
    feature = "mongodb",
    doc = "| [`MongoStore`] | `mongodb` | server (tested against SecantusDB) |"
)]

use std::fmt;
use std::time::Duration;

// `async_trait` boxes each method's future. The `impl SessionStore for Arc<T>` below
// writes that expansion out by hand (to hand the inner future back without a second
// box), so it depends on how `async_trait` expands: check it when upgrading the crate.
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

mod check;
mod codec;
mod lease;
mod memory;
#[cfg(feature = "mongodb")]
#[path = "mongodb.rs"]
mod mongodb_store;
#[cfg(feature = "mysql")]
mod mysql;
mod open;
mod pending;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
#[path = "redis.rs"]
mod redis_store;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod url;

pub use check::{CHECK_TIMEOUT, PROBE_PREFIX, check, check_within};
pub use codec::Codec;
pub(crate) use lease::give_back;
pub use lease::{Lease, LeaseAttempt, LeaseStore, Preload};
pub use memory::MemoryStore;
#[cfg(feature = "mongodb")]
#[cfg_attr(docsrs, doc(cfg(feature = "mongodb")))]
pub use mongodb_store::{MongoOptions, MongoStore};
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use mysql::{MySqlOptions, MySqlStore};
pub use open::{OpenOptions, open, open_with, url_forms};
pub use pending::PendingIndex;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_store::RedisStore;
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "mysql"))))]
pub use sql::ServerOptions;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{Durability, SqliteOptions, SqliteStore};
pub use url::redact_url;

/// The `mongodb` driver, as the [`MongoStore`] uses it (for building your own `Client`).
#[cfg(feature = "mongodb")]
#[cfg_attr(docsrs, doc(cfg(feature = "mongodb")))]
pub use ::mongodb;
/// The `redis` crate, as the [`RedisStore`] uses it (for building a `ConnectionManager`).
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use ::redis;
/// The `sqlx` crate, as the SQL stores use it (for building your own pool).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql")))
)]
pub use sqlx;

/// The version of a stored record. A save with the wrong expected version is a conflict.
///
/// Versions are opaque: a store may start a new record at any value (the built-in
/// stores start at a random one, so a record deleted and created again does not
/// reuse a version a slow writer may still hold) and must change it on every save.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version(pub u64);

impl Version {
    /// The version that follows this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0.wrapping_add(1) & (i64::MAX as u64))
    }

    /// A fresh starting version for a new record (random, below `i64::MAX` so SQL
    /// `BIGINT` columns hold it).
    #[must_use]
    pub fn initial() -> Self {
        Self(random_u64() & (i64::MAX as u64 >> 1))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A record read from a store: its bytes and the version to hand back on save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The encoded session record.
    pub bytes: Vec<u8>,
    /// Its version.
    pub version: Version,
}

/// What to list in [`SessionStore::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListFilter {
    /// Only keys that start with this.
    pub prefix: String,
    /// At most this many keys (`None`: all).
    pub limit: Option<usize>,
}

impl ListFilter {
    /// Keys starting with `prefix`.
    #[must_use]
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            limit: None,
        }
    }

    /// At most `limit` keys.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// What a pipeline needs to know to skip reading back a record it wrote itself
/// (write-through caching, see [`CacheMode`](crate::pipeline::CacheMode)): how long a
/// saved record lives, by which clock, and whether skipping reads is this store's default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CacheHint {
    /// Records expire this long after their last save (`None`: they live until deleted).
    pub ttl: Option<Duration>,
    /// The clock the store measures `ttl` with.
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// Whether pipelines skip reads of their own last writes by default
    /// ([`CacheMode::Auto`](crate::pipeline::CacheMode::Auto)): true for stores that are
    /// normally written by one process (memory, SQLite), false for shared servers.
    pub write_through_by_default: bool,
}

impl CacheHint {
    /// A hint for records that expire `ttl` after their last save by `clock`.
    #[must_use]
    pub fn new(
        ttl: Option<Duration>,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
        write_through_by_default: bool,
    ) -> Self {
        Self {
            ttl,
            clock,
            write_through_by_default,
        }
    }

    /// The hint of a built-in store keeping its TTL in milliseconds.
    pub(crate) fn from_ttl_ms(
        ttl_ms: Option<i64>,
        clock: &std::sync::Arc<dyn crate::clock::Clock>,
        write_through_by_default: bool,
    ) -> Option<Self> {
        let ttl = ttl_ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        Some(Self::new(
            ttl,
            std::sync::Arc::clone(clock),
            write_through_by_default,
        ))
    }
}

/// A versioned key-value store for session records.
///
/// Keys are arbitrary UTF-8 strings; values are opaque bytes (see [`Codec`]).
/// Implementations must make `save` and `delete` atomic compare-and-set operations: of
/// any number of concurrent `save`s with the same expected version, at most one wins.
///
/// Optional capabilities are separate traits, which a store hands out from a discovery
/// method when it has them: per-key leases ([`LeaseStore`], from
/// [`leases`](Self::leases)) and purging of expired records ([`PurgeExpired`], from
/// [`purge`](Self::purge)).
///
/// `stagecraft::testing::conformance` (feature `testing`) checks an implementation
/// against the same suite the built-in stores pass.
///
/// A store of your own: a map behind a lock, each save and delete a compare-and-set
/// over the record's version. Implement it with [`async_trait`](crate::async_trait)
/// (re-exported, so you need no dependency of your own):
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use stagecraft::async_trait;
/// use stagecraft::prelude::*;
/// use stagecraft::store::{ListFilter, Record, Version};
///
/// #[derive(Debug, Clone, Default)]
/// struct MapStore(Arc<Mutex<HashMap<String, Record>>>);
///
/// #[async_trait]
/// impl SessionStore for MapStore {
///     fn backend(&self) -> &'static str {
///         "map"
///     }
///
///     async fn load(&self, key: &str) -> stagecraft::Result<Option<Record>> {
///         Ok(self.0.lock().unwrap().get(key).cloned())
///     }
///
///     async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>)
///         -> stagecraft::Result<Version>
///     {
///         let mut map = self.0.lock().unwrap();
///         let version = match (map.get(key).map(|r| r.version), expected) {
///             (None, None) => Version::initial(),
///             (Some(stored), Some(exp)) if stored == exp => stored.next(),
///             _ => return Err(Error::Conflict { key: key.to_owned() }),
///         };
///         map.insert(key.to_owned(), Record { bytes: bytes.to_vec(), version });
///         Ok(version)
///     }
///
///     async fn delete(&self, key: &str, expected: Version) -> stagecraft::Result<()> {
///         let mut map = self.0.lock().unwrap();
///         match map.get(key) {
///             Some(r) if r.version != expected => Err(Error::Conflict { key: key.to_owned() }),
///             _ => {
///                 map.remove(key);
///                 Ok(())
///             }
///         }
///     }
///
///     async fn list(&self, filter: &ListFilter) -> stagecraft::Result<Vec<String>> {
///         let map = self.0.lock().unwrap();
///         let keys = map.keys().filter(|k| k.starts_with(&filter.prefix)).cloned();
///         Ok(keys.take(filter.limit.unwrap_or(usize::MAX)).collect())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MapStore::default();
/// let bot = Pipeline::<u32>::builder()
///     .store(store.clone())
///     .on_text(|cx: Cx<u32>| async move { cx.session_mut(|n| *n += 1)?; Ok(Outcome::Handled) })
///     .build();
/// let hi = TelegramUpdate::from_json(
///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"hi"}}"#).unwrap();
/// bot.handle(hi).await.unwrap();
/// assert_eq!(store.list(&ListFilter::default()).await.unwrap().len(), 1);
/// // The suite the built-in stores pass (feature `testing`):
/// # #[cfg(feature = "testing")]
/// stagecraft::testing::conformance::run_all(store).await;
/// # });
/// ```
#[async_trait]
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// A short name for errors and traces: `"memory"`, `"sqlite"`, ...
    fn backend(&self) -> &'static str;

    /// Reads the record of `key`, or `None` when there is none (or it expired).
    async fn load(&self, key: &str) -> Result<Option<Record>>;

    /// Writes `bytes` as the record of `key` if its current version is `expected`
    /// (`None`: only if there is no record), and returns the new version.
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict) when the stored version is not `expected`.
    async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>) -> Result<Version>;

    /// Removes the record of `key` if its current version is `expected`.
    /// Deleting a record that is already gone succeeds.
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict) when the record exists with another version.
    async fn delete(&self, key: &str, expected: Version) -> Result<()>;

    /// Lists the keys of live records matching `filter`, in no particular order.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<String>>;

    /// Whether (and for how long) a pipeline may use its own last write of a record
    /// instead of reading it back. `None` (the default): every update reads its record.
    ///
    /// A store returning `Some` promises only that a record's life is `ttl` after its
    /// last save by `clock`; the pipeline's compare-and-set on the next write still
    /// catches any change made by someone else.
    fn cache_hint(&self) -> Option<CacheHint> {
        None
    }

    /// This store's per-key leases, shared by every process using it, or `None` (the
    /// default) when it has none. The pipeline takes them by default when there are
    /// some, and otherwise relies on compare-and-set alone.
    fn leases(&self) -> Option<&dyn LeaseStore> {
        None
    }

    /// This store's bulk removal of expired records, or `None` (the default) when it
    /// has none (no TTL, or the backend expires records by itself).
    fn purge(&self) -> Option<&dyn PurgeExpired> {
        None
    }

    /// This store's pending-replies index ([`PendingIndex`]), or `None` (the default)
    /// when it has none. A pipeline with the outbox on uses it to mark records that hold
    /// replies not yet delivered, and [`Pipeline::deliver_pending`](crate::Pipeline::deliver_pending)
    /// to find them after a crash.
    fn pending(&self) -> Option<&dyn PendingIndex> {
        None
    }

    /// A compare-and-set write of `key` that also gives `lease` back once written: the
    /// write that ends an update holding the key's lease.
    ///
    /// Writes `bytes` exactly as [`save`](Self::save) does (`due: None`), or as
    /// [`PendingIndex::save_pending`] does with `due` when the store has the index (a
    /// store without one ignores `due`). When the write succeeds, the lease is released
    /// if it is still `lease`'s (same token); a lease that expired and was taken by
    /// someone else is left alone. When the write fails, the lease is not released: on
    /// a conflict the caller still holds it (to rerun its update); on another error,
    /// the caller releases it with [`LeaseStore::release_lease`] (it may or may not be
    /// released already).
    ///
    /// The default writes and then calls [`LeaseStore::release_lease`] (two round
    /// trips; a failed release is logged and left to expire). The server stores do
    /// both in one script or statement.
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict) when the stored version is not
    /// `expected` (nothing is written and the lease is kept).
    async fn save_releasing(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
        lease: &Lease,
    ) -> Result<Version> {
        save_then_release(self, self.leases(), key, bytes, expected, due, lease).await
    }

    /// A compare-and-set [`delete`](Self::delete) of `key` that also gives `lease`
    /// back once the record is gone, as [`save_releasing`](Self::save_releasing) does
    /// for a save (the same rules: released only on success, and only if still
    /// `lease`'s).
    ///
    /// The default deletes and then calls [`LeaseStore::release_lease`].
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict) when the record exists with another
    /// version (nothing is deleted and the lease is kept).
    async fn delete_releasing(&self, key: &str, expected: Version, lease: &Lease) -> Result<()> {
        self.delete(key, expected).await?;
        if let Some(leases) = self.leases() {
            give_back(leases, lease).await;
        }
        Ok(())
    }
}

/// [`SessionStore::save_releasing`] in two steps, as the default does it: the save (or,
/// with a due time, [`PendingIndex::save_pending`]), then the release through `leases`.
/// The write stands whatever happens to the release, so a failed one is logged and the
/// lease left to expire.
pub(crate) async fn save_then_release<S: SessionStore + ?Sized>(
    store: &S,
    leases: Option<&dyn LeaseStore>,
    key: &str,
    bytes: &[u8],
    expected: Option<Version>,
    due: Option<i64>,
    lease: &Lease,
) -> Result<Version> {
    let version = match (due, store.pending()) {
        (Some(due), Some(index)) => index.save_pending(key, bytes, expected, due).await?,
        _ => store.save(key, bytes, expected).await?,
    };
    if let Some(leases) = leases {
        give_back(leases, lease).await;
    }
    Ok(version)
}

/// Removing expired records in bulk: the optional capability of a store whose expired
/// records stay behind, invisible, until something deletes them (the SQL stores, and
/// the memory store between its sweeps). Reached through [`SessionStore::purge`].
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use stagecraft::clock::ManualClock;
/// use stagecraft::store::{MemoryStore, SessionStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let clock = ManualClock::at_secs(1_700_000_000);
/// let store = MemoryStore::new()
///     .with_ttl(Duration::from_secs(60))
///     .with_clock(Arc::new(clock.clone()));
/// store.save("1:1", b"{}", None).await.unwrap();
/// store.save("2:2", b"{}", None).await.unwrap();
/// clock.advance(Duration::from_secs(61));
/// // Expired, so already invisible, but still taking space:
/// assert!(store.list(&Default::default()).await.unwrap().is_empty());
/// assert_eq!(store.len(), 2);
/// let purge = store.purge().expect("the memory store has it");
/// assert_eq!(purge.purge_expired().await.unwrap(), 2);
/// assert_eq!(store.len(), 0);
/// # });
/// ```
#[async_trait]
pub trait PurgeExpired: Send + Sync {
    /// Deletes every expired record now and returns how many were deleted.
    ///
    /// Expired records are already invisible; this reclaims their space. Call it
    /// periodically (e.g. hourly) when a TTL is set.
    ///
    /// # Errors
    /// [`Error::Store`](crate::Error::Store) when the backend fails.
    async fn purge_expired(&self) -> Result<u64>;
}

/// The future of an `async_trait` method (what the forwarding impl below returns as is).
type StoreFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>>;

/// Forwards to the store inside, handing its future back unwrapped (no second box per
/// call: a pipeline calls its `Arc<dyn SessionStore>` through this impl). The method
/// signatures are `async_trait`'s expansion, written out.
impl<T: SessionStore + ?Sized> SessionStore for std::sync::Arc<T> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn load<'a, 'b, 'f>(&'a self, key: &'b str) -> StoreFuture<'f, Option<Record>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        (**self).load(key)
    }
    fn save<'a, 'b, 'c, 'f>(
        &'a self,
        key: &'b str,
        bytes: &'c [u8],
        expected: Option<Version>,
    ) -> StoreFuture<'f, Version>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        (**self).save(key, bytes, expected)
    }
    fn delete<'a, 'b, 'f>(&'a self, key: &'b str, expected: Version) -> StoreFuture<'f, ()>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        (**self).delete(key, expected)
    }
    fn list<'a, 'b, 'f>(&'a self, filter: &'b ListFilter) -> StoreFuture<'f, Vec<String>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        (**self).list(filter)
    }
    fn cache_hint(&self) -> Option<CacheHint> {
        (**self).cache_hint()
    }
    fn leases(&self) -> Option<&dyn LeaseStore> {
        (**self).leases()
    }
    fn purge(&self) -> Option<&dyn PurgeExpired> {
        (**self).purge()
    }
    fn pending(&self) -> Option<&dyn PendingIndex> {
        (**self).pending()
    }
    fn save_releasing<'a, 'b, 'c, 'd, 'f>(
        &'a self,
        key: &'b str,
        bytes: &'c [u8],
        expected: Option<Version>,
        due: Option<i64>,
        lease: &'d Lease,
    ) -> StoreFuture<'f, Version>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
        'd: 'f,
        Self: 'f,
    {
        (**self).save_releasing(key, bytes, expected, due, lease)
    }
    fn delete_releasing<'a, 'b, 'c, 'f>(
        &'a self,
        key: &'b str,
        expected: Version,
        lease: &'c Lease,
    ) -> StoreFuture<'f, ()>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        (**self).delete_releasing(key, expected, lease)
    }
}

/// The longest TTL a store sets, in milliseconds: 100 years. A longer one (up to
/// `Duration::MAX`, "never") is this long: servers refuse expiry times past their own
/// clock's range (Redis answers "invalid expire time", SQL date arithmetic overflows).
pub(crate) const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// `ttl` in whole milliseconds, at most [`MAX_TTL_MS`].
#[allow(dead_code)] // not every store feature uses it
pub(crate) fn capped_ttl_ms(ttl: std::time::Duration) -> u64 {
    u64::try_from(ttl.as_millis()).map_or(MAX_TTL_MS, |ms| ms.min(MAX_TTL_MS))
}

/// A cheap, non-cryptographic random number (for version starts and lease tokens).
pub(crate) fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}
