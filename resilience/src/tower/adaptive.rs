//! An adaptive concurrency limit in front of a service.

use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{BoxFuture, poll_inner, take_ready};
use crate::adaptive::AdaptiveLimiter;
use crate::clock::{Clock, SystemClock};

/// The adaptive limit was reached; the request was shed without being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("overloaded: the concurrency limit ({limit}) is reached; shed or retry later")]
pub struct Overloaded {
    /// The limit at the time.
    pub limit: u32,
}

/// What an adaptively limited service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OverloadedOr<E> {
    /// Shed by the limiter.
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

/// Wraps services in one shared [`AdaptiveLimiter`]. A request over the
/// limit is shed with [`Overloaded`]. A success reports its latency; an
/// error is ignored (it says nothing about load) unless
/// [`errors_are_drops`](Self::errors_are_drops) is set, for services
/// whose errors are timeouts or overload refusals.
#[derive(Debug)]
pub struct AdaptiveLimitLayer<C: Clock = SystemClock> {
    limiter: AdaptiveLimiter<C>,
    errors_are_drops: bool,
}

impl<C: Clock> Clone for AdaptiveLimitLayer<C> {
    fn clone(&self) -> Self {
        AdaptiveLimitLayer {
            limiter: self.limiter.clone(),
            errors_are_drops: self.errors_are_drops,
        }
    }
}

impl<C: Clock> AdaptiveLimitLayer<C> {
    /// A layer whose services share `limiter` (clones of a limiter share its limit).
    pub fn new(limiter: AdaptiveLimiter<C>) -> Self {
        AdaptiveLimitLayer {
            limiter,
            errors_are_drops: false,
        }
    }

    /// Report the inner service's errors as drops.
    pub fn errors_are_drops(mut self) -> Self {
        self.errors_are_drops = true;
        self
    }
}

impl<S, C: Clock> Layer<S> for AdaptiveLimitLayer<C> {
    type Service = AdaptiveLimitService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimitService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service behind an adaptive limit; see [`AdaptiveLimitLayer`].
#[derive(Debug)]
pub struct AdaptiveLimitService<S, C: Clock = SystemClock> {
    inner: S,
    layer: AdaptiveLimitLayer<C>,
}

impl<S: Clone, C: Clock> Clone for AdaptiveLimitService<S, C> {
    fn clone(&self) -> Self {
        AdaptiveLimitService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, R, C> Service<R> for AdaptiveLimitService<S, C>
where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
    C: Clock + 'static,
{
    type Response = S::Response;
    type Error = OverloadedOr<S::Error>;
    type Future = BoxFuture<Result<S::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        poll_inner(&mut self.inner, cx).map_err(OverloadedOr::Inner)
    }

    /// Cancel safety: a dropped request frees its place and teaches the
    /// limiter nothing.
    fn call(&mut self, request: R) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        // Taken now, not in the future: a request is shed before any work.
        let permit = self.layer.limiter.try_acquire();
        let limit = self.layer.limiter.limit();
        let errors_are_drops = self.layer.errors_are_drops;
        Box::pin(async move {
            let permit = permit.ok_or(Overloaded { limit })?;
            match inner.call(request).await {
                Ok(response) => {
                    permit.success();
                    Ok(response)
                }
                Err(error) => {
                    if errors_are_drops {
                        permit.dropped();
                    } else {
                        permit.ignore();
                    }
                    Err(OverloadedOr::Inner(error))
                }
            }
        })
    }
}
