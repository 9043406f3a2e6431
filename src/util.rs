//! Small crate-private helpers shared by several layers.

use dashmap::DashMap;

/// A hasher for the per-key tables: keys are chat and user ids, not chosen freely by
/// senders, and foldhash (randomly seeded per table) hashes them several times faster
/// than SipHash.
pub(crate) type FastState = foldhash::fast::RandomState;

/// A `DashMap` with [`FastState`].
pub(crate) type FastMap<K, V> = DashMap<K, V, FastState>;

/// A new, empty [`FastMap`].
pub(crate) fn fast_map<K: Eq + std::hash::Hash, V>() -> FastMap<K, V> {
    DashMap::with_hasher(FastState::default())
}
