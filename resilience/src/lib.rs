//! Resilience patterns: sliding-window and GCRA rate limiters, adaptive
//! concurrency limits, a circuit breaker with resilience4j's semantics,
//! retries with a budget, and tower layers.
//!
//! - Rate limiters behind one [`RateLimiter`] trait (the distributed one in
//!   `cpr_distributed::redis` implements it too): the exact [`SlidingLog`], the
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
//!
//! A whole program: a burst of 150 requests against a limit of 100.
//!
//! ```
//! use std::time::Duration;
//! use cpr_resilience::{RateLimiter, SlidingWindow};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // About 100 requests per second, counted in a sliding window.
//!     let limiter = SlidingWindow::new(100, Duration::from_secs(1))?;
//!     let mut served = 0;
//!     for _ in 0..150 {
//!         if limiter.try_acquire().await?.is_allowed() {
//!             served += 1;
//!         }
//!     }
//!     assert_eq!(served, 100);
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod adaptive;
pub mod circuit_breaker;
mod clock;
mod rate_limit;
mod retry;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

pub use adaptive::{
    AdaptiveLimiter, AdaptivePermit, Aimd, LimitAlgorithm, LimitBounds, Vegas,
};
pub use circuit_breaker::{
    BreakerError, CallNotPermitted, CircuitBreaker, CircuitBreakerConfig,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use rate_limit::gcra::{Gcra, KeyedGcra};
pub use rate_limit::sliding_log::{MAX_LOG_LIMIT, SlidingLog};
pub use rate_limit::sliding_window::{MAX_WINDOW_LIMIT, SlidingWindow};
pub use rate_limit::{Decision, LimiterConfigError, MAX_LIMITER_WINDOW, RateLimiter};
pub use retry::{
    BudgetConfigError, GaveUp, MAX_BUDGET_WINDOW, Retry, RetryBudget, RetryError,
};

/// The README's code, compiled (and run, where it needs no server) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
