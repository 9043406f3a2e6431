//! A per-process cache of decoded sessions, so an unchanged record is not decoded again.

use std::sync::Arc;

use dashmap::DashMap;

use crate::scene::Frame;
use crate::store::Version;

/// A decoded session as it was committed: its bytes, its version, its objects.
pub(crate) struct Cached<S> {
    pub(crate) version: Version,
    pub(crate) bytes: Vec<u8>,
    pub(crate) data: Option<S>,
    pub(crate) stack: Vec<Frame>,
}

/// Decoded sessions by key. An entry is *taken* when an update of its key starts (the
/// per-key queue makes that exclusive within the process) and *put back* only after a
/// successful commit, so a failed, rolled-back or retried update never leaves objects
/// behind. It is used only when the loaded bytes equal the cached bytes: whatever
/// another process wrote in between is decoded afresh.
pub(crate) struct SessionCache<S> {
    map: DashMap<Arc<str>, Cached<S>>,
    capacity: usize,
}

impl<S> SessionCache<S> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: DashMap::new(),
            capacity,
        }
    }

    /// Takes the entry of `key` if it matches what the store holds now.
    pub(crate) fn take(&self, key: &str, version: Version, bytes: &[u8]) -> Option<Cached<S>> {
        let (_, cached) = self.map.remove(key)?;
        (cached.version == version && cached.bytes == bytes).then_some(cached)
    }

    /// Puts a committed session back (unless the cache is full).
    pub(crate) fn put(&self, key: Arc<str>, cached: Cached<S>) {
        if self.map.len() < self.capacity {
            self.map.insert(key, cached);
        }
    }

    /// Forgets `key` (its record was deleted).
    pub(crate) fn forget(&self, key: &str) {
        self.map.remove(key);
    }
}
