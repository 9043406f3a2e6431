//! The per-key table: each key's FIFO lock and, between updates, its decoded session.
//!
//! One entry per key that is held, waited for or cached. A key seen again finds its
//! entry, so an update of a hot key allocates neither its key text nor its lock. The
//! cached session is the data of the key's lock: the update holding the key reaches it
//! through its [`Permit`], with no further lookup. An entry goes away when nobody holds
//! or waits for its key and it caches nothing, so the table shrinks back when the bot is
//! idle (down to the cached sessions, at most the cache capacity).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::lease::HeldLease;
use crate::context::Decoded;
use crate::error::{Error, Result};
use crate::util::{FastMap, fast_map};

/// A decoded session as this process committed it last, with how long it may stand
/// for the stored record unread (see [`Decoded`]).
///
/// It is *taken* when an update of its key starts and *put back* only after a
/// successful commit (or untouched, by an update that never loaded it), so a failed,
/// rolled-back or retried update never leaves objects behind.
pub(crate) type Cached<S> = Decoded<S>;

/// The key's FIFO lock, guarding the key's cached session.
type KeyLock<S> = Mutex<Option<Cached<S>>>;
type KeyGuard<S> = OwnedMutexGuard<Option<Cached<S>>>;

struct Slot<S> {
    /// The key's FIFO lock, holding the session as this process committed it last.
    /// Its clones: the table's, plus one per update holding or waiting for the key.
    lock: Arc<KeyLock<S>>,
    /// The key's lease across processes, passed on by the update that held it to the
    /// next update of the key waiting here (see [`KeyTable::pass_lease`]).
    lease: Option<HeldLease>,
}

struct Table<S> {
    map: FastMap<Arc<str>, Slot<S>>,
    /// At most this many cached sessions (0: no cache).
    capacity: usize,
    /// Cached sessions held (kept here: `DashMap::len` locks every shard).
    cached: AtomicUsize,
    /// Leases passed on and not yet taken: while 0, no update looks for one.
    passed: AtomicUsize,
}

/// Locks and cached sessions by key.
pub(crate) struct KeyTable<S> {
    table: Arc<Table<S>>,
    /// At most this many updates of one key wait behind the running one.
    max_waiting: Option<usize>,
}

/// A place in a key's queue, taken synchronously at arrival.
pub(crate) struct Ticket<S> {
    state: TicketState<S>,
    cleanup: Cleanup<S>,
}

enum TicketState<S> {
    Ready(KeyGuard<S>),
    Waiting(Pin<Box<dyn Future<Output = KeyGuard<S>> + Send>>),
    /// The key's queue was full at arrival.
    Rejected,
}

/// Holding the key. Dropping it lets the next update of the key in.
pub(crate) struct Permit<S> {
    guard: KeyGuard<S>,
    cleanup: Cleanup<S>,
}

impl<S> Permit<S> {
    /// Takes the key's cached session.
    pub(crate) fn take_cached(&mut self) -> Option<Cached<S>> {
        let cached = self.guard.take()?;
        self.cleanup.caches = Some(false);
        self.cleanup.table.cached.fetch_sub(1, Ordering::Relaxed);
        Some(cached)
    }

    /// Caches the key's committed session (unless the cache is full).
    pub(crate) fn put_cached(&mut self, cached: Cached<S>) {
        let table = &*self.cleanup.table;
        if self.guard.is_none() && table.cached.load(Ordering::Relaxed) >= table.capacity {
            return;
        }
        if self.guard.replace(cached).is_none() {
            table.cached.fetch_add(1, Ordering::Relaxed);
        }
        self.cleanup.caches = Some(true);
    }
}

struct Cleanup<S> {
    table: Arc<Table<S>>,
    key: Arc<str>,
    /// Whether the key's lock caches a session, when known (a permit knows: it holds
    /// the lock; a ticket given up while waiting does not).
    caches: Option<bool>,
}

impl<S> Drop for Cleanup<S> {
    fn drop(&mut self) {
        // Runs after the guard (or the waiting future) was dropped: if nobody else
        // holds a clone of the lock, nobody holds or waits for the key.
        // A lease passed on to an update that is gone (cancelled while it waited) is
        // given back: dropped here, after the map's shard lock, it is released in the
        // background.
        let mut orphan = None;
        self.table.map.remove_if_mut(&self.key, |_, slot| {
            let idle = Arc::strong_count(&slot.lock) == 1;
            if idle {
                orphan = slot.lease.take();
            }
            // Idle: nobody holds the lock, so it is free to look at what it caches.
            let empty = match self.caches {
                Some(caches) => !caches,
                None => slot.lock.try_lock().is_ok_and(|cached| cached.is_none()),
            };
            idle && empty
        });
        if orphan.is_some() {
            self.table.passed.fetch_sub(1, Ordering::AcqRel);
        }
        drop(orphan);
    }
}

