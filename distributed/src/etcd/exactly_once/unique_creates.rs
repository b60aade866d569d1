//! Creating a new item exactly once while writing one key: when a reply is
//! lost, a *fence* settles what happened.
//!
//! A create whose reply never came may or may not have applied, and neither
//! sending it again nor reading can tell (see `receipts`). A receipt answers
//! that by writing a second key with every write. For keys that only this
//! object creates — queue items `<name>/<unix nanos>` — there is a way that
//! writes nothing extra until a reply is really lost:
//!
//! 1. Every create also checks a *fence key* of this object and applies
//!    only while that key does not exist. Normally it never does, so a
//!    create writes its item and nothing else, as Go's recipe does.
//! 2. When a reply is lost, we create the fence key. From that revision on
//!    the lost create cannot apply, however late it reaches etcd.
//! 3. So whether it applied is now settled, and etcd's history holds the
//!    answer: between the revision we had seen before sending it and the
//!    fence's. One watch over a key range that holds both keys replays
//!    that stretch in revision order, and the fence's own event ends it.
//! 4. If it did not apply, we go again with a new item key and the next
//!    fence key. The old fence stays, on a lease, long after any late copy
//!    of the request could still arrive.
//!
//! For one watch to cover both keys, the fence key must sit next to the
//! item key, yet outside every reader's prefix — Go's too, which reads the
//! bare prefix `<name>`. So it goes just *below* `<name>`: the name with
//! its last byte lowered by one, then a 0xFF byte, which no UTF-8 text
//! contains: `jobs` → `jobr\xFFcpr-fence/<id>/<generation>`.
//!
//! What it rests on: the history since the last revision this object saw
//! must still be there when a reply is lost. If etcd compacted it in
//! between, an item already taken by a consumer looks like one never
//! written, and the create fails with [`EtcdError::OutcomeUnknown`] —
//! never a duplicate. An object idle for a while reads a fresh revision
//! before its next create, so only a compaction of the last few seconds
//! can do that.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::etcd::Client;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchFilterType,
    WatchOptions,
};
use tracing::debug;

use crate::etcd::EtcdError;
use crate::etcd::client::retry::{Repeat, outcome_unknown};
use crate::etcd::keys::unique::unique_key;

/// A raised fence stays this long (seconds): far longer than a request can
/// take to reach etcd, even through an election.
const FENCE_TTL: i64 = 60;
/// How long one replay of the history may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// The revision a create starts from is read afresh if the last one seen is
/// older than this, so that the history a lost reply needs is recent.
const FRESH_FOR: Duration = Duration::from_secs(10);

/// The fences of one object (a queue), shared by its clones.
pub(crate) struct UniqueCreates {
    /// Tells this object's fence keys from every other's.
    id: u128,
    /// Which fence key creates check; moves on when one is raised.
    generation: AtomicU64,
    /// The highest revision seen in a reply, and when.
    seen: Mutex<Option<(i64, Instant)>>,
}

impl std::fmt::Debug for UniqueCreates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UniqueCreates").finish_non_exhaustive()
    }
}

/// What etcd's history says about a create whose reply was lost.
#[derive(Debug, PartialEq, Eq)]
enum History {
    /// It applied, at this revision.
    Applied(i64),
    /// It did not, and (behind the fence) never will.
    NotApplied,
    /// etcd compacted the history that would tell.
    Compacted,
}

impl UniqueCreates {
    pub(crate) fn new() -> Self {
        UniqueCreates {
            id: rand::random(),
            generation: AtomicU64::new(0),
            seen: Mutex::new(None),
        }
    }

