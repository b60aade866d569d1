//! Resilience patterns: sliding-window and GCRA rate limiters, adaptive
//! concurrency limits, a circuit breaker with resilience4j's semantics,
//! retries with a budget, and tower layers.
//!
//! So far: the [`RateLimiter`] trait that every limiter implements (the
//! distributed one in `distributed::redis` included).
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod rate_limiter;

pub use rate_limiter::{Decision, RateLimiter};
