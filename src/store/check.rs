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
    let backend = store.backend();
    let key = format!("{PROBE_PREFIX}{:016x}", random_u64());
    let bytes = format!("{{\"probe\":\"{key}\"}}").into_bytes();
    let step = |step: &'static str, e: Error| unusable(backend, step, e);
    let late = |step: &'static str| {
        unusable(
            backend,
            step,
            Error::store(backend, Message(format!("no answer within {timeout:?}"))),
        )
    };

    // A read first: the connection and the credentials, without writing anything.
    let found = tokio::time::timeout(timeout, store.load(&key))
        .await
        .map_err(|_| late("reading a probe record"))?
        .map_err(|e| step("reading a probe record", e))?;
    if found.is_some() {
        return Err(step(
            "reading a probe record",
            Error::store(backend, Message(format!("a record `{key}` already exists"))),
        ));
    }
    let version = tokio::time::timeout(timeout, store.save(&key, &bytes, None))
        .await
        .map_err(|_| late("writing a probe record"))?
        .map_err(|e| step("writing a probe record", e))?;
    let outcome = probe_rest(store, &key, &bytes, version, timeout).await;
    if outcome.is_err() {
        // Best effort: do not leave the probe record behind after a later step failed.
        let _ = tokio::time::timeout(timeout, store.delete(&key, version)).await;
    }
    outcome?;
    tracing::debug!(target: "stagecraft::store", backend, "start-up check passed");
    Ok(())
}

/// The steps after the probe record was written: read it back, delete it, take and give
/// back a lease.
async fn probe_rest(
    store: &dyn SessionStore,
    key: &str,
    bytes: &[u8],
    version: super::Version,
    timeout: Duration,
) -> Result<()> {
    let backend = store.backend();
    let step = |step: &'static str, e: Error| unusable(backend, step, e);
    let late = |step: &'static str| {
        unusable(
            backend,
            step,
            Error::store(backend, Message(format!("no answer within {timeout:?}"))),
        )
    };
    let read = tokio::time::timeout(timeout, store.load(key))
        .await
        .map_err(|_| late("reading the probe record back"))?
        .map_err(|e| step("reading the probe record back", e))?;
    match read {
        Some(r) if r.bytes == bytes && r.version == version => {}
        _ => {
            return Err(step(
                "reading the probe record back",
                Error::store(
                    backend,
                    Message("the record read back is not the one written".to_owned()),
                ),
            ));
        }
    }
    tokio::time::timeout(timeout, store.delete(key, version))
        .await
        .map_err(|_| late("deleting the probe record"))?
        .map_err(|e| step("deleting the probe record", e))?;
    let Some(leases) = store.leases() else {
        return Ok(());
    };
    let attempt = tokio::time::timeout(timeout, leases.acquire_lease(key, timeout))
        .await
        .map_err(|_| late("taking a probe lease"))?
        .map_err(|e| step("taking a probe lease", e))?;
    let LeaseAttempt::Acquired(lease) = attempt else {
        return Err(step(
            "taking a probe lease",
            Error::store(
                backend,
                Message("the probe key's lease is held by someone else".to_owned()),
            ),
        ));
    };
    tokio::time::timeout(timeout, leases.release_lease(&lease))
        .await
        .map_err(|_| late("giving back the probe lease"))?
        .map_err(|e| step("giving back the probe lease", e))?;
    Ok(())
}

/// [`Error::Unusable`] for `step`: the store's own error as the source (a store error
/// without its "store failed" layer, which the outer error already says).
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
