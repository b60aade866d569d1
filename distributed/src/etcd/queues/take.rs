//! The building block under both queues: a line of items under a key
//! prefix, taken one at a time by revision-checked deletes. Waiting
//! consumers are woken one per new item, by one watch in the one process
//! that is first in the queue's idle line (see `wakeups`).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::etcd::Client;
use etcd_client::{
    Compare, CompareOp, Event, EventType, GetOptions, KeyValue, SortOrder, SortTarget,
    TxnOp,
};
use tokio::sync::{Mutex, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::etcd::EtcdError;
use crate::etcd::exactly_once::receipts::{Applied, Receipts};
use crate::etcd::keys::unique::{
    create_if_absent_once, create_sequential_once, unique_key,
};
use crate::etcd::queues::batch::Batch;
use crate::etcd::queues::wakeups::Wakeups;

/// Which item is taken first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakeOrder {
    /// The oldest: lowest create revision (FIFO).
    ByRevision,
    /// The lowest key (priority queues encode priority and sequence in it).
    ByKey,
}

/// Items under one prefix, shared by every consumer of a queue object.
pub(crate) struct Taker {
    client: Client,
    prefix: String,
    order: TakeOrder,
    /// How many items one read fetches; the rest wait in `candidates`.
    batch: Batch,
    /// Items read but not yet taken: (key, mod revision, value).
    candidates: Mutex<VecDeque<(String, i64, Vec<u8>)>>,
    /// Wakes one waiting consumer per new item (see `wakeups`).
    wakeups: Wakeups,
    /// Makes takes exactly once under lost replies.
    receipts: Arc<Receipts>,
}

impl Taker {
    /// `receipts` are the queue object's own: a queue whose enqueues also
    /// use receipts (the priority queue) shares them with its takes.
    pub(crate) fn new(
        client: Client,
        prefix: String,
        order: TakeOrder,
        batch: i64,
        receipts: Arc<Receipts>,
    ) -> Arc<Self> {
        // Every new item (a put under the prefix) is worth one wake-up.
        let wakeups = Wakeups::new(
            client.clone(),
            "q",
            prefix.clone(),
            Arc::new(|event: &Event| event.event_type() == EventType::Put),
        );
        Arc::new(Taker {
            client,
            prefix,
            order,
            batch: Batch::new(batch),
            candidates: Mutex::new(VecDeque::new()),
            wakeups,
            receipts,
        })
    }

    /// Takes the first item, if there is one; never waits for one.
    pub(crate) async fn try_take(&self) -> Result<Option<Vec<u8>>, EtcdError> {
        self.take_first().await
    }

    /// Takes the first item, waiting while there is none.
    ///
    /// # Cancel safety
    ///
    /// Safe. An item is only removed by a transaction that
    /// runs in its own task; if this future was dropped meanwhile, the item
    /// is put back, never lost.
    // ANCHOR: take
    pub(crate) async fn take(&self) -> Result<Vec<u8>, EtcdError> {
        self.wakeups.wait_for(|| self.take_first()).await
    }
    // ANCHOR_END: take

    /// Takes the first item, if there is one.
    ///
    /// Only a read that finds no item means "empty": when every item read
    /// was taken by a faster consumer first, read again. (Concluding
    /// "empty" there would leave this consumer waiting for the next
    /// enqueue beside a queue full of items.)
    // ANCHOR: take_first
    async fn take_first(&self) -> Result<Option<Vec<u8>>, EtcdError> {
        // One bound for the whole take, waiting for the candidates (another
        // consumer of this object may be reading) included: against a hung
        // member, consumers fail together, not one bound after another.
        let deadline = self.client.deadline();
        let mut candidates = tokio::time::timeout_at(deadline, self.candidates.lock())
            .await
            .map_err(|_| EtcdError::TimedOut {
                waited: self.client.operation_bound(),
            })?;
        loop {
            while let Some((key, revision, value)) = candidates.pop_front() {
                let taken =
                    take_item(self, key, revision, value.clone(), deadline).await?;
                if taken {
                    if !candidates.is_empty() {
                        // More items are known: pass the wake-up on.
                        self.wakeups.pass_on();
                    }
                    return Ok(Some(value));
                }
                // Someone else took it: try the next one.
            }
            if self.refill(&mut candidates, deadline).await? == 0 {
                return Ok(None);
            }
        }
    }
    // ANCHOR_END: take_first

