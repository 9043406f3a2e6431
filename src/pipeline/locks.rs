//! Per-key FIFO locks whose table shrinks back when keys go idle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::{Error, Result};
use crate::session::FastMap;

type Slot = Arc<Mutex<()>>;

/// One FIFO mutex per key, created on demand and removed when nobody holds or waits.
#[derive(Debug)]
pub(crate) struct KeyLocks {
    map: Arc<FastMap<Arc<str>, Slot>>,
    /// At most this many updates of one key wait behind the running one.
    max_waiting: Option<usize>,
}

/// A place in a key's queue, taken synchronously at arrival.
pub(crate) struct Ticket {
    state: TicketState,
    cleanup: Cleanup,
}

enum TicketState {
    Ready(OwnedMutexGuard<()>),
    Waiting(Pin<Box<dyn Future<Output = OwnedMutexGuard<()>> + Send>>),
    /// The key's queue was full at arrival.
    Rejected,
}

/// Holding the key. Dropping it lets the next update of the key in.
pub(crate) struct Permit {
    _guard: OwnedMutexGuard<()>,
    _cleanup: Cleanup,
}

struct Cleanup {
    map: Arc<FastMap<Arc<str>, Slot>>,
    key: Arc<str>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Runs after the guard (or the waiting future) was dropped: if nobody else
        // holds a clone of the slot, nobody holds or waits for the key.
        self.map
            .remove_if(&self.key, |_, slot| Arc::strong_count(slot) == 1);
    }
}

impl Default for KeyLocks {
    fn default() -> Self {
        Self {
            map: Arc::new(crate::session::fast_map()),
            max_waiting: None,
        }
    }
}

impl KeyLocks {
    /// Joins the queue of `key` now, so that arrival order is kept whatever order the
    /// returned tickets are awaited in.
    pub(crate) fn enqueue(&self, key: Arc<str>) -> Ticket {
        let slot = {
            let entry = self.map.entry(Arc::clone(&key)).or_default();
            // Clones of the slot: the table's, plus one per update running or waiting.
            let in_flight = Arc::strong_count(entry.value()) - 1;
            if self.max_waiting.is_some_and(|max| in_flight > max) {
                drop(entry);
                return Ticket {
                    state: TicketState::Rejected,
                    cleanup: Cleanup {
                        map: Arc::clone(&self.map),
                        key,
                    },
                };
            }
            Arc::clone(entry.value())
        };
        // The common case, a free key (nobody holds it, nobody waits): no waiter to
        // register, no future to box. Tokio's mutex hands a released lock straight to the
        // first waiter, so a free lock means an empty queue and FIFO order is kept.
        if let Ok(guard) = Arc::clone(&slot).try_lock_owned() {
            drop(slot);
            let cleanup = Cleanup {
                map: Arc::clone(&self.map),
                key,
            };
            return Ticket {
                state: TicketState::Ready(guard),
                cleanup,
            };
        }
        let mut fut: Pin<Box<dyn Future<Output = OwnedMutexGuard<()>> + Send>> =
            Box::pin(slot.lock_owned());
        // Poll once: this registers the waiter in the mutex's FIFO queue at arrival time.
        let state = match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(guard) => TicketState::Ready(guard),
            Poll::Pending => TicketState::Waiting(fut),
        };
        Ticket {
            state,
            cleanup: Cleanup {
                map: Arc::clone(&self.map),
                key,
            },
        }
    }

    /// Keys currently held or waited for.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Bounds the updates of one key waiting behind the running one (`None`: unbounded).
    pub(crate) fn set_max_waiting(&mut self, max: Option<usize>) {
        self.max_waiting = max;
    }

    /// Updates of `key` waiting behind the running one.
    pub(crate) fn waiting(&self, key: &str) -> usize {
        self.map
            .get(key)
            .map_or(0, |slot| Arc::strong_count(slot.value()).saturating_sub(2))
    }
}

impl Ticket {
    /// Waits for the key.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the key's queue was full at arrival.
    pub(crate) async fn acquire(self) -> Result<Permit> {
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
        Ok(Permit {
            _guard: guard,
            _cleanup: cleanup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn table_empties_and_order_is_arrival_order() {
        let locks = KeyLocks::default();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tickets: Vec<_> = (0..50).map(|_| locks.enqueue(Arc::from("k"))).collect();
        assert_eq!(locks.len(), 1);
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
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn dropped_ticket_does_not_leak_or_jump_the_queue() {
        let locks = KeyLocks::default();
        let first = locks.enqueue(Arc::from("k")).acquire().await.unwrap();
        let second = locks.enqueue(Arc::from("k"));
        drop(second);
        assert_eq!(locks.len(), 1);
        drop(first);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_rejects_and_recovers() {
        let mut locks = KeyLocks::default();
        locks.set_max_waiting(Some(2));
        let running = locks.enqueue(Arc::from("k")).acquire().await.unwrap();
        let waiting: Vec<_> = (0..2).map(|_| locks.enqueue(Arc::from("k"))).collect();
        assert_eq!(locks.waiting("k"), 2);
        let rejected = locks.enqueue(Arc::from("k")).acquire().await;
        assert!(matches!(rejected, Err(Error::Overloaded { key }) if key == "k"));
        // Another key is not affected.
        let other = locks.enqueue(Arc::from("j")).acquire().await;
        assert!(other.is_ok());
        drop(other);
        drop(running);
        for t in waiting {
            drop(t.acquire().await.unwrap());
        }
        assert_eq!(locks.len(), 0);
        assert!(locks.enqueue(Arc::from("k")).acquire().await.is_ok());
    }
}
