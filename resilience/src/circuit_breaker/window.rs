//! The breaker's memory of recent calls: the last N calls, or the calls of
//! the last N seconds. Both keep running totals, so recording a call and
//! reading the rates are O(1) — no pass over the window.

use std::time::Duration;

/// How one finished call went, as the window counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub failed: bool,
    pub slow: bool,
}

/// Totals over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
}

impl Totals {
    fn add(&mut self, outcome: Outcome) {
        self.calls += 1;
        self.failures += u64::from(outcome.failed);
        self.slow += u64::from(outcome.slow);
    }
}

/// A window of the last `size` calls: a ring of outcomes, the oldest
/// replaced (and subtracted from the totals) by each new one.
#[derive(Debug)]
pub(crate) struct CountWindow {
    ring: Box<[Outcome]>,
    next: usize,
    filled: usize,
    totals: Totals,
}

impl CountWindow {
    pub fn new(size: u32) -> Self {
        let empty = Outcome {
            failed: false,
            slow: false,
        };
        CountWindow {
            ring: vec![empty; size.max(1) as usize].into_boxed_slice(),
            next: 0,
            filled: 0,
            totals: Totals::default(),
        }
    }

    pub fn record(&mut self, outcome: Outcome) -> Totals {
        if self.filled == self.ring.len() {
            let oldest = self.ring[self.next];
            self.totals.calls -= 1;
            self.totals.failures -= u64::from(oldest.failed);
            self.totals.slow -= u64::from(oldest.slow);
        } else {
            self.filled += 1;
        }
        self.ring[self.next] = outcome;
        // Not `% len`: a division would be most of the cost of recording.
        self.next += 1;
        if self.next == self.ring.len() {
            self.next = 0;
        }
        self.totals.add(outcome);
        self.totals
    }

    /// Records `n` successes that were neither failed nor slow, counted
    /// while the breaker's fast lane was open. Only the last `size` of them
    /// can still be in the window.
    pub fn record_successes(&mut self, n: u64) -> Totals {
        let ok = Outcome {
            failed: false,
            slow: false,
        };
        for _ in 0..n.min(self.ring.len() as u64) {
            self.record(ok);
        }
        self.totals
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }
}

/// One second's calls.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    totals: Totals,
}

/// A window of the calls of the last `seconds` seconds: one bucket per
/// second in a ring. Moving to a new second empties the buckets that fell
/// out (at most `seconds` of them, however long the pause was) and takes
/// their counts off the totals.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    /// The newest second seen; buckets hold seconds `latest - len + 1 ..= latest`.
    latest: u64,
    totals: Totals,
}

impl TimeWindow {
    pub fn new(seconds: u32) -> Self {
        TimeWindow {
            buckets: vec![Bucket::default(); seconds.max(1) as usize]
                .into_boxed_slice(),
            latest: 0,
            totals: Totals::default(),
        }
    }

