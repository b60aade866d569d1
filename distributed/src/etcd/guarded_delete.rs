//! Revision-guarded deletes: remove a key only while it is still the one we
//! created.
//!
//! Deleting by name alone is a bug of the Go Mutex: a stale or retried unlock
//! can delete a newer lock that reuses the same key. Comparing the key's
//! create revision makes the delete apply to our incarnation of the key only.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use tracing::debug;

use super::EtcdError;

/// Deletes `key` if its create revision is still `create_revision`; returns
/// whether it did.
pub(crate) async fn delete_if_created_at(client: &Client, key: &str, create_revision: i64) -> Result<bool, EtcdError> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, create_revision)])
        .and_then([TxnOp::delete(key, None)]);
    Ok(client.clone().txn(txn).await?.succeeded())
}

/// A key to delete if the operation that created it does not finish: the
/// waiter key of a cancelled `lock()`, an unacknowledged claim.
///
/// While armed, dropping it deletes the key (revision-guarded) in a
/// background task. Without a runtime the key's lease frees it.
pub(crate) struct DeleteOnDrop {
    client: Client,
    key: String,
    create_revision: Option<i64>,
}

impl DeleteOnDrop {
    pub(crate) fn new(client: &Client, key: impl Into<String>) -> Self {
        DeleteOnDrop {
            client: client.clone(),
            key: key.into(),
            create_revision: None,
        }
    }

    /// Arms it for the key created at `create_revision`.
    pub(crate) fn arm(&mut self, create_revision: i64) {
        self.create_revision = Some(create_revision);
    }

    /// The operation finished: keep the key.
    pub(crate) fn disarm(&mut self) {
        self.create_revision = None;
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let Some(revision) = self.create_revision.take() else {
            return;
        };
        spawn_guarded_delete(self.client.clone(), std::mem::take(&mut self.key), revision);
    }
}

/// Deletes the key in the background if a tokio runtime is running; otherwise
/// leaves it to its lease.
pub(crate) fn spawn_guarded_delete(client: Client, key: String, create_revision: i64) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            match delete_if_created_at(&client, &key, create_revision).await {
                Ok(deleted) => debug!(%key, deleted, "background delete"),
                Err(error) => debug!(%key, %error, "background delete failed; the lease will free the key"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stale unlock (the revision of an earlier incarnation of the key)
    /// must not delete the current one: the Go Mutex's unlock-by-name bug.
    #[tokio::test]
    async fn a_stale_delete_leaves_a_newer_key_alone() {
        let etcd = testkit::shared_etcd().unwrap();
        let mut client = crate::etcd::EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
        let key = "guarded-delete-test/k";
        let first = client.put(key, "1", None).await.unwrap().header().unwrap().revision();
        assert!(delete_if_created_at(&client, key, first).await.unwrap());
        let second = client.put(key, "2", None).await.unwrap().header().unwrap().revision();
        assert!(!delete_if_created_at(&client, key, first).await.unwrap(), "a stale delete went through");
        let still = client.get(key, None).await.unwrap();
        assert_eq!(still.kvs()[0].create_revision(), second);
        assert!(delete_if_created_at(&client, key, second).await.unwrap());
    }
}
