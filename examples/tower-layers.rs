//! Rate limiting and an adaptive concurrency limit as tower layers, in
//! front of one slow backend.
//!
//! The backend takes 20 ms per request. In front of it, a `RateLimitLayer`
//! (GCRA: bursts of 20, then 200 per second) refuses what comes too fast,
//! and an `AdaptiveLimitLayer` (Vegas) sheds what would queue. 400 requests
//! arrive at once; each ends served, rate limited (with the time to retry
//! after) or shed as overloaded, and none is lost.
//!
//!     cargo run --example tower-layers
//!
//! Needs no server. Takes well under a second.

use std::sync::Arc;
use std::time::Duration;

use concurrency_patterns::resilience::adaptive::AdaptiveLimiter;
use concurrency_patterns::resilience::tower::{
    AdaptiveLimitLayer, OverloadedOr, RateLimitError, RateLimitLayer,
};
use concurrency_patterns::resilience::{Gcra, LimitBounds, Vegas};
use tower::{Layer, ServiceExt, service_fn};

const REQUESTS: usize = 400;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // ANCHOR: layers
    let backend = service_fn(|n: usize| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, std::convert::Infallible>(n)
    });
    let rate = Arc::new(Gcra::new(20, Duration::from_millis(100))?);
    let adaptive = AdaptiveLimiter::new(Vegas::new(LimitBounds::new(1, 50), 10));
    // The outer layer sees a request first: refused by the rate, or else
    // shed by the concurrency limit, or else served.
    let service = RateLimitLayer::new(rate)
        .layer(AdaptiveLimitLayer::new(adaptive).layer(backend));
    // ANCHOR_END: layers

    let calls: Vec<_> = (0..REQUESTS)
        .map(|n| {
            let service = service.clone();
            tokio::spawn(async move { service.oneshot(n).await })
        })
        .collect();
    let (mut served, mut limited, mut shed) = (0, 0, 0);
    let mut longest_retry = Duration::ZERO;
    for call in calls {
        match call.await? {
            Ok(_) => served += 1,
            Err(RateLimitError::Limited { retry_after }) => {
                limited += 1;
                longest_retry = longest_retry.max(retry_after);
            }
            Err(RateLimitError::Inner(OverloadedOr::Overloaded(_))) => shed += 1,
            Err(other) => anyhow::bail!("unexpected: {other}"),
        }
    }
    println!("{REQUESTS} requests at once:");
    println!("  served       {served}");
    println!("  rate limited {limited} (retry after at most {longest_retry:?})");
    println!("  shed         {shed} (over the concurrency limit)");
    anyhow::ensure!(served + limited + shed == REQUESTS, "a request was lost");
    anyhow::ensure!(served <= 20, "more than the burst of 20 served at once");
    anyhow::ensure!(limited >= REQUESTS - 20, "the rate let too many through");
    Ok(())
}
