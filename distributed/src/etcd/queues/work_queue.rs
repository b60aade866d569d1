//! An at-least-once work queue on etcd: items are claimed, not removed,
//! until the consumer acknowledges them.

use std::sync::Arc;

use etcd_client::{
    Compare, CompareOp, Event, EventType, GetOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse,
};
use tracing::{debug, instrument, warn};

use crate::etcd::client::retry::Repeat;
use crate::etcd::exactly_once::unique_creates::UniqueCreates;
use crate::etcd::keys::name::{RecipeName, is_direct_child_of};
use crate::etcd::queues::batch::Batch;
use crate::etcd::queues::wakeups::Wakeups;
use crate::etcd::{EtcdError, Session};

/// How many of the oldest items one look reads.
const BATCH: i64 = 16;

/// A queue that delivers every item **at least once**.
///
/// Taking an item writes a *claim* on the consumer's session lease; the item
/// itself stays until [`ack`](Self::ack). If the consumer dies, or its
/// session expires, the claim vanishes with the lease and the item is
/// delivered again — to whoever asks next. With
/// [`dead_letter_after`](Self::dead_letter_after), an item delivered that
/// many times without an ack is moved aside instead of poisoning the queue.
///
/// An enqueue or a claim whose reply is lost is settled, never doubled, so
/// no item is added twice or stays claimed by nobody. One new item (or a
/// claim that vanished) wakes one waiting consumer, across processes too.
///
/// Keys: `<name>/items/<nanos>` (the items), `<name>/claims/<nanos>` (on the
/// consumer's lease), `<name>/deliveries/<nanos>` (its version counts the
/// deliveries), `<name>/dead/<nanos>`.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use cpr_distributed::etcd::{EtcdConfig, Session, WorkQueue};
///
/// let client = EtcdConfig::from_env()?.connect().await?;
/// let session = Session::new(client, cpr_distributed::etcd::DEFAULT_TTL).await?;
/// let work = WorkQueue::new(&session, "thumbnails")?.dead_letter_after(5);
/// work.enqueue("photo 17").await?;
/// let item = work.dequeue().await?;
/// // ... do the work; if this process dies here, the item comes back ...
/// work.ack(&item).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`EtcdError::SessionLost`] (or `SessionClosed`) once the session is
/// gone: its claims are gone too, and their items are delivered again;
/// [`EtcdError::TimedOut`] when etcd does not answer within the client's
/// operation bound.
#[derive(Clone)]
pub struct WorkQueue {
    session: Session,
    name: RecipeName,
    dead_letter_after: Option<i64>,
    /// Makes enqueues exactly once under lost replies (no duplicate items).
    creates: Arc<UniqueCreates>,
    /// Wakes one waiting consumer per new item or vanished claim, in one
    /// process at a time (see `wakeups`).
    wakeups: Arc<Wakeups>,
    /// How many items one read fetches (fewer while items are large).
    batch: Arc<Batch>,
}

impl std::fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("name", &self.name.as_str())
            .field("dead_letter_after", &self.dead_letter_after)
            .finish_non_exhaustive()
    }
}

/// An item claimed by this consumer. Finish the work, then [`WorkQueue::ack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    /// The item's id (the last part of its key).
    pub id: String,
    /// Its value.
    pub value: Vec<u8>,
    /// How many times it has been delivered, this time included.
    pub deliveries: i64,
    claim_revision: i64,
}

impl WorkQueue {
    /// The work queue called `name`; claims are written with `session`'s lease.
    pub fn new(session: &Session, name: &str) -> Result<Self, EtcdError> {
        let name = RecipeName::new(name)?;
        // Worth a wake-up: a new item, or a claim that vanished (its
        // consumer died), which makes an item deliverable again.
        let (items, claims) = (name.sub_prefix("items"), name.sub_prefix("claims"));
        let wakes_on = Arc::new(move |event: &Event| {
            let key = event
                .kv()
                .and_then(|kv| kv.key_str().ok())
                .unwrap_or_default();
            (event.event_type() == EventType::Put && key.starts_with(&items))
                || (event.event_type() == EventType::Delete && key.starts_with(&claims))
        });
        Ok(WorkQueue {
            wakeups: Arc::new(Wakeups::new(
                session.client(),
                "w",
                name.prefix(),
                wakes_on,
            )),
            session: session.clone(),
            name,
            dead_letter_after: None,
            creates: Arc::new(UniqueCreates::new()),
            batch: Arc::new(Batch::new(BATCH)),
        })
    }