impl<S: Send + 'static> KeyTable<S> {
    /// A table caching at most `capacity` sessions.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            table: Arc::new(Table {
                map: fast_map(),
                capacity,
                cached: AtomicUsize::new(0),
                passed: AtomicUsize::new(0),
            }),
            max_waiting: Some(super::DEFAULT_MAX_QUEUE_PER_KEY),
        }
    }

    /// Sets the cache capacity (0: no cache). Only while building.
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        if let Some(table) = Arc::get_mut(&mut self.table) {
            table.capacity = capacity;
        }
    }

    /// Whether sessions are cached at all.
    pub(crate) fn caches(&self) -> bool {
        self.table.capacity > 0
    }

    /// Bounds the updates of one key waiting behind the running one (`None`: unbounded).
    pub(crate) fn set_max_waiting(&mut self, max: Option<usize>) {
        self.max_waiting = max;
    }

    /// Joins the queue of `key` now, so that arrival order is kept whatever order the
    /// returned tickets are awaited in. Returns the key as shared text (the table's own
    /// when the key has an entry).
    pub(crate) fn enqueue(&self, key: &str) -> (Arc<str>, Ticket<S>) {
        let map = &self.table.map;
        let found = map
            .get(key)
            .map(|e| (Arc::clone(e.key()), Arc::clone(&e.lock)));
        let (key, lock) = match found {
            Some(found) => found,
            None => {
                let entry = map.entry(Arc::from(key)).or_insert_with(|| Slot {
                    lock: Arc::new(Mutex::new(None)),
                    lease: None,
                });
                (Arc::clone(entry.key()), Arc::clone(&entry.lock))
            }
        };
        let cleanup = Cleanup {
            table: Arc::clone(&self.table),
            key: Arc::clone(&key),
            caches: None,
        };
        // Clones of the lock: the table's, ours, plus one per update running or waiting.
        let in_flight = Arc::strong_count(&lock) - 2;
        if self.max_waiting.is_some_and(|max| in_flight > max) {
            drop(lock);
            let state = TicketState::Rejected;
            return (key, Ticket { state, cleanup });
        }
        // The common case, a free key (nobody holds it, nobody waits): no waiter to
        // register, no future to box. Tokio's mutex hands a released lock straight to the
        // first waiter, so a free lock means an empty queue and FIFO order is kept.
        let state = match Arc::clone(&lock).try_lock_owned() {
            Ok(guard) => TicketState::Ready(guard),
            Err(_) => {
                let mut fut: Pin<Box<dyn Future<Output = KeyGuard<S>> + Send>> =
                    Box::pin(Arc::clone(&lock).lock_owned());
                // Poll once: this registers the waiter in the mutex's FIFO queue now.
                match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(guard) => TicketState::Ready(guard),
                    Poll::Pending => TicketState::Waiting(fut),
                }
            }
        };
        drop(lock);
        (key, Ticket { state, cleanup })
    }

    /// Keys currently held or waited for (walks the table).
    pub(crate) fn in_flight(&self) -> usize {
        self.table
            .map
            .iter()
            .filter(|e| Arc::strong_count(&e.lock) > 1)
            .count()
    }

    /// Entries in the table (walks it), and the cached sessions among them.
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (
            self.table.map.len(),
            self.table.cached.load(Ordering::Relaxed),
        )
    }

    /// Updates of `key` waiting behind the running one.
    pub(crate) fn waiting(&self, key: &str) -> usize {
        self.table
            .map
            .get(key)
            .map_or(0, |slot| Arc::strong_count(&slot.lock).saturating_sub(2))
    }

    /// Hands the lease of `key` to the next update of the key waiting here, so that it
    /// need not be released and taken again (two round trips). Returns it, for the
    /// caller to release, when no update of the key waits. Only while holding the key's
    /// permit.
    pub(crate) fn pass_lease(&self, key: &str, lease: HeldLease) -> Option<HeldLease> {
        let Some(mut slot) = self.table.map.get_mut(key) else {
            return Some(lease);
        };
        // Clones of the lock: the table's, the running update's, one per waiting update.
        if Arc::strong_count(&slot.lock) <= 2 {
            return Some(lease);
        }
        let previous = slot.lease.replace(lease);
        drop(slot);
        if previous.is_none() {
            self.table.passed.fetch_add(1, Ordering::AcqRel);
        }
        // Not expected (the update holding the key took any passed lease), but a lease
        // is never dropped unreleased: its `Drop` gives it back.
        drop(previous);
        None
    }

    /// Takes the lease of `key` that the previous update of the key passed on. Only
    /// while holding the key's permit.
    pub(crate) fn take_lease(&self, key: &str) -> Option<HeldLease> {
        if self.table.passed.load(Ordering::Acquire) == 0 {
            return None;
        }
        let lease = self.table.map.get_mut(key)?.lease.take()?;
        self.table.passed.fetch_sub(1, Ordering::AcqRel);
        Some(lease)
    }
}

