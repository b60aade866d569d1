//! Throttled fan-out: at most K jobs in flight, results streamed as they
//! finish.
//!
//! Go's version starts 5 workers that read 100 numbers from one channel and
//! write squares to another. The limit K is the point: a downstream service,
//! a connection pool or the CPU can take only so much at once.
//!
//! - [`WorkerPool`]: K long-lived threads behind a bounded queue. `submit`
//!   blocks when the queue is full, so the producer is throttled too.
//! - [`tasks`]: the two tokio idioms side by side — a [`Semaphore`] with K
//!   permits taken *before* spawning (so at most K tasks exist, not just run),
//!   and `buffer_unordered(K)` on a stream (no tasks at all: K futures polled
//!   by one task).
//!
//! [`Semaphore`]: tokio::sync::Semaphore

pub mod tasks;
mod worker_pool;

pub use worker_pool::{PoolError, WorkerPool};
