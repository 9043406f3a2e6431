//! Per-key leases: a short, renewable, token-checked claim on a session key, shared by
//! every process that uses the store. A store that has them implements [`LeaseStore`]
//! and hands it out from [`SessionStore::leases`](super::SessionStore::leases).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::{Record, random_u64};
use crate::error::Result;

/// Per-key leases, the optional capability of a [`SessionStore`](super::SessionStore)
/// shared by several processes (SQLite, Redis, PostgreSQL, MySQL and MongoDB have it).
///
/// A store offers it by implementing this trait and returning itself from
/// [`SessionStore::leases`](super::SessionStore::leases); a pipeline on such a store
/// takes the lease of a key before it loads the key's session (see
/// [`LeaseMode`](crate::pipeline::LeaseMode)). Leases are independent of the records:
/// they never appear in [`list`](super::SessionStore::list) and never change a version.
/// `stagecraft::testing::conformance::check_leases` (feature `testing`) checks an
/// implementation.
///
/// The pipeline takes, renews and releases leases itself; by hand, on the embedded
/// store:
///
/// ```
/// use std::time::Duration;
/// use stagecraft::store::{LeaseAttempt, SessionStore, SqliteStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # let dir = std::env::temp_dir().join(format!("stagecraft-lease-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let store = SqliteStore::open(dir.join("bot.db")).await.unwrap();
/// let leases = store.leases().expect("SQLite has leases");
/// let ttl = Duration::from_secs(10);
/// let LeaseAttempt::Acquired(lease) = leases.acquire_lease("1:1", ttl).await.unwrap() else {
///     panic!("nobody else holds it");
/// };
/// // Another process (or this one) trying now finds it busy:
/// assert_eq!(leases.acquire_lease("1:1", ttl).await.unwrap(), LeaseAttempt::Busy);
/// assert!(leases.renew_lease(&lease, ttl).await.unwrap());
/// assert!(leases.release_lease(&lease).await.unwrap());
/// assert!(matches!(leases.acquire_lease("1:1", ttl).await.unwrap(), LeaseAttempt::Acquired(_)));
/// # drop(store);
/// # std::fs::remove_dir_all(&dir).ok();
/// # });
/// ```
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Tries once to take the lease of `key` for `ttl`: [`LeaseAttempt::Acquired`] when
    /// nobody holds a live lease on it, [`LeaseAttempt::Busy`] when someone does.
    ///
    /// A lease expires by itself `ttl` after it was taken or last renewed, so a crashed
    /// holder blocks the key for at most `ttl`.
    async fn acquire_lease(&self, key: &str, ttl: Duration) -> Result<LeaseAttempt>;

    /// Takes the lease of `key` like [`acquire_lease`](Self::acquire_lease) and, where
    /// the backend can do both in one round trip, reads the record too:
    /// [`Preload::Read`] then stands for the [`load`](super::SessionStore::load) the
    /// update would make next. The default takes the lease only ([`Preload::NotRead`]).
    async fn acquire_lease_and_load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<(LeaseAttempt, Preload)> {
        Ok((self.acquire_lease(key, ttl).await?, Preload::NotRead))
    }

    /// Extends `lease` to `ttl` from now if it is still live and still `lease`'s (same
    /// token). Returns `false` when it was lost (expired, or taken by someone else).
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool>;

    /// Gives `lease` back if it is still `lease`'s (same token); returns whether it was.
    /// Releasing a lease that expired and was taken by someone else does nothing.
    async fn release_lease(&self, lease: &Lease) -> Result<bool>;
}

/// What [`LeaseStore::acquire_lease_and_load`] read along with the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Preload {
    /// The record was not read (the lease was busy, or the store takes leases without
    /// reading): load it separately.
    #[default]
    NotRead,
    /// The record as [`load`](super::SessionStore::load) would have returned it once the
    /// lease was taken: `None` when the key has no live record.
    Read(Option<Record>),
}

/// A lease on one session key, as handed out by [`LeaseStore::acquire_lease`].
///
/// The token is random and identifies the holder: [`renew_lease`] and
/// [`release_lease`] act only when the stored token is still this one, so a holder
/// whose lease expired and was taken by someone else cannot renew or release the new
/// holder's lease.
///
/// [`renew_lease`]: LeaseStore::renew_lease
/// [`release_lease`]: LeaseStore::release_lease
#[derive(Clone, PartialEq, Eq)]
pub struct Lease {
    key: String,
    token: String,
}

impl Lease {
    /// A lease on `key` with a fresh random token (128 bits, hex). Store implementations
    /// call this and write the token with the lease.
    #[must_use]
    pub fn generate(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            token: format!("{:016x}{:016x}", random_u64(), random_u64()),
        }
    }

    /// A lease with a given token (for stores that make their own tokens, and tests).
    #[must_use]
    pub fn with_token(key: &str, token: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            token: token.into(),
        }
    }

    /// The session key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The holder's token.
    #[must_use]
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("token", &self.token)
            .finish()
    }
}

/// The answer of [`LeaseStore::acquire_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAttempt {
    /// The lease is ours until its TTL runs out (unless renewed).
    Acquired(Lease),
    /// Someone else holds a live lease on the key; try again later.
    Busy,
}

impl LeaseAttempt {
    /// `Acquired(lease)` when the store wrote `lease` (`taken`), else `Busy`.
    #[cfg(any(feature = "redis", feature = "postgres", feature = "mysql"))]
    pub(crate) fn taken(taken: bool, lease: Lease) -> Self {
        if taken {
            Self::Acquired(lease)
        } else {
            Self::Busy
        }
    }
}

/// Gives `lease` back through `leases`, logging what did not go as planned: a lease that
/// had expired already (someone may hold it now; nothing was done), or a release that
/// failed (the lease then expires by itself). For the callers whose work stands either
/// way: the pipeline after an update, and a write that gives the lease back after it.
pub(crate) async fn give_back(leases: &dyn LeaseStore, lease: &Lease) {
    match leases.release_lease(lease).await {
        Ok(true) => {}
        Ok(false) => tracing::info!(target: "stagecraft::session", key = lease.key(),
            "the lease had expired before it was released"),
        Err(e) => tracing::warn!(target: "stagecraft::session", key = lease.key(),
            error = %crate::error::error_chain(&e),
            "releasing a lease failed; it will expire by itself"),
    }
}
