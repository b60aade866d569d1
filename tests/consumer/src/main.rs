//! Uses one thing from each library, as a service depending on them would.
//! Built, not run: the point is that it compiles outside the workspace.

use std::time::Duration;

use cpr_distributed::redis::{RedisConfig, RedisLock};
use cpr_resilience::{RateLimiter, SlidingWindow};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limiter = SlidingWindow::new(10, Duration::from_secs(1))?;
    println!("allowed: {}", limiter.try_acquire().await?.is_allowed());

    let squares = cpr_patterns::pipeline::threads::run(
        cpr_patterns::pipeline::Options::default(),
        1..=3u64,
        |n| Ok::<_, std::convert::Infallible>(n * n),
    )?;
    println!("squares: {:?}", squares.collect::<Vec<_>>());

    let config = RedisConfig::from_env()?;
    let lock = RedisLock::connect(&config, "consumer-lock").await?;
    let guard = lock.lock().await?;
    guard.unlock().await?;

    #[cfg(feature = "etcd")]
    {
        let client = cpr_distributed::etcd::EtcdConfig::from_env()?.connect().await?;
        let session = cpr_distributed::etcd::Session::new(client, Duration::from_secs(10)).await?;
        session.close().await?;
    }
    Ok(())
}
