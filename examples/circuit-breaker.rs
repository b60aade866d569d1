//! A circuit breaker in front of a flaky backend, as a tower layer.
//!
//! The backend fails while it is "down"; the breaker opens, refuses calls
//! at once, lets exactly three trial calls through after its wait, and
//! closes when the backend has recovered. Every state change is printed
//! from the breaker's event stream.
//!
//!     cargo run --example circuit-breaker
//!
//! Needs no server. Takes about a second (the waits in open are real).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use concurrency_patterns::resilience::circuit_breaker::{BreakerError, State};
use concurrency_patterns::resilience::tower::CircuitBreakerLayer;
use concurrency_patterns::resilience::{CircuitBreaker, CircuitBreakerConfig};
use tower::{Layer, ServiceExt, service_fn};

#[derive(Debug, thiserror::Error)]
#[error("backend unavailable")]
struct Unavailable;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // ANCHOR: config
    let config = CircuitBreakerConfig::builder()
        .count_based_window(20) // judge the last 20 calls
        .minimum_number_of_calls(10) // ...once there are at least 10
        .failure_rate_threshold(50.0) // open at 50 % failures
        .slow_call_duration_threshold(Duration::from_millis(100))
        .exponential_wait_in_open(
            Duration::from_millis(100),
            2.0,
            Duration::from_secs(1),
        )
        .permitted_calls_in_half_open(3)
        .build()?;
    let breaker = Arc::new(CircuitBreaker::new(config));
    // ANCHOR_END: config

    // ANCHOR: events
    // Every state change, in order (a receiver more than 64 behind is told
    // how many it missed).
    let mut events = breaker.subscribe();
    let mut seen = Vec::new();
    let mut print_changes = move || {
        while let Ok(change) = events.try_recv() {
            println!("  breaker: {} -> {}", change.from, change.to);
            seen.push(change.to);
        }
        seen.clone()
    };
    // ANCHOR_END: events

    // ANCHOR: layer
    let down = Arc::new(AtomicBool::new(true));
    let backend = {
        let down = down.clone();
        service_fn(move |request: u32| {
            let down = down.load(Relaxed);
            async move {
                if down {
                    Err(Unavailable)
                } else {
                    Ok(request * 2)
                }
            }
        })
    };
    // Every clone of `service` shares the one breaker.
    let service = CircuitBreakerLayer::new(breaker.clone()).layer(backend);
    // ANCHOR_END: layer

    let mut refused = 0;
    // Four rounds down, then rounds until the breaker has closed again (the
    // longest wait in open is 1 s, so 12 rounds of 150 ms are plenty).
    for round in 0..16 {
        if round >= 6 && breaker.state() == State::Closed {
            break;
        }
        if round == 4 {
            println!("the backend recovers");
            down.store(false, Relaxed);
        }
        let mut outcomes = String::new();
        for request in 0..12 {
            outcomes.push(match service.clone().oneshot(request).await {
                Ok(_) => '.',
                Err(BreakerError::Inner(Unavailable)) => 'x',
                Err(BreakerError::NotPermitted(_)) => {
                    refused += 1;
                    '-'
                }
            });
        }
        print_changes();
        println!("round {round}: {outcomes}   (. ok, x failed, - refused)");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let metrics = breaker.metrics();
    println!("refused {refused} calls without touching the backend; {metrics:?}");
    let final_state = breaker.state();
    let seen = print_changes();
    anyhow::ensure!(final_state == State::Closed, "ended {final_state}");
    anyhow::ensure!(seen.contains(&State::Open) && seen.contains(&State::HalfOpen));
    Ok(())
}
