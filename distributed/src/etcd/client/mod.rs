//! Connecting to etcd — machinery a reader of the recipes may skip.
//!
//! [`Client`] is the handle every recipe is built on: etcd's client, plus
//! how long one operation may keep trying while etcd does not answer, and
//! the request helpers that retry within that bound (`retry` says which
//! failures may be retried). [`EtcdConfig`](config::EtcdConfig) makes it
//! over this crate's own channel (`failover`: one member at a time, the next
//! when it fails), whose TCP streams send a request's frames in one write
//! (`frame_coalescing`).

pub(crate) mod config;
pub(crate) mod failover;
pub(crate) mod frame_coalescing;
pub(crate) mod retry;
pub(crate) mod tls;

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use etcd_client::{
    DeleteOptions, DeleteResponse, GetOptions, GetResponse, PutOptions, PutResponse,
    Txn, TxnResponse, WatchOptions, WatchStream,
};
use tokio::time::Instant;

use crate::etcd::EtcdError;
use crate::etcd::client::retry::{Repeat, retrying_until};

/// How long an operation keeps trying while etcd does not answer, unless
/// [`EtcdConfig::operation_bound`](crate::etcd::EtcdConfig::operation_bound) or
/// [`Client::with_operation_bound`] says otherwise: against a hung or
/// unreachable member, every request of a recipe fails within this.
pub const OPERATION_BOUND: Duration = Duration::from_secs(15);

/// The longest operation bound accepted: a day. Longer is a mistake (and
/// `Instant + Duration::MAX` would overflow).
pub const MAX_OPERATION_BOUND: Duration = Duration::from_secs(24 * 60 * 60);

/// A connection to etcd, as [`EtcdConfig::connect`](crate::etcd::EtcdConfig::connect)
/// makes it: [`etcd_client::Client`] (all of its methods are available
/// through `Deref`), plus the bound on how long each recipe operation keeps
/// retrying.
///
/// Cloning is cheap; clones share the connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use std::time::Duration;
/// use cpr_distributed::etcd::{Client, EtcdConfig};
///
/// let mut client: Client = EtcdConfig::from_env()?
///     .operation_bound(Duration::from_secs(5))
///     .connect()
///     .await?;
/// client.put("greeting", "hello", None).await?; // etcd_client's own put
/// assert_eq!(client.operation_bound(), Duration::from_secs(5));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: etcd_client::Client,
    operation_bound: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("operation_bound", &self.operation_bound)
            .finish_non_exhaustive()
    }
}

impl From<etcd_client::Client> for Client {
    /// A client made elsewhere, with the default [`OPERATION_BOUND`].
    fn from(inner: etcd_client::Client) -> Self {
        Client {
            inner,
            operation_bound: OPERATION_BOUND,
        }
    }
}

impl Deref for Client {
    type Target = etcd_client::Client;
    fn deref(&self) -> &etcd_client::Client {
        &self.inner
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut etcd_client::Client {
        &mut self.inner
    }
}

impl Client {
    /// How long one recipe operation keeps retrying while etcd does not
    /// answer; after it, the operation fails with [`EtcdError::TimedOut`].
    pub fn operation_bound(&self) -> Duration {
        self.operation_bound
    }

    /// The same connection with another operation bound (more than zero,
    /// at most [`MAX_OPERATION_BOUND`]). Recipes made from it use it.
    pub fn with_operation_bound(mut self, bound: Duration) -> Result<Self, EtcdError> {
        check_operation_bound(bound)?;
        self.operation_bound = bound;
        Ok(self)
    }

    /// The etcd client underneath.
    pub fn into_inner(self) -> etcd_client::Client {
        self.inner
    }

    /// When an operation starting now must have finished.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.operation_bound
    }

    /// A transaction, sent again while `repeat` allows, within the bound.
    pub(crate) async fn retried_txn(
        &self,
        repeat: Repeat,
        txn: Txn,
    ) -> Result<TxnResponse, EtcdError> {
        self.retried_txn_until(repeat, self.deadline(), txn).await
    }

    /// A transaction that is one step of an operation with a shared
    /// deadline.
    pub(crate) async fn retried_txn_until(
        &self,
        repeat: Repeat,
        deadline: Instant,
        txn: Txn,
    ) -> Result<TxnResponse, EtcdError> {
        retrying_until(repeat, deadline, || {
            let (mut client, txn) = (self.inner.clone(), txn.clone());
            async move { client.txn(txn).await }
        })
        .await
    }

    /// A read, repeated on any unavailability within the bound.
    pub(crate) async fn retried_get(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, EtcdError> {
        self.retried_get_until(self.deadline(), key, options).await
    }

    /// A read that is one step of an operation with a shared deadline.
    pub(crate) async fn retried_get_until(
        &self,
        deadline: Instant,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, EtcdError> {
        let key = key.into();
        retrying_until(Repeat::Idempotent, deadline, || {
            let (mut client, key, options) =
                (self.inner.clone(), key.clone(), options.clone());
            async move { client.get(key, options).await }
        })
        .await
    }

    /// A delete that is safe to repeat (deleting what is gone is no
    /// change), within the bound.
    pub(crate) async fn retried_delete(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<DeleteOptions>,
    ) -> Result<DeleteResponse, EtcdError> {
        let key = key.into();
        retrying_until(Repeat::Idempotent, self.deadline(), || {
            let (mut client, key, options) =
                (self.inner.clone(), key.clone(), options.clone());
            async move { client.delete(key, options).await }
        })
        .await
    }

    /// Grants a lease of `ttl` seconds and returns its id. Repeating a grant
    /// whose reply was lost leaves a spare lease, which expires unused.
    pub(crate) async fn retried_lease_grant_until(
        &self,
        deadline: Instant,
        ttl: i64,
    ) -> Result<i64, EtcdError> {
        let granted = retrying_until(Repeat::Idempotent, deadline, || {
            let mut client = self.inner.clone();
            async move { client.lease_grant(ttl, None).await }
        })
        .await?;
        Ok(granted.id())
    }

    /// Puts an empty marker value (a second put of it is no change),
    /// repeated on any unavailability.
    pub(crate) async fn retried_mark_until(
        &self,
        deadline: Instant,
        key: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Result<PutResponse, EtcdError> {
        let key = key.into();
        retrying_until(Repeat::Idempotent, deadline, || {
            let (mut client, key, options) =
                (self.inner.clone(), key.clone(), options.clone());
            async move { client.put(key, "", options).await }
        })
        .await
    }

    /// Opens a watch, retried within the bound.
    pub(crate) async fn retried_watch(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<WatchOptions>,
    ) -> Result<WatchStream, EtcdError> {
        let key = key.into();
        retrying_until(Repeat::Idempotent, self.deadline(), || {
            let (mut client, key, options) =
                (self.inner.clone(), key.clone(), options.clone());
            async move { client.watch(key, options).await }
        })
        .await
    }
}

/// An operation bound is more than zero and at most [`MAX_OPERATION_BOUND`].
pub(crate) fn check_operation_bound(bound: Duration) -> Result<(), EtcdError> {
    if bound.is_zero() || bound > MAX_OPERATION_BOUND {
        return Err(EtcdError::InvalidConfig(format!(
            "the operation bound must be more than zero and at most a day; got {bound:?}"
        )));
    }
    Ok(())
}
