//! Locks and limits on Redis.
//!
//! Start with [`RedisConfig`]: it reads `REDIS_URL` and connects to one
//! server, or through Redis Sentinel to the primary (`redis+sentinel://`),
//! with a [`RedisConnection`] that reconnects by itself after a restart and
//! follows a failover. Then:
//!
//! | primitive | what it gives |
//! |---|---|
//! | [`RedisLock`] | a lock on one server: token-checked release, pub/sub waiting, watchdog, fencing token |
//! | [`FencedStore`] | a value that refuses writes with stale fencing tokens |
//! | [`Redlock`] | a lock held by a majority of independent servers |
//! | [`RedisSemaphore`] | at most N holders at once, each permit an id with a lease (Redisson's expirable permits) |
//! | [`RedisRateLimiter`] | GCRA shared by many processes, as a `cpr_resilience::RateLimiter`: at most `burst + rate × t` in any span `t` |
//! | [`RedisWindowLimiter`] | a sliding log shared by many processes: at most `limit` in any window (Redisson's `RRateLimiter`) |

mod config;
mod connection;
mod error;
mod fenced_store;
mod lock;
mod rate_limit;
mod redlock;
mod scripts;
mod semaphore;
mod waiting;
mod window_limiter;

pub use config::{DEFAULT_URL, RedisConfig};
pub use connection::RedisConnection;
pub use error::RedisError;
pub use fenced_store::FencedStore;
pub use lock::{DEFAULT_TTL, RedisLock, RedisLockGuard};
pub use rate_limit::RedisRateLimiter;
pub use redlock::{Redlock, RedlockGuard};
pub use semaphore::{MAX_REDIS_PERMITS, RedisPermit, RedisSemaphore};
pub use window_limiter::{MAX_WINDOW_LOG_LIMIT, RedisWindowLimiter};

/// The Redis client these primitives use, re-exported.
pub use redis;
