//! [`FaultStore`]: a store decorator that injects scripted faults.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::store::{
    CacheHint, Lease, LeaseAttempt, LeaseStore, ListFilter, PendingIndex, Preload, PurgeExpired,
    Record, SessionStore, Version,
};

/// The kind of store call a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Call {
    /// [`SessionStore::load`].
    Load,
    /// [`SessionStore::save`].
    Save,
    /// [`SessionStore::delete`].
    Delete,
    /// [`SessionStore::list`].
    List,
    /// [`LeaseStore::acquire_lease`] and [`LeaseStore::acquire_lease_and_load`].
    AcquireLease,
    /// [`LeaseStore::renew_lease`].
    RenewLease,
    /// [`LeaseStore::release_lease`].
    ReleaseLease,
    /// [`PurgeExpired::purge_expired`].
    Purge,
    /// [`PendingIndex::pending_keys`] ([`PendingIndex::save_pending`] is a [`Save`](Self::Save)).
    PendingKeys,
}

impl Call {
    const ALL: [Self; 9] = [
        Self::Load,
        Self::Save,
        Self::Delete,
        Self::List,
        Self::AcquireLease,
        Self::RenewLease,
        Self::ReleaseLease,
        Self::Purge,
        Self::PendingKeys,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Save => "save",
            Self::Delete => "delete",
            Self::List => "list",
            Self::AcquireLease => "lease acquire",
            Self::RenewLease => "lease renewal",
            Self::ReleaseLease => "lease release",
            Self::Purge => "purge",
            Self::PendingKeys => "pending keys",
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to a call a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Fails at once; the call never reaches the inner store.
    Fail,
    /// Reaches the inner store after this pause, and returns its answer.
    Delay(Duration),
    /// Waits this long, then fails without reaching the inner store (a request that
    /// timed out before the server saw it).
    Timeout(Duration),
    /// Reaches the inner store (a save or delete is applied, a lease taken or given
    /// back), then fails: the server did the work but its answer was lost. When the
    /// inner store itself fails, its error is returned.
    FailAfter,
}

/// The error a [`FaultStore`] returns for an injected fault: the
/// [`source`](std::error::Error::source) of the [`Error::Store`] the caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault {
    /// The call that failed.
    pub call: Call,
    /// The fault that made it fail.
    pub fault: Fault,
}

impl InjectedFault {
    /// The injected fault behind `e`, if `e` is one.
    #[must_use]
    pub fn of(e: &Error) -> Option<&Self> {
        match e {
            Error::Store { source, .. } => source.downcast_ref::<Self>(),
            _ => None,
        }
    }
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fault {
            Fault::Fail | Fault::Delay(_) => write!(f, "injected fault: the {} failed", self.call),
            Fault::Timeout(d) => {
                write!(f, "injected fault: the {} timed out after {d:?}", self.call)
            }
            Fault::FailAfter => write!(
                f,
                "injected fault: the {} reached the store, but its answer was lost",
                self.call
            ),
        }
    }
}

impl std::error::Error for InjectedFault {}

/// A fault scripted for the next `left` calls of a kind.
#[derive(Debug, Clone, Copy)]
struct Rule {
    fault: Fault,
    left: usize,
}

#[derive(Debug, Default)]
struct Script {
    /// Per [`Call`], the rules in the order they were added; the first one applies.
    rules: [VecDeque<Rule>; Call::ALL.len()],
    /// Per [`Call`], how many calls were made.
    calls: [usize; Call::ALL.len()],
    /// Per [`Call`], how many faults fired.
    fired: [usize; Call::ALL.len()],
}

