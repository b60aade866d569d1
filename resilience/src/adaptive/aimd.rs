//! AIMD: additive increase, multiplicative decrease, as TCP does.

use std::time::Duration;

use super::{LimitAlgorithm, LimitBounds, Sample};

/// Loss-based: each drop (or a latency past `timeout`) multiplies the limit
/// by `backoff` (0.9); each success adds `1 / limit`, so the limit grows by
/// about one per round of `limit` requests, as TCP's window does per round
/// trip.
///
/// Growth only happens while at least half the limit is in use: a service
/// running at 10 of 1,000 allowed has not shown it can take 1,001, and an
/// idle period must not leave a limit so high it protects nothing (the
/// pitfall of growing on every success).
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: f64,
    bounds: LimitBounds,
    backoff: f64,
    timeout: Duration,
}

impl Aimd {
    /// Starting at `initial`, within `bounds`; backoff 0.9; no timeout.
    pub fn new(bounds: LimitBounds, initial: u32) -> Self {
        Aimd {
            limit: bounds.clamp(f64::from(initial)),
            bounds,
            backoff: 0.9,
            timeout: Duration::MAX,
        }
    }

    /// Multiply by `backoff` on a drop (clamped to [0.5, 1)).
    pub fn backoff(mut self, backoff: f64) -> Self {
        self.backoff = if backoff.is_finite() {
            backoff.clamp(0.5, 0.999)
        } else {
            0.9
        };
        self
    }

    /// Treat a request slower than `timeout` as a drop.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl LimitAlgorithm for Aimd {
    fn initial_limit(&self) -> u32 {
        self.limit as u32
    }

    fn update(&mut self, sample: Sample) -> u32 {
        if sample.dropped || sample.latency > self.timeout {
            self.limit = self.bounds.clamp(self.limit * self.backoff);
        } else if f64::from(sample.inflight) * 2.0 >= self.limit {
            self.limit = self.bounds.clamp(self.limit + 1.0 / self.limit);
        }
        self.limit as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(inflight: u32, dropped: bool) -> Sample {
        Sample {
            latency: Duration::from_millis(10),
            inflight,
            dropped,
        }
    }

    #[test]
    fn grows_by_about_one_per_round_and_backs_off_on_drops() {
        let mut aimd = Aimd::new(LimitBounds::new(1, 1_000), 10);
        for _ in 0..10 {
            aimd.update(sample(10, false));
        }
        assert_eq!(aimd.initial_limit(), 10);
        assert_eq!(aimd.update(sample(10, false)), 11);
        assert_eq!(aimd.update(sample(10, true)), 9); // 11.0x × 0.9
    }

    #[test]
    fn does_not_grow_while_mostly_idle() {
        let mut aimd = Aimd::new(LimitBounds::new(1, 1_000), 20);
        for _ in 0..10_000 {
            aimd.update(sample(9, false));
        }
        assert_eq!(aimd.update(sample(9, false)), 20);
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut aimd = Aimd::new(LimitBounds::new(5, 12), 100);
        assert_eq!(aimd.initial_limit(), 12);
        for _ in 0..1_000 {
            assert!(aimd.update(sample(100, false)) <= 12);
        }
        for _ in 0..1_000 {
            assert!(aimd.update(sample(100, true)) >= 5);
        }
        let mut slow =
            Aimd::new(LimitBounds::new(1, 100), 50).timeout(Duration::from_millis(5));
        assert_eq!(
            slow.update(sample(50, false)),
            45,
            "slower than the timeout is a drop"
        );
    }
}
