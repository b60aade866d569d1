//! Retries with exponential backoff and full jitter, limited by a retry
//! budget so that retries cannot multiply the load on a struggling service.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;

use crate::clock::{Clock, SystemClock};

/// Why [`Retry::run`] gave up, with the last error.
#[derive(Debug, thiserror::Error)]
#[error("gave up after {attempts} attempt(s) ({reason}): {last}")]
pub struct RetryError<E: std::error::Error> {
    /// The last attempt's error.
    #[source]
    pub last: E,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Why no further attempt was made.
    pub reason: GaveUp,
}

/// Why no further attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The policy's attempts were all used.
    Exhausted,
    /// The retry budget was spent: too many retries lately, for everyone.
    BudgetSpent,
    /// The error is not worth retrying (the predicate said so).
    NotRetryable,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GaveUp::Exhausted => "attempts exhausted",
            GaveUp::BudgetSpent => "retry budget spent",
            GaveUp::NotRetryable => "error not retryable",
        })
    }
}

/// A retry policy: up to `max_attempts` attempts, sleeping between them a
/// random time between zero and `min(max_delay, base × 2^retry)` — "full
/// jitter", which spreads the retries of many clients that failed together
/// instead of having them all come back at the same instants.
///
/// With a [`RetryBudget`], a retry is made only if the budget (shared by
/// every caller using it) allows: under a wide outage, retries stay a
/// bounded fraction of the traffic instead of multiplying it.
#[derive(Debug, Clone)]
pub struct Retry<C: Clock = SystemClock> {
    max_attempts: u32,
    base: Duration,
    max_delay: Duration,
    budget: Option<Arc<RetryBudget<C>>>,
}

impl Retry<SystemClock> {
    /// Up to `max_attempts` attempts in all (at least 1), the backoff
    /// starting at `base` and capped at `max_delay`.
    pub fn new(max_attempts: u32, base: Duration, max_delay: Duration) -> Self {
        Retry {
            max_attempts: max_attempts.max(1),
            base,
            max_delay,
            budget: None,
        }
    }
}

impl<C: Clock> Retry<C> {
    /// The same policy, spending retries from `budget`.
    pub fn with_budget<B: Clock>(self, budget: Arc<RetryBudget<B>>) -> Retry<B> {
        Retry {
            max_attempts: self.max_attempts,
            base: self.base,
            max_delay: self.max_delay,
            budget: Some(budget),
        }
    }

    /// The most the sleep before retry number `retry` (1 for the first
    /// retry) can be: `min(max_delay, base × 2^(retry-1))`.
    pub fn delay_cap(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(31));
        self.base.saturating_mul(factor).min(self.max_delay)
    }

    /// Runs `operation` until it succeeds, `retryable` says its error is
    /// final, the attempts run out or the budget refuses a retry.
    ///
    /// Cancel safety: dropping the future stops between or during attempts;
    /// an attempt in flight is dropped with it.
    pub async fn run<T, E, F, Fut>(
        &self,
        mut operation: F,
        retryable: impl Fn(&E) -> bool,
    ) -> Result<T, RetryError<E>>
    where
        E: std::error::Error,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last = match operation().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let reason = if !retryable(&last) {
                Some(GaveUp::NotRetryable)
            } else if attempts >= self.max_attempts {
                Some(GaveUp::Exhausted)
            } else if self.budget.as_ref().is_some_and(|b| !b.try_withdraw()) {
                Some(GaveUp::BudgetSpent)
            } else {
                None
            };
            if let Some(reason) = reason {
                tracing::debug!(attempts, %reason, "giving up");
                return Err(RetryError {
                    last,
                    attempts,
                    reason,
                });
            }
            let cap = self.delay_cap(attempts);
            let sleep =
                Duration::from_nanos(rand::rng().random_range(
                    0..=u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX),
                ));
            tracing::debug!(attempts, ?sleep, error = %last, "retrying");
            tokio::time::sleep(sleep).await;
        }
    }
}