/// A store decorator that makes scripted calls fail, wait, time out, or fail after the
/// inner store did the work, to test what a bot does when its store misbehaves.
///
/// It wraps any store and stands for it: same backend name, same cache hint, and the
/// inner store's leases ([`SessionStore::leases`]) and purge
/// ([`SessionStore::purge`]), through itself so those calls can be faulted too.
/// Faults are scripted per kind of call ([`Call`]) with [`inject`](Self::inject): each
/// rule applies to the next `times` calls of its kind, rules of one kind one after the
/// other; calls with no rule left pass through. An injected failure is an
/// [`Error::Store`] of the inner backend whose source is an [`InjectedFault`].
///
/// ```
/// use std::sync::Arc;
/// use stagecraft::prelude::*;
/// use stagecraft::store::MemoryStore;
/// use stagecraft::testing::{Call, Fault, FaultStore, InjectedFault, TestBot};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = FaultStore::new(Arc::new(MemoryStore::new()));
/// let bot = TestBot::<u64>::with_store(store.clone(), |b| {
///     b.on_message(|cx: Cx<u64>| async move {
///         let n = cx.session_mut(|n| { *n += 1; *n })?;
///         cx.reply(format!("n={n}"));
///         Ok(Outcome::Handled)
///     })
///     .build()
/// });
///
/// // The save reaches the store, then its answer is lost: the caller gets an error...
/// store.inject(Call::Save, Fault::FailAfter, 1);
/// let err = bot.send("hi").await.unwrap_err();
/// assert!(InjectedFault::of(&err).is_some(), "{err}");
/// // ...the key is free, and the next update sees the session as it was written.
/// assert_eq!(bot.pipeline().keys_in_flight(), 0);
/// assert_eq!(bot.send("hi").await?, ["n=2"]);
/// assert_eq!(store.fired(Call::Save), 1);
/// # Ok::<(), stagecraft::Error>(())
/// # }).unwrap();
/// ```
pub struct FaultStore {
    inner: Arc<dyn SessionStore>,
    script: Mutex<Script>,
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl FaultStore {
    /// A decorator of `inner` with no fault scripted (every call passes through).
    #[must_use]
    pub fn new(inner: Arc<dyn SessionStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            script: Mutex::new(Script::default()),
        })
    }

    /// The store inside (calls to it are neither faulted nor counted).
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn SessionStore> {
        &self.inner
    }

    /// Applies `fault` to the next `times` calls of kind `call` (after the rules of that
    /// kind added before it have run out). `usize::MAX` applies it until
    /// [`clear`](Self::clear).
    pub fn inject(&self, call: Call, fault: Fault, times: usize) {
        if times == 0 {
            return;
        }
        self.script().rules[call.index()].push_back(Rule { fault, left: times });
    }

    /// Drops every scripted fault: calls pass through from now on.
    pub fn clear(&self) {
        for rules in &mut self.script().rules {
            rules.clear();
        }
    }

    /// How many calls of kind `call` are still to be faulted.
    #[must_use]
    pub fn faults_left(&self, call: Call) -> usize {
        self.script().rules[call.index()]
            .iter()
            .fold(0usize, |n, r| n.saturating_add(r.left))
    }

    /// How many calls of kind `call` were made so far (faulted or not).
    #[must_use]
    pub fn calls(&self, call: Call) -> usize {
        self.script().calls[call.index()]
    }

    /// How many faults fired on calls of kind `call` so far.
    #[must_use]
    pub fn fired(&self, call: Call) -> usize {
        self.script().fired[call.index()]
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        // The script is plain counters: a panic elsewhere leaves it consistent.
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call of kind `call` and takes the fault that applies to it, if any.
    fn next_fault(&self, call: Call) -> Option<Fault> {
        let mut script = self.script();
        let i = call.index();
        script.calls[i] = script.calls[i].saturating_add(1);
        let rules = &mut script.rules[i];
        let rule = rules.front_mut()?;
        let fault = rule.fault;
        rule.left -= 1;
        if rule.left == 0 {
            rules.pop_front();
        }
        script.fired[i] = script.fired[i].saturating_add(1);
        Some(fault)
    }

    fn injected(&self, call: Call, fault: Fault) -> Error {
        tracing::debug!(target: "stagecraft::testing", %call, ?fault, "injected store fault");
        Error::store(self.inner.backend(), InjectedFault { call, fault })
    }

    /// Runs `inner` (the call to the inner store, not started yet) under the fault
    /// scripted for `call`.
    async fn run<T>(&self, call: Call, inner: impl Future<Output = Result<T>> + Send) -> Result<T> {
        let Some(fault) = self.next_fault(call) else {
            return inner.await;
        };
        match fault {
            Fault::Fail => Err(self.injected(call, fault)),
            Fault::Delay(pause) => {
                tokio::time::sleep(pause).await;
                inner.await
            }
            Fault::Timeout(after) => {
                tokio::time::sleep(after).await;
                Err(self.injected(call, fault))
            }
            Fault::FailAfter => {
                inner.await?;
                Err(self.injected(call, fault))
            }
        }
    }

    /// The inner store's pending index (called only when it has one: see `pending`).
    fn inner_pending(&self) -> Result<&dyn PendingIndex> {
        self.inner.pending().ok_or_else(|| {
            Error::Config(format!(
                "the `{}` store has no pending-replies index",
                self.inner.backend()
            ))
        })
    }

    /// The inner store's leases (called only when it has some: see `leases`).
    fn inner_leases(&self) -> Result<&dyn LeaseStore> {
        self.inner.leases().ok_or_else(|| {
            Error::Config(format!(
                "the `{}` store has no leases",
                self.inner.backend()
            ))
        })
    }
}

