//! Writes that happen exactly once, even when their reply is lost.
//!
//! A write whose reply never came (the member it went to died, the
//! connection dropped) may or may not have been applied. Sending it again
//! can apply it twice — an item enqueued twice; not sending it can lose it —
//! an item deleted by a dequeue that never learned it got the item. Reading
//! afterwards cannot always tell: the item could have been enqueued and
//! already taken by someone else.
//!
//! So each such transaction also writes a *receipt*: a key of our own (a
//! "lane") whose value is a number used once. The transaction only applies
//! if the lane is still at the revision we last saw, and otherwise reads the
//! lane back. Sending it again after a lost reply is then always safe:
//! - if the first attempt applied, the lane moved, the repeat does nothing
//!   and reads our number back: applied, exactly once;
//! - if it did not, the repeat applies;
//! - if the first attempt is applied late, after the repeat, the lane has
//!   moved: it does nothing.
//!
//! Lanes live under `cpr-receipts/<random id>/`, on a lease that is renewed
//! while they are used and expires a minute after they are not. Several
//! lanes let one object run several such writes at once.

use std::time::{Duration, Instant};

use crate::etcd::Client;
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::Mutex;

use crate::etcd::EtcdError;
use crate::etcd::client::retry::Repeat;

/// The prefix of every lane key.
pub(crate) const RECEIPTS_PREFIX: &str = "cpr-receipts/";
/// How many writes of one object can be in flight at once.
const LANES: usize = 8;
/// Lanes expire this long after their last use.
const LEASE_TTL: i64 = 60;
/// A lease older than this is replaced before the next write, so that a
/// lane written now has at least `LEASE_TTL - RENEW_AFTER` seconds to live:
/// far longer than resolving a lost reply takes.
const RENEW_AFTER: Duration = Duration::from_secs(20);
/// A lane found changed by something other than our writes (it expired)
/// is re-read and the write sent again, at most this many times.
const LANE_RETRIES: usize = 3;

/// What an exactly-once transaction did.
#[derive(Debug)]
pub(crate) enum Applied {
    /// Its operations were applied, once, at this revision (of the first
    /// reply that said so; after a lost reply, the revision of the lane).
    Yes(i64),
    /// Its own comparisons failed: nothing was applied.
    CompareFailed,
}

struct Lane {
    key: String,
    /// The lane's mod revision as last seen; 0 if it does not exist.
    mod_revision: i64,
    /// The next number to use.
    next: u64,
}

/// A set of lanes for one object (a queue), shared by its clones.
pub(crate) struct Receipts {
    lanes: Vec<Mutex<Lane>>,
    /// The lease lanes are written with, and when it was granted.
    lease: Mutex<Option<(i64, Instant)>>,
}

impl std::fmt::Debug for Receipts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipts").finish_non_exhaustive()
    }
}

impl Receipts {
    pub(crate) fn new() -> Self {
        let id: u128 = rand::random();
        Receipts {
            lanes: (0..LANES)
                .map(|lane| {
                    Mutex::new(Lane {
                        key: format!("{RECEIPTS_PREFIX}{id:032x}/{lane}"),
                        mod_revision: 0,
                        next: 1,
                    })
                })
                .collect(),
            lease: Mutex::new(None),
        }
    }

