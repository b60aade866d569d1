//! Resilience patterns: sliding-window and GCRA rate limiters, adaptive
//! concurrency limits, a circuit breaker with resilience4j's semantics,
//! retries with a budget, and tower layers.
//!
//! - Rate limiters behind one [`RateLimiter`] trait (the distributed one in
//!   `distributed::redis` implements it too): the exact [`SlidingLog`], the
//!   O(1) [`SlidingWindow`] counter, [`Gcra`] (governor) and the
//!   self-pruning [`KeyedGcra`].
//! - [`circuit_breaker`]: a breaker with resilience4j's states, windows and
//!   thresholds, exact half-open permits and transition events.
//! - [`Retry`] with full jitter and a shared [`RetryBudget`].
//! - [`adaptive`]: concurrency limits learned from latency and drops (AIMD,
//!   Vegas), with a deterministic simulation.
//! - `tower` (feature `tower`): layers for all of the above, whose clones
//!   share one state.
//!
//! Everything takes an injectable [`Clock`], so tests run on virtual time.
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
pub use retry::{BudgetConfigError, GaveUp, MAX_BUDGET_WINDOW, Retry, RetryBudget, RetryError};
pub use sliding_log::{MAX_LOG_LIMIT, SlidingLog};
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
    /// A window longer than [`MAX_LIMITER_WINDOW`] (a year).
    #[error("the window can be at most a year, not {0:?}")]
    WindowTooLong(std::time::Duration),
}

/// The longest window a rate limiter takes: a year. Longer windows are not
/// rates any more, and overflow the clocks' arithmetic (governor's counts
/// nanoseconds in 64 bits: 584 years).
pub const MAX_LIMITER_WINDOW: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