    /// Moves an item aside (to `<name>/dead/`) once it has been delivered
    /// `deliveries` times (at least 1) without an ack.
    pub fn dead_letter_after(mut self, deliveries: i64) -> Self {
        self.dead_letter_after = Some(deliveries.max(1));
        self
    }

    fn key(&self, part: &str, id: &str) -> String {
        format!("{}{id}", self.name.sub_prefix(part))
    }

    /// Adds an item; returns its id. Exactly once, as
    /// [`Queue::enqueue`](crate::etcd::Queue::enqueue).
    ///
    /// # Cancel safety
    ///
    /// If dropped before the reply, the item may or may not
    /// have been added.
    pub async fn enqueue(
        &self,
        value: impl Into<Vec<u8>>,
    ) -> Result<String, EtcdError> {
        let value: Vec<u8> = value.into();
        let (key, _) = self
            .creates
            .create_unique(
                &self.session.client(),
                &self.name.sub_prefix("items"),
                value,
            )
            .await?;
        Ok(key.rsplit('/').next().unwrap_or_default().to_string())
    }

    /// Claims the oldest unclaimed item, waiting while there is none.
    ///
    /// # Cancel safety
    ///
    /// Safe. A claim made for a dropped future stays until
    /// the session ends (then the item is delivered again): never lost.
    #[instrument(level = "debug", skip(self), fields(queue = self.name.as_str()))]
    pub async fn dequeue(&self) -> Result<WorkItem, EtcdError> {
        self.session.ensure_alive()?;
        tokio::select! {
            lost = self.session.lost() => Err(lost),
            claimed = self.wakeups.wait_for(|| self.try_claim()) => claimed,
        }
    }

    /// Claims the oldest unclaimed item, if there is one.
    ///
    /// Reads the items a page at a time, oldest first, and goes on to the
    /// next page while every item of a full page is claimed (being worked
    /// on by other consumers): "empty" only when no unclaimed item is left.
    async fn try_claim(&self) -> Result<Option<WorkItem>, EtcdError> {
        let mut after_revision = 0;
        loop {
            let (claimed, page) = self.try_claim_page(after_revision).await?;
            match (claimed, page) {
                (Some(item), _) => return Ok(Some(item)),
                (None, Page::Full { last_revision }) => after_revision = last_revision,
                (None, Page::Last) => return Ok(None),
            }
        }
    }

