//! A rate limiter in front of a service.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use super::{BoxFuture, poll_inner, take_ready};
use crate::{Decision, RateLimiter};

/// What a rate-limited service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError<L, E> {
    /// Over the limit; the request was not made. Try again after `retry_after`.
    #[error("rate limited: retry after {retry_after:?}")]
    Limited {
        /// When a permit frees, if nobody else takes it first.
        retry_after: Duration,
    },
    /// The limiter itself failed (a distributed limiter's server).
    #[error("the rate limiter failed: {0}")]
    Limiter(#[source] L),
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

/// Wraps services in one shared [`RateLimiter`] — any of this crate's, or
/// the Redis one in `distributed`. By default a request over the limit is
/// refused at once with [`RateLimitError::Limited`] (load shedding, the
/// right default for a server); [`waiting`](Self::waiting) makes it wait
/// for a permit instead (for a client pacing itself).
#[derive(Debug)]
pub struct RateLimitLayer<L> {
    limiter: Arc<L>,
    wait: bool,
}

impl<L> Clone for RateLimitLayer<L> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: self.limiter.clone(),
            wait: self.wait,
        }
    }
}

impl<L: RateLimiter> RateLimitLayer<L> {
    /// A layer whose services share `limiter`, refusing over the limit.
    pub fn new(limiter: Arc<L>) -> Self {
        RateLimitLayer {
            limiter,
            wait: false,
        }
    }

    /// The same, waiting for a permit instead of refusing.
    pub fn waiting(limiter: Arc<L>) -> Self {
        RateLimitLayer {
            limiter,
            wait: true,
        }
    }
}

impl<S, L> Layer<S> for RateLimitLayer<L> {
    type Service = RateLimitService<S, L>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
            wait: self.wait,
        }
    }
}

/// A rate-limited service; see [`RateLimitLayer`].
#[derive(Debug)]
pub struct RateLimitService<S, L> {
    inner: S,
    limiter: Arc<L>,
    wait: bool,
}

impl<S: Clone, L> Clone for RateLimitService<S, L> {
    fn clone(&self) -> Self {
        RateLimitService {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            wait: self.wait,
        }
    }
}

impl<S, R, L> Service<R> for RateLimitService<S, L>
where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
    L: RateLimiter + 'static,
{
    type Response = S::Response;
    type Error = RateLimitError<L::Error, S::Error>;
    type Future = BoxFuture<Result<S::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        poll_inner(&mut self.inner, cx).map_err(RateLimitError::Inner)
    }

    /// Cancel safety: a request dropped while waiting has taken no permit;
    /// one dropped after its permit was granted has used it.
    fn call(&mut self, request: R) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        let limiter = self.limiter.clone();
        let wait = self.wait;
        Box::pin(async move {
            if wait {
                limiter.acquire().await.map_err(RateLimitError::Limiter)?;
            } else if let Decision::Denied { retry_after } = limiter
                .try_acquire()
                .await
                .map_err(RateLimitError::Limiter)?
            {
                return Err(RateLimitError::Limited { retry_after });
            }
            inner.call(request).await.map_err(RateLimitError::Inner)
        })
    }
}
