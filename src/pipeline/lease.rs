//! Per-key leases across processes: taken before an update's session is loaded, renewed
//! while it runs, released by the update's last write (its save, or with the outbox the
//! write that marks its replies delivered), or passed on to the next update of the key
//! waiting in this process, within the fair share.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::store::{Lease, LeaseAttempt, Preload, SessionStore, random_u64};

/// Whether the pipeline takes per-key leases in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LeaseMode {
    /// When the store has them ([`SessionStore::leases`] is `Some`): SQLite, Redis,
    /// PostgreSQL and MySQL do, memory doesn't. The default.
    #[default]
    Auto,
    /// Always; an update fails with [`Error::Config`] if the store has no leases.
    On,
    /// Never: replicas rely on compare-and-set and reruns alone.
    Off,
}

/// How the pipeline uses per-key leases ([`PipelineBuilder::leases`]).
///
/// ```
/// use std::time::Duration;
/// use stagecraft::pipeline::LeaseConfig;
///
/// let leases = LeaseConfig::new()
///     .ttl(Duration::from_secs(5))
///     .wait(Duration::from_secs(20));
/// # let _ = leases;
/// ```
///
/// [`PipelineBuilder::leases`]: super::PipelineBuilder::leases
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseConfig {
    /// Whether to take leases at all (default [`LeaseMode::Auto`]).
    pub mode: LeaseMode,
    /// How long a lease lasts without renewal (default 10 s): how long a key stays
    /// blocked after its holder died.
    pub ttl: Duration,
    /// How often a running update renews its lease (default a third of `ttl`).
    pub renew_every: Duration,
    /// How long an update waits for a lease held elsewhere before failing with
    /// [`Error::LeaseTimeout`] (default 30 s).
    pub wait: Duration,
    /// First pause between two tries of a busy lease (default 2 ms); pauses double up
    /// to `poll_max`, with jitter.
    pub poll_min: Duration,
    /// Longest pause between two tries of a busy lease (default 20 ms).
    pub poll_max: Duration,
    /// After holding a key through consecutive updates for this long, a process
    /// releases it instead of passing it to its next waiting update, and steps back for
    /// `poll_max` before taking it again, so that replicas waiting for the key get their
    /// turn (default 100 ms).
    pub fair_share: Duration,
    /// Whether an update keeps the lease until its replies are delivered (default
    /// `false`). See [`hold_through_delivery`](Self::hold_through_delivery).
    pub hold_through_delivery: bool,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl LeaseConfig {
    /// The defaults: automatic, TTL 10 s, renewed every 3.3 s, wait at most 30 s.
    #[must_use]
    pub fn new() -> Self {
        Self {
            mode: LeaseMode::Auto,
            ttl: Duration::from_secs(10),
            renew_every: Duration::from_secs(10) / 3,
            wait: Duration::from_secs(30),
            poll_min: Duration::from_millis(2),
            poll_max: Duration::from_millis(20),
            fair_share: Duration::from_millis(100),
            hold_through_delivery: false,
        }
    }

    /// No leases.
    #[must_use]
    pub fn off() -> Self {
        Self::new().mode(LeaseMode::Off)
    }

    /// Sets [`mode`](Self::mode).
    #[must_use]
    pub fn mode(mut self, mode: LeaseMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`ttl`](Self::ttl) (at least 10 ms) and renews every third of it.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_millis(10));
        self.renew_every = self.ttl / 3;
        self
    }

    /// Sets [`renew_every`](Self::renew_every) (kept below `ttl`).
    #[must_use]
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = every;
        self
    }

    /// Sets [`wait`](Self::wait).
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Sets [`poll_min`](Self::poll_min) and [`poll_max`](Self::poll_max).
    #[must_use]
    pub fn poll(mut self, min: Duration, max: Duration) -> Self {
        self.poll_min = min.max(Duration::from_micros(100));
        self.poll_max = max.max(self.poll_min);
        self
    }

    /// Sets [`fair_share`](Self::fair_share).
    #[must_use]
    pub fn fair_share(mut self, share: Duration) -> Self {
        self.fair_share = share;
        self
    }

    /// Sets [`hold_through_delivery`](Self::hold_through_delivery).
    ///
    /// By default (`false`), an update whose replies go out directly (no outbox) gives
    /// its lease back in the compare-and-set write that saves its session: one round
    /// trip less per update. Within a process replies keep their order anyway (the
    /// key's next update starts only after this one delivered); across replicas, the
    /// next update of the chat, handled by another replica, may then send its replies
    /// before this update's last ones are out, if that replica loads, runs and commits
    /// it while this delivery is still going on. With `true`, the lease is released
    /// after the delivery, in a write of its own, so that replies of one chat never
    /// overtake each other across replicas either.
    ///
    /// With the outbox on, the lease is always held through the delivery (another
    /// replica would otherwise find the replies still pending and send them again) and
    /// given back by the write that marks them delivered; this setting changes nothing
    /// there.
    ///
    /// ```
    /// use stagecraft::pipeline::LeaseConfig;
    ///
    /// let strict = LeaseConfig::new().hold_through_delivery(true);
    /// assert!(strict.hold_through_delivery);
    /// ```
    #[must_use]
    pub fn hold_through_delivery(mut self, hold: bool) -> Self {
        self.hold_through_delivery = hold;
        self
    }

    fn renew_interval(&self) -> Duration {
        self.renew_every
            .min(self.ttl / 2)
            .max(Duration::from_millis(1))
    }
}

