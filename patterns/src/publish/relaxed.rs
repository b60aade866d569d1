//! The mission's flag-then-data program with `Relaxed` ordering.
//!
//! This version is wrong, and kept only to prove it: a `Relaxed` flag orders
//! nothing else, so a reader can see `ready == true` and still read the old
//! `data`. On x86 it almost always "works", which is why it needs a model
//! checker rather than a stress test. Compiled only for tests and loom.

use std::sync::atomic::Ordering::Relaxed;

use crate::sync::{AtomicBool, UnsafeCell};

/// Go's `data` and `ready`, with the flag in Relaxed mode.
pub(crate) struct RelaxedFlag {
    data: UnsafeCell<u64>,
    ready: AtomicBool,
}

// Safety: it is NOT safe — that is the point of this module. The loom model
// below shows the data race this impl hides from the compiler.
unsafe impl Sync for RelaxedFlag {}

impl RelaxedFlag {
    pub(crate) fn new() -> Self {
        RelaxedFlag {
            data: UnsafeCell::new(0),
            ready: AtomicBool::new(false),
        }
    }

    // ANCHOR: relaxed
    pub(crate) fn write(&self, value: u64) {
        // Safety: not guaranteed (see above); a single writer is assumed.
        self.data.with_mut(|data| unsafe { *data = value });
        // This version is problematic: Relaxed publishes nothing.
        self.ready.store(true, Relaxed);
    }

    pub(crate) fn read(&self) -> Option<u64> {
        if self.ready.load(Relaxed) {
            // Might see the flag without the data: a data race.
            Some(self.data.with(|data| unsafe { *data }))
        } else {
            None
        }
    }
    // ANCHOR_END: relaxed
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Single-threaded, the wrong version is indistinguishable from the
    /// right one: a test like this cannot find the bug, loom can.
    #[test]
    fn single_threaded_it_looks_fine() {
        let flag = RelaxedFlag::new();
        assert_eq!(flag.read(), None);
        flag.write(42);
        assert_eq!(flag.read(), Some(42));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Loom finds the interleaving where the reader sees the flag but the
    /// write of `data` is not ordered before its read, and panics.
    #[test]
    // ANCHOR: relaxed_model
    #[should_panic(expected = "Causality violation")]
    fn loom_relaxed_flag_is_a_data_race() {
        loom::model(|| {
            let flag = Arc::new(RelaxedFlag::new());
            let reader = {
                let flag = Arc::clone(&flag);
                loom::thread::spawn(move || flag.read())
            };
            flag.write(42);
            if let Some(value) = reader.join().unwrap() {
                assert_eq!(value, 42);
            }
        });
    }
    // ANCHOR_END: relaxed_model
}
