//! Benchmarks of the Redis lock and semaphore, and the two loops they and
//! the rslock peer (`peers.rs`) share, so that both sides are timed alike.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concurrency_patterns::distributed::redis::{
    RedisLock, RedisLockGuard, RedisSemaphore,
};

use crate::Servers;
use crate::report::Samples;

/// Acquire+release cycles, as the rslock peer does.
const CYCLES: usize = 2000;
/// Hand-overs measured with 4 contenders.
const HANDOFFS: usize = 400;
pub const CONTENDERS: usize = 4;

/// 100 cycles to warm up, then [`CYCLES`] timed one after another.
pub async fn timed_cycles(
    mut cycle: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Samples> {
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
    Ok(Samples::new(latencies, started.elapsed()))
}

/// [`CONTENDERS`] tasks loop `acquire` / `release` on one lock, holding it
/// 200 µs so that the others are really waiting; each records the time
/// from the previous holder's release to its own acquisition (one clock,
/// one process, so the difference is meaningful).
pub async fn timed_handoffs<G, Acquire, Acquired, Release, Released>(
    acquire: Acquire,
    release: Release,
) -> anyhow::Result<Samples>
where
    G: Send + 'static,
    Acquire: Fn() -> Acquired + Clone + Send + 'static,
    Acquired: Future<Output = anyhow::Result<G>> + Send,
    Release: Fn(G) -> Released + Clone + Send + 'static,
    Released: Future<Output = anyhow::Result<()>> + Send,
{
    let last_release = Arc::new(Mutex::new(None::<Instant>));
    let started = Instant::now();
    let per_contender = HANDOFFS / CONTENDERS;
    let mut tasks = Vec::new();
    for _ in 0..CONTENDERS {
        let (acquire, release) = (acquire.clone(), release.clone());
        let last_release = Arc::clone(&last_release);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_contender);
            for _ in 0..per_contender {
                let held = acquire().await?;
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
                release(held).await?;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Samples::new(latencies, started.elapsed()))
}

/// One lock cycle: two scripts, two round trips.
async fn lock_cycle(lock: &RedisLock) -> anyhow::Result<()> {
    lock.lock().await?.unlock().await?;
    Ok(())
}

/// `redis.lock.cycle`: uncontended acquire+release.
pub async fn cycle(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis()?;
    let lock = RedisLock::connect(&config, "bench-lock-cycle").await?;
    let samples = timed_cycles(async || lock_cycle(&lock).await).await?;
    Ok(samples.line("redis.lock.cycle", &[]))
}

/// `redis.lock.cycle.cluster`: `redis.lock.cycle` on a Redis Cluster,
/// through the `redis` crate's cluster client (the lock named with a hash
/// tag, so that its keys share a slot).
pub async fn cluster_cycle(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis_cluster()?;
    let lock =
        RedisLock::with_connection(config.connect().await?, "{bench-lock-cycle}")?;
    let samples = timed_cycles(async || lock_cycle(&lock).await).await?;
    Ok(samples.line("redis.lock.cycle.cluster", &[]))
}

/// `redis.semaphore.cycle`: uncontended acquire+release of one of three
/// permits: two scripts, two round trips, as the lock.
pub async fn semaphore_cycle(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis()?;
    let semaphore =
        RedisSemaphore::connect(&config, "bench-semaphore-cycle", 3).await?;
    let samples = timed_cycles(async || {
        semaphore.acquire().await?.release().await?;
        Ok(())
    })
    .await?;
    Ok(samples.line("redis.semaphore.cycle", &[]))
}

/// `redis.lock.handoff`: waiters are woken by the release message.
pub async fn handoff(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis()?;
    let lock = RedisLock::connect(&config, "bench-lock-handoff").await?;
    let samples = timed_handoffs(
        move || {
            let lock = lock.clone();
            async move { Ok(lock.lock().await?) }
        },
        |guard: RedisLockGuard| async move {
            guard.unlock().await?;
            Ok(())
        },
    )
    .await?;
    Ok(samples.line("redis.lock.handoff", &[("contenders", CONTENDERS as f64)]))
}
