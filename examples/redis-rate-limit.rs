//! Rate limiters shared by every process that uses the same key: GCRA in
//! one Lua script on Redis (`RedisRateLimiter`), then a window log that
//! never grants more than a limit in any window (`RedisWindowLimiter`).
//!
//!     cargo run --example redis-rate-limit -- --scripted
//!     cargo run --example redis-rate-limit -- --hammer-seconds 2 --rate 100   # in several terminals at once
//!
//! In `--hammer-seconds` mode it asks for permits as fast as it can and
//! prints how many it got; run it from several terminals and the sum stays
//! within `rate x seconds + burst`. Needs Redis.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use concurrency_patterns::distributed::redis::{RedisRateLimiter, RedisWindowLimiter};
use concurrency_patterns::resilience::{Decision, RateLimiter};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    redis: common::RedisFlags,
    /// The limiter's key.
    #[arg(long, default_value = "demo-rate-limit")]
    name: String,
    /// Permits per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Permits that may be taken at once.
    #[arg(long, default_value_t = 5)]
    burst: u32,
    /// Ask as fast as possible for this many seconds, then print the count.
    #[arg(long)]
    hammer_seconds: Option<f64>,
    /// Run the scripted demonstration.
    #[arg(long)]
    scripted: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (_, conn) = args.redis.connect().await?;
    if let Some(seconds) = args.hammer_seconds {
        let limiter = RedisRateLimiter::new(conn, &args.name, args.rate, args.burst)?;
        let (mut allowed, mut denied) = (0u64, 0u64);
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        while Instant::now() < until {
            match limiter.try_acquire().await? {
                Decision::Allowed => allowed += 1,
                Decision::Denied { .. } => denied += 1,
            }
        }
        println!("allowed {allowed} denied {denied}");
        return Ok(());
    }
    // ANCHOR: limiter
    let name = format!("{}-{}", args.name, std::process::id());
    let limiter = RedisRateLimiter::new(conn.clone(), &name, args.rate, args.burst)?;
    let started = Instant::now();
    let mut granted = Vec::new();
    while granted.len() < 10 {
        // Waits exactly as long as the server says the next permit needs.
        limiter.acquire().await?;
        granted.push(started.elapsed());
    }
    // ANCHOR_END: limiter
    for (i, at) in granted.iter().enumerate() {
        println!(
            "permit {:>2} at {:>6.1} ms",
            i + 1,
            at.as_secs_f64() * 1000.0
        );
    }
    // The burst comes at once, then one permit per 1/rate seconds.
    let expected =
        Duration::from_secs_f64((10 - args.burst.min(10)) as f64 / args.rate);
    let took = granted.last().copied().unwrap_or_default();
    anyhow::ensure!(
        took + Duration::from_millis(50) >= expected,
        "too fast: {took:?} for {expected:?}"
    );
    window_log(conn, &format!("{name}-window")).await
}

/// At most 5 permits in any 300 ms: five at once, then a refusal that says
/// how long until the oldest grant leaves the window, then one more.
async fn window_log(
    conn: concurrency_patterns::distributed::redis::RedisConnection,
    name: &str,
) -> anyhow::Result<()> {
    let window = Duration::from_millis(300);
    let limiter = RedisWindowLimiter::new(conn, name, 5, window)?;
    let started = Instant::now();
    let mut granted = 0;
    let retry_after = loop {
        match limiter.try_acquire().await? {
            Decision::Allowed => granted += 1,
            Decision::Denied { retry_after } => break retry_after,
        }
    };
    println!("window log: {granted} permits at once, then wait {retry_after:?}");
    anyhow::ensure!(granted == 5, "the window granted {granted}, not 5");
    anyhow::ensure!(retry_after <= window, "told to wait {retry_after:?}");
    tokio::time::sleep(retry_after).await;
    anyhow::ensure!(
        limiter.try_acquire().await?.is_allowed(),
        "no permit once the oldest left the window"
    );
    println!(
        "window log: the 6th permit {:.0} ms after the first",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
