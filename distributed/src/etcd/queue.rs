//! A FIFO queue on etcd, readable by etcd's Go recipe `Queue`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions,
};
use tokio::sync::{Mutex, Notify, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, instrument};

use super::EtcdError;
use super::keys::create_unique;
use super::name::RecipeName;
use super::retry::{Repeat, retrying};

/// How many of the oldest items one read fetches. Items are taken one at a
/// time, with a transaction each; the rest wait in a local list, so a busy
/// consumer reads the queue once per batch rather than once per item.
const BATCH: i64 = 16;

/// A multi-producer, multi-consumer FIFO queue: `<name>/<unix nanos>` keys,
/// no lease, ordered by the revision that created them.
///
/// Guarantees:
/// - Each item is delivered to at most one consumer (a revision-checked
///   delete decides), and none is lost by a cancelled `dequeue`.
/// - Queue `a` never sees the items of queue `ab` (keys are read under
///   `a/`; Go's recipe reads the bare prefix).
/// - No thundering herd within a process: consumers that share a `Queue`
///   (clone it) share one watch, and each new item wakes one of them.
///
/// Delivery is at most once: an item is gone from etcd when `dequeue`
/// returns it, so a consumer that crashes while processing loses it. Use
/// the work queue for at-least-once delivery.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    name: RecipeName,
    /// Oldest items read but not yet taken: (key, mod revision, value).
    candidates: Mutex<VecDeque<(String, i64, Vec<u8>)>>,
    /// One permit per new item seen by the watch.
    arrivals: Notify,
    watcher: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.get_mut().ok().and_then(Option::take) {
            watcher.abort();
        }
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.shared.name.as_str())
            .finish()
    }
}

impl Queue {
    /// The queue called `name` (not empty, no trailing `/`).
    pub fn new(client: Client, name: &str) -> Result<Self, EtcdError> {
        Ok(Queue {
            shared: Arc::new(Shared {
                client,
                name: RecipeName::new(name)?,
                candidates: Mutex::new(VecDeque::new()),
                arrivals: Notify::new(),
                watcher: std::sync::Mutex::new(None),
            }),
        })
    }

    /// Appends `value`; one round trip. Returns the item's key.
    ///
    /// Cancel safety: if dropped before the reply, the item may or may not
    /// have been added (as with any write whose reply is lost).
    #[instrument(level = "debug", skip(self, value), fields(queue = self.shared.name.as_str()))]
    pub async fn enqueue(&self, value: impl Into<Vec<u8>>) -> Result<String, EtcdError> {
        let value: Vec<u8> = value.into();
        let (key, _) =
            create_unique(&self.shared.client, &self.shared.name.prefix(), value, 0).await?;
        Ok(key)
    }

    /// Takes the oldest item, if there is one; never waits for one.
    pub async fn try_dequeue(&self) -> Result<Option<Vec<u8>>, EtcdError> {
        Ok(self.take_oldest().await?.0)
    }

    /// Takes the oldest item, waiting while the queue is empty.
    ///
    /// Cancel safety: safe. An item is only removed by a transaction that
    /// runs in its own task; if this future was dropped meanwhile, the item
    /// is put back (at the end of the queue), never lost.
    #[instrument(level = "debug", skip(self), fields(queue = self.shared.name.as_str()))]
    pub async fn dequeue(&self) -> Result<Vec<u8>, EtcdError> {
        loop {
            // Register interest before looking, so that an item arriving
            // between the look and the wait still wakes us.
            let arrival = self.shared.arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let (item, read_at) = self.take_oldest().await?;
            if let Some(value) = item {
                return Ok(value);
            }
            self.start_watcher(read_at + 1);
            arrival.await;
        }
    }

    /// The oldest item, and the revision at which the queue was last read.
    async fn take_oldest(&self) -> Result<(Option<Vec<u8>>, i64), EtcdError> {
        let mut candidates = self.shared.candidates.lock().await;
        let mut read_at = 0;
        for refill in [false, true] {
            if refill {
                read_at = self.refill(&mut candidates).await?;
            }
            while let Some((key, revision, value)) = candidates.pop_front() {
                if take(&self.shared.client, key, revision, value.clone()).await? {
                    return Ok((Some(value), read_at));
                }
                // Someone else took it: try the next one.
            }
        }
        Ok((None, read_at))
    }

    /// Reads the oldest items into `candidates`; returns the read's revision.
    async fn refill(
        &self,
        candidates: &mut VecDeque<(String, i64, Vec<u8>)>,
    ) -> Result<i64, EtcdError> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(BATCH);
        let prefix = self.shared.name.prefix();
        let response = retrying(Repeat::Idempotent, || {
            let (mut client, options, prefix) =
                (self.shared.client.clone(), options.clone(), prefix.clone());
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

    /// Starts the queue's one watch, if it is not running: it turns each new
    /// item into one wake-up.
    fn start_watcher(&self, from_revision: i64) {
        let mut watcher = self
            .shared
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if watcher.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        let (client, prefix) = (self.shared.client.clone(), self.shared.name.prefix());
        *watcher = Some(tokio::spawn(async move {
            let mut from = from_revision;
            loop {
                let outcome = watch_arrivals(&client, &prefix, &mut from, &shared).await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                debug!(?outcome, "queue watch ended; restarting");
                // While the watch is down, let every waiter look for itself.
                shared.arrivals.notify_waiters();
                drop(shared);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
}

/// Watches for new items from `from`, waking one waiter per item, until the
/// watch fails or the queue is dropped.
async fn watch_arrivals(
    client: &Client,
    prefix: &str,
    from: &mut i64,
    shared: &std::sync::Weak<Shared>,
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
        let Some(shared) = shared.upgrade() else {
            return Ok(());
        };
        for event in response.events() {
            if let Some(kv) = event.kv() {
                *from = kv.mod_revision() + 1;
                if event.event_type() == EventType::Put {
                    shared.arrivals.notify_one();
                }
            }
        }
    }
    Ok(())
}

/// Deletes the item if it is still the version we read; true if we got it.
///
/// The transaction runs in its own task, so that it cannot be cut in half.
/// The task hands the outcome over and then waits for the caller to
/// acknowledge it — which the caller does in the same step in which it
/// receives it. If the caller is gone instead (its `dequeue` was cancelled),
/// the item is written back rather than lost.
async fn take(
    client: &Client,
    key: String,
    mod_revision: i64,
    value: Vec<u8>,
) -> Result<bool, EtcdError> {
    let (reply, answer) = oneshot::channel();
    let (ack, acked) = oneshot::channel::<()>();
    let client = client.clone();
    tokio::spawn(async move {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        let outcome = retrying(Repeat::IfUnsent, || {
            let (mut client, txn) = (client.clone(), txn.clone());
            async move { client.txn(txn).await }
        })
        .await
        .map(|response| response.succeeded());
        let taken = matches!(outcome, Ok(true));
        let _ = reply.send(outcome);
        if taken && acked.await.is_err() {
            debug!(%key, "dequeue cancelled after the item was taken; putting it back");
            if let Err(error) = client.clone().put(key.as_str(), value, None).await {
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