    /// Reads the first items into `candidates`; returns how many it found.
    ///
    /// Keys under the prefix that are not items of this queue — those of a
    /// nested queue (`<name>/sub/…`), or keys that are not UTF-8 — are
    /// passed over (the latter with a warning naming them), a page at a
    /// time, so that they neither wedge the queue nor hide items behind them.
    async fn refill(
        &self,
        candidates: &mut VecDeque<(String, i64, Vec<u8>)>,
        deadline: Instant,
    ) -> Result<usize, EtcdError> {
        let prefix_end = self.prefix_end();
        let mut start = self.prefix.clone().into_bytes();
        let mut after_revision = 0;
        loop {
            let (response, limit) = self
                .batch
                .read(|limit| {
                    let mut options = GetOptions::new()
                        .with_range(prefix_end.as_str())
                        .with_limit(limit);
                    if self.order == TakeOrder::ByRevision {
                        options = options
                            .with_sort(SortTarget::Create, SortOrder::Ascend)
                            .with_min_create_revision(after_revision + 1);
                    }
                    self.client.retried_get_until(
                        deadline,
                        start.clone(),
                        Some(options),
                    )
                })
                .await?;
            let full = response.kvs().len() as i64 >= limit;
            let kvs = match self.order {
                TakeOrder::ByRevision => {
                    self.whole_revisions(response.kvs().to_vec(), full, limit, deadline)
                        .await?
                }
                TakeOrder::ByKey => response.kvs().to_vec(),
            };
            for kv in kvs.iter().filter(|kv| self.is_item(kv.key())) {
                match kv.key_str() {
                    Ok(key) => {
                        let value = kv.value().to_vec();
                        candidates.push_back((
                            key.to_string(),
                            kv.mod_revision(),
                            value,
                        ));
                    }
                    Err(_) => warn!(
                        key = %String::from_utf8_lossy(kv.key()),
                        "skipping a key under the queue that is not UTF-8"
                    ),
                }
            }
            let Some(last) = kvs.last() else {
                return Ok(candidates.len());
            };
            if !candidates.is_empty() || !full {
                return Ok(candidates.len());
            }
            // A whole page of keys that are not ours: read on past them.
            match self.order {
                TakeOrder::ByRevision => after_revision = last.create_revision(),
                TakeOrder::ByKey => start = [last.key(), b"\0"].concat(),
            }
        }
    }

    /// A page read by create revision, in the order items are taken: by
    /// revision, then by key. Items enqueued together (`enqueue_many`)
    /// share one revision, and etcd orders equal revisions arbitrarily — so
    /// it may also have cut a full page in the middle of one revision, at
    /// arbitrary keys. Such a cut revision is left for the next read, unless
    /// it is the whole page (a batch larger than a page): then that
    /// revision is read again by key, its first keys in order.
    async fn whole_revisions(
        &self,
        mut page: Vec<KeyValue>,
        full: bool,
        limit: i64,
        deadline: Instant,
    ) -> Result<Vec<KeyValue>, EtcdError> {
        page.sort_by(|a, b| {
            (a.create_revision(), a.key()).cmp(&(b.create_revision(), b.key()))
        });
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Ok(page);
        };
        let (first, last) = (first.create_revision(), last.create_revision());
        if !full {
            return Ok(page);
        }
        if first != last {
            page.retain(|kv| kv.create_revision() != last);
            return Ok(page);
        }
        let prefix_end = self.prefix_end();
        let options = GetOptions::new()
            .with_range(prefix_end.as_str())
            .with_min_create_revision(last)
            .with_max_create_revision(last)
            .with_limit(limit);
        let by_key = self
            .client
            .retried_get_until(deadline, self.prefix.as_str(), Some(options))
            .await?;
        Ok(by_key.kvs().to_vec())
    }

    /// The first key after everything under our prefix (which ends with
    /// `/`, so the end is the prefix with that `/` turned into `0`).
    fn prefix_end(&self) -> String {
        format!("{}0", &self.prefix[..self.prefix.len() - 1])
    }

    /// Whether `key` is an item of this queue: `<name>/<id>` for a FIFO
    /// queue, `<name>/<priority>/<sequence>` for a priority queue.
    fn is_item(&self, key: &[u8]) -> bool {
        let Some(rest) = key.strip_prefix(self.prefix.as_bytes()) else {
            return false;
        };
        let segments = rest.split(|byte| *byte == b'/').count();
        let expected = match self.order {
            TakeOrder::ByRevision => 1,
            TakeOrder::ByKey => 2,
        };
        segments == expected && rest.split(|byte| *byte == b'/').all(|s| !s.is_empty())
    }
}