    /// Creates `<prefix><unix nanos>` = `value` exactly once, even if a
    /// reply is lost; returns the key and its create revision. While etcd
    /// is unavailable it keeps trying, all its steps together for at most
    /// the client's operation bound.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe — a dropped call may or may not have
    /// created its key (as any write whose reply is not awaited).
    pub(crate) async fn create_unique(
        &self,
        client: &Client,
        prefix: &str,
        value: Vec<u8>,
    ) -> Result<(String, i64), EtcdError> {
        let (mut keys, revision) = self.create_many(client, prefix, &[value]).await?;
        let key = keys.pop().ok_or_else(|| {
            EtcdError::InvalidConfig("a create of one item made no key".to_string())
        })?;
        Ok((key, revision))
    }

    /// Creates one key `<prefix><unix nanos>` per value, in one transaction
    /// (at most [`MAX_CREATES_PER_TXN`] values): all or none, under one
    /// revision, the keys rising in the order of `values`. Exactly once
    /// like [`create_unique`](Self::create_unique), which is this for one
    /// value.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe — a dropped call may or may not have created its
    /// keys (all of them or none).
    pub(crate) async fn create_many(
        &self,
        client: &Client,
        prefix: &str,
        values: &[Vec<u8>],
    ) -> Result<(Vec<String>, i64), EtcdError> {
        if values.is_empty() || values.len() > MAX_CREATES_PER_TXN {
            return Err(EtcdError::InvalidConfig(format!(
                "one transaction creates 1 to {MAX_CREATES_PER_TXN} items, not {}",
                values.len()
            )));
        }
        let deadline = client.deadline();
        loop {
            // Read before sending: the create can only apply after it.
            let since = self.revision_seen(client, deadline).await?;
            let generation = self.generation.load(Ordering::Acquire);
            let fence = fence_key(prefix, self.id, generation);
            // Rising within this process: the batch's keys sort in its order.
            let keys: Vec<String> = values.iter().map(|_| unique_key(prefix)).collect();
            let txn = fenced_create(&keys, &fence, values);
            // The transaction applies all its puts or none: whether the
            // first key was created tells for the whole batch.
            let (key, value) = (&keys[0], &values[0]);
            // Sending again is safe only if it never left this process.
            let sent = client
                .retried_txn_until(Repeat::IfUnsent, deadline, txn)
                .await;
            match sent {
                Ok(response) => {
                    let revision = response.header().map(|h| h.revision()).unwrap_or(0);
                    self.saw(revision);
                    if response.succeeded() {
                        return Ok((keys, revision));
                    }
                    // Another process took this key in the same nanosecond,
                    // or another create of ours has just raised this fence:
                    // go again with a new key, past the fence.
                    self.generation.fetch_max(generation + 1, Ordering::AcqRel);
                }
                Err(error) if outcome_unknown(&error) => {
                    debug!(%key, %error, "the reply to a create was lost; raising its fence");
                    let lost = Lost {
                        fence: &fence,
                        generation,
                        key,
                        value,
                        since,
                    };
                    let settled = self.settle(client, lost, deadline).await?;
                    if let Some(revision) = settled {
                        return Ok((keys, revision));
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// After a lost reply: raises `fence`, then reads in etcd's history
    /// whether the create of `key` applied before it. `Some(revision)` if
    /// it did; `None` if it did not (and now never will).
    async fn settle(
        &self,
        client: &Client,
        lost: Lost<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<i64>, EtcdError> {
        let Lost {
            fence,
            generation,
            key,
            value,
            since,
        } = lost;
        let unknown = |reason: String| EtcdError::OutcomeUnknown {
            key: key.to_string(),
            reason,
        };
        // Creates from now on check the next fence key.
        self.generation.fetch_max(generation + 1, Ordering::AcqRel);
        let lease = client
            .retried_lease_grant_until(deadline, FENCE_TTL)
            .await
            .map_err(|error| unknown(format!("could not raise the fence: {error}")))?;
        // Putting the fence twice is harmless: it stands from its first put.
        let options = PutOptions::new().with_lease(lease);
        client
            .retried_mark_until(deadline, fence, Some(options))
            .await
            .map_err(|error| unknown(format!("could not raise the fence: {error}")))?;
        let history = loop {
            // A member cut off from the others would never send the fence's
            // event: give each attempt a bound.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = tokio::time::timeout(
                REPLAY_TIMEOUT.min(left),
                replay(client, fence, key, value, since),
            );
            let replayed = attempt.await.unwrap_or_else(|_| {
                Err(etcd_client::Error::WatchError(
                    "no fence event within the replay timeout".to_string(),
                ))
            });
            match replayed {
                Ok(history) => break history,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    debug!(%key, %error, "replaying the history of a lost create again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    return Err(unknown(format!(
                        "could not read the history: {error}"
                    )));
                }
            }
        };
        debug!(%key, ?history, "settled a create whose reply was lost");
        match history {
            History::Applied(revision) => Ok(Some(revision)),
            History::NotApplied => Ok(None),
            // The item may still be there; if it is not, it may have been
            // taken already or never written.
            History::Compacted => {
                let now = client
                    .retried_get_until(deadline, key, None)
                    .await
                    .map_err(|error| {
                        unknown(format!("could not read the key: {error}"))
                    })?;
                match now.kvs().first() {
                    Some(kv) if kv.value() == value && kv.create_revision() > since => {
                        Ok(Some(kv.create_revision()))
                    }
                    _ => Err(unknown(
                        "etcd compacted the history that would tell".to_string(),
                    )),
                }
            }
        }
    }

    /// A revision no later than anything sent from now on: the last one
    /// seen, or a fresh one if that is old.
    async fn revision_seen(
        &self,
        client: &Client,
        deadline: tokio::time::Instant,
    ) -> Result<i64, EtcdError> {
        if let Some((revision, at)) =
            *self.seen.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < FRESH_FOR
        {
            return Ok(revision);
        }
        let options = GetOptions::new().with_count_only();
        let response = client
            .retried_get_until(deadline, "cpr-fence", Some(options))
            .await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        self.saw(revision);
        Ok(revision)
    }

    fn saw(&self, revision: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.is_none_or(|(highest, _)| revision >= highest) {
            *seen = Some((revision, Instant::now()));
        }
    }
}

/// The most items one fenced create writes: etcd refuses a transaction of
/// more than 128 comparisons by default (`--max-txn-ops`), and each item
/// adds one beside the fence's.
pub(crate) const MAX_CREATES_PER_TXN: usize = 127;

/// The create: every `keys[i]` = `values[i]` if none of the keys nor
/// `fence` exists.
// ANCHOR: fenced_create
fn fenced_create(keys: &[String], fence: &[u8], values: &[Vec<u8>]) -> Txn {
    let absent = keys
        .iter()
        .map(|key| Compare::create_revision(key.as_str(), CompareOp::Equal, 0));
    let puts = keys
        .iter()
        .zip(values)
        .map(|(key, value)| TxnOp::put(key.as_str(), value.as_slice(), None));
    Txn::new()
        .when(
            absent
                .chain([Compare::create_revision(fence, CompareOp::Equal, 0)])
                .collect::<Vec<_>>(),
        )
        .and_then(puts.collect::<Vec<_>>())
}
// ANCHOR_END: fenced_create

/// A create whose reply was lost: what [`UniqueCreates::settle`] needs.
#[derive(Clone, Copy)]
struct Lost<'a> {
    fence: &'a [u8],
    generation: u64,
    key: &'a str,
    value: &'a [u8],
    since: i64,
}

/// The fence key for items under `prefix`, just below the prefix without
/// its `/` — `<name>` for a queue (see the module's doc). Names never
/// contain NUL, so their last byte can be lowered.
fn fence_key(prefix: &str, id: u128, generation: u64) -> Vec<u8> {
    let mut key = prefix
        .strip_suffix('/')
        .unwrap_or(prefix)
        .as_bytes()
        .to_vec();
    if let Some(last) = key.last_mut() {
        *last = last.saturating_sub(1);
    }
    key.push(0xFF);
    key.extend_from_slice(format!("cpr-fence/{id:032x}/{generation}").as_bytes());
    key
}

/// Replays the history of the keys from `fence` to `key` after `since`,
/// up to the fence's first put, looking for the create of `key`.
// ANCHOR: replay
async fn replay(
    client: &Client,
    fence: &[u8],
    key: &str,
    value: &[u8],
    since: i64,
) -> Result<History, etcd_client::Error> {
    let mut end = key.as_bytes().to_vec();
    end.push(0);
    let options = WatchOptions::new()
        .with_range(end)
        .with_start_revision(since + 1)
        .with_filters([WatchFilterType::NoDelete]);
    let mut events = client.clone().watch(fence, Some(options)).await?;
    let mut applied = None;
    while let Some(response) = events.message().await? {
        if response.compact_revision() > 0 {
            return Ok(History::Compacted);
        }
        if response.canceled() {
            break;
        }
        // In revision order: our create, if it applied, comes before the
        // fence, and nothing of ours can come after it.
        for event in response.events() {
            let Some(kv) = event.kv().filter(|_| event.event_type() == EventType::Put)
            else {
                continue;
            };
            if kv.key() == fence {
                return Ok(applied.map_or(History::NotApplied, History::Applied));
            }
            if kv.key() == key.as_bytes() && kv.version() == 1 && kv.value() == value {
                applied = Some(kv.create_revision());
            }
        }
    }
    Err(etcd_client::Error::WatchError(
        "the watch ended before the fence's event".to_string(),
    ))
}
// ANCHOR_END: replay

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::etcd::EtcdConfig;

