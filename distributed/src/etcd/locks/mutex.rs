//! A distributed mutex on etcd, compatible with etcd's Go `concurrency.Mutex`
//! and `etcdctl lock`.

use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use tokio::sync::oneshot;
use tracing::{debug, instrument};

use crate::etcd::client::retry::Repeat;
use crate::etcd::keys::guarded_delete::{
    DeleteOnDrop, delete_if_created_at, spawn_guarded_delete,
};
use crate::etcd::keys::held_key::{HeldKey, OnDrop};
use crate::etcd::keys::name::RecipeName;
use crate::etcd::keys::wait::{closest_predecessor, wait_turn};
use crate::etcd::session::Claim;
use crate::etcd::{EtcdError, Session};

/// A lock shared by every client that uses the same name.
///
/// Each contender writes `<name>/<lease id in hex>` with its session's lease;
/// the key with the lowest create revision holds the lock, and every other
/// contender watches only the key just before its own (no thundering herd).
/// `etcdctl lock <name>` and Go programs exclude each other with this one.
///
/// What holding it means: while the session lives, no other client holds it.
/// A lease is not mutual exclusion on its own, though: a holder paused longer
/// than the TTL loses the lock without noticing. Guard every write the lock
/// protects with [`MutexGuard::is_held`] in the same transaction (or check
/// [`MutexGuard::fencing_token`] at the resource).
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use cpr_distributed::etcd::{EtcdConfig, Mutex, Session, DEFAULT_TTL};
///
/// let client = EtcdConfig::from_env()?.connect().await?;
/// let session = Session::new(client, DEFAULT_TTL).await?;
/// let guard = Mutex::new(&session, "invoices")?.lock().await?;
/// // ... one holder at a time; pass guard.fencing_token() to the store ...
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`EtcdError::AlreadyHeldBySession`] when this session already holds or
/// waits for the lock; [`EtcdError::SessionLost`] (or `SessionClosed`) when
/// the session ends while waiting; [`EtcdError::TimedOut`] when etcd does
/// not answer within the client's operation bound.
#[derive(Debug, Clone)]
pub struct Mutex {
    session: Session,
    name: RecipeName,
    key: String,
}

impl Mutex {
    /// A mutex called `name` (a key prefix, not empty; its keys are `<name>/…`).
    pub fn new(session: &Session, name: &str) -> Result<Self, EtcdError> {
        let name = RecipeName::new(name)?;
        let key = name.lease_key(session.lease_id());
        Ok(Mutex {
            session: session.clone(),
            name,
            key,
        })
    }

    /// Waits until the lock is ours.
    ///
    /// Fails with [`EtcdError::SessionLost`] if the session is lost first (a
    /// waiter on a dead session never acquires), and with
    /// [`EtcdError::AlreadyHeldBySession`] if another `Mutex` on the same
    /// session and name already holds or waits (they would share one key).
    ///
    /// # Cancel safety
    ///
    /// Safe at every point. Dropping the future while its key is being
    /// written, or while it waits, deletes the waiter key in the
    /// background, so a cancelled waiter never blocks the line (or becomes
    /// a holder nobody knows about).
    #[instrument(level = "debug", skip(self), fields(key = %self.key))]
    // ANCHOR: lock
    pub async fn lock(&self) -> Result<MutexGuard, EtcdError> {
        self.session.ensure_alive()?;
        let claim = self.claim().await?;
        let (place, claim) = self.enqueue_or_undo(claim).await?;
        if place.first {
            // Uncontended: one round trip in all, as in Go.
            debug!(revision = place.revision, "locked at once");
            return Ok(self.guard(place.revision, Some(claim)));
        }
        let mut cleanup = DeleteOnDrop::new(&self.session.client(), &self.key);
        cleanup.arm(place.revision, Some(claim));
        let in_line = |key: &[u8]| self.name.is_direct_child(key);
        let prefix = self.name.prefix();
        wait_turn(&self.session, &prefix, &in_line, &self.key, place.revision).await?;
        let claim = cleanup.disarm();
        debug!(revision = place.revision, "locked after waiting");
        Ok(self.guard(place.revision, claim))
    }
    // ANCHOR_END: lock

    async fn claim(&self) -> Result<Claim, EtcdError> {
        self.session.claim(&self.key).await.ok_or_else(|| {
            EtcdError::AlreadyHeldBySession {
                key: self.key.clone(),
            }
        })
    }

    /// Takes the lock if nobody holds it; `Ok(None)` if someone does (then
    /// nothing is left behind).
    #[instrument(level = "debug", skip(self), fields(key = %self.key))]
    pub async fn try_lock(&self) -> Result<Option<MutexGuard>, EtcdError> {
        self.session.ensure_alive()?;
        let claim = self.claim().await?;
        let (place, claim) = self.enqueue_or_undo(claim).await?;
        if place.first {
            return Ok(Some(self.guard(place.revision, Some(claim))));
        }
        // Out of line again; if this call is dropped mid-delete, the
        // background finishes it.
        let mut cleanup = DeleteOnDrop::new(&self.session.client(), &self.key);
        cleanup.arm(place.revision, Some(claim));
        delete_if_created_at(&self.session.client(), &self.key, place.revision).await?;
        cleanup.disarm();
        Ok(None)
    }

