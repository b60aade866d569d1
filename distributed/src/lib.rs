//! Coordination on real etcd and Redis.
//!
//! - [`etcd`]: connecting with clear errors; the recipes (sessions, locks,
//!   elections, queues, barriers, transactions) build on it.
//! - [`redis`]: connecting with clear errors; locks with fencing tokens,
//!   Redlock and a distributed rate limiter build on it.
//!
//! Every network call has a bounded time and every error says what to do.
//! Configuration for examples comes from the environment: `ETCD_ENDPOINTS`
//! (comma-separated), `ETCD_USER` / `ETCD_PASSWORD`, and `REDIS_URL`.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod etcd;
pub mod redis;