    async fn client_of(endpoints: Vec<String>) -> Client {
        EtcdConfig::new(endpoints).connect().await.unwrap()
    }

    async fn client() -> Client {
        client_of(testkit::shared_etcd().unwrap().endpoints()).await
    }

    #[test]
    fn fence_keys_sit_just_below_the_name_outside_every_prefix() {
        let cases = [
            ("jobs/", "jobs"),
            ("a/items/", "a/items"),
            ("é/", "é"),
            ("q//", "q/"),
        ];
        for (prefix, name) in cases {
            let fence = fence_key(prefix, 7, 3);
            let name = name.as_bytes();
            assert!(fence.as_slice() < name, "{fence:?}");
            // Not under the bare name (Go's reads) nor `<name>/` (ours).
            assert!(!fence.starts_with(name));
            // Nothing but other fences between the fence and the name: the
            // key differs from the name only in its last byte, then 0xFF.
            assert_eq!(&fence[..name.len() - 1], &name[..name.len() - 1]);
            assert_eq!(fence[name.len() - 1], name[name.len() - 1] - 1);
            assert_eq!(fence[name.len()], 0xFF);
            assert!(fence.ends_with(b"cpr-fence/00000000000000000000000000000007/3"));
        }
    }

    /// One create's state before a simulated lost reply.
    struct Pending {
        key: String,
        fence: Vec<u8>,
        generation: u64,
        since: i64,
        txn: Txn,
    }

