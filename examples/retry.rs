//! Retries with full jitter, a retry budget, and a circuit breaker.
//!
//! First a backend that fails one call in three: retries hide the failures.
//! Then the backend goes down: without a budget every request becomes four
//! calls; with one, retries stay a tenth of the traffic; with a breaker in
//! front too, the backend stops being called at all once it opens.
//!
//!     cargo run --example retry
//!
//! Needs no server. Takes well under a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use concurrency_patterns::resilience::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, Retry, RetryBudget,
};

#[derive(Debug, thiserror::Error)]
#[error("backend failed")]
struct Failed;

/// A backend failing when `fails(call number)` says so, counting its calls.
struct Backend {
    calls: AtomicU32,
    fails: fn(u32) -> bool,
}

impl Backend {
    async fn call(&self) -> Result<(), Failed> {
        let n = self.calls.fetch_add(1, Relaxed);
        if (self.fails)(n) { Err(Failed) } else { Ok(()) }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // ANCHOR: policy
    // Up to 4 attempts; pauses drawn from 0..min(2 ms, 100 µs × 2^(n-1)).
    let policy = || Retry::new(4, Duration::from_micros(100), Duration::from_millis(2));
    // ANCHOR_END: policy

    // ANCHOR: flaky
    let flaky = Backend {
        calls: AtomicU32::new(0),
        fails: |n| n % 3 == 0,
    };
    let retry = policy();
    let mut succeeded = 0;
    for _ in 0..100 {
        if retry.run(|| flaky.call(), |_| true).await.is_ok() {
            succeeded += 1;
        }
    }
    println!(
        "flaky backend: {succeeded}/100 requests succeeded, {} calls",
        flaky.calls.load(Relaxed)
    );
    // ANCHOR_END: flaky
    anyhow::ensure!(succeeded == 100);

    // ANCHOR: outage
    let down = || Backend {
        calls: AtomicU32::new(0),
        fails: |_| true,
    };
    let without_budget = down();
    for _ in 0..200 {
        let _ = retry.run(|| without_budget.call(), |_| true).await;
    }
    // 10 % of requests may be retried, plus 1 per second, over 10 s.
    let budget = Arc::new(RetryBudget::new(0.1, 1, Duration::from_secs(10))?);
    let budgeted = policy().with_budget(budget);
    let with_budget = down();
    for _ in 0..200 {
        let _ = budgeted.run(|| with_budget.call(), |_| true).await;
    }
    // ANCHOR_END: outage
    println!(
        "outage, 200 requests: {} backend calls without a budget, {} with one",
        without_budget.calls.load(Relaxed),
        with_budget.calls.load(Relaxed)
    );
    anyhow::ensure!(with_budget.calls.load(Relaxed) <= 200 + 20 + 10);

    // ANCHOR: with_breaker
    let breaker = CircuitBreaker::new(
        CircuitBreakerConfig::builder()
            .count_based_window(20)
            .minimum_number_of_calls(20)
            .build()?,
    );
    let behind_breaker = down();
    let mut refused = 0;
    for _ in 0..200 {
        let outcome = budgeted
            .run(
                || breaker.call_async(|| behind_breaker.call()),
                // Retry the backend's failures; an open breaker is final.
                |e| matches!(e, BreakerError::Inner(_)),
            )
            .await;
        if let Err(e) = outcome {
            refused += u32::from(matches!(e.last, BreakerError::NotPermitted(_)));
        }
    }
    // ANCHOR_END: with_breaker
    println!(
        "with a breaker too: {} backend calls; {refused} requests refused at once",
        behind_breaker.calls.load(Relaxed)
    );
    anyhow::ensure!(behind_breaker.calls.load(Relaxed) <= 20 + 2);
    Ok(())
}
