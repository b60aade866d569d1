//! Coordination recipes on etcd.
//!
//! Start with [`EtcdConfig`]: it reads the standard environment variables and
//! connects with a bounded timeout, so a missing server is a clear error
//! rather than a hang.

mod config;
mod error;

pub use config::{DEFAULT_ENDPOINT, EtcdConfig};
pub use error::EtcdError;

/// The etcd client these recipes use, re-exported so that callers need not
/// pin a matching `etcd-client` version themselves.
pub use etcd_client::Client;
