//! Waiting building blocks shared by the recipes: wait for one key to be
//! deleted, and wait for every predecessor in a queue of keys.
//!
//! Both watch *from a known revision*, so a delete that happens between our
//! read and the start of the watch is still seen (the Go Barrier once missed
//! releases by watching from the wrong revision).

use etcd_client::{Client, EventType, GetOptions, SortOrder, SortTarget, WatchOptions};

use super::retry::{Repeat, retrying};
use super::{EtcdError, Session};

/// Waits until `key` is deleted, looking at every change from `from_revision`
/// on (pass the revision of the read that saw the key, plus one).
///
/// Cancel safety: safe; dropping the future cancels the watch.
pub(crate) async fn wait_for_delete(
    client: &Client,
    key: &str,
    from_revision: i64,
) -> Result<(), EtcdError> {
    let options = WatchOptions::new().with_start_revision(from_revision);
    let mut watch = retrying(Repeat::Idempotent, || {
        let (mut client, options) = (client.clone(), options.clone());
        async move { client.watch(key, Some(options)).await }
    })
    .await?;
    loop {
        let Some(response) = watch.message().await? else {
            return Err(EtcdError::WatchEnded {
                key: key.to_string(),
                reason: "the server closed the stream".into(),
            });
        };
        if response.canceled() {
            return Err(EtcdError::WatchEnded {
                key: key.to_string(),
                reason: response.cancel_reason().to_string(),
            });
        }
        if response
            .events()
            .iter()
            .any(|event| event.event_type() == EventType::Delete)
        {
            return Ok(());
        }
    }
}

/// Waits until no key under `prefix` has a create revision below `revision`.
///
/// Only the closest predecessor is watched at a time (the key with the
/// highest create revision below ours), so a release wakes exactly one
/// waiter instead of the whole herd. When it goes, the next closest is
/// looked up, until there is none.
///
/// Cancel safety: safe; dropping the future cancels the watch.
pub(crate) async fn wait_for_predecessors(
    client: &Client,
    prefix: &str,
    revision: i64,
) -> Result<(), EtcdError> {
    loop {
        let options = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(revision - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only();
        let response = retrying(Repeat::Idempotent, || {
            let (mut client, options) = (client.clone(), options.clone());
            async move { client.get(prefix, Some(options)).await }
        })
        .await?;
        let Some(predecessor) = response.kvs().first() else {
            return Ok(());
        };
        let read_at = response.header().map(|h| h.revision()).unwrap_or(0);
        let key = predecessor.key_str()?.to_string();
        wait_for_delete(client, &key, read_at + 1).await?;
    }
}

/// Waits for our turn in a line of keys: until no key under `prefix` was
/// created before ours (`key`, created at `revision`), then checks that our
/// key is still there.
///
/// Fails with [`EtcdError::SessionLost`] if the session is lost while
/// waiting, or if our key vanished meanwhile (its lease expired): a waiter
/// whose session died never "acquires" (a bug of the Go Mutex).
pub(crate) async fn wait_turn(
    session: &Session,
    prefix: &str,
    key: &str,
    revision: i64,
) -> Result<(), EtcdError> {
    let client = session.client();
    tokio::select! {
        lost = session.lost() => return Err(lost),
        waited = wait_for_predecessors(&client, prefix, revision) => waited?,
    }
    let ours = retrying(Repeat::Idempotent, || {
        let mut client = client.clone();
        async move { client.get(key, None).await }
    })
    .await?;
    match ours.kvs().first() {
        Some(kv) if kv.create_revision() == revision && !session.is_lost() => Ok(()),
        _ => Err(session.lost_error()),
    }
}