    /// [`enqueue`](Self::enqueue) in a task of its own, holding `claim`: a
    /// caller dropped while the write is in flight would otherwise leave its
    /// key in line with nobody to delete it, and every later contender
    /// would wait behind it until the session ended. If the caller is gone
    /// when the key is written, the task deletes it (the claim is released
    /// once that is done).
    async fn enqueue_or_undo(&self, claim: Claim) -> Result<(Place, Claim), EtcdError> {
        let (reply, answer) = oneshot::channel();
        let mutex = self.clone();
        tokio::spawn(async move {
            let outcome = mutex.enqueue().await.map(|place| (place, claim));
            if let Err(Ok((place, claim))) = reply.send(outcome) {
                debug!(key = %mutex.key, "lock cancelled while getting in line; leaving it");
                spawn_guarded_delete(
                    mutex.session.client(),
                    mutex.key.clone(),
                    place.revision,
                    Some(claim),
                );
            }
        });
        // If this caller is dropped before the answer, the claim is on its
        // way out: a new lock() on this session waits for the task's
        // delete instead of being refused.
        let mut handing_over = HandOver(Some((&self.session, &self.key)));
        let outcome = answer.await.map_err(|_| EtcdError::OutcomeUnknown {
            key: self.key.clone(),
            reason: "the task writing the lock key ended without an answer".into(),
        });
        handing_over.0 = None;
        outcome?
    }

    /// Gets in line: writes our key and, in the same transaction, reads who
    /// is first. Its create revision is our place in line.
    ///
    /// If the key is already there, we hold the claim on it, so it can only
    /// be the leftover of an earlier attempt of ours whose reply was lost
    /// (the write happened, the answer did not arrive): we take its place in
    /// line, as Go's Mutex does.
    async fn enqueue(&self) -> Result<Place, EtcdError> {
        let lease = self.session.lease_id();
        let first_in_line = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::put(
                    self.key.as_str(),
                    "",
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::get(self.name.prefix(), Some(first_in_line)),
            ])
            .or_else([TxnOp::get(self.key.as_str(), None)]);
        loop {
            // Repeating it is safe even after a lost reply: the key is ours
            // alone (the session's claim), so a second try finds the first
            // one's key and takes its place in line.
            let response = self
                .session
                .client()
                .retried_txn(Repeat::Idempotent, txn.clone())
                .await?;
            let read = response.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| (kv.create_revision(), kv.lease(), kv.key().to_vec())),
                _ => None,
            });
            if response.succeeded() {
                let revision = response.header().map(|h| h.revision()).unwrap_or(0);
                let first = match read {
                    Some((first, _, _)) if first == revision => true,
                    // The oldest key is a nested name's (`<name>/sub/…`) or
                    // a foreign one: look past it for a real predecessor.
                    Some((_, _, key)) if !self.name.is_direct_child(&key) => {
                        let in_line = |key: &[u8]| self.name.is_direct_child(key);
                        let client = self.session.client();
                        let prefix = self.name.prefix();
                        closest_predecessor(&client, &prefix, revision, &in_line)
                            .await?
                            .is_none()
                    }
                    _ => false,
                };
                return Ok(Place { revision, first });
            }
            if let Some((revision, owner_lease, _)) = read
                && owner_lease == lease
            {
                // Our leftover: `wait_turn` finds out whether it is first.
                return Ok(Place {
                    revision,
                    first: false,
                });
            }
            // It vanished between the compare and the read; try again.
        }
    }

    fn guard(&self, revision: i64, claim: Option<Claim>) -> MutexGuard {
        MutexGuard {
            held: HeldKey::new(
                &self.session,
                self.key.clone(),
                revision,
                OnDrop::Release,
                claim,
            ),
        }
    }

    /// The key this client uses: `<name>/<lease id in hex>`.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Marks a claim as on its way out if dropped: see `enqueue_or_undo`.
struct HandOver<'a>(Option<(&'a Session, &'a str)>);

impl Drop for HandOver<'_> {
    fn drop(&mut self) {
        if let Some((session, key)) = self.0.take() {
            session.mark_claim_releasing(key);
        }
    }
}

/// Where our key stands in the line of contenders.
struct Place {
    /// Our key's create revision.
    revision: i64,
    /// True if no key was created before ours: the lock is ours.
    first: bool,
}

/// Proof of holding a [`Mutex`].
///
/// Release it with [`unlock`](Self::unlock). Dropping it without unlocking
/// releases it in a background task when a tokio runtime is running; without
/// one, the session's lease frees it when it expires.
#[derive(Debug)]
pub struct MutexGuard {
    held: HeldKey,
}

impl MutexGuard {
    /// The fencing token: the create revision of our lock key. It grows with
    /// every new holder, so a resource that remembers the highest token it
    /// has seen can refuse a stale holder's late write.
    pub fn fencing_token(&self) -> i64 {
        self.held.revision()
    }

    /// The lock key.
    pub fn key(&self) -> &str {
        self.held.key()
    }

    /// A compare that is true only while this guard's lock is held: put it in
    /// the `when` of your own transaction to make a write conditional on
    /// still holding the lock.
    pub fn is_held(&self) -> Compare {
        self.held.is_held()
    }

    /// True if the session was lost: the lock is then no longer held.
    pub fn is_lost(&self) -> bool {
        self.held.session().is_lost()
    }

    /// Waits until the lock is lost through the session (it never returns
    /// while the session lives).
    pub async fn lost(&self) -> EtcdError {
        self.held.session().lost().await
    }

    /// Releases the lock: deletes our key only if it is still the one we
    /// created, so a stale or repeated unlock never releases a newer holder.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before the delete completes,
    /// the guard's drop finishes it in the background.
    pub async fn unlock(self) -> Result<(), EtcdError> {
        self.held.release().await
    }
}
