//! A FIFO queue on etcd, readable by etcd's Go recipe `Queue`.

use std::sync::Arc;

use crate::etcd::Client;
use tracing::instrument;

use crate::etcd::EtcdError;
use crate::etcd::exactly_once::receipts::Receipts;
use crate::etcd::exactly_once::unique_creates::{MAX_CREATES_PER_TXN, UniqueCreates};
use crate::etcd::keys::name::RecipeName;
use crate::etcd::queues::producer::QueueProducer;
use crate::etcd::queues::take::{TakeOrder, Taker};

/// How many of the oldest items one read fetches. Items are taken one at a
/// time, with a transaction each; the rest wait in a local list, so a busy
/// consumer reads the queue once per batch rather than once per item.
const BATCH: i64 = 16;
/// The most value bytes one `enqueue_many` transaction carries, under
/// etcd's default request limit of 1.5 MiB.
pub(crate) const MAX_BYTES_PER_TXN: usize = 1 << 20;

/// A multi-producer, multi-consumer FIFO queue: each item a key
/// `<name>/<unix nanos>`, taken in the order the items were created.
///
/// - Each item goes to one consumer, and none is lost by a cancelled
///   `dequeue`.
/// - A lost reply (a member dying mid-request) neither doubles an enqueue
///   nor loses a take (see the book's "Exactly once when a reply is lost").
/// - Queue `a` never sees the items of queue `a/b` or `ab`.
/// - One new item wakes one waiting consumer, across processes too.
///
/// Delivery is **at most once**: an item is gone from etcd when `dequeue`
/// returns it, so a consumer that crashes while processing loses it. Use a
/// [`WorkQueue`](crate::etcd::WorkQueue) for at least once.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use cpr_distributed::etcd::{EtcdConfig, Queue};
///
/// let client = EtcdConfig::from_env()?.connect().await?;
/// let jobs = Queue::new(client, "jobs")?;
/// jobs.enqueue("resize photo 17").await?;
/// let job = jobs.dequeue().await?; // waits while the queue is empty
/// assert_eq!(job, b"resize photo 17");
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`EtcdError::InvalidConfig`] for an empty name;
/// [`EtcdError::TimedOut`] when etcd does not answer within the client's
/// operation bound; [`EtcdError::OutcomeUnknown`] in the rare case where a
/// lost enqueue could not be settled.
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
    /// The queue called `name` (not empty; its keys are `<name>/…`).
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
    /// Exactly once: if the reply is lost (the member died), the lost write
    /// is stopped from applying later, and etcd's history says whether it
    /// did; if not, it is written again (see the book's "Exactly once when
    /// a reply is lost"). This fails with
    /// [`EtcdError::OutcomeUnknown`] only if etcd compacted that history in
    /// the seconds between; the item is then there at most once.
    ///
    /// # Cancel safety
    ///
    /// If dropped before the reply, the item may or may not
    /// have been added (as with any write whose reply is not awaited).
    #[instrument(level = "debug", skip(self, value), fields(queue = self.name.as_str()))]
    pub async fn enqueue(
        &self,
        value: impl Into<Vec<u8>>,
    ) -> Result<String, EtcdError> {
        let value: Vec<u8> = value.into();
        let (key, _) = self
            .creates
            .create_unique(&self.client, &self.name.prefix(), value)
            .await?;
        Ok(key)
    }

    /// Appends `values` in their order, in as few round trips as etcd
    /// allows: one transaction per 127 items (etcd's default limit on a
    /// transaction's comparisons) or per MiB of values. Returns the items'
    /// keys, in order.
    ///
    /// The items of one transaction share a create revision and follow
    /// each other in key order, which is the order consumers of this crate
    /// take them in; no other producer's item falls between them. Exactly
    /// once, like [`enqueue`](Self::enqueue). (Go's `Queue.Dequeue` reads
    /// one item by revision alone, so a Go consumer may take a
    /// transaction's items in any order.)
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Self::enqueue); when the values took several
    /// transactions and one failed, the transactions before it stay
    /// applied — their items are in the queue — and none after it was sent.
    ///
    /// # Cancel safety
    ///
    /// If dropped before it returns, some leading part of the
    /// values — whole transactions — may have been added.
    #[instrument(level = "debug", skip(self, values), fields(queue = self.name.as_str()))]
    pub async fn enqueue_many<V: Into<Vec<u8>>>(
        &self,
        values: impl IntoIterator<Item = V>,
    ) -> Result<Vec<String>, EtcdError> {
        let mut keys = Vec::new();
        let mut chunk: Vec<Vec<u8>> = Vec::new();
        let mut chunk_bytes = 0;
        let mut values = values.into_iter().map(Into::into).peekable();
        while let Some(value) = values.next() {
            chunk_bytes += value.len();
            chunk.push(value);
            let next_fits = values.peek().is_some_and(|next| {
                chunk.len() < MAX_CREATES_PER_TXN
                    && chunk_bytes + next.len() <= MAX_BYTES_PER_TXN
            });
            if !next_fits {
                keys.extend(self.enqueue_chunk(&chunk).await?);
                chunk.clear();
                chunk_bytes = 0;
            }
        }
        Ok(keys)
    }

    /// One transaction of `enqueue_many`.
    pub(crate) async fn enqueue_chunk(
        &self,
        values: &[Vec<u8>],
    ) -> Result<Vec<String>, EtcdError> {
        let (keys, _) = self
            .creates
            .create_many(&self.client, &self.name.prefix(), values)
            .await?;
        Ok(keys)
    }

    /// A producer that keeps many enqueues in flight: each
    /// [`QueueProducer::enqueue`] joins the next transaction, sent as soon
    /// as the one before it is answered, so items keep the order they were
    /// enqueued in. For a producer that has many items to send and cannot
    /// wait for each one's round trip.
    pub fn producer(&self) -> QueueProducer {
        QueueProducer::new(self.clone())
    }

    /// Takes the oldest item, if there is one; never waits for one.
    pub async fn try_dequeue(&self) -> Result<Option<Vec<u8>>, EtcdError> {
        self.line.try_take().await
    }

    /// Takes the oldest item, waiting while the queue is empty.
    ///
    /// # Cancel safety
    ///
    /// Safe. An item is only removed by a transaction that
    /// runs in its own task; if this future was dropped meanwhile, the item
    /// is put back (at the end of the queue), never lost.
    #[instrument(level = "debug", skip(self), fields(queue = self.name.as_str()))]
    pub async fn dequeue(&self) -> Result<Vec<u8>, EtcdError> {
        self.line.take().await
    }
}
