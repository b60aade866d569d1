//! tower layers for the breaker, the rate limiters and the adaptive limiter
//! (feature `tower`).
//!
//! Each layer holds its primitive in an `Arc`, so every service it makes,
//! and every clone of those, shares one state. That is the point of a
//! limit: tower's own `RateLimit` keeps its budget per service instance, so
//! cloning a rate-limited service (as servers do per connection) multiplies
//! the limit — a known pitfall this module avoids and tests.

mod adaptive;
mod breaker;
mod rate_limit;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use adaptive::{
    AdaptiveLimitLayer, AdaptiveLimitService, Overloaded, OverloadedOr,
};
pub use breaker::{CircuitBreakerLayer, CircuitBreakerService};
pub use rate_limit::{RateLimitError, RateLimitLayer, RateLimitService};

/// The futures these services return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The service to call now, leaving a clone in its place.
///
/// `poll_ready` made `inner` ready; the call happens later, inside the
/// response future (after the permit is granted), so the ready service
/// moves into the future and a fresh clone takes its place for the next
/// `poll_ready`. (tower's documented pattern for this.)
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// `poll_ready` for a wrapper: the inner service's readiness.
fn poll_inner<S, R>(inner: &mut S, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>>
where
    S: tower_service::Service<R>,
{
    inner.poll_ready(cx)
}

#[cfg(test)]
mod tests;
