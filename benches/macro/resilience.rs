//! Micro benchmarks of the rate limiters, single thread, ns per check.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use concurrency_patterns::resilience::{
    CircuitBreaker, CircuitBreakerConfig, Gcra, SlidingLog, SlidingWindow,
};

const CHECKS: u64 = 5_000_000;
const ROUNDS: usize = 3;

fn line(bench: &str, best: Duration) -> String {
    format!(
        "{{\"bench\":\"{bench}\",\"ns_per_op\":{:.1},\"rounds\":{ROUNDS},\"n\":{CHECKS}}}",
        best.as_nanos() as f64 / CHECKS as f64
    )
}

/// Runs `check` CHECKS times per round, ROUNDS rounds; the fastest round.
fn fastest(mut check: impl FnMut() -> bool) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            let mut allowed = 0u64;
            for _ in 0..CHECKS {
                allowed += u64::from(black_box(check()));
            }
            black_box(allowed);
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// `resilience.sliding_window.check`, `resilience.sliding_log.check`,
/// `resilience.gcra.check` (our wrapper) and `resilience.governor.check`
/// (the governor crate's direct GCRA limiter, for the ratio), one after the
/// other in one process so that all see the same machine. Limits
/// are set so that checks are mostly granted, the common case.
pub fn limiter_checks() -> anyhow::Result<Vec<String>> {
    let window = SlidingWindow::new(1_000_000, Duration::from_secs(1))?;
    let log = SlidingLog::new(1_000_000, Duration::from_secs(1))?;
    let quota = governor::Quota::per_second(
        NonZeroU32::new(1_000_000_000).unwrap_or(NonZeroU32::MIN),
    );
    let governor = governor::RateLimiter::direct(quota);
    let gcra = Gcra::new(1_000_000_000, Duration::from_secs(1))?;
    let w = fastest(|| window.check_n(1).is_allowed());
    let l = fastest(|| log.check_n(1).is_allowed());
    let c = fastest(|| gcra.check_n(1).is_allowed());
    let g = fastest(|| governor.check().is_ok());
    Ok(vec![
        line("resilience.sliding_window.check", w),
        line("resilience.sliding_log.check", l),
        line("resilience.gcra.check", c),
        line("resilience.governor.check", g),
    ])
}

/// The error type of the trivial calls, which never fail.
#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

/// The trivial call every closed-call measurement wraps: bumps `x`.
pub fn trivial_call(x: &mut u64) -> Result<u64, Never> {
    *x = black_box(x.wrapping_add(1));
    Ok(*x)
}

/// `resilience.breaker.closed_call`'s line for the call `through` makes
/// (the trivial call wrapped by a breaker, or by a peer): what it adds to
/// the trivial call made directly, both measured here, fastest of the
/// rounds; `peer` names a peer's line.
pub fn closed_call_line(
    peer: Option<&str>,
    mut through: impl FnMut(&mut u64) -> bool,
) -> String {
    let mut x = 0u64;
    let bare = fastest(|| trivial_call(&mut x).is_ok());
    let through = fastest(|| through(&mut x));
    let peer = peer
        .map(|p| format!(",\"peer\":\"{p}\""))
        .unwrap_or_default();
    format!(
        "{{\"bench\":\"resilience.breaker.closed_call\"{peer},\"ns_per_op\":{:.1},\"call_ns\":{:.1},\"bare_ns\":{:.1},\"rounds\":{ROUNDS},\"n\":{CHECKS}}}",
        through.saturating_sub(bare).as_nanos() as f64 / CHECKS as f64,
        through.as_nanos() as f64 / CHECKS as f64,
        bare.as_nanos() as f64 / CHECKS as f64,
    )
}

/// `resilience.breaker.closed_call`: what a closed breaker adds to a call,
/// in ns: a trivial call through `CircuitBreaker::call`, minus the same
/// call made directly.
pub fn breaker_closed_call() -> anyhow::Result<String> {
    let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
    Ok(closed_call_line(None, |x| {
        breaker.call(|| trivial_call(x)).is_ok()
    }))
}
