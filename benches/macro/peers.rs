//! The Rust peers, measured in the same shapes as ours and printed under the
//! same bench names with a `"peer"` field, so that `cargo xtask bench
//! --against` can pair them line by line:
//!
//! - `rslock` (Redlock on one Redis) for `redis.lock.cycle` and
//!   `redis.lock.handoff`;
//! - `failsafe`'s circuit breaker for `resilience.breaker.closed_call`;
//! - one clock read plus one atomic increment, the least a breaker that
//!   counts calls in time windows could do, for the same bench.
//!
//! The Go peer (etcd's recipes) is a program of its own:
//! `benches/peers/go-recipes/`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use concurrency_patterns::resilience::{Clock as _, SystemClock};

use crate::Servers;
use crate::report::Samples;
use crate::resilience::{CHECKS, ROUNDS, fastest};

/// The same sizes as `redis_lock.rs`.
const CYCLES: usize = 2000;
const HANDOFFS: usize = 400;
const CONTENDERS: usize = 4;
const TTL: Duration = Duration::from_secs(10);

fn peer_line(samples: &Samples, bench: &str, peer: &str) -> String {
    let line = samples.line(bench, &[]);
    line.replacen('{', &format!("{{\"peer\":\"{peer}\","), 1)
}

/// `redis.lock.cycle` with rslock: acquire (one `SET NX PX`) + release (one
/// script), uncontended.
pub async fn rslock_cycle(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis()?;
    let manager = rslock::LockManager::from_clients(vec![config.client()?]);
    let cycle = async || -> anyhow::Result<()> {
        let lock = manager
            .lock("bench-rslock-cycle", TTL)
            .await
            .map_err(|e| anyhow::anyhow!("rslock: {e:?}"))?;
        manager.unlock(&lock).await;
        Ok(())
    };
    for _ in 0..100 {
        cycle().await?;
    }
    let mut latencies = Vec::with_capacity(CYCLES);
    let started = Instant::now();
    for _ in 0..CYCLES {
        let t = Instant::now();
        cycle().await?;
        latencies.push(t.elapsed());
    }
    let samples = Samples::new(latencies, started.elapsed());
    Ok(peer_line(&samples, "redis.lock.cycle", "rslock"))
}

/// `redis.lock.handoff` with rslock: 4 contenders loop acquire/release
/// (`acquire` retries with rslock's default delay until it gets the lock);
/// the latency is from one holder's release to the next acquisition.
pub async fn rslock_handoff(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis()?;
    let manager = rslock::LockManager::from_clients(vec![config.client()?]);
    let last_release = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let started = Instant::now();
    let per_contender = HANDOFFS / CONTENDERS;
    let mut tasks = Vec::new();
    for _ in 0..CONTENDERS {
        let (manager, last_release) =
            (manager.clone(), std::sync::Arc::clone(&last_release));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_contender);
            for _ in 0..per_contender {
                let lock = manager
                    .acquire_no_guard("bench-rslock-handoff", TTL)
                    .await
                    .map_err(|e| anyhow::anyhow!("rslock: {e:?}"))?;
                let acquired = Instant::now();
                let released = last_release
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .take();
                if let Some(released) = released {
                    latencies.push(acquired - released);
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
                *last_release
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))? = Some(Instant::now());
                manager.unlock(&lock).await;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let samples = Samples::new(latencies, started.elapsed());
    Ok(peer_line(&samples, "redis.lock.handoff", "rslock"))
}

#[derive(Debug)]
struct Never;

/// `resilience.breaker.closed_call` through failsafe's breaker (its default
/// policy: consecutive failures with a backoff), measured as ours is: the
/// call through the breaker minus the bare call.
pub fn failsafe_closed_call() -> String {
    use failsafe::CircuitBreaker as _;
    let breaker = failsafe::Config::new().build();
    let mut x = 0u64;
    let bare = fastest(|| {
        x = black_box(x.wrapping_add(1));
        Ok::<_, Never>(x).is_ok()
    });
    let through = fastest(|| {
        breaker
            .call(|| {
                x = black_box(x.wrapping_add(1));
                Ok::<_, Never>(x)
            })
            .is_ok()
    });
    overhead_line("failsafe", bare, through)
}

/// `resilience.breaker.closed_call`'s floor: one monotonic clock read and
/// one atomic increment beside the bare call (our breaker's clock, as it
/// reads it): what a breaker that counts calls in time windows must at
/// least do.
pub fn clock_and_atomic() -> String {
    let clock = SystemClock::default();
    let counter = AtomicU64::new(0);
    let mut x = 0u64;
    let bare = fastest(|| {
        x = black_box(x.wrapping_add(1));
        Ok::<_, Never>(x).is_ok()
    });
    let through = fastest(|| {
        let now = clock.now_nanos();
        x = black_box(x.wrapping_add(1));
        counter.fetch_add(black_box(now) & 1, Ordering::Relaxed);
        Ok::<_, Never>(x).is_ok()
    });
    overhead_line("clock+atomic", bare, through)
}

fn overhead_line(peer: &str, bare: Duration, through: Duration) -> String {
    format!(
        "{{\"bench\":\"resilience.breaker.closed_call\",\"peer\":\"{peer}\",\"ns_per_op\":{:.1},\"call_ns\":{:.1},\"bare_ns\":{:.1},\"rounds\":{ROUNDS},\"n\":{CHECKS}}}",
        through.saturating_sub(bare).as_nanos() as f64 / CHECKS as f64,
        through.as_nanos() as f64 / CHECKS as f64,
        bare.as_nanos() as f64 / CHECKS as f64,
    )
}
