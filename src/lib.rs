//! Concurrency patterns in Rust, from threads to clusters.
//!
//! This crate re-exports the three library crates, under short names, so
//! that the examples and end-to-end tests of the book can use one
//! dependency:
//!
//! - [`patterns`]: in-process patterns (pipelines, worker pools, memory
//!   ordering, a concurrent map);
//! - [`distributed`]: coordination on real etcd and Redis;
//! - [`resilience`]: rate limiters, adaptive limits, circuit breaking, retries.
#![warn(missing_docs)]

pub use cpr_distributed as distributed;
pub use cpr_patterns as patterns;
pub use cpr_resilience as resilience;
