//! Creating keys: put-if-absent, and unique keys for queues of waiters.

use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::EtcdError;
use super::receipt::{Applied, Receipts};
use super::retry::{Repeat, retrying};

/// Creates `key` = `value` (with `lease`, if not 0) unless it exists.
/// Returns the create revision if this call created it, `None` if the key was
/// already there.
pub(crate) async fn create_if_absent(
    client: &Client,
    key: &str,
    value: impl Into<Vec<u8>>,
    lease: i64,
) -> Result<Option<i64>, EtcdError> {
    let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, value, options)]);
    let response = retrying(Repeat::IfUnsent, || {
        let (mut client, txn) = (client.clone(), txn.clone());
        async move { client.txn(txn).await }
    })
    .await?;
    Ok(response
        .succeeded()
        .then(|| response.header().map(|h| h.revision()).unwrap_or(0)))
}

/// Like [`create_if_absent`] (no lease), but exactly once even if a reply
/// is lost: see [`Receipts`]. For queue items, where a lost reply must
/// neither drop nor duplicate an item.
pub(crate) async fn create_if_absent_once(
    client: &Client,
    receipts: &Receipts,
    key: &str,
    value: impl Into<Vec<u8>>,
) -> Result<Option<i64>, EtcdError> {
    let compare = Compare::create_revision(key, CompareOp::Equal, 0);
    let put = TxnOp::put(key, value, None);
    Ok(
        match receipts.apply(client, vec![compare], vec![put]).await? {
            Applied::Yes(revision) => Some(revision),
            Applied::CompareFailed => None,
        },
    )
}

/// A new key `<prefix><unix nanos>`, as etcd's Go recipes name them
/// (`newUniqueKV`).
fn unique_key(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{nanos}")
}

/// [`create_unique`] for queue items: exactly once, no lease.
pub(crate) async fn create_unique_once(
    client: &Client,
    receipts: &Receipts,
    prefix: &str,
    value: impl Into<Vec<u8>> + Clone,
) -> Result<(String, i64), EtcdError> {
    loop {
        let key = unique_key(prefix);
        if let Some(revision) = create_if_absent_once(client, receipts, &key, value.clone()).await?
        {
            return Ok((key, revision));
        }
    }
}

/// Creates a new key `<prefix><unix nanos>` = `value`, retrying with a new
/// timestamp on the rare collision. Returns the key and its create revision.
/// The layout is that of etcd's Go recipes (`newUniqueKV`).
pub(crate) async fn create_unique(
    client: &Client,
    prefix: &str,
    value: impl Into<Vec<u8>> + Clone,
    lease: i64,
) -> Result<(String, i64), EtcdError> {
    loop {
        let key = unique_key(prefix);
        if let Some(revision) = create_if_absent(client, &key, value.clone(), lease).await? {
            return Ok((key, revision));
        }
    }
}
