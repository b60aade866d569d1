//! The building block under both queues: a line of items under a key
//! prefix, taken one at a time by revision-checked deletes, with one watch
//! per process that wakes one waiting consumer per new item.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, SortOrder, SortTarget, TxnOp, WatchOptions,
};
use tokio::sync::{Mutex, Notify, oneshot};
use tokio::task::JoinHandle;
use tracing::debug;

use super::EtcdError;
use super::receipt::{Applied, Receipts};
use super::retry::{Repeat, retrying};

/// Which item is taken first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakeOrder {
    /// The oldest: lowest create revision (FIFO).
    ByRevision,
    /// The lowest key (priority queues encode priority and sequence in it).
    ByKey,
}

/// Items under one prefix, shared by every consumer of a queue object.
pub(crate) struct ItemLine {
    client: Client,
    prefix: String,
    order: TakeOrder,
    /// How many items one read fetches; the rest wait in `candidates`.
    batch: i64,
    /// Items read but not yet taken: (key, mod revision, value).
    candidates: Mutex<VecDeque<(String, i64, Vec<u8>)>>,
    /// One permit per new item seen by the watch.
    arrivals: Notify,
    watcher: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Makes takes (and the queues' enqueues) exactly once under lost replies.
    receipts: Arc<Receipts>,
}

impl Drop for ItemLine {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.get_mut().ok().and_then(Option::take) {
            watcher.abort();
        }
    }
}

impl ItemLine {
    pub(crate) fn new(client: Client, prefix: String, order: TakeOrder, batch: i64) -> Arc<Self> {
        Arc::new(ItemLine {
            client,
            prefix,
            order,
            batch: batch.max(1),
            candidates: Mutex::new(VecDeque::new()),
            arrivals: Notify::new(),
            watcher: std::sync::Mutex::new(None),
            receipts: Arc::new(Receipts::new()),
        })
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn receipts(&self) -> &Receipts {
        &self.receipts
    }

    /// Takes the first item, if there is one; never waits for one.
    pub(crate) async fn try_take(self: &Arc<Self>) -> Result<Option<Vec<u8>>, EtcdError> {
        Ok(self.take_first().await?.0)
    }

    /// Takes the first item, waiting while there is none.
    ///
    /// Cancel safety: safe. An item is only removed by a transaction that
    /// runs in its own task; if this future was dropped meanwhile, the item
    /// is put back, never lost.
    // ANCHOR: take
    pub(crate) async fn take(self: &Arc<Self>) -> Result<Vec<u8>, EtcdError> {
        loop {
            // Register interest before looking, so that an item arriving
            // between the look and the wait still wakes us.
            let arrival = self.arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let (item, read_at) = self.take_first().await?;
            if let Some(value) = item {
                return Ok(value);
            }
            self.start_watcher(read_at + 1);
            arrival.await;
        }
    }
    // ANCHOR_END: take

    /// The first item, and the revision at which the line was last read.
    async fn take_first(&self) -> Result<(Option<Vec<u8>>, i64), EtcdError> {
        let mut candidates = self.candidates.lock().await;
        let mut read_at = 0;
        for refill in [false, true] {
            if refill {
                read_at = self.refill(&mut candidates).await?;
            }
            while let Some((key, revision, value)) = candidates.pop_front() {
                if take_item(&self.client, &self.receipts, key, revision, value.clone()).await? {
                    return Ok((Some(value), read_at));
                }
                // Someone else took it: try the next one.
            }
        }
        Ok((None, read_at))
    }

    /// Reads the first items into `candidates`; returns the read's revision.
    async fn refill(
        &self,
        candidates: &mut VecDeque<(String, i64, Vec<u8>)>,
    ) -> Result<i64, EtcdError> {
        let mut options = GetOptions::new().with_prefix().with_limit(self.batch);
        if self.order == TakeOrder::ByRevision {
            options = options.with_sort(SortTarget::Create, SortOrder::Ascend);
        }
        let response = retrying(Repeat::Idempotent, || {
            let (mut client, options, prefix) =
                (self.client.clone(), options.clone(), self.prefix.clone());
            async move { client.get(prefix, Some(options)).await }
        })
        .await?;
        for kv in response.kvs() {
            candidates.push_back((
                kv.key_str()?.to_string(),
                kv.mod_revision(),
                kv.value().to_vec(),
            ));
        }
        Ok(response.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Starts the line's one watch, if it is not running: it turns each new
    /// item into one wake-up.
    fn start_watcher(self: &Arc<Self>, from_revision: i64) {
        let mut watcher = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        if watcher.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        let line = Arc::downgrade(self);
        let (client, prefix) = (self.client.clone(), self.prefix.clone());
        *watcher = Some(tokio::spawn(async move {
            let mut from = from_revision;
            loop {
                let outcome = watch_arrivals(&client, &prefix, &mut from, &line).await;
                let Some(line) = line.upgrade() else { return };
                debug!(?outcome, "item watch ended; restarting");
                // While the watch is down, let every waiter look for itself.
                line.arrivals.notify_waiters();
                drop(line);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
}

/// Watches for new items from `from`, waking one waiter per item, until the
/// watch fails or the line is dropped.
async fn watch_arrivals(
    client: &Client,
    prefix: &str,
    from: &mut i64,
    line: &Weak<ItemLine>,
) -> Result<(), EtcdError> {
    let options = WatchOptions::new().with_prefix().with_start_revision(*from);
    let mut watch = client.clone().watch(prefix, Some(options)).await?;
    while let Some(response) = watch.message().await? {
        if response.canceled() {
            return Err(EtcdError::WatchEnded {
                key: prefix.to_string(),
                reason: response.cancel_reason().to_string(),
            });
        }
        let Some(line) = line.upgrade() else {
            return Ok(());
        };
        for event in response.events() {
            if let Some(kv) = event.kv() {
                *from = kv.mod_revision() + 1;
                if event.event_type() == EventType::Put {
                    line.arrivals.notify_one();
                }
            }
        }
    }
    Ok(())
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
    client: &Client,
    receipts: &Arc<Receipts>,
    key: String,
    mod_revision: i64,
    value: Vec<u8>,
) -> Result<bool, EtcdError> {
    let (reply, answer) = oneshot::channel();
    let (ack, acked) = oneshot::channel::<()>();
    let (client, receipts) = (client.clone(), receipts.clone());
    tokio::spawn(async move {
        let unchanged = Compare::mod_revision(key.as_str(), CompareOp::Equal, mod_revision);
        let delete = TxnOp::delete(key.as_str(), None);
        let outcome = receipts
            .apply(&client, vec![unchanged], vec![delete])
            .await
            .map(|applied| matches!(applied, Applied::Yes(_)));
        let taken = matches!(outcome, Ok(true));
        let _ = reply.send(outcome);
        if taken && acked.await.is_err() {
            debug!(%key, "dequeue cancelled after the item was taken; putting it back");
            let put_back = retrying(Repeat::IfUnsent, || {
                let (mut client, key, value) = (client.clone(), key.clone(), value.clone());
                async move { client.put(key, value, None).await }
            });
            if let Err(error) = put_back.await {
                tracing::warn!(%key, %error, "could not put back the item of a cancelled dequeue");
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
