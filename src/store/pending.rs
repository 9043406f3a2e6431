//! The pending-replies index: which records hold replies of a committed step that were
//! never marked delivered (the outbox of a process that crashed between its commit and
//! its delivery), so that the next process finds them at start-up without reading every
//! session.

use async_trait::async_trait;

use super::Version;
use crate::error::Result;

/// The pending-replies index, the optional capability of a
/// [`SessionStore`](super::SessionStore) whose records outlive the process (every
/// built-in store has it). Reached through
/// [`SessionStore::pending`](super::SessionStore::pending).
///
/// A key is **marked** by [`save_pending`](Self::save_pending) and **unmarked** by any
/// other write of it: [`save`](super::SessionStore::save) (the write that marks the
/// replies delivered is one) and [`delete`](super::SessionStore::delete). The mark is
/// part of the same atomic compare-and-set write as the record, so the index never says
/// less than the records: a record that holds pending replies is always listed.
///
/// A pipeline with the outbox on writes a step that has replies with `save_pending`, and
/// [`Pipeline::deliver_pending`](crate::Pipeline::deliver_pending) lists the marked keys.
/// `stagecraft::testing::conformance::check_pending` (feature `testing`) checks an
/// implementation.
#[async_trait]
pub trait PendingIndex: Send + Sync {
    /// Writes `bytes` as the record of `key` exactly as
    /// [`SessionStore::save`](super::SessionStore::save) does (compare-and-set over
    /// `expected`), and marks the key in the same atomic write.
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict) when the stored version is not
    /// `expected`; nothing is written or marked then.
    async fn save_pending(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
    ) -> Result<Version>;

    /// Up to `limit` marked keys of live records, in no particular order. It reads the
    /// index, not every record.
    ///
    /// # Errors
    /// [`Error::Store`](crate::Error::Store) when the backend fails.
    async fn pending_keys(&self, limit: usize) -> Result<Vec<String>>;
}
