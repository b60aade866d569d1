//! The closed breaker's fast lane: successes counted with one atomic
//! compare-and-swap instead of the lock.
//!
//! A success that was not slow can never open the breaker while its window
//! holds no failure and no slow call: both rates are zero, and thresholds
//! are above zero. Such a success only has to be *counted*. So while the
//! window is clean, the lane is open, and those successes add one to a
//! counter; the next call that takes the lock (a failure, a slow call, a
//! new second for a time window, a read of the metrics, a state change)
//! first closes the lane and moves its count into the window.
//!
//! The counter shares one word with an *epoch*, a number the lock holder
//! gives each opening of the lane. The epoch says which phase (the
//! breaker's generation) and which second the count belongs to; a call
//! from an older phase, or ending in another second, finds a different
//! epoch and takes the lock. Because the epoch is in the word the
//! compare-and-swap compares, a count can never land in a later opening
//! than the one it checked.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};

const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Successes counted outside the lock, for one (generation, second) at a
/// time. Opened and closed under the breaker's lock only.
#[derive(Debug, Default)]
pub(crate) struct FastLane {
    /// The open epoch (high 32 bits, 0 while closed) and its count.
    word: AtomicU64,
    /// The phase the open epoch counts for.
    generation: AtomicU64,
    /// The second (on the call clock; 0 for a count window) it counts for.
    second: AtomicU64,
}

impl FastLane {
    /// Counts one clean success of a call from `generation` that ended in
    /// `second`, if the lane is open for them. `false`: take the lock.
    pub(crate) fn try_count(&self, generation: u64, second: u64) -> bool {
        let mut word = self.word.load(Acquire);
        let epoch = word >> COUNT_BITS;
        // The acquire above saw the opening of `epoch` (or a later one), so
        // these two are at least as new as that opening.
        if epoch == 0
            || self.generation.load(Relaxed) != generation
            || self.second.load(Relaxed) != second
        {
            return false;
        }
        loop {
            if word >> COUNT_BITS != epoch || word & COUNT_MASK == COUNT_MASK {
                return false; // closed (or reopened) meanwhile, or full
            }
            // Succeeds only if the word still holds `epoch`: the lock holder
            // closes the lane with a swap before it changes generation or
            // second, so the count lands in the opening it checked.
            match self
                .word
                .compare_exchange_weak(word, word + 1, AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(current) => word = current, // another success got in first
            }
        }
    }

    /// Closes the lane; returns how many successes it counted since it was
    /// opened. Under the breaker's lock.
    pub(crate) fn close(&self) -> u64 {
        self.word.swap(0, AcqRel) & COUNT_MASK
    }

    /// Opens the lane as `epoch` (not 0) for calls of `generation` ending in
    /// `second`. Under the breaker's lock, with the lane closed.
    pub(crate) fn open(&self, epoch: u32, generation: u64, second: u64) {
        debug_assert_ne!(epoch, 0);
        self.generation.store(generation, Relaxed);
        self.second.store(second, Relaxed);
        // Publishes the two stores above to whoever sees this epoch.
        self.word.store(u64::from(epoch) << COUNT_BITS, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_only_for_the_opening_it_was_opened_for() {
        let lane = FastLane::default();
        assert!(!lane.try_count(0, 0), "a new lane is closed");
        lane.open(1, 7, 3);
        assert!(lane.try_count(7, 3));
        assert!(lane.try_count(7, 3));
        assert!(!lane.try_count(6, 3), "an older phase takes the lock");
        assert!(!lane.try_count(7, 4), "a new second takes the lock");
        assert_eq!(lane.close(), 2);
        assert!(!lane.try_count(7, 3), "closed");
        lane.open(2, 7, 3);
        assert_eq!(lane.close(), 0, "a new opening starts from zero");
    }

    #[test]
    fn no_count_is_lost_between_openings() {
        let lane = Arc::new(FastLane::default());
        lane.open(1, 0, 0);
        let counted: u64 = std::thread::scope(|scope| {
            let counters: Vec<_> = (0..4)
                .map(|_| {
                    let lane = &lane;
                    scope.spawn(move || {
                        (0..50_000).filter(|_| lane.try_count(0, 0)).count() as u64
                    })
                })
                .collect();
            // Meanwhile the lock holder closes and reopens, as the slow
            // path does.
            let mut drained = 0;
            for epoch in 2..200 {
                drained += lane.close();
                lane.open(epoch, 0, 0);
            }
            let counted: u64 = counters.into_iter().map(|c| c.join().unwrap()).sum();
            assert_eq!(drained + lane.close(), counted);
            counted
        });
        assert!(counted > 0);
    }
}
