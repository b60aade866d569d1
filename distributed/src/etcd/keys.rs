//! Creating keys: put-if-absent, and unique keys for queues of waiters.

use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::EtcdError;
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
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key = format!("{prefix}{nanos}");
        if let Some(revision) = create_if_absent(client, &key, value.clone(), lease).await? {
            return Ok((key, revision));
        }
    }
}