/// The pipeline's lease settings and the per-key holding streaks of this process.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    pub(crate) config: LeaseConfig,
    /// Keys this process has held through consecutive updates, since when.
    streaks: crate::util::FastMap<Arc<str>, Instant>,
}

impl Leases {
    pub(crate) fn set_config(&mut self, config: LeaseConfig) {
        self.config = config;
    }

    /// Takes the lease of `key` (waiting while it is busy), or `None` when leases are
    /// off for this store. With the lease comes the key's record when the store read it
    /// in the same round trip (see [`LeaseStore::acquire_lease_and_load`]).
    ///
    /// [`LeaseStore::acquire_lease_and_load`]: crate::store::LeaseStore::acquire_lease_and_load
    pub(crate) async fn acquire(
        &self,
        store: &Arc<dyn SessionStore>,
        key: &Arc<str>,
    ) -> Result<(Option<HeldLease>, Preload)> {
        let cfg = &self.config;
        let leases = match (cfg.mode, store.leases()) {
            (LeaseMode::Off, _) | (LeaseMode::Auto, None) => return Ok((None, Preload::NotRead)),
            (LeaseMode::On, None) => {
                return Err(Error::Config(format!(
                    "leases are required (LeaseMode::On) but the `{}` store has none",
                    store.backend()
                )));
            }
            (_, Some(leases)) => leases,
        };
        let started = Instant::now();
        // Fairness: after a long streak of consecutive updates of this key here, leave a
        // gap at least as long as a waiting replica's longest pause between tries.
        let step_back = self
            .streaks
            .remove_if(key, |_, since| since.elapsed() >= cfg.fair_share)
            .is_some();
        if step_back {
            tokio::time::sleep(cfg.poll_max).await;
        }
        let mut pause = cfg.poll_min;
        loop {
            let (attempt, loaded) = leases.acquire_lease_and_load(key, cfg.ttl).await?;
            match attempt {
                LeaseAttempt::Acquired(lease) => {
                    self.streaks
                        .entry(Arc::clone(key))
                        .or_insert_with(Instant::now);
                    let held = HeldLease::start(Arc::clone(store), lease, cfg);
                    return Ok((Some(held), loaded));
                }
                LeaseAttempt::Busy => {}
            }
            let waited = started.elapsed();
            if waited >= cfg.wait {
                return Err(Error::LeaseTimeout {
                    key: key.to_string(),
                    waited,
                });
            }
            // Jitter in [pause/2, pause], never past the wait limit.
            let half = pause / 2;
            let jitter = half.mul_f64((random_u64() >> 11) as f64 / (1u64 << 53) as f64);
            tokio::time::sleep((half + jitter).min(cfg.wait - waited)).await;
            pause = (pause * 2).min(cfg.poll_max);
        }
    }