    pub fn record(&mut self, now: Duration, outcome: Outcome) -> Totals {
        let second = self.advance(now);
        let len = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(second % len) as usize];
        bucket.totals.add(outcome);
        self.totals.add(outcome);
        self.totals
    }

    /// Records `n` successes that were neither failed nor slow, all ended
    /// in the second of `at` (counted while the breaker's fast lane was
    /// open for that second).
    pub fn record_successes(&mut self, at: Duration, n: u64) -> Totals {
        let second = self.advance(at);
        let len = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(second % len) as usize];
        bucket.totals.calls += n;
        self.totals.calls += n;
        self.totals
    }

    pub fn totals(&mut self, now: Duration) -> Totals {
        self.advance(now);
        self.totals
    }

    /// Drops the buckets older than the window ending at `now`; returns
    /// now's second.
    fn advance(&mut self, now: Duration) -> u64 {
        let second = now.as_secs();
        if second <= self.latest {
            return self.latest; // same second (or a clock read a little late)
        }
        // The seconds entering the window reuse the buckets of those
        // leaving it; after a long pause, only the last `len` matter.
        let len = self.buckets.len() as u64;
        let first_new = (self.latest + 1).max(second.saturating_sub(len - 1));
        for reused in first_new..=second {
            let bucket = &mut self.buckets[(reused % len) as usize];
            self.totals.calls -= bucket.totals.calls;
            self.totals.failures -= bucket.totals.failures;
            self.totals.slow -= bucket.totals.slow;
            *bucket = Bucket {
                second: reused,
                totals: Totals::default(),
            };
        }
        self.latest = second;
        debug_assert!(self.buckets.iter().all(|b| b.second + len > second));
        second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Outcome = Outcome {
        failed: false,
        slow: false,
    };
    const FAILED: Outcome = Outcome {
        failed: true,
        slow: false,
    };
    const SLOW: Outcome = Outcome {
        failed: false,
        slow: true,
    };

    fn totals(calls: u64, failures: u64, slow: u64) -> Totals {
        Totals {
            calls,
            failures,
            slow,
        }
    }

    #[test]
    fn the_count_window_forgets_the_oldest_call() {
        let mut window = CountWindow::new(3);
        window.record(FAILED);
        window.record(SLOW);
        assert_eq!(window.record(OK), totals(3, 1, 1));
        assert_eq!(window.record(OK), totals(3, 0, 1)); // FAILED fell out
        assert_eq!(window.record(OK), totals(3, 0, 0)); // SLOW fell out
    }

    #[test]
    fn the_count_window_matches_a_recount_on_a_long_trace() {
        let mut window = CountWindow::new(7);
        let mut all = Vec::new();
        for i in 0..1_000u32 {
            let outcome = Outcome {
                failed: i % 3 == 0,
                slow: i % 5 == 0,
            };
            all.push(outcome);
            let got = window.record(outcome);
            let mut expected = Totals::default();
            for &o in all.iter().rev().take(7) {
                expected.add(o);
            }
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn successes_in_bulk_are_counted_as_one_by_one() {
        let mut one_by_one = CountWindow::new(5);
        let mut in_bulk = CountWindow::new(5);
        for window in [&mut one_by_one, &mut in_bulk] {
            window.record(FAILED);
            window.record(SLOW);
        }
        for _ in 0..3 {
            one_by_one.record(OK);
        }
        assert_eq!(in_bulk.record_successes(3), one_by_one.totals());
        // More than the window holds: only the last five count.
        assert_eq!(in_bulk.record_successes(1_000_000), totals(5, 0, 0));

        let mut time = TimeWindow::new(2);
        time.record(Duration::from_millis(500), FAILED);
        assert_eq!(
            time.record_successes(Duration::from_millis(1_200), 40),
            totals(41, 1, 0)
        );
        // The failure's second leaves the window; the 40 stay.
        assert_eq!(time.totals(Duration::from_millis(2_100)), totals(40, 0, 0));
    }

    #[test]
    fn the_time_window_forgets_old_seconds() {
        let mut window = TimeWindow::new(3);
        let at = |millis| Duration::from_millis(millis);
        window.record(at(0), FAILED);
        window.record(at(1_500), SLOW);
        assert_eq!(window.record(at(2_999), OK), totals(3, 1, 1));
        // Second 3: second 0 is out.
        assert_eq!(window.totals(at(3_000)), totals(2, 0, 1));
        // A long pause empties everything, in at most `seconds` steps.
        assert_eq!(window.totals(at(1_000_000)), totals(0, 0, 0));
        assert_eq!(window.record(at(1_000_001), FAILED), totals(1, 1, 0));
    }

    #[test]
    fn the_time_window_matches_a_recount_on_a_long_trace() {
        let mut window = TimeWindow::new(5);
        let mut all = Vec::new();
        let mut now = Duration::ZERO;
        for i in 0..2_000u64 {
            // Irregular steps, some longer than the window.
            now += Duration::from_millis(
                (i * 7919) % 1_300 + if i % 97 == 0 { 6_000 } else { 0 },
            );
            let outcome = Outcome {
                failed: i % 2 == 0,
                slow: i % 7 == 0,
            };
            all.push((now, outcome));
            let got = window.record(now, outcome);
            let mut expected = Totals::default();
            for &(at, o) in &all {
                if at.as_secs() + 5 > now.as_secs() {
                    expected.add(o);
                }
            }
            assert_eq!(got, expected, "at {now:?}");
        }
    }
}
