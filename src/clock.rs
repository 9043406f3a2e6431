//! Time sources: the system clock, and a manual clock for tests and replays.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where stagecraft reads the time (scene TTLs, store TTLs).
///
/// Supply a [`ManualClock`] to make time move only when a test says so.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Whole seconds since the Unix epoch (floor).
    fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use stagecraft::clock::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::at_secs(1_700_000_000);
/// clock.advance(Duration::from_secs(301));
/// assert_eq!(clock.now_s(), 1_700_000_301);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    ms: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `secs` seconds after the Unix epoch.
    #[must_use]
    pub fn at_secs(secs: i64) -> Self {
        Self { ms: Arc::new(AtomicI64::new(secs.saturating_mul(1000))) }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `ms` milliseconds after the epoch.
    pub fn set_ms(&self, ms: i64) {
        self.ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}
