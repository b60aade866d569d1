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
use std::time::Duration;

use concurrency_patterns::resilience::{Clock as _, SystemClock};

use crate::Servers;
use crate::redis_lock::{timed_cycles, timed_handoffs};
use crate::report::Samples;
use crate::resilience::{closed_call_line, trivial_call};

/// The lease rslock's locks take.
const TTL: Duration = Duration::from_secs(10);

fn peer_line(samples: &Samples, bench: &str, peer: &str) -> String {
    let line = samples.line(bench, &[]);
    line.replacen('{', &format!("{{\"peer\":\"{peer}\","), 1)
}

/// `redis.lock.cycle` with rslock: acquire (one `SET NX PX`) + release (one
/// script), uncontended, in the same loop as ours.
pub async fn rslock_cycle(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis()?;
    let manager = rslock::LockManager::from_clients(vec![config.client()?]);
    let samples = timed_cycles(async || {
        let lock = manager
            .lock("bench-rslock-cycle", TTL)
            .await
            .map_err(|e| anyhow::anyhow!("rslock: {e:?}"))?;
        manager.unlock(&lock).await;
        Ok(())
    })
    .await?;
    Ok(peer_line(&samples, "redis.lock.cycle", "rslock"))
}

/// `redis.lock.handoff` with rslock, in the same loop as ours: `acquire`
/// retries with rslock's default delay until it gets the lock.
pub async fn rslock_handoff(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis()?;
    let manager = rslock::LockManager::from_clients(vec![config.client()?]);
    let releasing = manager.clone();
    let samples = timed_handoffs(
        move || {
            let manager = manager.clone();
            async move {
                manager
                    .acquire_no_guard("bench-rslock-handoff", TTL)
                    .await
                    .map_err(|e| anyhow::anyhow!("rslock: {e:?}"))
            }
        },
        move |lock: rslock::Lock| {
            let manager = releasing.clone();
            async move {
                manager.unlock(&lock).await;
                Ok(())
            }
        },
    )
    .await?;
    Ok(peer_line(&samples, "redis.lock.handoff", "rslock"))
}

/// `resilience.breaker.closed_call` through failsafe's breaker (its default
/// policy: consecutive failures with a backoff), measured as ours is: the
/// call through the breaker minus the bare call.
pub fn failsafe_closed_call() -> String {
    use failsafe::CircuitBreaker as _;
    let breaker = failsafe::Config::new().build();
    closed_call_line(Some("failsafe"), |x| {
        breaker.call(|| trivial_call(x)).is_ok()
    })
}

/// `resilience.breaker.closed_call`'s floor: one monotonic clock read and
/// one atomic increment beside the bare call (our breaker's clock, as it
/// reads it): what a breaker that counts calls in time windows must at
/// least do.
pub fn clock_and_atomic() -> String {
    let clock = SystemClock::default();
    let counter = AtomicU64::new(0);
    closed_call_line(Some("clock+atomic"), |x| {
        let now = clock.now_nanos();
        counter.fetch_add(black_box(now) & 1, Ordering::Relaxed);
        trivial_call(x).is_ok()
    })
}
