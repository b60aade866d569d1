//! One server per test binary, shared by its tests.
//!
//! Starting etcd takes about a second; a test binary with twenty tests should
//! pay that once. Each test then uses its own key prefix. A `static` is never
//! dropped, so these servers are stopped by `PR_SET_PDEATHSIG` when the test
//! process exits (see the crate docs).

use std::sync::OnceLock;

use crate::{EtcdCluster, RedisServer, TestkitError};

static ETCD: OnceLock<Result<EtcdCluster, String>> = OnceLock::new();
static REDIS: OnceLock<Result<RedisServer, String>> = OnceLock::new();

/// A single-member etcd shared by every test of this process.
///
/// An error is kept as text and returned to every caller, so all tests fail
/// with the same clear message instead of retrying.
pub fn shared_etcd() -> Result<&'static EtcdCluster, TestkitError> {
    ETCD.get_or_init(|| EtcdCluster::start(1).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|message| {
            TestkitError::io(
                "starting the shared etcd",
                std::io::Error::other(message.clone()),
            )
        })
}

/// A `redis-server` shared by every test of this process.
pub fn shared_redis() -> Result<&'static RedisServer, TestkitError> {
    REDIS
        .get_or_init(|| RedisServer::start().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|message| {
            TestkitError::io(
                "starting the shared redis",
                std::io::Error::other(message.clone()),
            )
        })
}
