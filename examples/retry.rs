//! Retries with full jitter, a retry budget, and a circuit breaker.
//!
//! First a backend that fails one call in three: retries hide the failures.
//! Then the backend goes down: without a budget every request becomes four
//! calls; with one, retries stay a tenth of the traffic; with a breaker in
//! front too, the backend stops being called at all once it opens.
//!
//!     cargo run --example retry
//!     cargo run --example retry -- --svg book/src/resilience
//!
//! With `--svg DIR` it also writes the book's plot of the retry wave
//! (`retry-wave.svg`), simulated in virtual time with this crate's caps and
//! budget. Needs no server. Takes well under a second.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use concurrency_patterns::resilience::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, Clock as _, ManualClock, Retry,
    RetryBudget,
};
use plotters::prelude::*;
use rand::{Rng, SeedableRng};

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
    let svg_dir = match std::env::args().nth(1).as_deref() {
        Some("--svg") => Some(PathBuf::from(
            std::env::args()
                .nth(2)
                .ok_or_else(|| anyhow::anyhow!("--svg needs a directory"))?,
        )),
        Some(other) => anyhow::bail!("unknown argument {other}; try --svg DIR"),
        None => None,
    };
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

    let waves = [
        ("backoff without jitter", Jitter::None, false),
        ("full jitter", Jitter::Full, false),
        ("full jitter and a budget", Jitter::Full, true),
    ]
    .map(|(name, jitter, budget)| (name, wave(jitter, budget)));
    for (name, wave) in &waves {
        let wave = wave.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        // The first bucket holds every first attempt; the wave is after it.
        let peak = wave.iter().skip(1).max().copied().unwrap_or(0);
        let calls: u32 = wave.iter().sum();
        println!(
            "the wave, {name}: {calls} calls, at most {peak} in one {BUCKET_MS} ms"
        );
        // The lesson's schedule (the same pause for everyone) brings every
        // client back in the same instant; jitter must spread them.
        if *name == "backoff without jitter" {
            anyhow::ensure!(peak == CLIENTS, "no synchronized wave: {peak}");
        } else {
            anyhow::ensure!(peak < CLIENTS / 4, "{name}: {peak} at once");
        }
    }
    if let Some(dir) = svg_dir {
        std::fs::create_dir_all(&dir)?;
        let mut series = Vec::new();
        for (name, wave) in waves {
            series.push((name, wave?));
        }
        plot_waves(&dir.join("retry-wave.svg"), &series)?;
        println!("wrote the plot to {}", dir.display());
    }
    Ok(())
}

/// How a retry's pause is drawn from its cap.
#[derive(Clone, Copy)]
enum Jitter {
    /// Always the cap: 100, 200, 400 ms, the same for every client.
    None,
    /// Anywhere from zero to the cap, as `Retry` does.
    Full,
}

const CLIENTS: u32 = 1_000;
const BUCKET_MS: u64 = 10;
const SPAN_MS: u64 = 1_000;
/// The dependency answers again from this moment.
const DOWN_UNTIL_MS: u64 = 600;

/// The retry wave in virtual time: `CLIENTS` requests at t = 0 against a
/// dependency that fails every call until `DOWN_UNTIL_MS`; up to 4
/// attempts each, with `Retry`'s caps (100 ms doubling to 1 s) and, if
/// `budgeted`, the example's `RetryBudget` on a manual clock. Calls per
/// `BUCKET_MS` over the first `SPAN_MS`. The draws are seeded, so every run
/// gives the same wave.
// ANCHOR: wave
fn wave(jitter: Jitter, budgeted: bool) -> anyhow::Result<Vec<u32>> {
    let caps = Retry::new(4, Duration::from_millis(100), Duration::from_secs(1));
    let clock = ManualClock::new();
    let budget =
        RetryBudget::with_clock(0.1, 1, Duration::from_secs(10), clock.clone())?;
    let mut draws = rand::rngs::StdRng::seed_from_u64(7);
    let mut calls = vec![0u32; (SPAN_MS / BUCKET_MS) as usize];
    // (when, in µs; the attempt it is), earliest first.
    let mut due: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
    for _ in 0..CLIENTS {
        budget.deposit();
        due.push(Reverse((0, 1)));
    }
    while let Some(Reverse((at, attempt))) = due.pop() {
        clock.advance(Duration::from_micros(at).saturating_sub(clock.now()));
        if let Some(bucket) = calls.get_mut((at / 1000 / BUCKET_MS) as usize) {
            *bucket += 1;
        }
        let failed = at < DOWN_UNTIL_MS * 1000;
        if !failed || attempt == 4 || (budgeted && !budget.try_withdraw()) {
            continue;
        }
        let cap = caps.delay_cap(attempt).as_micros() as u64;
        let pause = match jitter {
            Jitter::None => cap,
            Jitter::Full => draws.random_range(0..=cap),
        };
        due.push(Reverse((at + pause, attempt + 1)));
    }
    Ok(calls)
}
// ANCHOR_END: wave

/// One line per policy: calls per bucket over time.
fn plot_waves(path: &Path, waves: &[(&str, Vec<u32>)]) -> anyhow::Result<()> {
    let top = waves
        .iter()
        .flat_map(|(_, wave)| wave.iter().skip(1).copied())
        .max()
        .unwrap_or(1);
    let colors = [
        RGBColor(200, 30, 30),
        RGBColor(30, 60, 200),
        RGBColor(0, 120, 40),
    ];
    let root = SVGBackend::new(path, (720, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("retries per {BUCKET_MS} ms after {CLIENTS} requests fail at once"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..SPAN_MS as f64, 0.0..f64::from(top) * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("time (ms); the dependency is back at 600 ms")
        .y_desc("calls")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    for ((name, wave), color) in waves.iter().zip(colors.iter()) {
        chart
            .draw_series(LineSeries::new(
                // The first bucket holds the 1,000 first attempts of every
                // policy alike; the plot starts after it, at the retries.
                wave.iter().enumerate().skip(1).map(|(i, calls)| {
                    ((i as u64 * BUCKET_MS) as f64, f64::from(*calls))
                }),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    // Between the spikes at 300 and 700 ms, where no line is high.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperMiddle)
        .label_font(("sans-serif", 14))
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
