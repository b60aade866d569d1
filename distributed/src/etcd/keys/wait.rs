//! Waiting building blocks shared by the recipes: wait for one key to be
//! deleted or put, and wait for every predecessor in a queue of keys.
//!
//! Both watch *from a known revision*, so a delete that happens between our
//! read and the start of the watch is still seen.

use crate::etcd::Client;
use etcd_client::{
    EventType, GetOptions, SortOrder, SortTarget, WatchOptions, WatchStream,
};

use tracing::{debug, warn};

use crate::etcd::client::retry::is_unavailable;

use crate::etcd::{EtcdError, Session};

/// Waits until the incarnation of `key` created at `create_revision` is
/// deleted, looking at every change from `from_revision` on (pass the
/// revision of the read that saw the key, plus one).
///
/// # Cancel safety
///
/// Safe; dropping the future cancels the watch.
pub(crate) async fn wait_for_delete(
    client: &Client,
    key: &str,
    create_revision: i64,
    from_revision: i64,
) -> Result<(), EtcdError> {
    loop {
        let options = WatchOptions::new().with_start_revision(from_revision);
        let mut watch = client.retried_watch(key, Some(options)).await?;
        // If the key changed after `from_revision`, etcd treats this watch
        // as "unsynced" and replays the change from a background loop that
        // runs every 100 ms. One read now, with the watch already in place
        // (so no later delete can slip between the two), spares that wait
        // when the key is already gone.
        let now = client.retried_get(key, None).await?;
        if now.kvs().first().map(|kv| kv.create_revision()) != Some(create_revision) {
            return Ok(());
        }
        match next_event(&mut watch, key, EventType::Delete).await {
            Ok(_) => return Ok(()),
            Err(error) if watch_broke(&error) => {
                debug!(%key, %error, "the watch broke; watching again");
            }
            Err(error) => return Err(error),
        }
    }
}

/// Whether a watch ended because its connection did (a member died or was
/// cut off), not because etcd refused it: then it is opened again, from
/// the same revision, so nothing is missed.
fn watch_broke(error: &EtcdError) -> bool {
    match error {
        EtcdError::Client(error) => is_unavailable(error),
        EtcdError::WatchEnded { reason, .. } => reason == STREAM_CLOSED,
        _ => false,
    }
}

const STREAM_CLOSED: &str = "the server closed the stream";

/// Waits for a put of `key` at or after `from_revision`; returns the key's
/// create revision.
///
/// # Cancel safety
///
/// Safe; dropping the future cancels the watch.
pub(crate) async fn wait_for_put(
    client: &Client,
    key: &str,
    from_revision: i64,
) -> Result<i64, EtcdError> {
    loop {
        let options = WatchOptions::new().with_start_revision(from_revision);
        let mut watch = client.retried_watch(key, Some(options)).await?;
        match next_event(&mut watch, key, EventType::Put).await {
            Err(error) if watch_broke(&error) => {
                debug!(%key, %error, "the watch broke; watching again");
            }
            done => return done,
        }
    }
}

/// The first event of `kind` that `watch` (on `key`) reports; returns the
/// create revision of the key it carries.
async fn next_event(
    watch: &mut WatchStream,
    key: &str,
    kind: EventType,
) -> Result<i64, EtcdError> {
    loop {
        let Some(response) = watch.message().await? else {
            return Err(EtcdError::WatchEnded {
                key: key.to_string(),
                reason: STREAM_CLOSED.into(),
            });
        };
        if response.canceled() {
            return Err(EtcdError::WatchEnded {
                key: key.to_string(),
                reason: response.cancel_reason().to_string(),
            });
        }
        if let Some(event) = response.events().iter().find(|e| e.event_type() == kind) {
            return Ok(event.kv().map_or(0, |kv| kv.create_revision()));
        }
    }
}

/// Which keys under a prefix stand in a line: the recipe's own, not those
/// of a nested name (`<name>/sub/…`) or of another tool.
pub(crate) type InLine<'a> = &'a (dyn Fn(&[u8]) -> bool + Sync);

/// How many keys one look for a predecessor reads.
const PAGE: i64 = 16;

/// The closest key ahead of ours in line: the key under `prefix` that
/// stands `in_line` with the highest create revision below `revision`,
/// with its create revision and the revision of the read. Foreign keys
/// are passed over, a page at a time.
pub(crate) async fn closest_predecessor(
    client: &Client,
    prefix: &str,
    revision: i64,
    in_line: InLine<'_>,
) -> Result<Option<(String, i64, i64)>, EtcdError> {
    let mut below = revision;
    loop {
        let options = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(below - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(PAGE)
            .with_keys_only();
        let response = client.retried_get(prefix, Some(options)).await?;
        let read_at = response.header().map(|h| h.revision()).unwrap_or(0);
        for kv in response.kvs() {
            if !in_line(kv.key()) {
                continue;
            }
            match kv.key_str() {
                Ok(key) => {
                    return Ok(Some((key.to_string(), kv.create_revision(), read_at)));
                }
                Err(_) => warn!(
                    key = %String::from_utf8_lossy(kv.key()),
                    "skipping a key in line whose name is not UTF-8"
                ),
            }
        }
        match response.kvs().last() {
            Some(last) if response.kvs().len() as i64 == PAGE => {
                below = last.create_revision()
            }
            _ => return Ok(None),
        }
    }
}

/// Waits until no key under `prefix` that stands `in_line` has a create
/// revision below `revision`.
///
/// Only the closest predecessor is watched at a time (the key with the
/// highest create revision below ours), so a release wakes exactly one
/// waiter instead of the whole herd. When it goes, the next closest is
/// looked up, until there is none.
///
/// # Cancel safety
///
/// Safe; dropping the future cancels the watch.
// ANCHOR: predecessors
pub(crate) async fn wait_for_predecessors(
    client: &Client,
    prefix: &str,
    revision: i64,
    in_line: InLine<'_>,
) -> Result<(), EtcdError> {
    while let Some((key, created, read_at)) =
        closest_predecessor(client, prefix, revision, in_line).await?
    {
        wait_for_delete(client, &key, created, read_at + 1).await?;
    }
    Ok(())
}
// ANCHOR_END: predecessors

/// Waits for our turn in a line of keys: until no key under `prefix` that
/// stands `in_line` was created before ours (`key`, created at `revision`), then checks that our
/// key is still there.
///
/// Fails with [`EtcdError::SessionLost`] if the session is lost while
/// waiting, or if our key vanished meanwhile (its lease expired): a waiter
/// whose session died never "acquires".
pub(crate) async fn wait_turn(
    session: &Session,
    prefix: &str,
    in_line: InLine<'_>,
    key: &str,
    revision: i64,
) -> Result<(), EtcdError> {
    let client = session.client();
    tokio::select! {
        lost = session.lost() => return Err(lost),
        waited = wait_for_predecessors(&client, prefix, revision, in_line) => waited?,
    }
    let ours = client.retried_get(key, None).await?;
    match ours.kvs().first() {
        Some(kv) if kv.create_revision() == revision && !session.is_lost() => Ok(()),
        _ => Err(session.lost_error()),
    }
}
