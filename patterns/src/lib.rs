//! In-process concurrency patterns: fan-out/fan-in pipelines, throttled
//! worker pools, memory ordering with Release/Acquire, and a concurrent map.
//!
//! | module | pattern | example |
//! |---|---|---|
//! | [`pipeline`] | fan-out / fan-in on threads and on tokio tasks | `fan-out-fan-in` |
//! | [`pool`] | throttled fan-out: at most K jobs in flight | `throttled-fan-out` |
//! | [`publish`] | publishing data between threads; Release/Acquire proven with loom | `memory-ordering` |
//! | [`map`] | Go's `sync.Map` API over dashmap | `concurrent-map` |
//!
//! A whole program: squares computed by three tasks, delivered in order.
//!
//! ```
//! use cpr_patterns::pipeline::{Options, Order, tasks};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let options = Options::default().workers(3).order(Order::Preserved);
//!     let mut squares = tasks::run(options, 1..=5u64, |n| async move {
//!         Ok::<_, std::convert::Infallible>(n * n)
//!     })?;
//!     while let Some(square) = squares.next().await {
//!         println!("{}", square?);
//!     }
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod map;
pub mod pipeline;
pub mod pool;
pub mod publish;
mod sync;

/// The README's code, compiled (and run, where it needs no server) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
