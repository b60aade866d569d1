//! In-process concurrency patterns: fan-out/fan-in pipelines, throttled
//! worker pools, memory ordering with Release/Acquire, and a concurrent map.
//!
//! | module | pattern | example |
//! |---|---|---|
//! | [`publish`] | publishing data between threads; Release/Acquire proven with loom | `memory-ordering` |
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod map;
pub mod pipeline;
pub mod publish;
mod sync;
