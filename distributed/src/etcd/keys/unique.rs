//! Creating keys: put-if-absent, and unique keys for queues of waiters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::etcd::Client;
use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};

use crate::etcd::EtcdError;
use crate::etcd::client::retry::Repeat;
use crate::etcd::exactly_once::receipts::{Applied, Receipts};
use crate::etcd::keys::guarded_delete::spawn_guarded_delete;

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
    let response = client.retried_txn(Repeat::IfUnsent, txn).await?;
    Ok(response
        .succeeded()
        .then(|| response.header().map(|h| h.revision()).unwrap_or(0)))
}

/// Like [`create_if_absent`] (no lease), but exactly once even if a reply
/// is lost: see [`Receipts`]. For priority-queue items, whose keys other
/// producers also try to create (see `unique_creates` for keys only we create).
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

/// Creates `<level><last sequence + 1, 16 digits>` = `value`, exactly once:
/// the next key after the highest one under `level`, as etcd's Go recipes
/// name priority-queue items (`newSequentialKV`). A producer that finds the
/// number taken reads again. Returns the key.
///
/// An empty level starts again at 0, so keys are reused once a level
/// empties (Go's layout does the same): never write such a key
/// unconditionally.
pub(crate) async fn create_sequential_once(
    client: &Client,
    receipts: &Receipts,
    level: &str,
    value: Vec<u8>,
) -> Result<String, EtcdError> {
    // The last few keys, highest first: a foreign key whose name is not a
    // number (written by another tool) is passed over, not a wedge.
    let last = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Key, SortOrder::Descend)
        .with_limit(16)
        .with_keys_only();
    loop {
        let response = client.retried_get(level, Some(last.clone())).await?;
        let next = response
            .kvs()
            .iter()
            .find_map(|kv| sequence_number(kv.key()))
            .map_or(0, |last| last.saturating_add(1));
        let key = format!("{level}{next:016}");
        if create_if_absent_once(client, receipts, &key, value.clone())
            .await?
            .is_some()
        {
            return Ok(key);
        }
        // Another producer took this number first: read again.
    }
}

/// The number a sequential key ends with, if it ends with one.
fn sequence_number(key: &[u8]) -> Option<u64> {
    let tail = key.rsplit(|byte| *byte == b'/').next()?;
    std::str::from_utf8(tail).ok()?.parse().ok()
}

/// A new key `<prefix><unix nanos>`, as etcd's Go recipes name them
/// (`newUniqueKV`). Within this process the numbers only go up, so that two
/// keys made in the same nanosecond (or after the clock stepped back) still
/// differ; across processes, a create that finds its key taken picks another.
pub(crate) fn unique_key(prefix: &str) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or(now);
    format!("{prefix}{}", now.max(previous.saturating_add(1)))
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
        if let Some(revision) =
            create_if_absent(client, &key, value.clone(), lease).await?
        {
            return Ok((key, revision));
        }
    }
}

/// [`create_if_absent`] in a task of its own: if the caller is dropped
/// while the write is in flight, the task deletes the key if it created it,
/// so no candidate key is left standing for a caller that is gone.
///
/// # Cancel safety
///
/// Safe: that is its purpose.
pub(crate) async fn create_if_absent_or_undo(
    client: &Client,
    key: &str,
    value: String,
    lease: i64,
) -> Result<Option<i64>, EtcdError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let (writer, owned_key) = (client.clone(), key.to_string());
    tokio::spawn(async move {
        let created = create_if_absent(&writer, &owned_key, value, lease).await;
        if let Err(Ok(Some(revision))) = reply.send(created) {
            spawn_guarded_delete(writer, owned_key, revision, None);
        }
    });
    answer.await.map_err(|_| EtcdError::OutcomeUnknown {
        key: key.to_string(),
        reason: "the task writing the key ended without an answer".into(),
    })?
}

/// [`create_unique`] (an empty value on `lease`) in a task of its own: if
/// the caller is dropped while the write is in flight, the task deletes the
/// key it wrote, so no waiter key stays in line with nobody to remove it.
///
/// # Cancel safety
///
/// Safe: that is its purpose.
pub(crate) async fn create_unique_or_undo(
    client: &Client,
    prefix: &str,
    lease: i64,
) -> Result<(String, i64), EtcdError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let (writer, owned_prefix) = (client.clone(), prefix.to_string());
    tokio::spawn(async move {
        let created = create_unique(&writer, &owned_prefix, "", lease).await;
        if let Err(Ok((key, revision))) = reply.send(created) {
            spawn_guarded_delete(writer, key, revision, None);
        }
    });
    answer.await.map_err(|_| EtcdError::OutcomeUnknown {
        key: prefix.to_string(),
        reason: "the task writing the key ended without an answer".into(),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_keys_made_at_once_differ_and_keep_the_go_layout() {
        let keys: Vec<String> = (0..1000).map(|_| unique_key("q/")).collect();
        let numbers: Vec<u64> = keys
            .iter()
            .map(|key| key.strip_prefix("q/").unwrap().parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]));
        // Unix nanoseconds: 19 digits from 2001 to 2286.
        assert!(keys.iter().all(|key| key.len() == "q/".len() + 19));
    }
}
