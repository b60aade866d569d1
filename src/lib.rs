//! Concurrency patterns in Rust, from threads to clusters.
//!
//! This crate re-exports the three library crates so that the examples and
//! end-to-end tests of the book can use one dependency:
//!
//! - [`patterns`]: in-process patterns (pipelines, worker pools, memory
//!   ordering, a concurrent map);
//! - [`distributed`]: coordination on real etcd and Redis;
//! - [`resilience`]: rate limiters, adaptive limits, circuit breaking, retries.
#![warn(missing_docs)]

pub use distributed;
pub use patterns;
pub use resilience;
