//! A per-process cache of decoded sessions, so an unchanged record is neither decoded
//! again nor, in write-through mode, read again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::scene::Frame;
use crate::store::Version;

/// A hasher for the pipeline's per-key tables: keys are chat and user ids, not chosen
/// freely by senders, and foldhash (randomly seeded per table) hashes them several times
/// faster than SipHash.
pub(crate) type FastState = foldhash::fast::RandomState;

/// A `DashMap` with [`FastState`].
pub(crate) type FastMap<K, V> = DashMap<K, V, FastState>;

/// A new, empty [`FastMap`].
pub(crate) fn fast_map<K: Eq + std::hash::Hash, V>() -> FastMap<K, V> {
    DashMap::with_hasher(FastState::default())
}

/// How far a cached session may stand for the stored record without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Only after a load shows the same bytes and version.
    Validate,
    /// Until the store's clock reaches this instant (ms), when the record expires.
    Until(i64),
    /// Until this process writes it again (records without TTL).
    Always,
}

/// A decoded session as it was committed: its bytes, its version, its objects.
pub(crate) struct Cached<S> {
    pub(crate) version: Version,
    pub(crate) bytes: Vec<u8>,
    pub(crate) data: Option<S>,
    pub(crate) stack: Vec<Frame>,
    pub(crate) trust: Trust,
}

/// Decoded sessions by key. An entry is *taken* when an update of its key starts (the
/// per-key queue makes that exclusive within the process) and *put back* only after a
/// successful commit, so a failed, rolled-back or retried update never leaves objects
/// behind. It is used only when the loaded bytes equal the cached bytes (whatever
/// another process wrote in between is decoded afresh), or, in write-through mode, when
/// this process wrote the record last and it has not expired since: the next write's
/// compare-and-set then catches a change made elsewhere.
pub(crate) struct SessionCache<S> {
    map: FastMap<Arc<str>, Cached<S>>,
    capacity: usize,
    /// Entries held (kept here: `DashMap::len` locks every shard).
    len: AtomicUsize,
}

impl<S> SessionCache<S> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: fast_map(),
            capacity,
            len: AtomicUsize::new(0),
        }
    }

    /// Takes the entry of `key` if it matches what the store holds now.
    pub(crate) fn take(&self, key: &str, version: Version, bytes: &[u8]) -> Option<Cached<S>> {
        let (_, cached) = self.map.remove(key)?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        (cached.version == version && cached.bytes == bytes).then_some(cached)
    }

    /// Takes the entry of `key` if it may stand for the stored record without a read:
    /// this process wrote it last and, by the store's clock `now_ms`, it is still live.
    /// An entry that may not is left for [`take`](Self::take).
    pub(crate) fn take_trusted(
        &self,
        key: &str,
        now_ms: impl FnOnce() -> i64,
    ) -> Option<Cached<S>> {
        let (_, cached) = self.map.remove_if(key, |_, c| match c.trust {
            Trust::Always => true,
            Trust::Until(deadline) => now_ms() < deadline,
            Trust::Validate => false,
        })?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(cached)
    }

    /// Puts a committed session back (unless the cache is full).
    pub(crate) fn put(&self, key: Arc<str>, cached: Cached<S>) {
        if self.len.load(Ordering::Relaxed) < self.capacity
            && self.map.insert(key, cached).is_none()
        {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets `key` (its record was deleted).
    pub(crate) fn forget(&self, key: &str) {
        if self.map.remove(key).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