/// How many retries everyone sharing this budget may make: at least
/// `min_per_second` per second, plus `ratio` retries per original request,
/// both over the last `window`.
///
/// With ratio 0.1, ten requests earn one retry: when every request fails,
/// the dependency sees at most 10 % more traffic, not `max_attempts` times
/// as much. (Finagle and tower have budgets of this kind.)
#[derive(Debug)]
pub struct RetryBudget<C: Clock = SystemClock> {
    ratio: f64,
    min_per_second: u32,
    clock: C,
    /// Per second of the window: (second, requests, retries).
    seconds: Mutex<Vec<(u64, u64, u64)>>,
}

/// The longest window a [`RetryBudget`] counts over: an hour (it keeps a
/// counter per second of it).
pub const MAX_BUDGET_WINDOW: Duration = Duration::from_secs(3600);

/// A retry budget that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetConfigError {
    /// The ratio is negative, infinite or not a number.
    #[error("the retry ratio must be a finite number of at least 0, not {0}")]
    BadRatio(f64),
    /// The window is zero or longer than [`MAX_BUDGET_WINDOW`].
    #[error("the budget's window must be from 1 ns to an hour, not {0:?}")]
    BadWindow(Duration),
}

impl RetryBudget<SystemClock> {
    /// A budget of `ratio` retries per request plus `min_per_second`, over
    /// the last `window` (rounded up to whole seconds; at most an hour).
    pub fn new(
        ratio: f64,
        min_per_second: u32,
        window: Duration,
    ) -> Result<Self, BudgetConfigError> {
        Self::with_clock(ratio, min_per_second, window, SystemClock::default())
    }
}

impl<C: Clock> RetryBudget<C> {
    /// The same, on `clock`.
    pub fn with_clock(
        ratio: f64,
        min_per_second: u32,
        window: Duration,
        clock: C,
    ) -> Result<Self, BudgetConfigError> {
        if !(ratio.is_finite() && ratio >= 0.0) {
            return Err(BudgetConfigError::BadRatio(ratio));
        }
        if window.is_zero() || window > MAX_BUDGET_WINDOW {
            return Err(BudgetConfigError::BadWindow(window));
        }
        let seconds = window.as_secs() + u64::from(window.subsec_nanos() > 0);
        Ok(RetryBudget {
            ratio,
            min_per_second,
            clock,
            seconds: Mutex::new(vec![(u64::MAX, 0, 0); seconds.max(1) as usize]),
        })
    }

    /// Counts an original request (not a retry).
    pub fn deposit(&self) {
        let now = self.clock.now().as_secs();
        let mut seconds = self.seconds.lock();
        current(&mut seconds, now).1 += 1;
    }

    /// Takes one retry from the budget, if there is one left. The check and
    /// the withdrawal happen under one lock: two callers cannot both take
    /// the last retry.
    pub fn try_withdraw(&self) -> bool {
        let now = self.clock.now().as_secs();
        let mut seconds = self.seconds.lock();
        let (requests, retries) = totals(&seconds, now);
        let window = seconds.len() as f64;
        let allowed =
            f64::from(self.min_per_second) * window + self.ratio * requests as f64;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        current(&mut seconds, now).2 += 1;
        true
    }

    /// Requests and retries in the window now.
    pub fn totals(&self) -> (u64, u64) {
        let now = self.clock.now().as_secs();
        totals(&self.seconds.lock(), now)
    }
}

/// The sums over the seconds still inside the window ending at `now`.
fn totals(seconds: &[(u64, u64, u64)], now: u64) -> (u64, u64) {
    let len = seconds.len() as u64;
    seconds
        .iter()
        .filter(|(second, ..)| *second != u64::MAX && second + len > now)
        .fold((0, 0), |(q, r), &(_, requests, retries)| {
            (q + requests, r + retries)
        })
}

