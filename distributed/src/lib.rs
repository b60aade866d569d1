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
//!
//! Features: `etcd` and `redis`, both on by default; with `redis` alone,
//! nothing of etcd's client is built (no `protoc` needed).
//!
//! A whole program: one leader among all the processes that run it.
//!
//! ```no_run
//! use cpr_distributed::etcd::{Election, EtcdConfig, Session, DEFAULT_TTL};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), cpr_distributed::etcd::EtcdError> {
//!     let client = EtcdConfig::from_env()?.connect().await?;
//!     let session = Session::new(client, DEFAULT_TTL).await?;
//!     let election = Election::new(&session, "report-writer")?;
//!     let leadership = election.campaign(std::process::id().to_string()).await?;
//!     println!("leading with token {}", leadership.fencing_token());
//!     leadership.resign().await?;
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

/// The README's code, compiled (and run, where it needs no server) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
