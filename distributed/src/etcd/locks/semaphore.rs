//! A counting semaphore on etcd: at most N holders at once.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tokio::sync::oneshot;
use tracing::{debug, instrument};

use crate::etcd::client::retry::Repeat;
use crate::etcd::keys::guarded_delete::delete_if_created_at;
use crate::etcd::keys::held_key::{HeldKey, OnDrop};
use crate::etcd::keys::name::{RecipeName, is_direct_child_of};
use crate::etcd::keys::unique::unique_key;
use crate::etcd::locks::mutex::Mutex;
use crate::etcd::{Client, EtcdError, Session};

/// At most `permits` holders at once among every client that uses the same
/// name: a pool of licences, connections or GPU slots.
///
/// Each permit is a key `<name>/permits/<nanos>` on the holder's session
/// lease, so a holder that crashes gives its permit back when its lease
/// ends. Waiters queue on a [`Mutex`] (`<name>/line`): first come, first
/// served, and only the first in line watches the permits, so a release
/// wakes one waiter, not all of them. The number of permits is written once,
/// by the first user, in `<name>/permits-count`; a user who asks for
/// another number gets [`EtcdError::PermitCountMismatch`].
///
/// Clone one `Semaphore` for all the tasks of a session: its clones queue
/// among themselves before they queue in etcd (a second `Semaphore` on the
/// same session and name would share the first one's place in line, and is
/// refused with [`EtcdError::AlreadyHeldBySession`]).
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use cpr_distributed::etcd::{EtcdConfig, Semaphore, Session, DEFAULT_TTL};
///
/// let client = EtcdConfig::from_env()?.connect().await?;
/// let session = Session::new(client, DEFAULT_TTL).await?;
/// let gpus = Semaphore::new(&session, "gpu-slots", 3)?;
/// let permit = gpus.acquire().await?; // one of 3, across all processes
/// // ... use the slot; permit.fencing_token() orders the holders ...
/// permit.release().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`EtcdError::PermitCountMismatch`] when the semaphore was created with
/// another number of permits; [`EtcdError::SessionLost`] (or
/// `SessionClosed`) when the session ends while waiting;
/// [`EtcdError::TimedOut`] when etcd does not answer within the client's
/// operation bound.
#[derive(Debug, Clone)]
pub struct Semaphore {
    session: Session,
    name: RecipeName,
    permits: u32,
    /// The line of waiters, in etcd.
    line: Mutex,
    /// This object's clones take their turn here first (they share one
    /// place in the etcd line: one session, one key).
    local: Arc<tokio::sync::Mutex<()>>,
    /// Set once the permit count was written or found equal: it is checked
    /// once per object, not once per acquire.
    count_checked: Arc<std::sync::atomic::AtomicBool>,
}

/// The most permits a semaphore may have.
pub const MAX_PERMITS: u32 = 1 << 20;

