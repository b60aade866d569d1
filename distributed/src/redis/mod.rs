//! Locks and limits on Redis.
//!
//! Start with [`RedisConfig`]: it reads `REDIS_URL` and connects through a
//! [`ConnectionManager`](redis::aio::ConnectionManager), which reconnects by
//! itself after a server restart.

mod config;
mod error;

pub use config::{DEFAULT_URL, RedisConfig};
pub use error::RedisError;
