//! Revision-guarded deletes: remove a key only while it is still the one we
//! created.
//!
//! Deleting by name alone is not enough: a stale or retried unlock would
//! delete a newer lock that reuses the same key. Comparing the key's create
//! revision makes the delete apply to our incarnation of the key only.

use crate::etcd::Client;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use std::time::Duration;

use tracing::{debug, warn};

use crate::etcd::EtcdError;
use crate::etcd::client::retry::Repeat;
use crate::etcd::session::Claim;

/// Deletes `key` if its create revision is still `create_revision`; returns
/// whether it did.
// ANCHOR: guarded_delete
pub(crate) async fn delete_if_created_at(
    client: &Client,
    key: &str,
    create_revision: i64,
) -> Result<bool, EtcdError> {
    let txn = Txn::new()
        .when([Compare::create_revision(
            key,
            CompareOp::Equal,
            create_revision,
        )])
        .and_then([TxnOp::delete(key, None)]);
    // Guarded by the revision, so repeating it is harmless.
    let response = client.retried_txn(Repeat::Idempotent, txn).await?;
    Ok(response.succeeded())
}
// ANCHOR_END: guarded_delete

/// A key to delete if the operation that created it does not finish: the
/// waiter key of a cancelled `lock()`, an unacknowledged claim.
///
/// While armed, dropping it deletes the key (revision-guarded) in a
/// background task. Without a runtime the key's lease frees it.
pub(crate) struct DeleteOnDrop {
    client: Client,
    key: String,
    armed: Option<(i64, Option<Claim>)>,
}

impl DeleteOnDrop {
    pub(crate) fn new(client: &Client, key: impl Into<String>) -> Self {
        DeleteOnDrop {
            client: client.clone(),
            key: key.into(),
            armed: None,
        }
    }

    /// Arms it for the key created at `create_revision`. The claim on the
    /// key, if any, is held until the key is really gone, so that this
    /// process cannot start using the key again before its delete lands.
    pub(crate) fn arm(&mut self, create_revision: i64, claim: Option<Claim>) {
        self.armed = Some((create_revision, claim));
    }

    /// The operation finished: keep the key, and hand the claim back.
    pub(crate) fn disarm(&mut self) -> Option<Claim> {
        self.armed.take().and_then(|(_, claim)| claim)
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let Some((revision, claim)) = self.armed.take() else {
            return;
        };
        spawn_guarded_delete(
            self.client.clone(),
            std::mem::take(&mut self.key),
            revision,
            claim,
        );
    }
}

/// How long a background delete keeps retrying. A failed cleanup would leave
/// a ghost waiter in line (held by a live session, so its lease never frees
/// it), so it is retried through a leader election or a dead member.
const BACKGROUND_DELETE_PATIENCE: Duration = Duration::from_secs(60);

/// Deletes the key in the background if a tokio runtime is running, retrying
/// on errors; otherwise leaves it to its lease. `claim` is released when the
/// delete is done.
pub(crate) fn spawn_guarded_delete(
    client: Client,
    key: String,
    create_revision: i64,
    claim: Option<Claim>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if let Some(claim) = &claim {
        claim.mark_releasing();
    }
    runtime.spawn(async move {
        let _claim = claim;
        let give_up = tokio::time::Instant::now() + BACKGROUND_DELETE_PATIENCE;
        let mut pause = Duration::from_millis(50);
        loop {
            match delete_if_created_at(&client, &key, create_revision).await {
                Ok(deleted) => {
                    debug!(%key, deleted, "background delete");
                    return;
                }
                Err(error) if tokio::time::Instant::now() < give_up => {
                    debug!(%key, %error, "background delete failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    warn!(%key, %error, "background delete gave up; the key stays until its lease ends");
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stale unlock (the revision of an earlier incarnation of the key)
    /// must not delete the current one.
    #[tokio::test]
    async fn a_stale_delete_leaves_a_newer_key_alone() {
        let etcd = testkit::shared_etcd().unwrap();
        let mut client = crate::etcd::EtcdConfig::new(etcd.endpoints())
            .connect()
            .await
            .unwrap();
        let key = "guarded-delete-test/k";
        let first = client
            .put(key, "1", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        assert!(delete_if_created_at(&client, key, first).await.unwrap());
        let second = client
            .put(key, "2", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        assert!(
            !delete_if_created_at(&client, key, first).await.unwrap(),
            "a stale delete went through"
        );
        let still = client.get(key, None).await.unwrap();
        assert_eq!(still.kvs()[0].create_revision(), second);
        assert!(delete_if_created_at(&client, key, second).await.unwrap());
    }
}
