//! The start-up check of a store: [`check`] proves that a store can be used before a
//! bot takes its first update.

use std::time::Duration;

use super::{LeaseAttempt, SessionStore, random_u64};
use crate::error::{Error, Message, Result};

/// The prefix of the probe keys [`check`] writes and deletes. Keys starting with it are
/// reserved: no session should use one.
pub const PROBE_PREFIX: &str = "stagecraft-check:";

/// How long [`check`] waits for each answer of the store.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Proves that `store` is usable as configured: it answers (connection and
/// authentication), it can write and delete a record (not read-only, not corrupt), and,
/// when it has leases, it can take and give back a lease. Call it once at start-up, so a
/// bot whose store cannot work stops at once with a reason instead of failing every
/// update.
///
/// It reads, writes (compare-and-set `save(key, bytes, None)`), reads back and deletes
/// (`delete(key, version)`) one probe record under a fresh key that starts with
/// [`PROBE_PREFIX`] and ends with a random part, so it cannot clash with a session or
/// with another process checking the same store. Each step waits at most
/// [`CHECK_TIMEOUT`] for its answer (see [`check_within`]).
///
/// ```
/// use stagecraft::store::{MemoryStore, check};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// check(&store).await?;
/// # Ok::<(), stagecraft::Error>(())
/// # }).unwrap();
/// ```
///
/// # Errors
/// [`Error::Unusable`] naming the step that failed; its
/// [`source`](std::error::Error::source) is the store's own error (connection refused,
/// authentication failed, read-only database, malformed database file, ...), or a
/// message that the store did not answer in time.
pub async fn check(store: &dyn SessionStore) -> Result<()> {
    check_within(store, CHECK_TIMEOUT).await
}

/// [`check`], waiting at most `timeout` for each answer of the store.
///
/// # Errors
/// As [`check`].
pub async fn check_within(store: &dyn SessionStore, timeout: Duration) -> Result<()> {
    let probe = Probe {
        store,
        timeout,
        key: format!("{PROBE_PREFIX}{:016x}", random_u64()),
    };
    let bytes = format!("{{\"probe\":\"{}\"}}", probe.key).into_bytes();
    // A read first: the connection and the credentials, without writing anything.
    const READ: &str = "reading a probe record";
    if probe.step(READ, store.load(&probe.key)).await?.is_some() {
        let found = format!("a record `{}` already exists", probe.key);
        return Err(probe.refused(READ, found));
    }
    let version = probe
        .step(
            "writing a probe record",
            store.save(&probe.key, &bytes, None),
        )
        .await?;
    let outcome = probe.rest(&bytes, version).await;
    if outcome.is_err() {
        // Best effort: do not leave the probe record behind after a later step failed.
        let _ = tokio::time::timeout(timeout, store.delete(&probe.key, version)).await;
    }
    outcome?;
    tracing::debug!(target: "stagecraft::store", backend = store.backend(), "start-up check passed");
    Ok(())
}

/// One run of the check: the store, how long each answer may take, the probe key.
struct Probe<'a> {
    store: &'a dyn SessionStore,
    timeout: Duration,
    key: String,
}

impl Probe<'_> {
    /// Awaits one step's answer, within the timeout, failing as [`Error::Unusable`].
    async fn step<T>(
        &self,
        step: &'static str,
        answer: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(answer) => answer.map_err(|e| unusable(self.store.backend(), step, e)),
            Err(_) => Err(self.refused(step, format!("no answer within {:?}", self.timeout))),
        }
    }

    /// A step that got an answer it cannot accept.
    fn refused(&self, step: &'static str, why: String) -> Error {
        let backend = self.store.backend();
        unusable(backend, step, Error::store(backend, Message(why)))
    }

    /// The steps after the write: read back, delete, and a lease where there are some.
    async fn rest(&self, bytes: &[u8], version: super::Version) -> Result<()> {
        const READ_BACK: &str = "reading the probe record back";
        match self.step(READ_BACK, self.store.load(&self.key)).await? {
            Some(r) if r.bytes == bytes && r.version == version => {}
            _ => {
                let why = "the record read back is not the one written".to_owned();
                return Err(self.refused(READ_BACK, why));
            }
        }
        self.step(
            "deleting the probe record",
            self.store.delete(&self.key, version),
        )
        .await?;
        let Some(leases) = self.store.leases() else {
            return Ok(());
        };
        const LEASE: &str = "taking a probe lease";
        let attempt = self
            .step(LEASE, leases.acquire_lease(&self.key, self.timeout))
            .await?;
        let LeaseAttempt::Acquired(lease) = attempt else {
            let why = "the probe key's lease is held by someone else".to_owned();
            return Err(self.refused(LEASE, why));
        };
        self.step("giving back the probe lease", leases.release_lease(&lease))
            .await
            .map(drop)
    }
}

fn unusable(backend: &'static str, step: &'static str, e: Error) -> Error {
    let source = match e {
        Error::Store { source, .. } => source,
        other => Box::new(other),
    };
    Error::Unusable {
        backend,
        step,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_memory_store_passes_and_keeps_nothing() {
        let store = MemoryStore::new();
        check(&store).await.unwrap();
        let keys = store
            .list(&crate::store::ListFilter::default())
            .await
            .unwrap();
        assert!(keys.is_empty(), "{keys:?}");
    }
}
