//! A one-shot publication cell: written once, read by any number of threads.

use std::mem::MaybeUninit;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::sync::{AtomicU8, Condvar, Mutex, UnsafeCell};

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// How many times [`Publication::wait`] checks the flag before it sleeps.
/// Publishing usually takes nanoseconds, and a few checks are far cheaper
/// than a trip through the kernel.
const SPINS_BEFORE_SLEEPING: usize = 100;

/// A value published once by one thread and then read by many.
///
/// Guarantee: a reader that sees the value sees all of it, and everything the
/// publisher wrote before calling [`publish`](Self::publish). This is the
/// Release/Acquire pairing: the `Release` store of the ready flag "happens
/// before" every `Acquire` load that reads it.
///
/// Readers either check ([`get`](Self::get), never blocks) or wait
/// ([`wait`](Self::wait): a short spin, then sleep on a condition variable
/// until the value is published).
///
/// ```
/// use std::sync::Arc;
/// use cpr_patterns::publish::Publication;
///
/// let cell = Arc::new(Publication::new());
/// let reader = {
///     let cell = Arc::clone(&cell);
///     std::thread::spawn(move || *cell.wait())
/// };
/// cell.publish(42).unwrap();
/// assert_eq!(reader.join().unwrap(), 42);
/// ```
pub struct Publication<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
    // Only for sleeping readers; the fast path never touches them.
    sleepers: Mutex<()>,
    published: Condvar,
}

/// [`Publication::publish`] was called a second time; the value comes back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("this cell was already published; a publication cell is written once")]
pub struct AlreadyPublished<T>(pub T);

// Safety: the value is moved in by one thread (T: Send) and then shared by
// reference between threads (T: Sync); the state machine below ensures the
// write finishes before any read starts.
unsafe impl<T: Send + Sync> Sync for Publication<T> {}
// Safety: moving the cell moves the value it may hold.
unsafe impl<T: Send> Send for Publication<T> {}

impl<T> Default for Publication<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Publication<T> {
    /// An empty cell.
    pub fn new() -> Self {
        Publication {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            sleepers: Mutex::new(()),
            published: Condvar::new(),
        }
    }

    /// Publishes `value`, waking every waiting reader.
    ///
    /// Fails, returning the value, if the cell was already published (or
    /// another thread is publishing right now): exactly one call wins.
    // ANCHOR: publish_get
    pub fn publish(&self, value: T) -> Result<(), AlreadyPublished<T>> {
        // Claiming the cell needs no ordering of its own: it only decides
        // which thread writes. The Release store below does the publishing.
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Relaxed, Relaxed)
            .is_err()
        {
            return Err(AlreadyPublished(value));
        }
        // Safety: only the thread that moved the state from EMPTY to WRITING
        // gets here, and no reader touches the value before it sees READY.
        self.value.with_mut(|slot| unsafe { (*slot).write(value) });
        // Release: the write above is now visible to Acquire loads.
        self.state.store(READY, Release);

        // Taking the lock orders this notify after any reader's "check, then
        // sleep" (which happens under the lock), so no wake-up is lost.
        let _guard = self.sleepers.lock().unwrap_or_else(|p| p.into_inner());
        self.published.notify_all();
        Ok(())
    }

    /// The value, if it has been published. Never blocks.
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Acquire) != READY {
            // Acquire pairs with publish's Release store.
            return None;
        }
        // Safety: READY is stored only after the value was written, and the
        // Acquire load above makes that write visible here. The value is
        // never written again while `self` is borrowed.
        let value = self
            .value
            .with(|slot| unsafe { (*slot).assume_init_ref() as *const T });
        // Safety: the pointer is into `self`, which outlives the borrow.
        Some(unsafe { &*value })
    }
    // ANCHOR_END: publish_get

    /// Waits until the value is published, then returns it.
    pub fn wait(&self) -> &T {
        for _ in 0..SPINS_BEFORE_SLEEPING {
            if let Some(value) = self.get() {
                return value;
            }
            spin();
        }
        let mut guard = self.sleepers.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Checked under the lock: publish notifies under the same lock,
            // so a publication between this check and the wait is not missed.
            if let Some(value) = self.get() {
                return value;
            }
            guard = self
                .published
                .wait(guard)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// True once [`get`](Self::get) would return the value.
    pub fn is_published(&self) -> bool {
        self.state.load(Acquire) == READY
    }
}

#[cfg(not(loom))]
fn spin() {
    std::hint::spin_loop();
}

#[cfg(loom)]
fn spin() {
    // Loom needs to be told that this thread is waiting for another.
    loom::thread::yield_now();
}

impl<T> Drop for Publication<T> {
    fn drop(&mut self) {
        if self.state.load(Acquire) == READY {
            // Safety: READY means the value was written; `&mut self` means no
            // reader holds a reference any more.
            self.value
                .with_mut(|slot| unsafe { (*slot).assume_init_drop() });
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Publication<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publication")
            .field("value", &self.get())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_waiting_reader_sees_the_whole_value() {
        for _ in 0..200 {
            let cell = Arc::new(Publication::<Vec<u64>>::new());
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    let cell = Arc::clone(&cell);
                    std::thread::spawn(move || cell.wait().clone())
                })
                .collect();
            cell.publish(vec![1u64, 2, 3, 42]).unwrap();
            for reader in readers {
                assert_eq!(reader.join().unwrap(), vec![1, 2, 3, 42]);
            }
        }
    }

    #[test]
    fn only_one_publish_wins() {
        let cell = Arc::new(Publication::<i32>::new());
        let winners: usize = (0..8)
            .map(|i| {
                let cell = Arc::clone(&cell);
                std::thread::spawn(move || cell.publish(i).is_ok())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(winners, 1);
        assert!(cell.get().is_some());
        assert_eq!(cell.publish(99), Err(AlreadyPublished(99)));
    }

    #[test]
    fn the_value_is_dropped_with_the_cell() {
        let witness = Arc::new(());
        let cell = Publication::new();
        cell.publish(Arc::clone(&witness)).unwrap();
        assert_eq!(Arc::strong_count(&witness), 2);
        drop(cell);
        assert_eq!(Arc::strong_count(&witness), 1);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Every interleaving: a reader that sees the cell published reads the
    /// whole value; loom would report a data race on the `UnsafeCell` if the
    /// write were not ordered before the read.
    #[test]
    // ANCHOR: loom_model
    fn loom_release_acquire_publication_is_sound() {
        loom::model(|| {
            let cell = Arc::new(Publication::new());
            let reader = {
                let cell = Arc::clone(&cell);
                loom::thread::spawn(move || cell.get().copied())
            };
            cell.publish(42u64).unwrap();
            if let Some(value) = reader.join().unwrap() {
                assert_eq!(value, 42);
            }
        });
    }
    // ANCHOR_END: loom_model

    #[test]
    fn loom_a_waiting_reader_is_always_woken() {
        loom::model(|| {
            let cell = Arc::new(Publication::new());
            let reader = {
                let cell = Arc::clone(&cell);
                loom::thread::spawn(move || *cell.wait())
            };
            cell.publish(7u32).unwrap();
            assert_eq!(reader.join().unwrap(), 7);
        });
    }
}