    /// One page of the oldest items created after `after_revision`: claims
    /// the first unclaimed one.
    async fn try_claim_page(
        &self,
        after_revision: i64,
    ) -> Result<(Option<WorkItem>, Page), EtcdError> {
        let client = self.session.client();
        let items = self.name.sub_prefix("items");
        let (response, limit) = self
            .batch
            .read(|limit| {
                let options = GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend)
                    .with_min_create_revision(after_revision + 1)
                    .with_limit(limit);
                let (client, items) = (client.clone(), items.clone());
                async move { client.retried_get(items, Some(options)).await }
            })
            .await?;
        let found = response.kvs().len();
        let page = match response.kvs().last() {
            Some(last) if found as i64 >= limit => Page::Full {
                last_revision: last.create_revision(),
            },
            _ => Page::Last,
        };
        for (index, kv) in response.kvs().iter().enumerate() {
            // Only `<name>/items/<id>`: not a nested queue's keys, and not a
            // key we cannot read (reported, never a wedge).
            if !is_direct_child_of(&items, kv.key()) {
                continue;
            }
            let Ok(key) = kv.key_str() else {
                warn!(
                    key = %String::from_utf8_lossy(kv.key()),
                    "skipping a work-queue key that is not UTF-8"
                );
                continue;
            };
            let id = key.rsplit('/').next().unwrap_or_default().to_string();
            let (item_key, claim, deliveries) = (
                self.key("items", &id),
                self.key("claims", &id),
                self.key("deliveries", &id),
            );
            // Claim it if nobody has, and the item is still there; count the
            // delivery in the same step (a key's version counts its writes).
            let txn = Txn::new()
                .when([
                    Compare::create_revision(claim.as_str(), CompareOp::Equal, 0),
                    Compare::create_revision(
                        item_key.as_str(),
                        CompareOp::Equal,
                        kv.create_revision(),
                    ),
                ])
                .and_then([
                    TxnOp::put(
                        claim.as_str(),
                        "",
                        Some(PutOptions::new().with_lease(self.session.lease_id())),
                    ),
                    TxnOp::put(deliveries.as_str(), "", None),
                    TxnOp::get(deliveries.as_str(), None),
                ]);
            // The claim and, if its reply is lost, finding out whether it
            // was made: one bound for both. Past it the claim may stand, and
            // the item comes back when this session ends (at least once).
            let deadline = client.deadline();
            let claimed = client
                .retried_txn_until(Repeat::IfUnsent, deadline, txn.clone())
                .await;
            let (claim_revision, count) = match claimed {
                Ok(claimed) if claimed.succeeded() => {
                    let count = claimed
                        .op_responses()
                        .into_iter()
                        .find_map(|op| match op {
                            TxnOpResponse::Get(get) => {
                                get.kvs().first().map(|kv| kv.version())
                            }
                            _ => None,
                        })
                        .unwrap_or(1);
                    (claimed.header().map(|h| h.revision()).unwrap_or(0), count)
                }
                Ok(_) => continue, // claimed by someone else, or gone
                // The reply was lost: the claim may have been made. Left
                // unknown, it would hold the item for as long as our session
                // lives, delivered to nobody; so find out.
                Err(EtcdError::Client(error)) => {
                    match self.own_claim(&claim, &deliveries, deadline).await? {
                        Some(ours) => {
                            debug!(%id, %error, "the lost claim was ours");
                            ours
                        }
                        None => continue,
                    }
                }
                Err(error) => return Err(error),
            };
            if self.dead_letter_after.is_some_and(|limit| count > limit) {
                self.bury(&id, kv.value(), claim_revision).await?;
                continue;
            }
            debug!(%id, count, "claimed");
            if index + 1 < found || matches!(page, Page::Full { .. }) {
                // More items were there: pass the wake-up on.
                self.wakeups.pass_on();
            }
            let item = WorkItem {
                id,
                value: kv.value().to_vec(),
                deliveries: count,
                claim_revision,
            };
            return Ok((Some(item), page));
        }
        Ok((None, page))
    }

    /// Whether `claim` is ours (on our session's lease), after a claim whose
    /// reply was lost: its create revision and the delivery count if so.
    /// Keeps asking while etcd is unavailable (for up to 30 s).
    async fn own_claim(
        &self,
        claim: &str,
        deliveries: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(i64, i64)>, EtcdError> {
        let client = self.session.client();
        let txn = Txn::new()
            .and_then([TxnOp::get(claim, None), TxnOp::get(deliveries, None)]);
        let response = client
            .retried_txn_until(Repeat::Idempotent, deadline, txn)
            .await?;
        let mut found = response.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        });
        let (claim_kv, deliveries_kv) =
            (found.next().flatten(), found.next().flatten());
        Ok(claim_kv
            .filter(|kv| kv.lease() == self.session.lease_id())
            .map(|kv| {
                let count = deliveries_kv.map_or(1, |d| d.version());
                (kv.create_revision(), count)
            }))
    }

    /// Moves a poison item to `<name>/dead/<id>`.
    async fn bury(
        &self,
        id: &str,
        value: &[u8],
        claim_revision: i64,
    ) -> Result<(), EtcdError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key("claims", id),
                CompareOp::Equal,
                claim_revision,
            )])
            .and_then([
                TxnOp::put(self.key("dead", id), value.to_vec(), None),
                TxnOp::delete(self.key("items", id), None),
                TxnOp::delete(self.key("claims", id), None),
                TxnOp::delete(self.key("deliveries", id), None),
            ]);
        // Guarded by the claim's revision: repeating it is harmless.
        self.session
            .client()
            .retried_txn(Repeat::Idempotent, txn)
            .await?;
        debug!(%id, "moved to the dead letters");
        Ok(())
    }

    /// Finishes an item: removes it, its claim and its delivery count, but
    /// only while our claim is still the one we made. Fails with
    /// [`EtcdError::SessionLost`] if the claim was lost (the item may have
    /// been delivered to someone else meanwhile).
    pub async fn ack(&self, item: &WorkItem) -> Result<(), EtcdError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key("claims", &item.id),
                CompareOp::Equal,
                item.claim_revision,
            )])
            .and_then([
                TxnOp::delete(self.key("items", &item.id), None),
                TxnOp::delete(self.key("claims", &item.id), None),
                TxnOp::delete(self.key("deliveries", &item.id), None),
            ]);
        let acked = self
            .session
            .client()
            .retried_txn(Repeat::Idempotent, txn)
            .await?;
        if acked.succeeded() {
            Ok(())
        } else {
            Err(self.session.lost_error())
        }
    }

    /// The values moved aside by the dead-letter rule.
    pub async fn dead_letters(&self) -> Result<Vec<Vec<u8>>, EtcdError> {
        let response = self
            .session
            .client()
            .get(
                self.name.sub_prefix("dead"),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| kv.value().to_vec())
            .collect())
    }
}

