//! A circuit breaker in front of a service.

use std::error::Error;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{BoxFuture, poll_inner, take_ready};
use crate::circuit_breaker::{BreakerError, CircuitBreaker};
use crate::clock::{Clock, SystemClock};

/// Wraps services in one shared [`CircuitBreaker`]: calls are refused
/// with [`BreakerError::NotPermitted`] while it is open, and the inner
/// service's results feed it.
#[derive(Debug)]
pub struct CircuitBreakerLayer<C: Clock = SystemClock> {
    breaker: Arc<CircuitBreaker<C>>,
}

impl<C: Clock> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            breaker: self.breaker.clone(),
        }
    }
}

impl<C: Clock> CircuitBreakerLayer<C> {
    /// A layer whose services all share `breaker`.
    pub fn new(breaker: Arc<CircuitBreaker<C>>) -> Self {
        CircuitBreakerLayer { breaker }
    }
}

impl<S, C: Clock> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// A service behind a circuit breaker; see [`CircuitBreakerLayer`].
#[derive(Debug)]
pub struct CircuitBreakerService<S, C: Clock = SystemClock> {
    inner: S,
    breaker: Arc<CircuitBreaker<C>>,
}

impl<S: Clone, C: Clock> Clone for CircuitBreakerService<S, C> {
    fn clone(&self) -> Self {
        CircuitBreakerService {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
        }
    }
}

impl<S, R, C> Service<R> for CircuitBreakerService<S, C>
where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Error + Send + 'static,
    R: Send + 'static,
    C: Clock + 'static,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = BoxFuture<Result<S::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        poll_inner(&mut self.inner, cx).map_err(BreakerError::Inner)
    }

    /// Cancel safety: dropping the future drops the permit; the call counts
    /// as ignored and a half-open trial permit is given back.
    fn call(&mut self, request: R) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        let breaker = self.breaker.clone();
        Box::pin(async move { breaker.call_async(move || inner.call(request)).await })
    }
}
