//! The index of due work: which records hold replies of a committed step that were
//! never marked delivered (the outbox of a process that crashed between its commit and
//! its delivery), or a timer that falls due at a given time (a scene's timeout), so that
//! a process finds them without reading every session.

use async_trait::async_trait;

use super::Version;
use crate::error::Result;

/// The index of due work, the optional capability of a
/// [`SessionStore`](super::SessionStore) whose records outlive the process (every
/// built-in store has it). Reached through
/// [`SessionStore::pending`](super::SessionStore::pending).
///
/// A key is **marked** with a due time by [`save_pending`](Self::save_pending) and
/// **unmarked** by any other write of it: [`save`](super::SessionStore::save) (the write
/// that marks replies delivered is one) and [`delete`](super::SessionStore::delete). The
/// mark is part of the same atomic compare-and-set write as the record, so the index
/// never says less than the records: a record that holds pending replies or an armed
/// timer is always listed, with the time its work falls due.
///
/// Due times are Unix seconds of the pipeline's clock; `0` means "at once" (pending
/// replies). Each store keeps them ordered: an indexed `due_at` column in SQL, a sorted
/// set in Redis, an indexed field in MongoDB, an ordered set in memory.
///
/// A pipeline writes a step that leaves replies in the outbox, or arms a timer, with
/// `save_pending`, and [`Pipeline::wake_due`](crate::Pipeline::wake_due) lists the keys
/// that are due. `stagecraft::testing::conformance::check_pending` and `check_due_times`
/// (feature `testing`) check an implementation.
///
/// ```
/// use stagecraft::store::{MemoryStore, SessionStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let index = store.pending().expect("the memory store has it");
/// let v = index.save_pending("1:1", b"{}", None, 0).await.unwrap(); // due at once
/// index.save_pending("2:2", b"{}", None, 1_700_000_600).await.unwrap(); // due later
/// assert_eq!(index.pending_keys(1_700_000_000, 10).await.unwrap(), ["1:1"]);
/// // Any other write unmarks the key:
/// store.save("1:1", b"{}", Some(v)).await.unwrap();
/// assert!(index.pending_keys(1_700_000_000, 10).await.unwrap().is_empty());
/// assert_eq!(index.pending_keys(1_700_000_600, 10).await.unwrap(), ["2:2"]);
/// # });
/// ```
#[async_trait]
pub trait PendingIndex: Send + Sync {
    /// Writes `bytes` as the record of `key` exactly as
    /// [`SessionStore::save`](super::SessionStore::save) does (compare-and-set over
    /// `expected`), and marks the key due at `due` (Unix seconds; `0`: at once) in the
    /// same atomic write.
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict) when the stored version is not
    /// `expected`; nothing is written or marked then.
    async fn save_pending(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: i64,
    ) -> Result<Version>;

    /// Up to `limit` marked keys of live records due by `now` (Unix seconds: due time
    /// `<= now`), earliest first. It reads the index, not every record.
    ///
    /// # Errors
    /// [`Error::Store`](crate::Error::Store) when the backend fails.
    async fn pending_keys(&self, now: i64, limit: usize) -> Result<Vec<String>>;
}