impl Semaphore {
    /// A semaphore called `name` with `permits` permits (1 to
    /// [`MAX_PERMITS`]); its keys are `<name>/…`.
    pub fn new(session: &Session, name: &str, permits: u32) -> Result<Self, EtcdError> {
        let name = RecipeName::new(name)?;
        if permits == 0 || permits > MAX_PERMITS {
            return Err(EtcdError::InvalidConfig(format!(
                "a semaphore has 1 to {MAX_PERMITS} permits, not {permits}"
            )));
        }
        let line = Mutex::new(session, &format!("{}/line", name.as_str()))?;
        Ok(Semaphore {
            session: session.clone(),
            name,
            permits,
            line,
            local: Arc::new(tokio::sync::Mutex::new(())),
            count_checked: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// Waits for a permit, first come first served.
    ///
    /// # Cancel safety
    ///
    /// Safe: a dropped call leaves no permit and no place in line behind
    /// (their keys are deleted in the background).
    #[instrument(level = "debug", skip(self), fields(name = self.name.as_str()))]
    // ANCHOR: acquire
    pub async fn acquire(&self) -> Result<SemaphorePermit, EtcdError> {
        self.session.ensure_alive()?;
        self.check_permit_count().await?;
        let _local = self.local.lock().await;
        // First in line: only this waiter watches the permits.
        let turn = self.line.lock().await?;
        tokio::select! {
            lost = self.session.lost() => return Err(lost),
            room = self.wait_for_room() => room?,
        }
        let permit = self.take_permit().await;
        turn.unlock().await?;
        permit
    }
    // ANCHOR_END: acquire

    /// Takes a permit if one is free and nobody waits for one; `Ok(None)`
    /// otherwise (nothing is left behind).
    pub async fn try_acquire(&self) -> Result<Option<SemaphorePermit>, EtcdError> {
        self.session.ensure_alive()?;
        self.check_permit_count().await?;
        let Ok(_local) = self.local.try_lock() else {
            return Ok(None);
        };
        let Some(turn) = self.line.try_lock().await? else {
            return Ok(None);
        };
        let permit = match self.holders().await? {
            (held, _) if held < self.permits => Some(self.take_permit().await?),
            _ => None,
        };
        turn.unlock().await?;
        Ok(permit)
    }

    /// As [`acquire`](Self::acquire), giving up after `limit`: `Ok(None)`
    /// then, with nothing left behind.
    pub async fn acquire_timeout(
        &self,
        limit: Duration,
    ) -> Result<Option<SemaphorePermit>, EtcdError> {
        match tokio::time::timeout(limit, self.acquire()).await {
            Ok(permit) => permit.map(Some),
            Err(_elapsed) => Ok(None),
        }
    }

    /// The number of permits.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// The first user writes the number of permits; the others compare.
    async fn check_permit_count(&self) -> Result<(), EtcdError> {
        use std::sync::atomic::Ordering::{Acquire, Release};
        if self.count_checked.load(Acquire) {
            return Ok(());
        }
        let key = self.name.sub_prefix("permits-count");
        let key = key.trim_end_matches('/');
        let wanted = self.permits.to_string();
        // Write it if absent, else read it: one request, safe to repeat.
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, wanted.as_str(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self
            .session
            .client()
            .retried_txn(Repeat::Idempotent, txn)
            .await?;
        let found = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        match found {
            Some(value) if value != wanted.as_bytes() => {
                Err(EtcdError::PermitCountMismatch {
                    name: self.name.as_str().to_string(),
                    asked: self.permits,
                    found: String::from_utf8_lossy(&value).into_owned(),
                })
            }
            _ => {
                self.count_checked.store(true, Release);
                Ok(())
            }
        }
    }

    /// How many permits are held, and the revision of that read.
    async fn holders(&self) -> Result<(u32, i64), EtcdError> {
        let prefix = self.name.sub_prefix("permits");
        let options = GetOptions::new().with_prefix().with_keys_only();
        let response = self
            .session
            .client()
            .retried_get(prefix.as_str(), Some(options))
            .await?;
        let held = response
            .kvs()
            .iter()
            .filter(|kv| is_direct_child_of(&prefix, kv.key()))
            .count();
        let revision = response.header().map_or(0, |h| h.revision());
        Ok((u32::try_from(held).unwrap_or(u32::MAX), revision))
    }

    /// Waits until fewer than `permits` are held, watching the permits
    /// from the revision at which they were counted, so that no release
    /// between the count and the watch is missed.
    async fn wait_for_room(&self) -> Result<(), EtcdError> {
        let client: Client = self.session.client();
        let prefix = self.name.sub_prefix("permits");
        loop {
            let (held, revision) = self.holders().await?;
            if held < self.permits {
                return Ok(());
            }
            debug!(held, "all permits held; waiting for a release");
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let mut watch =
                client.retried_watch(prefix.as_str(), Some(options)).await?;
            // Any delete, a cancelled watch, or a broken stream (a member
            // died): count again, which retries within the operation bound.
            while let Ok(Some(response)) = watch.message().await {
                if response.canceled()
                    || response
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                {
                    break;
                }
            }
        }
    }

    /// Writes our permit key; called only while first in line with room.
    async fn take_permit(&self) -> Result<SemaphorePermit, EtcdError> {
        let client = self.session.client();
        let prefix = self.name.sub_prefix("permits");
        let lease = self.session.lease_id();
        let (reply, answer) = oneshot::channel();
        // A key no one else writes (our lease, then a number unique in this
        // process), created if absent: sending it again after a lost reply
        // finds the first try's key instead of making a second permit.
        let key = unique_key(&format!("{prefix}{lease:x}-"));
        // The write runs in a task of its own: if this caller goes away while
        // it is in flight, the task deletes the permit it wrote.
        tokio::spawn(async move {
            let created = create_own_key(&client, key, lease).await;
            if let Err(Ok((key, revision))) = reply.send(created) {
                debug!(%key, "acquire cancelled while writing its permit; deleting it");
                let _ = delete_if_created_at(&client, &key, revision).await;
            }
        });
        let (key, revision) =
            answer.await.map_err(|_| EtcdError::OutcomeUnknown {
                key: prefix,
                reason: "the task writing the permit ended without an answer".into(),
            })??;
        debug!(revision, "permit taken");
        let held = HeldKey::new(&self.session, key, revision, OnDrop::Release, None);
        Ok(SemaphorePermit { held })
    }
}

/// Creates `key` on `lease` if absent and returns its create revision; if it
/// is there already, it is ours from an earlier try whose reply was lost.
async fn create_own_key(
    client: &Client,
    key: String,
    lease: i64,
) -> Result<(String, i64), EtcdError> {
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.as_str(),
            "",
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let response = client.retried_txn(Repeat::Idempotent, txn).await?;
    let revision = if response.succeeded() {
        response.header().map_or(0, |h| h.revision())
    } else {
        response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => {
                    get.kvs().first().map(|kv| kv.create_revision())
                }
                _ => None,
            })
            .unwrap_or(0)
    };
    Ok((key, revision))
}

/// One permit of a [`Semaphore`]. Release it with
/// [`release`](Self::release); dropped without, it is released in the
/// background (or, without a runtime, when the session's lease ends).
#[derive(Debug)]
pub struct SemaphorePermit {
    held: HeldKey,
}

impl SemaphorePermit {
    /// The create revision of the permit's key: it grows with every permit
    /// granted, so a resource can refuse a holder older than one it has
    /// already served.
    pub fn fencing_token(&self) -> i64 {
        self.held.revision()
    }

    /// The permit's key.
    pub fn key(&self) -> &str {
        self.held.key()
    }

    /// True if the session was lost: the permit is then no longer held.
    pub fn is_lost(&self) -> bool {
        self.held.session().is_lost()
    }

    /// Gives the permit back (a delete guarded by its create revision).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before the delete completes, the permit's
    /// drop finishes it in the background.
    pub async fn release(self) -> Result<(), EtcdError> {
        self.held.release().await
    }
}
