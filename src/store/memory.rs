//! [`MemoryStore`]: sharded in-process store on `dashmap`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::util::{FastMap, fast_map};
use async_trait::async_trait;
use dashmap::mapref::entry::Entry as MapEntry;

use super::{ListFilter, PendingIndex, PurgeExpired, Record, SessionStore, Version};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// An in-process store: a sharded `DashMap` (no global lock), with an optional TTL.
///
/// With a TTL, a record expires `ttl` after its last save and is invisible from then on.
/// Expired records are removed lazily on access and by a sweep that runs once the
/// number of writes since the last sweep exceeds half the table, so the memory held
/// by expired records stays proportional to the live ones. [`MemoryStore::purge_expired`]
/// (also reached as the [`PurgeExpired`] capability) sweeps on demand.
///
/// ```
/// use stagecraft::store::{MemoryStore, SessionStore};
/// # tokio_test_block_on(async {
/// let store = MemoryStore::new();
/// let v1 = store.save("1:1", b"{}", None).await.unwrap();
/// let loaded = store.load("1:1").await.unwrap().unwrap();
/// assert_eq!(loaded.version, v1);
/// assert!(store.save("1:1", b"{}", None).await.unwrap_err().is_conflict());
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    map: FastMap<Box<str>, Entry>,
    ttl_ms: Option<i64>,
    clock: Arc<dyn Clock>,
    writes_since_sweep: AtomicUsize,
    /// The index of due work: (due time, key), earliest first. Kept under the record's
    /// entry lock by every write; entries of records that expired or were swept are
    /// dropped by the next [`pending_keys`](PendingIndex::pending_keys).
    due: Mutex<BTreeSet<(i64, Box<str>)>>,
}

#[derive(Debug)]
struct Entry {
    bytes: Box<[u8]>,
    version: Version,
    /// Milliseconds since the epoch; `i64::MAX` without a TTL.
    expires_at: i64,
    /// When its work falls due, in the index of due work (see [`PendingIndex`]).
    due: Option<i64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store without TTL: records live until deleted.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                map: fast_map(),
                ttl_ms: None,
                clock: Arc::new(SystemClock),
                writes_since_sweep: AtomicUsize::new(0),
                due: Mutex::default(),
            }),
        }
    }

    /// Records expire `ttl` after their last save.
    #[must_use]
    pub fn with_ttl(self, ttl: Duration) -> Self {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.rebuild(|inner| inner.ttl_ms = Some(ttl_ms))
    }

    /// Reads time from `clock` (for TTLs) instead of the system clock.
    #[must_use]
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        self.rebuild(|inner| inner.clock = clock)
    }

    fn rebuild(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            map: shared.map.clone_from_shared(),
            ttl_ms: shared.ttl_ms,
            clock: Arc::clone(&shared.clock),
            writes_since_sweep: AtomicUsize::new(0),
            due: Mutex::new(shared.due_index().clone()),
        });
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Number of records held, expired ones not yet swept included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// Whether the store holds no records.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.map.is_empty()
    }

    /// Removes every expired record now; returns how many were removed.
    pub fn purge_expired(&self) -> usize {
        self.sweep()
    }

    fn sweep(&self) -> usize {
        let now = self.inner.clock.now_ms();
        let before = self.inner.map.len();
        self.inner.map.retain(|_, e| e.expires_at > now);
        self.inner.writes_since_sweep.store(0, Ordering::Relaxed);
        before.saturating_sub(self.inner.map.len())
    }

    /// The clock's time, read only when records can expire (without a TTL every
    /// record's expiry is `i64::MAX`, later than any time).
    fn now(&self) -> i64 {
        if self.inner.ttl_ms.is_some() {
            self.inner.clock.now_ms()
        } else {
            i64::MIN
        }
    }

    fn expiry(&self, now: i64) -> i64 {
        self.inner
            .ttl_ms
            .map_or(i64::MAX, |ttl| now.saturating_add(ttl))
    }

    fn note_write(&self) {
        if self.inner.ttl_ms.is_none() {
            return;
        }
        let n = self
            .inner
            .writes_since_sweep
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n > 1024 && n > self.inner.map.len() / 2 {
            self.sweep();
        }
    }
}

trait CloneFromShared {
    fn clone_from_shared(&self) -> Self;
}

