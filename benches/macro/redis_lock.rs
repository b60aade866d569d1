//! Benchmarks of the Redis lock and semaphore.

use std::time::{Duration, Instant};

use concurrency_patterns::distributed::redis::{RedisLock, RedisSemaphore};

use crate::Servers;
use crate::report::Samples;

/// Acquire+release cycles, as the rslock peer does.
const CYCLES: usize = 2000;
/// Hand-overs measured with 4 contenders.
const HANDOFFS: usize = 400;
const CONTENDERS: usize = 4;

/// `redis.lock.cycle`: uncontended acquire+release: two scripts, two round trips.
pub async fn cycle(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis()?;
    let lock = RedisLock::connect(&config, "bench-lock-cycle").await?;
    for _ in 0..100 {
        lock.lock().await?.unlock().await?;
    }
    let mut latencies = Vec::with_capacity(CYCLES);
    let started = Instant::now();
    for _ in 0..CYCLES {
        let t = Instant::now();
        lock.lock().await?.unlock().await?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    Ok(Samples::new(latencies, elapsed).line("redis.lock.cycle", &[]))
}

/// `redis.lock.cycle.cluster`: `redis.lock.cycle` on a Redis Cluster,
/// through the `redis` crate's cluster client (the lock named with a hash
/// tag, so that its keys share a slot).
pub async fn cluster_cycle(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis_cluster()?;
    let lock =
        RedisLock::with_connection(config.connect().await?, "{bench-lock-cycle}")?;
    for _ in 0..100 {
        lock.lock().await?.unlock().await?;
    }
    let mut latencies = Vec::with_capacity(CYCLES);
    let started = Instant::now();
    for _ in 0..CYCLES {
        let t = Instant::now();
        lock.lock().await?.unlock().await?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    Ok(Samples::new(latencies, elapsed).line("redis.lock.cycle.cluster", &[]))
}

/// `redis.semaphore.cycle`: uncontended acquire+release of one of three
/// permits: two scripts, two round trips, as the lock.
pub async fn semaphore_cycle(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis()?;
    let semaphore =
        RedisSemaphore::connect(&config, "bench-semaphore-cycle", 3).await?;
    for _ in 0..100 {
        semaphore.acquire().await?.release().await?;
    }
    let mut latencies = Vec::with_capacity(CYCLES);
    let started = Instant::now();
    for _ in 0..CYCLES {
        let t = Instant::now();
        semaphore.acquire().await?.release().await?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    Ok(Samples::new(latencies, elapsed).line("redis.semaphore.cycle", &[]))
}

/// `redis.lock.handoff`: 4 contenders loop lock/unlock on one lock; each
/// records the time from the previous holder's release to its own
/// acquisition (one clock, one process, so the difference is meaningful).
pub async fn handoff(servers: &mut Servers) -> anyhow::Result<String> {
    let config = servers.redis()?;
    let lock = RedisLock::connect(&config, "bench-lock-handoff").await?;
    let last_release = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let started = Instant::now();
    let per_contender = HANDOFFS / CONTENDERS;
    let mut tasks = Vec::new();
    for _ in 0..CONTENDERS {
        let (lock, last_release) = (lock.clone(), std::sync::Arc::clone(&last_release));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_contender);
            for _ in 0..per_contender {
                let guard = lock.lock().await?;
                let acquired = Instant::now();
                let released = last_release
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .take();
                if let Some(released) = released {
                    latencies.push(acquired - released);
                }
                // Hold it briefly, so that the others are really waiting.
                tokio::time::sleep(Duration::from_micros(200)).await;
                *last_release
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))? = Some(Instant::now());
                guard.unlock().await?;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    Ok(Samples::new(latencies, elapsed)
        .line("redis.lock.handoff", &[("contenders", CONTENDERS as f64)]))
}
