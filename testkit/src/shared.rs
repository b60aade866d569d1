//! One server per test binary, shared by its tests.
//!
//! Starting etcd takes about a second; a test binary with twenty tests should
//! pay that once. Each test then uses its own key prefix. A `static` is never
//! dropped, so its temporary directory would outlive the process (etcd
//! preallocates 64 MB of log); a handler registered with `atexit` kills these
//! servers and deletes their directories when the test process exits, and
//! `PR_SET_PDEATHSIG` remains the backstop for a process that dies without
//! running it (see the crate docs).

use std::sync::{Once, OnceLock};

use crate::{EtcdCluster, RedisServer, TestkitError};

static ETCD: OnceLock<Result<EtcdCluster, String>> = OnceLock::new();
static REDIS: OnceLock<Result<RedisServer, String>> = OnceLock::new();
static CLEAN_UP_AT_EXIT: Once = Once::new();

/// Registers [`clean_up`] to run when the process exits (once).
fn clean_up_at_exit() {
    CLEAN_UP_AT_EXIT.call_once(|| {
        // Safety: `clean_up` is a plain function that neither unwinds nor
        // relies on anything torn down before `atexit` handlers run (Rust
        // statics are never destroyed).
        unsafe {
            libc::atexit(clean_up);
        }
    });
}

extern "C" fn clean_up() {
    // A panic must not unwind out of an `extern "C"` function.
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(etcd)) = ETCD.get() {
            etcd.clean_up_at_exit();
        }
        if let Some(Ok(redis)) = REDIS.get() {
            redis.clean_up_at_exit();
        }
    });
}

/// A single-member etcd shared by every test of this process.
///
/// An error is kept as text and returned to every caller, so all tests fail
/// with the same clear message instead of retrying.
pub fn shared_etcd() -> Result<&'static EtcdCluster, TestkitError> {
    clean_up_at_exit();
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
    clean_up_at_exit();
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
