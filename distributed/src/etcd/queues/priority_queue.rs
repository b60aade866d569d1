//! A priority queue on etcd, with the key layout of etcd's Go recipe
//! `PriorityQueue`.

use std::sync::Arc;

use crate::etcd::Client;
use tracing::instrument;

use crate::etcd::EtcdError;
use crate::etcd::exactly_once::receipts::Receipts;
use crate::etcd::keys::name::RecipeName;
use crate::etcd::keys::unique::create_sequential_once;
use crate::etcd::queues::take::{TakeOrder, Taker};

/// A queue that hands out the item with the **lowest** priority number
/// first (0 before 1 before 65535), and within one priority, the oldest
/// first. (The lesson's prose says "higher first"; etcd's recipe, and this
/// one, take the lowest number first.)
///
/// Keys are `<name>/<priority, 5 digits>/<sequence, 16 digits>`, so the
/// natural key order is the delivery order, and Go's recipe can read and
/// write the same queue. Enqueue reads the last sequence number of its
/// priority and creates the next one if absent (two round trips; a
/// collision retries).
///
/// Same delivery, isolation, waiting and cancel-safety guarantees as
/// [`Queue`](crate::etcd::Queue). Each dequeue reads the current first item, so a
/// more urgent item that arrives is never passed over; when a faster
/// consumer takes it first, the dequeue reads again, and waits only after
/// a read found the queue empty.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use cpr_distributed::etcd::{EtcdConfig, PriorityQueue};
///
/// let client = EtcdConfig::from_env()?.connect().await?;
/// let tickets = PriorityQueue::new(client, "tickets")?;
/// tickets.enqueue("printer jammed", 5).await?;
/// tickets.enqueue("site down", 0).await?;
/// assert_eq!(tickets.dequeue().await?, b"site down"); // 0 before 5
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As [`Queue`](crate::etcd::Queue)'s.
#[derive(Clone)]
pub struct PriorityQueue {
    client: Client,
    name: RecipeName,
    /// Makes enqueues and takes exactly once under lost replies.
    receipts: Arc<Receipts>,
    line: Arc<Taker>,
}

impl std::fmt::Debug for PriorityQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityQueue")
            .field("name", &self.name.as_str())
            .finish()
    }
}

impl PriorityQueue {
    /// The priority queue called `name` (not empty; its keys are `<name>/…`).
    pub fn new(client: Client, name: &str) -> Result<Self, EtcdError> {
        let name = RecipeName::new(name)?;
        let receipts = Arc::new(Receipts::new());
        // A batch of one: never deliver from a stale local list.
        let line = Taker::new(
            client.clone(),
            name.prefix(),
            TakeOrder::ByKey,
            1,
            receipts.clone(),
        );
        Ok(PriorityQueue {
            client,
            name,
            receipts,
            line,
        })
    }

    /// Adds `value` with `priority` (lower is more urgent). Returns its key.
    #[instrument(level = "debug", skip(self, value), fields(queue = self.name.as_str()))]
    pub async fn enqueue(
        &self,
        value: impl Into<Vec<u8>>,
        priority: u16,
    ) -> Result<String, EtcdError> {
        let level = format!("{}{priority:05}/", self.name.prefix());
        create_sequential_once(&self.client, &self.receipts, &level, value.into()).await
    }

    /// Takes the most urgent item, if there is one; never waits.
    pub async fn try_dequeue(&self) -> Result<Option<Vec<u8>>, EtcdError> {
        self.line.try_take().await
    }

    /// Takes the most urgent item, waiting while the queue is empty.
    ///
    /// # Cancel safety
    ///
    /// Safe; an item taken for a dropped future is put back
    /// under its own key, so it keeps its place — unless a newer item of the
    /// same priority took that key meanwhile (a level that empties numbers
    /// its keys from 0 again), in which case it goes to the end of its
    /// priority. Never lost, never overwriting another item.
    #[instrument(level = "debug", skip(self), fields(queue = self.name.as_str()))]
    pub async fn dequeue(&self) -> Result<Vec<u8>, EtcdError> {
        self.line.take().await
    }
}
