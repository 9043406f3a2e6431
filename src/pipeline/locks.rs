//! Per-key FIFO locks whose table shrinks back when keys go idle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use dashmap::DashMap;
use tokio::sync::{Mutex, OwnedMutexGuard};

type Slot = Arc<Mutex<()>>;

/// One FIFO mutex per key, created on demand and removed when nobody holds or waits.
#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    map: Arc<DashMap<Arc<str>, Slot>>,
}

/// A place in a key's queue, taken synchronously at arrival.
pub(crate) struct Ticket {
    state: TicketState,
    cleanup: Cleanup,
}

enum TicketState {
    Ready(OwnedMutexGuard<()>),
    Waiting(Pin<Box<dyn Future<Output = OwnedMutexGuard<()>> + Send>>),
}

/// Holding the key. Dropping it lets the next update of the key in.
pub(crate) struct Permit {
    _guard: OwnedMutexGuard<()>,
    _cleanup: Cleanup,
}

struct Cleanup {
    map: Arc<DashMap<Arc<str>, Slot>>,
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

impl KeyLocks {
    /// Joins the queue of `key` now, so that arrival order is kept whatever order the
    /// returned tickets are awaited in.
    pub(crate) fn enqueue(&self, key: Arc<str>) -> Ticket {
        let slot = Arc::clone(self.map.entry(Arc::clone(&key)).or_default().value());
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
}

impl Ticket {
    /// Waits for the key.
    pub(crate) async fn acquire(self) -> Permit {
        let Self { state, cleanup } = self;
        let guard = match state {
            TicketState::Ready(g) => g,
            TicketState::Waiting(fut) => fut.await,
        };
        Permit {
            _guard: guard,
            _cleanup: cleanup,
        }
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
                let _p = t.acquire().await;
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
        let first = locks.enqueue(Arc::from("k")).acquire().await;
        let second = locks.enqueue(Arc::from("k"));
        drop(second);
        assert_eq!(locks.len(), 1);
        drop(first);
        assert_eq!(locks.len(), 0);
    }
}
