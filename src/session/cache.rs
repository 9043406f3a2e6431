//! What the pipeline keeps of a committed session between updates (in its per-key
//! table), so an unchanged record is neither decoded again nor, in write-through mode,
//! read again: the entry is *taken* when an update of its key starts and *put back* only
//! after a successful commit, so a failed, rolled-back or retried update never leaves
//! objects behind. It is used only when the loaded bytes equal the cached bytes
//! (whatever another process wrote in between is decoded afresh), or, in write-through
//! mode, when this process wrote the record last and it has not expired since: the next
//! write's compare-and-set then catches a change made elsewhere.

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