    async fn pending(
        fences: &UniqueCreates,
        client: &Client,
        prefix: &str,
        value: &str,
    ) -> Pending {
        let since = fences.revision_seen(client, soon()).await.unwrap();
        let generation = fences.generation.load(Ordering::Acquire);
        let fence = fence_key(prefix, fences.id, generation);
        let key = unique_key(prefix);
        let txn = fenced_create(
            std::slice::from_ref(&key),
            &fence,
            &[value.as_bytes().to_vec()],
        );
        Pending {
            key,
            fence,
            generation,
            since,
            txn,
        }
    }

    async fn settle(
        fences: &UniqueCreates,
        client: &Client,
        p: &Pending,
        value: &str,
    ) -> Option<i64> {
        fences
            .settle(client, p.lost(value.as_bytes()), soon())
            .await
            .unwrap()
    }

    /// The deadline an operation starting now would have.
    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + crate::etcd::OPERATION_BOUND
    }

    impl Pending {
        fn lost<'a>(&'a self, value: &'a [u8]) -> Lost<'a> {
            Lost {
                fence: &self.fence,
                generation: self.generation,
                key: &self.key,
                value,
                since: self.since,
            }
        }
    }

    #[tokio::test]
    async fn a_lost_reply_is_settled_from_the_history() {
        let client = client().await;
        let fences = UniqueCreates::new();
        let prefix = "fence-test/";

        // Applied, and the item still there.
        let p = pending(&fences, &client, prefix, "kept").await;
        let applied = client.clone().txn(p.txn.clone()).await.unwrap();
        assert!(applied.succeeded());
        let revision = applied.header().unwrap().revision();
        assert_eq!(settle(&fences, &client, &p, "kept").await, Some(revision));

        // Applied, and already taken by a consumer: still "applied", so
        // the caller does not write it again.
        let p = pending(&fences, &client, prefix, "taken").await;
        let applied = client.clone().txn(p.txn.clone()).await.unwrap();
        let revision = applied.header().unwrap().revision();
        client.clone().delete(p.key.as_str(), None).await.unwrap();
        assert_eq!(settle(&fences, &client, &p, "taken").await, Some(revision));

        // Never applied: "no" — and a late copy that arrives after the
        // fence went up does not apply either.
        let p = pending(&fences, &client, prefix, "lost").await;
        assert_eq!(settle(&fences, &client, &p, "lost").await, None);
        let late = client.clone().txn(p.txn.clone()).await.unwrap();
        assert!(!late.succeeded(), "a late create got past its fence");
        let there = client.clone().get(p.key.as_str(), None).await.unwrap();
        assert_eq!(there.count(), 0);

        // Three fences are up now, and no reader sees them: not Go's, which
        // reads the bare prefix, and so not ours, which reads `<name>/`.
        let bare = GetOptions::new().with_prefix().with_keys_only();
        let seen = client.clone().get("fence-test", Some(bare)).await.unwrap();
        assert!(
            seen.kvs()
                .iter()
                .all(|kv| kv.key().starts_with(b"fence-test/"))
        );
        let fences_up = GetOptions::new().with_prefix().with_count_only();
        let up = client
            .clone()
            .get(b"fence-tess\xFF".to_vec(), Some(fences_up))
            .await
            .unwrap();
        assert!(up.count() >= 3, "the fences are not where they should be");

        // Each fence moved creates on to the next one: this one applies.
        let (key, _) = fences
            .create_unique(&client, prefix, b"next".to_vec())
            .await
            .unwrap();
        let there = client.clone().get(key.as_str(), None).await.unwrap();
        assert_eq!(there.kvs()[0].value(), b"next");
        assert_eq!(fences.generation.load(Ordering::Acquire), 3);
    }

    /// A batch's lost reply is settled by its first key: the transaction
    /// applied all of its puts or none, and a late copy applies none.
    #[tokio::test]
    async fn a_lost_batch_is_settled_whole() {
        let client = client().await;
        let fences = UniqueCreates::new();
        let prefix = "fence-batch-test/";
        let values: Vec<Vec<u8>> =
            ["x", "y", "z"].map(|v| v.as_bytes().to_vec()).to_vec();
        let count = |keys: Vec<String>| {
            let client = client.clone();
            async move {
                let mut found = 0;
                for key in keys {
                    found += client.clone().get(key, None).await.unwrap().count();
                }
                found
            }
        };
        for applies in [true, false] {
            let since = fences.revision_seen(&client, soon()).await.unwrap();
            let generation = fences.generation.load(Ordering::Acquire);
            let fence = fence_key(prefix, fences.id, generation);
            let keys: Vec<String> = values.iter().map(|_| unique_key(prefix)).collect();
            let txn = fenced_create(&keys, &fence, &values);
            let applied_at = if applies {
                let reply = client.clone().txn(txn.clone()).await.unwrap();
                Some(reply.header().unwrap().revision())
            } else {
                None
            };
            let lost = Lost {
                fence: &fence,
                generation,
                key: &keys[0],
                value: &values[0],
                since,
            };
            let settled = fences.settle(&client, lost, soon()).await.unwrap();
            assert_eq!(settled, applied_at);
            let late = client.clone().txn(txn).await.unwrap();
            assert!(!late.succeeded(), "a late batch got past its fence");
            assert_eq!(count(keys).await, if applies { 3 } else { 0 });
        }
    }

    #[tokio::test]
    async fn concurrent_creates_get_past_a_fence_raised_under_them() {
        let mut client = client().await;
        let fences = std::sync::Arc::new(UniqueCreates::new());
        let prefix = format!("fence-shared-{:08x}/", rand::random::<u32>());
        // Another create's lost reply raised the current fence (generation
        // 0), and these creates have not heard of it yet.
        let lease = client.lease_grant(FENCE_TTL, None).await.unwrap().id();
        let raised = fence_key(&prefix, fences.id, 0);
        let options = PutOptions::new().with_lease(lease);
        client.put(raised, "", Some(options)).await.unwrap();
        let creates: Vec<_> = (0..8)
            .map(|i| {
                let (fences, client, prefix) =
                    (fences.clone(), client.clone(), prefix.clone());
                tokio::spawn(async move {
                    let value = format!("item {i}").into_bytes();
                    fences.create_unique(&client, &prefix, value).await
                })
            })
            .collect();
        let mut keys = HashSet::new();
        for create in creates {
            let created = tokio::time::timeout(Duration::from_secs(10), create).await;
            let (key, _) = created
                .expect("a create kept hitting the fence")
                .unwrap()
                .unwrap();
            keys.insert(key);
        }
        assert_eq!(keys.len(), 8);
        // Each item is there once, under the key its create returned.
        let all = GetOptions::new().with_prefix();
        let items = client.get(prefix.as_str(), Some(all)).await.unwrap();
        let mut values: Vec<&[u8]> = items.kvs().iter().map(|kv| kv.value()).collect();
        values.sort();
        let expected: Vec<String> = (0..8).map(|i| format!("item {i}")).collect();
        assert_eq!(
            values,
            expected.iter().map(|v| v.as_bytes()).collect::<Vec<_>>()
        );
        assert!(
            items
                .kvs()
                .iter()
                .all(|kv| keys.contains(kv.key_str().unwrap()))
        );
        assert!(fences.generation.load(Ordering::Acquire) >= 1);
    }

    #[tokio::test]
    async fn a_compacted_history_is_an_unknown_outcome_never_a_duplicate() {
        // Compacting would disturb the other tests: an etcd of its own.
        let etcd = testkit::EtcdCluster::start(1).unwrap();
        let client = client_of(etcd.endpoints()).await;
        let fences = UniqueCreates::new();
        let prefix = "fence-test/";

        // Applied and still there: found without the history.
        let p = pending(&fences, &client, prefix, "kept").await;
        let applied = client.clone().txn(p.txn.clone()).await.unwrap();
        let revision = applied.header().unwrap().revision();
        client.clone().compact(revision, None).await.unwrap();
        assert_eq!(settle(&fences, &client, &p, "kept").await, Some(revision));

        // Applied and taken: nothing can tell, so the caller is told so.
        let p = pending(&fences, &client, prefix, "taken").await;
        client.clone().txn(p.txn.clone()).await.unwrap();
        let deleted = client.clone().delete(p.key.as_str(), None).await.unwrap();
        let now = deleted.header().unwrap().revision();
        client.clone().compact(now, None).await.unwrap();
        let outcome = fences.settle(&client, p.lost(b"taken"), soon()).await;
        assert!(
            matches!(outcome, Err(EtcdError::OutcomeUnknown { .. })),
            "{outcome:?}"
        );
    }
}
