//! Time sources: the system clock, and a manual clock for tests and replays.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where stagecraft reads the time (scene TTLs, store TTLs).
///
/// Supply a [`ManualClock`] to make time move only when a test says so, or your own
/// clock, say one that corrects the host's drift by an offset measured elsewhere:
///
/// ```
/// use stagecraft::clock::{Clock, SystemClock};
/// use stagecraft::prelude::*;
///
/// #[derive(Debug)]
/// struct Corrected { offset_ms: i64 }
///
/// impl Clock for Corrected {
///     fn now_ms(&self) -> i64 {
///         SystemClock.now_ms() + self.offset_ms
///     }
/// }
///
/// let clock = Corrected { offset_ms: -1_500 };
/// assert!(clock.now_s() < SystemClock.now_s());
/// // Scene TTLs, timeouts and stamps of the pipeline read it:
/// let bot = Pipeline::<()>::builder().clock(clock).build();
/// # let _ = bot;
/// ```
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
        Self {
            ms: Arc::new(AtomicI64::new(secs.saturating_mul(1000))),
        }
    }

    /// Moves the clock forward. The clock stops at `i64::MAX` milliseconds instead of
    /// wrapping to a time before the epoch (after which no TTL would ever expire).
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        // `fetch_update` with a closure that always answers `Some` cannot fail.
        let _ = self
            .ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |ms| {
                Some(ms.saturating_add(by))
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_saturates_instead_of_wrapping() {
        let clock = ManualClock::at_secs(1_700_000_000);
        clock.advance(Duration::from_secs(u64::MAX));
        assert_eq!(clock.now_ms(), i64::MAX);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now_ms(), i64::MAX, "stays at the end of time");
        assert_eq!(clock.now_s(), i64::MAX / 1000);

        let clock = ManualClock::at_secs(0);
        clock.advance(Duration::from_millis(u64::MAX));
        assert_eq!(clock.now_ms(), i64::MAX);

        let clock = ManualClock::default();
        clock.set_ms(i64::MAX - 5);
        clock.advance(Duration::from_millis(10));
        assert_eq!(clock.now_ms(), i64::MAX);

        let clock = ManualClock::at_secs(i64::MIN);
        clock.advance(Duration::MAX);
        assert_eq!(
            clock.now_ms(),
            -1,
            "from the start of time, i64::MAX ms later"
        );
    }

    #[test]
    fn clones_share_the_time() {
        let a = ManualClock::at_secs(10);
        let b = a.clone();
        b.advance(Duration::from_secs(5));
        assert_eq!(a.now_s(), 15);
    }
}