/// Deletes the item if it is still the version we read; true if we got it.
///
/// The delete is exactly once ([`Receipts`]): a lost reply is resolved, so
/// an item deleted for us is never mistaken for one taken by someone else
/// (which would lose it). The transaction runs in its own task, so that it
/// cannot be cut in half.
/// The task hands the outcome over and then waits for the caller to
/// acknowledge it — which the caller does in the same step in which it
/// receives it. If the caller is gone instead (its `dequeue` was cancelled),
/// the item is written back rather than lost.
// ANCHOR: take_item
async fn take_item(
    line: &Taker,
    key: String,
    mod_revision: i64,
    value: Vec<u8>,
    deadline: Instant,
) -> Result<bool, EtcdError> {
    let (reply, answer) = oneshot::channel();
    let (ack, acked) = oneshot::channel::<()>();
    let (client, receipts) = (line.client.clone(), line.receipts.clone());
    let (order, prefix) = (line.order, line.prefix.clone());
    tokio::spawn(async move {
        let unchanged =
            Compare::mod_revision(key.as_str(), CompareOp::Equal, mod_revision);
        let delete = TxnOp::delete(key.as_str(), None);
        let outcome = receipts
            .apply_until(&client, vec![unchanged], vec![delete], deadline)
            .await
            .map(|applied| matches!(applied, Applied::Yes(_)));
        let taken = matches!(outcome, Ok(true));
        let _ = reply.send(outcome);
        if taken && acked.await.is_err() {
            debug!(%key, "dequeue cancelled after the take; putting the item back");
            let back = put_back(&client, &receipts, order, &prefix, &key, value);
            if let Err(error) = back.await {
                warn!(%key, %error, "could not put back a cancelled dequeue's item");
            }
        }
    });
    let taken = answer.await.unwrap_or(Ok(false))?;
    if taken {
        // No `.await` between receiving the item and returning it: once
        // acknowledged, it reaches the caller.
        let _ = ack.send(());
    }
    Ok(taken)
}
// ANCHOR_END: take_item

/// Writes back an item whose dequeue was cancelled after taking it: under
/// its own key if that is still free, else under a new key of its level.
///
/// Never a plain put: a newer item may have taken the key meanwhile (a
/// priority level that empties starts its sequence numbers at 0 again),
/// and overwriting it would lose that item. Exactly once, like the take.
async fn put_back(
    client: &Client,
    receipts: &Receipts,
    order: TakeOrder,
    prefix: &str,
    key: &str,
    value: Vec<u8>,
) -> Result<String, EtcdError> {
    if create_if_absent_once(client, receipts, key, value.clone())
        .await?
        .is_some()
    {
        return Ok(key.to_string());
    }
    debug!(%key, "the key of a put-back item was reused; putting it under a new key");
    match order {
        TakeOrder::ByKey => {
            let level = key.rfind('/').map_or(prefix, |slash| &key[..=slash]);
            create_sequential_once(client, receipts, level, value).await
        }
        TakeOrder::ByRevision => loop {
            let fresh = unique_key(prefix);
            if create_if_absent_once(client, receipts, &fresh, value.clone())
                .await?
                .is_some()
            {
                return Ok(fresh);
            }
        },
    }
}
