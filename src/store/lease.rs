//! Per-key leases: a short, renewable, token-checked claim on a session key, shared by
//! every process that uses the store.

use std::fmt;

use super::random_u64;

/// A lease on one session key, as handed out by [`SessionStore::acquire_lease`].
///
/// The token is random and identifies the holder: [`renew_lease`] and
/// [`release_lease`] act only when the stored token is still this one, so a holder
/// whose lease expired and was taken by someone else cannot renew or release the new
/// holder's lease.
///
/// [`SessionStore::acquire_lease`]: super::SessionStore::acquire_lease
/// [`renew_lease`]: super::SessionStore::renew_lease
/// [`release_lease`]: super::SessionStore::release_lease
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

/// The answer of [`SessionStore::acquire_lease`](super::SessionStore::acquire_lease).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseAttempt {
    /// The lease is ours until its TTL runs out (unless renewed).
    Acquired(Lease),
    /// Someone else holds a live lease on the key; try again later.
    Busy,
    /// This store has no leases (the default for stores that don't implement them).
    Unsupported,
}