    /// Runs `compares` → `ops` exactly once (see the module's doc). While
    /// etcd is unavailable it keeps trying, all its steps together for at
    /// most the client's operation bound; an error after that means the
    /// outcome is unknown.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe — a dropped call may have applied its
    /// operations. Callers that must know run it in a task of its own.
    pub(crate) async fn apply(
        &self,
        client: &Client,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<Applied, EtcdError> {
        let deadline = client.deadline();
        self.apply_until(client, compares, ops, deadline).await
    }

    /// [`apply`](Self::apply), with every step done by `deadline` (that of
    /// the operation it is part of).
    pub(crate) async fn apply_until(
        &self,
        client: &Client,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        deadline: tokio::time::Instant,
    ) -> Result<Applied, EtcdError> {
        let waited = tokio::time::Instant::now();
        let mut lane = tokio::time::timeout_at(deadline, self.free_lane())
            .await
            .map_err(|_| EtcdError::TimedOut {
                waited: waited.elapsed(),
            })?;
        let lease = self.lease(client, deadline).await?;
        let number = lane.next;
        lane.next += 1;
        for _ in 0..LANE_RETRIES {
            // ANCHOR: receipt_txn
            let mut when = compares.clone();
            when.push(Compare::mod_revision(
                lane.key.as_str(),
                CompareOp::Equal,
                lane.mod_revision,
            ));
            let mut then = ops.clone();
            then.push(TxnOp::put(
                lane.key.as_str(),
                number.to_string(),
                Some(PutOptions::new().with_lease(lease)),
            ));
            let txn = Txn::new()
                .when(when)
                .and_then(then)
                .or_else([TxnOp::get(lane.key.as_str(), None)]);
            // ANCHOR_END: receipt_txn
            // Repeating is safe now, whatever happened to the reply; keep
            // at it through an election or a restart, so that the caller
            // learns the outcome rather than an "unknown".
            let response = client
                .retried_txn_until(Repeat::Idempotent, deadline, txn.clone())
                .await?;
            let revision = response.header().map(|h| h.revision()).unwrap_or(0);
            if response.succeeded() {
                lane.mod_revision = revision;
                return Ok(Applied::Yes(revision));
            }
            let seen = response.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => Some(
                    get.kvs()
                        .first()
                        .map(|kv| (kv.mod_revision(), kv.value().to_vec())),
                ),
                _ => None,
            });
            let (seen_revision, seen_value) = seen.flatten().unwrap_or((0, Vec::new()));
            if seen_value == number.to_string().as_bytes() {
                // An earlier attempt applied: its reply was the one lost.
                lane.mod_revision = seen_revision;
                return Ok(Applied::Yes(seen_revision));
            }
            if seen_revision == lane.mod_revision {
                // The lane was as expected: our own comparisons failed.
                return Ok(Applied::CompareFailed);
            }
            // The lane expired while unused (or this is its first use after
            // a restart of the lease): take it as it is and go again.
            lane.mod_revision = seen_revision;
        }
        Err(EtcdError::ReceiptConflict {
            key: lane.key.clone(),
        })
    }

    /// A lane no other write is using, waiting for one if all are busy.
    async fn free_lane(&self) -> tokio::sync::MutexGuard<'_, Lane> {
        for lane in &self.lanes {
            if let Ok(guard) = lane.try_lock() {
                return guard;
            }
        }
        let pick = rand::random_range(0..self.lanes.len());
        self.lanes[pick].lock().await
    }

    /// The current lease, granting a new one if it is old.
    async fn lease(
        &self,
        client: &Client,
        deadline: tokio::time::Instant,
    ) -> Result<i64, EtcdError> {
        let mut lease = self.lease.lock().await;
        if let Some((id, granted)) = *lease
            && granted.elapsed() < RENEW_AFTER
        {
            return Ok(id);
        }
        let granted = client
            .retried_lease_grant_until(deadline, LEASE_TTL)
            .await?;
        *lease = Some((granted, Instant::now()));
        Ok(granted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::EtcdConfig;

    async fn client() -> Client {
        let etcd = testkit::shared_etcd().unwrap();
        EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
    }

    /// Simulates a lost reply: the write is applied, then the lane is put
    /// back to what it was before, as if the reply had never arrived, and
    /// the same write (same number) is sent again.
    async fn apply_with_lost_reply(
        receipts: &Receipts,
        client: &Client,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Applied {
        let before = {
            let lane = receipts.lanes[0].lock().await;
            (lane.mod_revision, lane.next)
        };
        let first = receipts
            .apply(client, compares.clone(), ops.clone())
            .await
            .unwrap();
        assert!(matches!(first, Applied::Yes(_)));
        {
            let mut lane = receipts.lanes[0].lock().await;
            (lane.mod_revision, lane.next) = before;
        }
        receipts.apply(client, compares, ops).await.unwrap()
    }

    #[tokio::test]
    async fn a_repeated_write_after_a_lost_reply_applies_once() {
        let client = client().await;
        let receipts = Receipts::new();
        let key = "receipt-test/counter";
        client.clone().put(key, "0", None).await.unwrap();
        // "increment if still 0": applied once, the repeat must say "applied"
        // without applying again (it could not: the value is no longer 0 —
        // but it must not report a failed compare either).
        let still_zero = Compare::value(key, CompareOp::Equal, "0");
        let set_one = TxnOp::put(key, "1", None);
        let outcome =
            apply_with_lost_reply(&receipts, &client, vec![still_zero], vec![set_one])
                .await;
        assert!(matches!(outcome, Applied::Yes(_)), "{outcome:?}");
        // A write whose own compare fails is reported as such.
        let still_zero = Compare::value(key, CompareOp::Equal, "0");
        let outcome = receipts
            .apply(&client, vec![still_zero], vec![TxnOp::put(key, "2", None)])
            .await
            .unwrap();
        assert!(matches!(outcome, Applied::CompareFailed), "{outcome:?}");
        let value = client.clone().get(key, None).await.unwrap();
        assert_eq!(value.kvs()[0].value(), b"1");
    }

    #[tokio::test]
    async fn a_lane_that_expired_is_taken_as_it_is() {
        let client = client().await;
        let receipts = Receipts::new();
        let key = "receipt-test/expired";
        receipts
            .apply(&client, vec![], vec![TxnOp::put(key, "a", None)])
            .await
            .unwrap();
        // The lane vanishes (its lease expired while unused).
        let lane_key = receipts.lanes[0].lock().await.key.clone();
        client.clone().delete(lane_key, None).await.unwrap();
        let outcome = receipts
            .apply(&client, vec![], vec![TxnOp::put(key, "b", None)])
            .await
            .unwrap();
        assert!(matches!(outcome, Applied::Yes(_)), "{outcome:?}");
        let value = client.clone().get(key, None).await.unwrap();
        assert_eq!(value.kvs()[0].value(), b"b");
    }
}
