//! Every constructor and builder in this crate, given values from anywhere
//! in their types' ranges: each returns a value or an error, never panics or
//! aborts (a window of `u32::MAX` seconds once tried to allocate 137 GB),
//! and what it returns works for a few calls.

use std::time::Duration;

use cpr_resilience::circuit_breaker::CircuitBreakerConfig;
use cpr_resilience::{
    AdaptiveLimiter, Aimd, CircuitBreaker, Gcra, KeyedGcra, LimitBounds, Retry,
    RetryBudget, SlidingLog, SlidingWindow, Vegas,
};
use proptest::prelude::*;

/// Any duration, with the edges (zero, a nanosecond, `Duration::MAX`) often.
fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::MAX),
        (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..100_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// Any `u32`, with the edges often.
fn any_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u32::MAX),
        0u32..=u32::MAX,
        0u32..10_000
    ]
}

/// Any `usize`, with the edges often.
fn any_usize() -> impl Strategy<Value = usize> {
    prop_oneof![Just(usize::MAX), 0usize..=usize::MAX, 0usize..10_000]
}

/// Any `f64`, including NaN, the infinities and negatives.
fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-1.0),
        Just(f64::MAX),
        proptest::num::f64::ANY,
        0.0f64..200.0,
    ]
}

/// A percentage, valid most of the time so that the other settings get
/// exercised too, anything at all otherwise.
fn percentage() -> impl Strategy<Value = f64> {
    prop_oneof![3 => 1.0f64..=100.0, 1 => any_f64()]
}

/// A count, valid most of the time, with the edges often.
fn count() -> impl Strategy<Value = u32> {
    prop_oneof![3 => 1u32..1_000, 2 => any_u32()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rate_limiters(
        limit in any_u32(),
        log_limit in any_usize(),
        window in any_duration(),
        n in any_u32(),
    ) {
        if let Ok(log) = SlidingLog::new(log_limit, window) {
            for _ in 0..3 {
                let _ = log.check_n(n);
            }
        }
        if let Ok(counter) = SlidingWindow::new(limit, window) {
            for _ in 0..3 {
                let _ = counter.check_n(n);
            }
        }
        if let Ok(gcra) = Gcra::new(limit, window) {
            for _ in 0..3 {
                let _ = gcra.check_n(n);
            }
        }
        if let Ok(keyed) = KeyedGcra::<u32>::new(limit, window) {
            for key in 0..3 {
                let _ = keyed.check_key_n(&key, n);
            }
            keyed.prune();
        }
    }

    #[test]
    fn retries_and_budgets(
        attempts in any_u32(),
        base in any_duration(),
        max in any_duration(),
        ratio in any_f64(),
        floor in any_u32(),
        window in any_duration(),
        retry in any_u32(),
    ) {
        let policy = Retry::new(attempts, base, max);
        let _ = policy.delay_cap(retry);
        if let Ok(budget) = RetryBudget::new(ratio, floor, window) {
            budget.deposit();
            let _ = budget.try_withdraw();
            let _ = budget.totals();
        }
    }

    #[test]
    fn circuit_breakers(
        failure in percentage(),
        slow in percentage(),
        slow_after in any_duration(),
        count_based in any::<bool>(),
        size in any_u32(),
        minimum in count(),
        wait in any_duration(),
        exponential in any::<bool>(),
        multiplier in prop_oneof![3 => 1.0f64..10.0, 1 => any_f64()],
        cap in any_duration(),
        trials in count(),
        half_open in proptest::option::of(any_duration()),
    ) {
        let mut builder = CircuitBreakerConfig::builder()
            .failure_rate_threshold(failure)
            .slow_call_rate_threshold(slow)
            .slow_call_duration_threshold(slow_after)
            .minimum_number_of_calls(minimum)
            .permitted_calls_in_half_open(trials);
        builder = if count_based {
            builder.count_based_window(size)
        } else {
            builder.time_based_window(size)
        };
        builder = if exponential {
            builder.exponential_wait_in_open(wait, multiplier, cap)
        } else {
            builder.wait_in_open(wait)
        };
        if let Some(half_open) = half_open {
            builder = builder.max_wait_in_half_open(half_open);
        }
        if let Ok(config) = builder.build() {
            let breaker = CircuitBreaker::new(config);
            for i in 0..20 {
                let _ = breaker.call(|| {
                    if i % 2 == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("no"))
                    }
                });
            }
            let _ = breaker.state();
        }
    }

    #[test]
    fn adaptive_limits(min in any_u32(), max in any_u32(), initial in any_u32()) {
        let bounds = LimitBounds::new(min, max);
        let aimd = AdaptiveLimiter::new(Aimd::new(bounds, initial));
        let vegas = AdaptiveLimiter::new(Vegas::new(bounds, initial));
        for limiter in [aimd, vegas] {
            if let Some(permit) = limiter.try_acquire() {
                permit.success();
            }
            if let Some(permit) = limiter.try_acquire() {
                permit.dropped();
            }
        }
    }
}

/// The cases the hardening issue found, as they were reported.
#[test]
fn the_reported_absurd_configurations_are_errors() {
    let time_window = CircuitBreakerConfig::builder()
        .time_based_window(u32::MAX)
        .build();
    assert!(time_window.is_err(), "a 136-year time window was accepted");
    let count_window = CircuitBreakerConfig::builder()
        .count_based_window(u32::MAX)
        .build();
    assert!(count_window.is_err());
    let wait = CircuitBreakerConfig::builder()
        .wait_in_open(Duration::MAX)
        .build();
    assert!(wait.is_err());
    let centuries = Duration::from_secs(600 * 365 * 24 * 3600);
    assert!(Gcra::new(10, centuries).is_err());
    assert!(KeyedGcra::<u32>::new(10, centuries).is_err());
    assert!(SlidingLog::new(usize::MAX, Duration::from_secs(1)).is_err());
    assert!(RetryBudget::new(0.1, 1, Duration::MAX).is_err());
    assert!(RetryBudget::new(f64::NAN, 1, Duration::from_secs(10)).is_err());
}
