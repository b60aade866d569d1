//! A barrier on etcd: one key that, while it exists, holds waiters back.

use crate::etcd::Client;
use tracing::instrument;

use crate::etcd::keys::name::RecipeName;
use crate::etcd::keys::unique::create_if_absent;
use crate::etcd::keys::wait::wait_for_delete;
use crate::etcd::{EtcdError, Session};

/// A barrier: [`hold`](Self::hold) raises it, [`release`](Self::release)
/// lowers it, and [`wait`](Self::wait) blocks while it is raised (and
/// returns at once if it is not). The key is `name` itself.
///
/// Waiting watches the key from the revision at which it was seen, so a
/// release between that read and the watch is never missed.
///
/// Raised through [`with_session`](Self::with_session), the barrier key
/// carries the session's lease: a holder that crashes lowers it when its
/// lease expires, instead of blocking the waiters forever.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use cpr_distributed::etcd::{Barrier, EtcdConfig};
///
/// let client = EtcdConfig::from_env()?.connect().await?;
/// let gate = Barrier::new(client, "deploy-gate")?;
/// gate.hold().await?; // in the process that decides
/// // ... elsewhere, workers wait:  gate.wait().await?;
/// gate.release().await?; // every waiter goes on
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`EtcdError::InvalidConfig`] for an empty name;
/// [`EtcdError::TimedOut`] when etcd does not answer within the client's
/// operation bound.
#[derive(Clone)]
pub struct Barrier {
    client: Client,
    key: String,
    lease: i64,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("key", &self.key)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Barrier {
    /// A barrier whose key outlives its holder (lowered only by `release`).
    pub fn new(client: Client, name: &str) -> Result<Self, EtcdError> {
        Ok(Barrier {
            client,
            key: RecipeName::new(name)?.as_str().to_string(),
            lease: 0,
        })
    }

    /// A barrier raised with `session`'s lease: lowered also when the
    /// session ends.
    pub fn with_session(session: &Session, name: &str) -> Result<Self, EtcdError> {
        Ok(Barrier {
            client: session.client(),
            key: RecipeName::new(name)?.as_str().to_string(),
            lease: session.lease_id(),
        })
    }

    /// Raises the barrier. Returns false if it was already raised.
    pub async fn hold(&self) -> Result<bool, EtcdError> {
        Ok(create_if_absent(&self.client, &self.key, "", self.lease)
            .await?
            .is_some())
    }

    /// Lowers the barrier, letting every waiter through.
    pub async fn release(&self) -> Result<(), EtcdError> {
        self.client.retried_delete(self.key.as_str(), None).await?;
        Ok(())
    }

    /// Waits while the barrier is raised; returns at once if it is not.
    ///
    /// # Cancel safety
    ///
    /// Safe; dropping the future cancels the watch.
    // ANCHOR: wait
    #[instrument(level = "debug", skip(self), fields(key = %self.key))]
    pub async fn wait(&self) -> Result<(), EtcdError> {
        let now = self.client.retried_get(self.key.as_str(), None).await?;
        let Some(raised) = now.kvs().first() else {
            return Ok(());
        };
        let read_at = now.header().map(|h| h.revision()).unwrap_or(0);
        wait_for_delete(
            &self.client,
            &self.key,
            raised.create_revision(),
            read_at + 1,
        )
        .await
    }
    // ANCHOR_END: wait
}
