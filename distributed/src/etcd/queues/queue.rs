//! A FIFO queue on etcd, readable by etcd's Go recipe `Queue`.

use std::sync::Arc;

use crate::etcd::Client;
use tracing::instrument;

use crate::etcd::EtcdError;
use crate::etcd::exactly_once::receipts::Receipts;
use crate::etcd::exactly_once::unique_creates::UniqueCreates;
use crate::etcd::keys::name::RecipeName;
use crate::etcd::queues::take::{TakeOrder, Taker};

/// How many of the oldest items one read fetches. Items are taken one at a
/// time, with a transaction each; the rest wait in a local list, so a busy
/// consumer reads the queue once per batch rather than once per item.
const BATCH: i64 = 16;

/// A multi-producer, multi-consumer FIFO queue: `<name>/<unix nanos>` keys,
/// no lease, taken in the order of the revisions that created them.
///
/// Guarantees:
/// - Each item is delivered to at most one consumer (a revision-checked
///   delete decides), and none is lost by a cancelled `dequeue`.
/// - A lost reply (a member dying mid-request) neither duplicates an
///   enqueue nor loses a take. An enqueue writes its item alone, as Go's
///   does; only when its reply is lost does it raise a *fence* (a key just
///   below `<name>`, on a one-minute lease) and read etcd's history to learn
///   whether it applied. A take carries a *receipt* (a small key under
///   `cpr-receipts/`, expiring a minute after the queue object stops
///   writing) that makes repeating it safe.
/// - Queue `a` never sees the items of queue `ab` (keys are read under
///   `a/`; Go's recipe reads the bare prefix).
/// - No thundering herd: consumers that share a `Queue` (clone it) share
///   one watch, and each new item wakes one of them; across processes,
///   only the first process of an idle line (leased keys under
///   `cpr-idle/q/<name>/`) watches, the others wait their turn.
///
/// Delivery is at most once: an item is gone from etcd when `dequeue`
/// returns it, so a consumer that crashes while processing loses it.
#[derive(Clone)]
pub struct Queue {
    client: Client,
    line: Arc<Taker>,
    /// Makes enqueues exactly once under lost replies.
    creates: Arc<UniqueCreates>,
    name: RecipeName,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name.as_str())
            .finish()
    }
}

impl Queue {
    /// The queue called `name` (not empty; keys are `<name>/…`, as in Go).
    pub fn new(client: Client, name: &str) -> Result<Self, EtcdError> {
        let name = RecipeName::new(name)?;
        Ok(Queue {
            client: client.clone(),
            line: Taker::new(
                client,
                name.prefix(),
                TakeOrder::ByRevision,
                BATCH,
                Arc::new(Receipts::new()),
            ),
            creates: Arc::new(UniqueCreates::new()),
            name,
        })
    }

    /// Appends `value`; one round trip. Returns the item's key.
    ///
    /// Exactly once: if the reply is lost (the member died), a fence makes
    /// sure the lost write can no longer apply, and etcd's history says
    /// whether it did; if not, it is written again (see the book's "Exactly
    /// once when a reply is lost"). This fails with
    /// [`EtcdError::OutcomeUnknown`] only if etcd compacted that history in
    /// the seconds between; the item is then there at most once.
    ///
    /// Cancel safety: if dropped before the reply, the item may or may not
    /// have been added (as with any write whose reply is not awaited).
    #[instrument(level = "debug", skip(self, value), fields(queue = self.name.as_str()))]
    pub async fn enqueue(&self, value: impl Into<Vec<u8>>) -> Result<String, EtcdError> {
        let value: Vec<u8> = value.into();
        let (key, _) = self
            .creates
            .create_unique(&self.client, &self.name.prefix(), value)
            .await?;
        Ok(key)
    }

    /// Takes the oldest item, if there is one; never waits for one.
    pub async fn try_dequeue(&self) -> Result<Option<Vec<u8>>, EtcdError> {
        self.line.try_take().await
    }

    /// Takes the oldest item, waiting while the queue is empty.
    ///
    /// Cancel safety: safe. An item is only removed by a transaction that
    /// runs in its own task; if this future was dropped meanwhile, the item
    /// is put back (at the end of the queue), never lost.
    #[instrument(level = "debug", skip(self), fields(queue = self.name.as_str()))]
    pub async fn dequeue(&self) -> Result<Vec<u8>, EtcdError> {
        self.line.take().await
    }
}