impl CloneFromShared for FastMap<Box<str>, Entry> {
    fn clone_from_shared(&self) -> Self {
        self.iter()
            .map(|r| {
                let e = r.value();
                (
                    r.key().clone(),
                    Entry {
                        bytes: e.bytes.clone(),
                        version: e.version,
                        expires_at: e.expires_at,
                        due: e.due,
                    },
                )
            })
            .collect()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn cache_hint(&self) -> Option<super::CacheHint> {
        super::CacheHint::from_ttl_ms(self.inner.ttl_ms, &self.inner.clock, true)
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn load(&self, key: &str) -> Result<Option<Record>> {
        let now = self.now();
        let expired = match self.inner.map.get(key) {
            None => return Ok(None),
            Some(e) if e.expires_at > now => {
                return Ok(Some(Record {
                    bytes: e.bytes.to_vec(),
                    version: e.version,
                }));
            }
            Some(_) => true,
        };
        if expired {
            self.inner.map.remove_if(key, |_, e| e.expires_at <= now);
        }
        Ok(None)
    }

    async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>) -> Result<Version> {
        self.write(key, bytes, expected, None)
    }

    async fn delete(&self, key: &str, expected: Version) -> Result<()> {
        let now = self.inner.clock.now_ms();
        let mut conflict = false;
        self.inner.map.remove_if(key, |k, e| {
            if e.expires_at <= now || e.version == expected {
                self.inner.reindex(k, e.due, None);
                true
            } else {
                conflict = true;
                false
            }
        });
        if conflict {
            Err(Error::Conflict {
                key: key.to_owned(),
            })
        } else {
            Ok(())
        }
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<String>> {
        let now = self.inner.clock.now_ms();
        let limit = filter.limit.unwrap_or(usize::MAX);
        Ok(self
            .inner
            .map
            .iter()
            .filter(|r| r.value().expires_at > now && r.key().starts_with(&filter.prefix))
            .take(limit)
            .map(|r| r.key().to_string())
            .collect())
    }

    fn purge(&self) -> Option<&dyn PurgeExpired> {
        Some(self)
    }

    fn pending(&self) -> Option<&dyn PendingIndex> {
        Some(self)
    }
}

impl MemoryStore {
    /// A compare-and-set write of `key`, putting it in the index of due work at `due`
    /// or taking it out (`None`).
    fn write(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
    ) -> Result<Version> {
        let now = self.now();
        let expires_at = self.expiry(now);
        // Fast path: the record exists (no key allocation).
        if let Some(mut e) = self.inner.map.get_mut(key) {
            let current = (e.expires_at > now).then_some(e.version);
            if current != expected {
                return Err(Error::Conflict {
                    key: key.to_owned(),
                });
            }
            let version = current.map_or_else(Version::initial, Version::next);
            if e.bytes.len() == bytes.len() {
                e.bytes.copy_from_slice(bytes);
            } else {
                e.bytes = bytes.into();
            }
            e.version = version;
            e.expires_at = expires_at;
            self.inner.reindex(key, e.due, due);
            e.due = due;
            drop(e);
            self.note_write();
            return Ok(version);
        }
        let version = match self.inner.map.entry(Box::from(key)) {
            MapEntry::Occupied(mut o) => {
                let live = o.get().expires_at > now;
                let current = live.then_some(o.get().version);
                if current != expected {
                    return Err(Error::Conflict {
                        key: key.to_owned(),
                    });
                }
                let version = current.map_or_else(Version::initial, Version::next);
                let e = o.get_mut();
                e.bytes = bytes.into();
                e.version = version;
                e.expires_at = expires_at;
                self.inner.reindex(key, e.due, due);
                e.due = due;
                version
            }
            MapEntry::Vacant(v) => {
                if expected.is_some() {
                    return Err(Error::Conflict {
                        key: key.to_owned(),
                    });
                }
                let version = Version::initial();
                self.inner.reindex(key, None, due);
                v.insert(Entry {
                    bytes: bytes.into(),
                    version,
                    expires_at,
                    due,
                });
                version
            }
        };
        self.note_write();
        Ok(version)
    }
}

#[async_trait]
impl PurgeExpired for MemoryStore {
    async fn purge_expired(&self) -> Result<u64> {
        Ok(u64::try_from(self.sweep()).unwrap_or(u64::MAX))
    }
}

impl Inner {
    fn due_index(&self) -> std::sync::MutexGuard<'_, BTreeSet<(i64, Box<str>)>> {
        self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves `key` in the index of due work from `old` to `new` (called under the
    /// record's entry lock).
    fn reindex(&self, key: &str, old: Option<i64>, new: Option<i64>) {
        if old == new {
            return;
        }
        let mut index = self.due_index();
        if let Some(old) = old {
            index.remove(&(old, Box::from(key)));
        }
        if let Some(new) = new {
            index.insert((new, Box::from(key)));
        }
    }
}

/// The index of due work is an ordered set beside the records, kept by every write.
#[async_trait]
impl PendingIndex for MemoryStore {
    async fn save_pending(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: i64,
    ) -> Result<Version> {
        self.write(key, bytes, expected, Some(due))
    }

    async fn pending_keys(&self, due_by: i64, limit: usize) -> Result<Vec<String>> {
        let now = self.inner.clock.now_ms();
        let candidates: Vec<(i64, Box<str>)> = self
            .inner
            .due_index()
            .iter()
            .take_while(|(due, _)| *due <= due_by)
            .take(limit.saturating_mul(2).max(limit))
            .cloned()
            .collect();
        let mut keys = Vec::new();
        for (due, key) in candidates {
            if keys.len() >= limit {
                break;
            }
            // Under the record's entry lock (taken before the index's, as writes do):
            // an entry of a record that expired, or was removed or rewritten by a path
            // that does not keep the index (expiry), leaves it.
            let live = match self.inner.map.get(&*key) {
                Some(e) => {
                    let live = e.due == Some(due) && e.expires_at > now;
                    if !live {
                        self.inner.due_index().remove(&(due, key.clone()));
                    }
                    live
                }
                None => {
                    if let MapEntry::Vacant(_) = self.inner.map.entry(key.clone()) {
                        self.inner.due_index().remove(&(due, key.clone()));
                    }
                    false
                }
            };
            if live {
                keys.push(key.into_string());
            }
        }
        Ok(keys)
    }
}