    /// Whether this process may keep the lease of `key` for its next update waiting
    /// here: its holding streak is shorter than [`LeaseConfig::fair_share`].
    pub(crate) fn may_keep(&self, key: &str) -> bool {
        self.streaks
            .get(key)
            .is_some_and(|since| since.elapsed() < self.config.fair_share)
    }

    /// How many keys have a holding streak (walks the table).
    pub(crate) fn streaks(&self) -> usize {
        self.streaks.len()
    }

    /// Forgets the holding streak of `key` (no more updates of it wait here).
    pub(crate) fn end_streak(&self, key: &str) {
        self.streaks.remove(key);
    }
}

/// A lease being held: a task renews it until it is released or dropped.
#[derive(Debug)]
pub(crate) struct HeldLease {
    store: Arc<dyn SessionStore>,
    lease: Lease,
    lost: Arc<AtomicBool>,
    /// Set while a write that releases the lease is under way: a renewal that finds the
    /// lease gone then says nothing (it was given back, not lost).
    ending: Arc<AtomicBool>,
    renewer: JoinHandle<()>,
    released: bool,
}

impl HeldLease {
    fn start(store: Arc<dyn SessionStore>, lease: Lease, cfg: &LeaseConfig) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let ending = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew(
            Arc::clone(&store),
            lease.clone(),
            cfg.ttl,
            cfg.renew_interval(),
            Arc::clone(&lost),
            Arc::clone(&ending),
        ));
        Self {
            store,
            lease,
            lost,
            ending,
            renewer,
            released: false,
        }
    }

    /// Whether a renewal found the lease gone (it expired and may be someone else's).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// The lease, for a write that releases it ([`SessionStore::save_releasing`]).
    /// Until [`released_by_write`](Self::released_by_write) or
    /// [`keep`](Self::keep), renewals that find it gone stay quiet.
    pub(crate) fn ending(&self) -> &Lease {
        self.ending.store(true, Ordering::Release);
        &self.lease
    }

    /// The write that was to release the lease did not (a conflict, or an error): it
    /// is held (or lost) as before.
    pub(crate) fn keep(&self) {
        self.ending.store(false, Ordering::Release);
    }

    /// A write released the lease: stops renewing it.
    pub(crate) fn released_by_write(mut self) {
        self.renewer.abort();
        self.released = true;
    }

    /// Stops renewing and gives the lease back.
    pub(crate) async fn release(mut self) {
        self.renewer.abort();
        self.released = true;
        // Held only on a store with leases.
        let Some(leases) = self.store.leases() else {
            return;
        };
        crate::store::give_back(leases, &self.lease).await;
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.released {
            return;
        }
        // The update was cancelled or panicked: give the lease back in the background
        // (if that fails, it expires by itself).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(&self.store);
            let lease = self.lease.clone();
            rt.spawn(async move {
                if let Some(leases) = store.leases() {
                    let _ = leases.release_lease(&lease).await;
                }
            });
        }
    }
}

async fn renew(
    store: Arc<dyn SessionStore>,
    lease: Lease,
    ttl: Duration,
    every: Duration,
    lost: Arc<AtomicBool>,
    ending: Arc<AtomicBool>,
) {
    let Some(leases) = store.leases() else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        if ending.load(Ordering::Acquire) {
            // A write is giving it back; renewed again if that write fails.
            continue;
        }
        let renewed = leases.renew_lease(&lease, ttl).await;
        if ending.load(Ordering::Acquire) {
            // Released meanwhile (or about to be): whatever the renewal found is no loss.
            continue;
        }
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(target: "stagecraft::session", key = lease.key(),
                    "lost the lease while the update ran; compare-and-set still guards the write");
                lost.store(true, Ordering::Release);
                return;
            }
            // A failed renewal is tried again; the lease may still be ours.
            Err(e) => tracing::warn!(target: "stagecraft::session", key = lease.key(),
                error = %e, "renewing a lease failed"),
        }
    }
}