impl<S> Ticket<S> {
    /// Waits for the key.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the key's queue was full at arrival.
    pub(crate) async fn acquire(self) -> Result<Permit<S>> {
        let Self { state, cleanup } = self;
        let guard = match state {
            TicketState::Ready(g) => g,
            TicketState::Waiting(fut) => fut.await,
            TicketState::Rejected => {
                return Err(Error::Overloaded {
                    key: cleanup.key.to_string(),
                });
            }
        };
        let mut cleanup = cleanup;
        cleanup.caches = Some(guard.is_some());
        Ok(Permit { guard, cleanup })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(version: u64) -> Cached<()> {
        Cached {
            record: crate::store::Record {
                bytes: b"x".to_vec(),
                version: crate::store::Version(version),
            },
            data: None,
            stack: Vec::new(),
            ledger: Default::default(),
            trusted_until: Some(i64::MAX),
        }
    }

    #[tokio::test]
    async fn table_empties_and_order_is_arrival_order() {
        let keys = KeyTable::<()>::new(0);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tickets: Vec<_> = (0..50).map(|_| keys.enqueue("k").1).collect();
        assert_eq!(keys.in_flight(), 1);
        let mut handles = Vec::new();
        // Await in reverse order: arrival order must still win.
        for (i, t) in tickets.into_iter().enumerate().rev() {
            let order = Arc::clone(&order);
            handles.push(tokio::spawn(async move {
                let _p = t.acquire().await.unwrap();
                tokio::task::yield_now().await;
                order.lock().unwrap().push(i);
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<_>>());
        assert_eq!(keys.in_flight(), 0);
        assert_eq!(keys.table.map.len(), 0);
    }

    #[tokio::test]
    async fn dropped_ticket_does_not_leak_or_jump_the_queue() {
        let keys = KeyTable::<()>::new(0);
        let first = keys.enqueue("k").1.acquire().await.unwrap();
        let second = keys.enqueue("k").1;
        drop(second);
        assert_eq!(keys.in_flight(), 1);
        drop(first);
        assert_eq!(keys.in_flight(), 0);
        assert_eq!(keys.table.map.len(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_rejects_and_recovers() {
        let mut keys = KeyTable::<()>::new(0);
        keys.set_max_waiting(Some(2));
        let running = keys.enqueue("k").1.acquire().await.unwrap();
        let waiting: Vec<_> = (0..2).map(|_| keys.enqueue("k").1).collect();
        assert_eq!(keys.waiting("k"), 2);
        let rejected = keys.enqueue("k").1.acquire().await;
        assert!(matches!(rejected, Err(Error::Overloaded { key }) if key == "k"));
        // Another key is not affected.
        let other = keys.enqueue("j").1.acquire().await;
        assert!(other.is_ok());
        drop(other);
        drop(running);
        for t in waiting {
            drop(t.acquire().await.unwrap());
        }
        assert_eq!(keys.in_flight(), 0);
        assert!(keys.enqueue("k").1.acquire().await.is_ok());
    }

    /// A cached session keeps its key's entry (and the key text) after the update; the
    /// next update of the key reuses both. Taking it out lets the entry go.
    #[tokio::test]
    async fn a_cached_session_keeps_the_entry_and_its_key_text() {
        let keys = KeyTable::<()>::new(1);
        let (k1, t) = keys.enqueue("k");
        let mut permit = t.acquire().await.unwrap();
        permit.put_cached(cached(1));
        drop(permit);
        assert_eq!((keys.in_flight(), keys.table.map.len()), (0, 1));
        let (k2, t) = keys.enqueue("k");
        assert!(Arc::ptr_eq(&k1, &k2), "the key text is the table's");
        let mut permit = t.acquire().await.unwrap();
        // Capacity 1: another key is not cached.
        let (_, other) = keys.enqueue("j");
        let mut other = other.acquire().await.unwrap();
        other.put_cached(cached(9));
        drop(other);
        assert_eq!(
            keys.table.map.len(),
            1,
            "`j` was not cached, its entry is gone"
        );
        let taken = permit.take_cached().expect("the session of `k` is cached");
        assert_eq!(taken.record.version.0, 1);
        assert!(permit.take_cached().is_none(), "already taken");
        // Put back: the cache holds it again (capacity 1 is free again).
        permit.put_cached(taken);
        assert_eq!(keys.table.cached.load(Ordering::Relaxed), 1);
        assert!(permit.take_cached().is_some());
        drop(permit);
        assert_eq!(keys.table.map.len(), 0);
    }
}
