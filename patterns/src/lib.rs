//! In-process concurrency patterns: fan-out/fan-in pipelines, throttled
//! worker pools, memory ordering with Release/Acquire, and a concurrent map.
//!
//! The chapters of the book that go with each module are listed in the
//! repository's README.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
