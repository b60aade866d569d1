//! The store-buffer litmus test (the heart of Dekker's and Peterson's
//! algorithms): where Release/Acquire is not enough.
//!
//! Two threads each raise their own flag, then look at the other's:
//!
//! ```text
//! thread A: x = 1; r1 = y        thread B: y = 1; r2 = x
//! ```
//!
//! Surely at least one of them sees the other's flag? Not with Release and
//! Acquire: they order a thread's accesses *around a synchronizing pair*,
//! but here nobody reads a value the other wrote before its own load, so
//! nothing synchronizes — and real CPUs (x86 included) let each load run
//! ahead of the store still sitting in the core's store buffer. `r1 == 0 &&
//! r2 == 0` is allowed. A `SeqCst` fence between the store and the load puts
//! both threads' fences in one total order, which forbids that outcome.
//!
//! (Loom models `SeqCst` *loads and stores* as Acquire/Release, so the model
//! uses `SeqCst` fences, which loom does model.)

use std::sync::atomic::Ordering::{Acquire, Release, SeqCst};

use crate::sync::{AtomicBool, fence};

/// One side of the litmus test: raise my flag, then read the other's.
// ANCHOR: litmus
pub(crate) fn raise_then_look(
    mine: &AtomicBool,
    other: &AtomicBool,
    seqcst_fence: bool,
) -> bool {
    mine.store(true, Release);
    if seqcst_fence {
        fence(SeqCst); // New! Orders the store before the load in one total order.
    }
    other.load(Acquire)
}
// ANCHOR_END: litmus

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// With the fence, no run may see both flags down. (Without it, the bad
    /// outcome is rare on x86 and not reliably reproducible in a test, which
    /// is why the loom model below is the real proof.)
    #[test]
    fn with_a_seqcst_fence_someone_always_sees_the_other() {
        for _ in 0..2_000 {
            let x = Arc::new(AtomicBool::new(false));
            let y = Arc::new(AtomicBool::new(false));
            let a = {
                let (x, y) = (Arc::clone(&x), Arc::clone(&y));
                std::thread::spawn(move || raise_then_look(&x, &y, true))
            };
            let r2 = raise_then_look(&y, &x, true);
            let r1 = a.join().unwrap();
            assert!(r1 || r2, "both threads missed each other's flag");
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    // ANCHOR: litmus_model
    fn litmus(seqcst_fence: bool) {
        loom::model(move || {
            let x = Arc::new(AtomicBool::new(false));
            let y = Arc::new(AtomicBool::new(false));
            let a = {
                let (x, y) = (Arc::clone(&x), Arc::clone(&y));
                loom::thread::spawn(move || raise_then_look(&x, &y, seqcst_fence))
            };
            let r2 = raise_then_look(&y, &x, seqcst_fence);
            let r1 = a.join().unwrap();
            assert!(r1 || r2, "both threads missed each other's flag");
        });
    }

    /// Release/Acquire alone: loom finds the run where both loads read false.
    #[test]
    #[should_panic(expected = "both threads missed")]
    fn loom_store_buffer_release_acquire_is_not_enough() {
        litmus(false);
    }

    /// With a SeqCst fence between store and load, no run misses both.
    #[test]
    fn loom_store_buffer_seqcst_fence_is_enough() {
        litmus(true);
    }
    // ANCHOR_END: litmus_model
}
