//! Real servers for tests, benches and examples: `etcd` (one or three members)
//! and `redis-server`, each on free `127.0.0.1` ports with its own temporary
//! data directory.
//!
//! Why real servers and not mocks: the bugs worth catching in distributed
//! code live in the server's semantics (revisions, leases, watches, Lua
//! atomicity, what happens when a member dies). A mock agrees with whatever
//! the author believed.
//!
//! Guarantees:
//! - Every child is killed when its handle is dropped, including while a
//!   panicking test unwinds.
//! - Every child is also started with `PR_SET_PDEATHSIG = SIGKILL` from a
//!   helper thread that lives as long as the process, so even a test binary
//!   that aborts, or a server kept in a `static`, leaves no server behind.
//! - Data directories go with their servers: on drop, and for the shared
//!   servers of [`shared_etcd`] / [`shared_redis`] when the process exits.
//! - A missing binary is an error that names the Debian package to install.
//! - Starting waits until the server answers, within a bounded time, and
//!   fails with the tail of the server's log otherwise.
//!
//! ```no_run
//! # fn main() -> Result<(), testkit::TestkitError> {
//! let etcd = testkit::EtcdCluster::start(3)?;
//! println!("endpoints: {}", etcd.endpoints_env());
//! etcd.kill(etcd.leader()?)?; // the cluster keeps a quorum of two
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod binaries;
mod certs;
mod cluster;
mod error;
mod etcd;
pub mod history;
mod ports;
mod probe;
mod process;
mod proxy;
mod redis;
mod sentinel;
mod shared;

pub use binaries::{Binary, find_binary};
pub use certs::{Certificates, make_certificates};
pub use cluster::RedisCluster;
pub use error::TestkitError;
pub use etcd::{EtcdBuilder, EtcdCluster};
pub use ports::free_port;
pub use probe::{etcd_grpc_calls, etcd_grpc_calls_of, etcd_is_healthy, redis_answers};
pub use proxy::TcpProxy;
pub use redis::{RedisBuilder, RedisServer};
pub use sentinel::{DOWN_AFTER, RedisSentinels, SENTINEL_SERVICE};
pub use shared::{shared_etcd, shared_redis};

/// The prefix of every temporary directory testkit creates. `cargo xtask test`
/// looks for processes whose command line contains it to prove that no server
/// outlived the tests.
pub const TEMP_PREFIX: &str = "cpr-testkit-";

/// The environment variable that names one test run; `cargo xtask test` sets
/// it, so that its check for leftover servers and directories looks only at
/// its own (another run on the same machine may be going on).
pub const RUN_VAR: &str = "TESTKIT_RUN";

/// The prefix of this process's temporary directories: [`TEMP_PREFIX`],
/// then the run's name from [`RUN_VAR`] if set.
pub fn temp_prefix() -> String {
    match std::env::var(RUN_VAR) {
        Ok(run) if !run.is_empty() => format!("{TEMP_PREFIX}{run}-"),
        _ => TEMP_PREFIX.to_string(),
    }
}
