//! The exact sliding-window limiter: a log of recent grants, bounded by the
//! limit.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::{Clock, SystemClock};
use crate::{Decision, LimiterConfigError, MAX_LIMITER_WINDOW, RateLimiter};

/// The largest limit a [`SlidingLog`] takes: it keeps one entry per permit
/// granted in the window, so 2^24 of them is already 256 MiB.
pub const MAX_LOG_LIMIT: u32 = 1 << 24;

/// At most `limit` permits in any window of length `window`, exactly.
///
/// The lesson's version kept every timestamp in a slice and trimmed it
/// linearly. This one keeps only the last `limit` grants in a ring buffer:
/// memory is bounded by the limit, and each check does O(1) work (plus the
/// expired entries it drops, each dropped once).
pub struct SlidingLog<C: Clock = SystemClock> {
    limit: usize,
    window: Duration,
    clock: C,
    grants: Mutex<VecDeque<Duration>>,
}

impl SlidingLog<SystemClock> {
    /// `limit` (at least 1) permits per `window` (not zero), on the real clock.
    pub fn new(limit: usize, window: Duration) -> Result<Self, LimiterConfigError> {
        Self::with_clock(limit, window, SystemClock::default())
    }
}

impl<C: Clock> SlidingLog<C> {
    /// The same, on `clock`.
    pub fn with_clock(
        limit: usize,
        window: Duration,
        clock: C,
    ) -> Result<Self, LimiterConfigError> {
        if limit == 0 {
            return Err(LimiterConfigError::ZeroLimit);
        }
        if limit > MAX_LOG_LIMIT as usize {
            return Err(LimiterConfigError::LimitTooLarge(MAX_LOG_LIMIT));
        }
        if window.is_zero() {
            return Err(LimiterConfigError::ZeroWindow);
        }
        if window > MAX_LIMITER_WINDOW {
            return Err(LimiterConfigError::WindowTooLong(window));
        }
        Ok(SlidingLog {
            limit,
            window,
            clock,
            // The log grows as grants come, up to `limit`; reserving all of
            // it up front would spend memory on permits never asked for.
            grants: Mutex::new(VecDeque::with_capacity(limit.min(1024))),
        })
    }

    /// The decision for `n` permits now, taking them if allowed.
    pub fn check_n(&self, n: u32) -> Decision {
        let n = n as usize;
        let now = self.clock.now();
        let mut grants = self.grants.lock();
        // Grants older than one window no longer count.
        while grants.front().is_some_and(|&at| at + self.window <= now) {
            grants.pop_front();
        }
        if n > self.limit {
            return Decision::Denied {
                retry_after: Duration::MAX,
            };
        }
        let free = self.limit - grants.len();
        if n <= free {
            grants.extend(std::iter::repeat_n(now, n));
            return Decision::Allowed;
        }
        // The (n - free)-th oldest grant must leave the window first.
        let blocking = grants[n - free - 1];
        Decision::Denied {
            retry_after: blocking + self.window - now,
        }
    }
}

impl<C: Clock> RateLimiter for SlidingLog<C> {
    type Error = Infallible;

    async fn try_acquire_n(&self, n: u32) -> Result<Decision, Infallible> {
        Ok(self.check_n(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let clock = ManualClock::new();
        let log =
            SlidingLog::with_clock(10, Duration::from_secs(1), clock.clone()).unwrap();
        let mut granted_at = Vec::new();
        // 10 s of virtual time, a request every 7 ms.
        for _ in 0..1_430 {
            if log.check_n(1).is_allowed() {
                granted_at.push(clock.now());
            }
            clock.advance(Duration::from_millis(7));
        }
        for (i, &at) in granted_at.iter().enumerate() {
            let in_window = granted_at[i..]
                .iter()
                .take_while(|&&t| t < at + Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 10,
                "{in_window} grants in the window starting at {at:?}"
            );
        }
        assert!(
            granted_at.len() >= 99,
            "the limiter refused what it could grant: {}",
            granted_at.len()
        );
    }

    #[test]
    fn a_refusal_says_exactly_when_to_come_back() {
        let clock = ManualClock::new();
        let log =
            SlidingLog::with_clock(2, Duration::from_secs(1), clock.clone()).unwrap();
        assert!(log.check_n(1).is_allowed());
        clock.advance(Duration::from_millis(300));
        assert!(log.check_n(1).is_allowed());
        let Decision::Denied { retry_after } = log.check_n(1) else {
            panic!("a third grant")
        };
        assert_eq!(retry_after, Duration::from_millis(700));
        clock.advance(retry_after);
        assert!(log.check_n(1).is_allowed());
        assert!(!log.check_n(3).is_allowed(), "more than the limit at once");
    }

    #[test]
    fn bad_configuration_is_an_error() {
        assert!(SlidingLog::new(0, Duration::from_secs(1)).is_err());
        assert!(SlidingLog::new(1, Duration::ZERO).is_err());
    }
}
