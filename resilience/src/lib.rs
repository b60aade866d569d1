//! Resilience patterns: sliding-window and GCRA rate limiters, adaptive
//! concurrency limits, a circuit breaker with resilience4j's semantics,
//! retries with a budget, and tower layers.
//!
//! So far: the [`RateLimiter`] trait that every limiter implements (the
//! distributed one in `distributed::redis` included), the exact
//! [`SlidingLog`] and the O(1) [`SlidingWindow`] counter, on an injectable
//! [`Clock`].
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod adaptive;
pub mod circuit_breaker;
mod clock;
mod gcra;
mod rate_limiter;
mod retry;
mod sliding_log;
mod sliding_window;
#[cfg(feature = "tower")]
pub mod tower;

pub use adaptive::{AdaptiveLimiter, AdaptivePermit, Aimd, LimitAlgorithm, LimitBounds, Vegas};
pub use circuit_breaker::{BreakerError, CallNotPermitted, CircuitBreaker, CircuitBreakerConfig};
pub use clock::{Clock, ManualClock, SystemClock};
pub use gcra::{Gcra, KeyedGcra};
pub use rate_limiter::{Decision, RateLimiter};
pub use retry::{GaveUp, Retry, RetryBudget, RetryError};
pub use sliding_log::SlidingLog;
pub use sliding_window::{MAX_WINDOW_LIMIT, SlidingWindow};

/// A limiter configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimiterConfigError {
    /// A limit of zero would refuse everything.
    #[error("a rate limit must allow at least one permit")]
    ZeroLimit,
    /// A window of zero length has no rate.
    #[error("the window must be longer than zero (at least 1 µs)")]
    ZeroWindow,
    /// The limit does not fit the limiter's counters.
    #[error("this limiter counts at most {0} permits per window")]
    LimitTooLarge(u32),
}