/// Whether a read of items saw all that were left.
#[derive(Debug, Clone, Copy)]
enum Page {
    /// As many as asked for: more may follow after this create revision.
    Full { last_revision: i64 },
    /// Fewer than asked for: nothing follows.
    Last,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + crate::etcd::OPERATION_BOUND
    }
    use crate::etcd::EtcdConfig;
    use std::time::Duration;

    #[tokio::test]
    async fn a_lost_claim_is_recognised_as_ours_or_not() {
        let etcd = testkit::shared_etcd().unwrap();
        let client = EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
        let ours = Session::new(client.clone(), Duration::from_secs(10))
            .await
            .unwrap();
        let theirs = Session::new(client.clone(), Duration::from_secs(10))
            .await
            .unwrap();
        let work = WorkQueue::new(&ours, "wq-lost-claim").unwrap();
        let (claim, deliveries) =
            (work.key("claims", "1"), work.key("deliveries", "1"));
        // No claim at all: not ours.
        assert_eq!(
            work.own_claim(&claim, &deliveries, soon()).await.unwrap(),
            None
        );
        // A claim on someone else's lease: not ours.
        let with = |s: &Session| Some(PutOptions::new().with_lease(s.lease_id()));
        let mut c = client.clone();
        c.put(claim.as_str(), "", with(&theirs)).await.unwrap();
        assert_eq!(
            work.own_claim(&claim, &deliveries, soon()).await.unwrap(),
            None
        );
        // Our claim, made by a transaction whose reply we never saw (the
        // second delivery): ours, with its revision and count.
        c.delete(claim.as_str(), None).await.unwrap();
        c.put(deliveries.as_str(), "", None).await.unwrap();
        let txn = Txn::new().and_then([
            TxnOp::put(claim.as_str(), "", with(&ours)),
            TxnOp::put(deliveries.as_str(), "", None),
        ]);
        let made = c.txn(txn).await.unwrap().header().unwrap().revision();
        assert_eq!(
            work.own_claim(&claim, &deliveries, soon()).await.unwrap(),
            Some((made, 2))
        );
    }
}