#[async_trait]
impl SessionStore for FaultStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn load(&self, key: &str) -> Result<Option<Record>> {
        self.run(Call::Load, self.inner.load(key)).await
    }

    async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>) -> Result<Version> {
        self.run(Call::Save, self.inner.save(key, bytes, expected))
            .await
    }

    async fn delete(&self, key: &str, expected: Version) -> Result<()> {
        self.run(Call::Delete, self.inner.delete(key, expected))
            .await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<String>> {
        self.run(Call::List, self.inner.list(filter)).await
    }

    fn cache_hint(&self) -> Option<CacheHint> {
        self.inner.cache_hint()
    }

    fn leases(&self) -> Option<&dyn LeaseStore> {
        self.inner.leases().map(|_| self as &dyn LeaseStore)
    }

    fn purge(&self) -> Option<&dyn PurgeExpired> {
        self.inner.purge().map(|_| self as &dyn PurgeExpired)
    }

    fn pending(&self) -> Option<&dyn PendingIndex> {
        self.inner.pending().map(|_| self as &dyn PendingIndex)
    }
}

#[async_trait]
impl PendingIndex for FaultStore {
    async fn save_pending(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: i64,
    ) -> Result<Version> {
        let index = self.inner_pending()?;
        self.run(Call::Save, index.save_pending(key, bytes, expected, due))
            .await
    }

    async fn pending_keys(&self, now: i64, limit: usize) -> Result<Vec<String>> {
        let index = self.inner_pending()?;
        self.run(Call::PendingKeys, index.pending_keys(now, limit))
            .await
    }
}

#[async_trait]
impl LeaseStore for FaultStore {
    async fn acquire_lease(&self, key: &str, ttl: Duration) -> Result<LeaseAttempt> {
        let leases = self.inner_leases()?;
        self.run(Call::AcquireLease, leases.acquire_lease(key, ttl))
            .await
    }

    async fn acquire_lease_and_load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<(LeaseAttempt, Preload)> {
        let leases = self.inner_leases()?;
        self.run(Call::AcquireLease, leases.acquire_lease_and_load(key, ttl))
            .await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let leases = self.inner_leases()?;
        self.run(Call::RenewLease, leases.renew_lease(lease, ttl))
            .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let leases = self.inner_leases()?;
        self.run(Call::ReleaseLease, leases.release_lease(lease))
            .await
    }
}

#[async_trait]
impl PurgeExpired for FaultStore {
    async fn purge_expired(&self) -> Result<u64> {
        let purge = self.inner.purge().ok_or_else(|| {
            Error::Config(format!("the `{}` store has no purge", self.inner.backend()))
        })?;
        self.run(Call::Purge, purge.purge_expired()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn rules_apply_in_order_then_calls_pass_through() {
        let store = FaultStore::new(Arc::new(MemoryStore::new()));
        store.inject(Call::Save, Fault::Fail, 1);
        store.inject(Call::Save, Fault::FailAfter, 1);
        assert_eq!(store.faults_left(Call::Save), 2);
        let e = store.save("k", b"1", None).await.unwrap_err();
        assert_eq!(
            InjectedFault::of(&e).map(|f| f.fault),
            Some(Fault::Fail),
            "{e}"
        );
        assert!(store.inner().load("k").await.unwrap().is_none());
        let e = store.save("k", b"2", None).await.unwrap_err();
        assert_eq!(
            InjectedFault::of(&e).map(|f| f.fault),
            Some(Fault::FailAfter)
        );
        let written = store.inner().load("k").await.unwrap().unwrap();
        assert_eq!(written.bytes, b"2");
        // The same save again: the compare-and-set sees the record the lost answer wrote.
        assert!(store.save("k", b"2", None).await.unwrap_err().is_conflict());
        assert_eq!((store.calls(Call::Save), store.fired(Call::Save)), (3, 2));
        assert_eq!(store.faults_left(Call::Save), 0);
    }

    #[tokio::test]
    async fn a_store_without_leases_offers_none() {
        let store = FaultStore::new(Arc::new(MemoryStore::new()));
        assert!(store.leases().is_none());
        assert!(store.purge().is_some());
        assert_eq!(store.purge_expired().await.unwrap(), 0);
    }
}
