//! In-process concurrency patterns: fan-out/fan-in pipelines, throttled
//! worker pools, memory ordering with Release/Acquire, and a concurrent map.
//!
//! | module | pattern | example |
//! |---|---|---|
//! | [`pipeline`] | fan-out / fan-in on threads and on tokio tasks | `fan-out-fan-in` |
//! | [`pool`] | throttled fan-out: at most K jobs in flight | `throttled-fan-out` |
//! | [`publish`] | publishing data between threads; Release/Acquire proven with loom | `memory-ordering` |
//! | [`map`] | Go's `sync.Map` API over dashmap | `concurrent-map` |
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod map;
pub mod pipeline;
pub mod pool;
pub mod publish;
mod sync;
