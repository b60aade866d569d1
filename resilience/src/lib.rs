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
mod rate_limit;
mod retry;
#[cfg(feature = "tower")]
pub mod tower;

pub use adaptive::{AdaptiveLimiter, AdaptivePermit, Aimd, LimitAlgorithm, LimitBounds, Vegas};
pub use circuit_breaker::{BreakerError, CallNotPermitted, CircuitBreaker, CircuitBreakerConfig};
pub use clock::{Clock, ManualClock, SystemClock};
pub use rate_limit::gcra::{Gcra, KeyedGcra};
pub use rate_limit::sliding_log::{MAX_LOG_LIMIT, SlidingLog};
pub use rate_limit::sliding_window::{MAX_WINDOW_LIMIT, SlidingWindow};
pub use rate_limit::{Decision, LimiterConfigError, MAX_LIMITER_WINDOW, RateLimiter};
pub use retry::{BudgetConfigError, GaveUp, MAX_BUDGET_WINDOW, Retry, RetryBudget, RetryError};