/// The slot of second `now`, emptied first if it held an older second.
fn current(seconds: &mut [(u64, u64, u64)], now: u64) -> &mut (u64, u64, u64) {
    let len = seconds.len() as u64;
    let slot = &mut seconds[(now % len) as usize];
    if slot.0 != now {
        *slot = (now, 0, 0);
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

    #[derive(Debug, thiserror::Error)]
    #[error("try again")]
    struct Transient;

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_with_jittered_backoff_under_the_cap() {
        let retry =
            Retry::new(5, Duration::from_millis(100), Duration::from_millis(300));
        let calls = AtomicU32::new(0);
        let mut at = Vec::new();
        let value = retry
            .run(
                || {
                    at.push(tokio::time::Instant::now());
                    let n = calls.fetch_add(1, SeqCst);
                    async move { if n < 3 { Err(Transient) } else { Ok(n) } }
                },
                |_| true,
            )
            .await
            .unwrap();
        assert_eq!(value, 3);
        // Each pause is at most its cap: 100 ms, 200 ms, then 300 ms (capped).
        for (retry_number, pair) in at.windows(2).enumerate() {
            let pause = pair[1] - pair[0];
            let cap = retry.delay_cap(retry_number as u32 + 1);
            assert!(pause <= cap, "pause {pause:?} over {cap:?}");
        }
        assert_eq!(
            [1, 2, 3, 4].map(|n| retry.delay_cap(n).as_millis()),
            [100, 200, 300, 300]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_attempts_run_out_or_the_error_is_final() {
        let retry = Retry::new(3, Duration::from_millis(10), Duration::from_secs(1));
        let calls = AtomicU32::new(0);
        let err = retry
            .run(
                || {
                    calls.fetch_add(1, SeqCst);
                    async { Err::<(), _>(Transient) }
                },
                |_| true,
            )
            .await
            .unwrap_err();
        assert_eq!((err.attempts, err.reason), (3, GaveUp::Exhausted));
        assert_eq!(calls.load(SeqCst), 3);

        let err = retry
            .run(|| async { Err::<(), _>(Transient) }, |_| false)
            .await
            .unwrap_err();
        assert_eq!((err.attempts, err.reason), (1, GaveUp::NotRetryable));
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_bounds_retries_across_all_callers() {
        // 10 % of requests, no minimum, over 10 s. Everything fails.
        let clock = ManualClock::new();
        let budget = Arc::new(
            RetryBudget::with_clock(0.1, 0, Duration::from_secs(10), clock.clone())
                .unwrap(),
        );
        let retry = Retry::new(5, Duration::from_millis(1), Duration::from_millis(1))
            .with_budget(budget);
        let calls = AtomicU32::new(0);
        for _ in 0..1_000 {
            let _ = retry
                .run(
                    || {
                        calls.fetch_add(1, SeqCst);
                        async { Err::<(), _>(Transient) }
                    },
                    |_| true,
                )
                .await;
        }
        // Without the budget: 5,000 calls. With it: 1,000 + at most 100 retries.
        let calls = calls.load(SeqCst);
        assert!((1_090..=1_100).contains(&calls), "{calls} calls");
    }

    #[test]
    fn the_budget_forgets_old_seconds_and_keeps_a_minimum() {
        let clock = ManualClock::new();
        let budget =
            RetryBudget::with_clock(0.5, 1, Duration::from_secs(2), clock.clone())
                .unwrap();
        // The minimum alone: 1 per second over 2 s.
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        for _ in 0..4 {
            budget.deposit();
        }
        // 2 + 0.5 × 4 = 4 in all; 2 used.
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        // Two seconds later, the window has moved past all of it.
        clock.advance(Duration::from_secs(2));
        assert_eq!(budget.totals(), (0, 0));
        assert!(budget.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn composed_with_a_breaker_retries_stop_once_it_opens() {
        use crate::{BreakerError, CircuitBreaker, CircuitBreakerConfig};
        let breaker = CircuitBreaker::with_clock(
            CircuitBreakerConfig::builder()
                .count_based_window(10)
                .minimum_number_of_calls(10)
                .build()
                .unwrap(),
            ManualClock::new(),
        );
        let retry = Retry::new(4, Duration::from_millis(1), Duration::from_millis(8));
        let calls = AtomicU32::new(0);
        let mut refused = 0;
        for _ in 0..20 {
            let err = retry
                .run(
                    || {
                        breaker.call_async(|| {
                            calls.fetch_add(1, SeqCst);
                            async { Err::<(), _>(Transient) }
                        })
                    },
                    // Retry the dependency's errors, never the breaker's refusal.
                    |e| matches!(e, BreakerError::Inner(_)),
                )
                .await
                .unwrap_err();
            if err.reason == GaveUp::NotRetryable {
                refused += 1;
            }
        }
        // The dependency saw the 10 calls that opened the breaker, no more.
        assert_eq!(calls.load(SeqCst), 10);
        assert!(refused >= 17, "{refused} runs ended on the open breaker");
    }
}
