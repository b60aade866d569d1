//! A distributed mutex on etcd, compatible with etcd's Go `concurrency.Mutex`
//! and `etcdctl lock`.

use etcd_client::{
    Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use tracing::{debug, instrument};

use super::guarded_delete::{DeleteOnDrop, delete_if_created_at, spawn_guarded_delete};
use super::keys::create_if_absent;
use super::name::RecipeName;
use super::retry::{Repeat, retrying};
use super::session::Claim;
use super::wait::wait_turn;
use super::{EtcdError, Session};

/// A lock shared by every client that uses the same name.
///
/// Each contender writes `<name>/<lease id in hex>` with its session's lease;
/// the key with the lowest create revision holds the lock, and every other
/// contender watches only the key just before its own (no thundering herd).
/// This is exactly the layout of etcd's Go Mutex, so `etcdctl lock <name>`
/// and Go programs exclude each other with this one.
///
/// What holding it means: while the session lives, no other client holds it.
/// A lease is not mutual exclusion on its own, though: a holder paused longer
/// than the TTL loses the lock without noticing. Guard every write the lock
/// protects with [`MutexGuard::is_held`] in the same transaction (or check
/// [`MutexGuard::fencing_token`] at the resource).
#[derive(Debug, Clone)]
pub struct Mutex {
    session: Session,
    name: RecipeName,
    key: String,
}

impl Mutex {
    /// A mutex called `name` (a key prefix; not empty, no trailing `/`).
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
    /// Cancel safety: safe. Dropping the future while it waits deletes the
    /// waiter key in the background, so a cancelled waiter never blocks the
    /// line (or becomes a holder nobody knows about).
    #[instrument(level = "debug", skip(self), fields(key = %self.key))]
    pub async fn lock(&self) -> Result<MutexGuard, EtcdError> {
        let claim = self.claim().await?;
        let client = self.session.client();
        let mut cleanup = DeleteOnDrop::new(&client, &self.key);
        let revision = self.enqueue().await?;
        cleanup.arm(revision, Some(claim));
        wait_turn(&self.session, &self.name.prefix(), &self.key, revision).await?;
        let claim = cleanup.disarm();
        debug!(revision, "locked");
        Ok(self.guard(revision, claim))
    }

    async fn claim(&self) -> Result<Claim, EtcdError> {
        self.session
            .claim(&self.key)
            .await
            .ok_or_else(|| EtcdError::AlreadyHeldBySession {
                key: self.key.clone(),
            })
    }

    /// Takes the lock if nobody holds it; `Ok(None)` if someone does (then
    /// nothing is left behind).
    #[instrument(level = "debug", skip(self), fields(key = %self.key))]
    pub async fn try_lock(&self) -> Result<Option<MutexGuard>, EtcdError> {
        let claim = self.claim().await?;
        self.remove_leftover().await?;
        let client = self.session.client();
        let owner = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        // One round trip: create our key and read the owner in the same txn.
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
                    Some(etcd_client::PutOptions::new().with_lease(self.session.lease_id())),
                ),
                TxnOp::get(self.name.prefix(), Some(owner)),
            ]);
        let response = client.clone().txn(txn).await?;
        if !response.succeeded() {
            return Err(EtcdError::AlreadyHeldBySession {
                key: self.key.clone(),
            });
        }
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        let owner_revision = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.create_revision()),
            _ => None,
        });
        if owner_revision == Some(revision) {
            return Ok(Some(self.guard(revision, Some(claim))));
        }
        delete_if_created_at(&client, &self.key, revision).await?;
        Ok(None)
    }

    /// Writes our key; its create revision is our place in line.
    ///
    /// If the key is already there, we hold the claim on it, so it can only
    /// be the leftover of an earlier attempt of ours whose reply was lost
    /// (the write happened, the answer did not arrive): we take its place in
    /// line, as Go's Mutex does.
    async fn enqueue(&self) -> Result<i64, EtcdError> {
        let client = self.session.client();
        loop {
            if let Some(revision) =
                create_if_absent(&client, &self.key, "", self.session.lease_id()).await?
            {
                return Ok(revision);
            }
            if let Some(revision) = self.leftover_revision().await? {
                return Ok(revision);
            }
            // It vanished in between (its lease?); try again.
        }
    }

    /// The create revision of a key of ours left by an earlier attempt.
    async fn leftover_revision(&self) -> Result<Option<i64>, EtcdError> {
        let existing = retrying(Repeat::Idempotent, || {
            let (mut client, key) = (self.session.client(), self.key.clone());
            async move { client.get(key, None).await }
        })
        .await?;
        Ok(existing
            .kvs()
            .first()
            .filter(|kv| kv.lease() == self.session.lease_id())
            .map(|kv| kv.create_revision()))
    }

    /// Deletes a leftover of ours, so that `try_lock` starts from a clean line.
    async fn remove_leftover(&self) -> Result<(), EtcdError> {
        if let Some(revision) = self.leftover_revision().await? {
            delete_if_created_at(&self.session.client(), &self.key, revision).await?;
        }
        Ok(())
    }

    fn guard(&self, revision: i64, claim: Option<Claim>) -> MutexGuard {
        MutexGuard {
            session: self.session.clone(),
            key: self.key.clone(),
            revision,
            released: false,
            claim,
        }
    }

    /// The key this client uses: `<name>/<lease id in hex>`.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Proof of holding a [`Mutex`].
///
/// Release it with [`unlock`](Self::unlock). Dropping it without unlocking
/// releases it in a background task when a tokio runtime is running; without
/// one, the session's lease frees it when it expires.
#[derive(Debug)]
pub struct MutexGuard {
    session: Session,
    key: String,
    revision: i64,
    released: bool,
    // Released only once our key is deleted: a new `lock()` on this session
    // must not adopt a key that is about to disappear.
    claim: Option<Claim>,
}

impl MutexGuard {
    /// The fencing token: the create revision of our lock key. It grows with
    /// every new holder, so a resource that remembers the highest token it
    /// has seen can refuse a stale holder's late write.
    pub fn fencing_token(&self) -> i64 {
        self.revision
    }

    /// The lock key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A compare that is true only while this guard's lock is held: put it in
    /// the `when` of your own transaction to make a write conditional on
    /// still holding the lock.
    pub fn is_held(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.revision)
    }

    /// True if the session was lost: the lock is then no longer held.
    pub fn is_lost(&self) -> bool {
        self.session.is_lost()
    }

    /// Waits until the lock is lost through the session (it never returns
    /// while the session lives).
    pub async fn lost(&self) -> EtcdError {
        self.session.lost().await
    }

    /// Releases the lock: deletes our key only if it is still the one we
    /// created, so a stale or repeated unlock never releases a newer holder.
    ///
    /// Cancel safety: if the future is dropped before the delete completes,
    /// the guard's drop finishes it in the background.
    pub async fn unlock(mut self) -> Result<(), EtcdError> {
        let client = self.session.client();
        delete_if_created_at(&client, &self.key, self.revision).await?;
        self.released = true;
        Ok(())
    }
}

impl Drop for MutexGuard {
    fn drop(&mut self) {
        if !self.released {
            let claim = self.claim.take();
            spawn_guarded_delete(
                self.session.client(),
                std::mem::take(&mut self.key),
                self.revision,
                claim,
            );
        }
    }
}
