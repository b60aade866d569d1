//! Leader election on etcd, compatible with etcd's Go `concurrency.Election`
//! and `etcdctl elect`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::etcd::Client;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, WatchOptions,
};
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument, warn};

use crate::etcd::client::retry::Repeat;
use crate::etcd::keys::guarded_delete::DeleteOnDrop;
use crate::etcd::keys::held_key::{HeldKey, OnDrop};
use crate::etcd::keys::name::RecipeName;
use crate::etcd::keys::wait::{wait_for_delete, wait_turn};
use crate::etcd::{EtcdError, Session};

/// An election: at most one leader at a time among the clients using `name`.
///
/// A candidate writes `<name>/<lease id in hex>` = its value with its
/// session's lease; the key with the lowest create revision is the leader,
/// and each candidate waits only for the one just before it. `etcdctl
/// elect <name>` candidates and observers take part in the same election.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use cpr_distributed::etcd::{Election, EtcdConfig, Session, DEFAULT_TTL};
///
/// let client = EtcdConfig::from_env()?.connect().await?;
/// let session = Session::new(client, DEFAULT_TTL).await?;
/// let election = Election::new(&session, "scheduler")?;
/// let leadership = election.campaign("node-a").await?; // waits its turn
/// // ... lead; guard writes with leadership.is_leader() ...
/// leadership.resign().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`EtcdError::SessionLost`] (or `SessionClosed`) when the session ends
/// while campaigning or leading; [`EtcdError::NotLeader`] for a proclaim
/// after leadership was lost; [`EtcdError::TimedOut`] when etcd does not
/// answer within the client's operation bound.
#[derive(Debug, Clone)]
pub struct Election {
    session: Session,
    name: RecipeName,
    key: String,
}

/// Who leads, as seen by [`Election::leader`] and [`Election::observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's key, `<name>/<lease id in hex>`.
    pub key: String,
    /// The value it proclaimed.
    pub value: String,
    /// Its key's create revision: grows with every new leader.
    pub create_revision: i64,
}

impl Election {
    /// An election called `name` (not empty; its keys are `<name>/…`).
    pub fn new(session: &Session, name: &str) -> Result<Self, EtcdError> {
        let name = RecipeName::new(name)?;
        let key = name.lease_key(session.lease_id());
        Ok(Election {
            session: session.clone(),
            name,
            key,
        })
    }

    /// Becomes a candidate with `value` and waits until elected.
    ///
    /// If this session is already a candidate (or the leader) under this
    /// name, its value is replaced and the campaign resumes in its place.
    /// Fails with [`EtcdError::SessionLost`] if the session is lost first.
    ///
    /// # Cancel safety
    ///
    /// Safe; a dropped campaign withdraws its key in the
    /// background.
    #[instrument(level = "debug", skip(self, value), fields(key = %self.key))]
    pub async fn campaign(
        &self,
        value: impl Into<String>,
    ) -> Result<Leadership, EtcdError> {
        self.session.ensure_alive()?;
        let value = value.into();
        let client = self.session.client();
        let lease = self.session.lease_id();
        // Written by a task that takes the key back if this call is dropped
        // meanwhile: a key left behind would be a leader nobody acts for.
        let created = crate::etcd::keys::unique::create_if_absent_or_undo(
            &client,
            &self.key,
            value.clone(),
            lease,
        )
        .await?;
        let revision = match created {
            Some(revision) => revision,
            None => {
                // Resuming: keep our place in line, with the new value.
                let existing = client.retried_get(self.key.as_str(), None).await?;
                let revision = existing
                    .kvs()
                    .first()
                    .map(|kv| kv.create_revision())
                    .unwrap_or(0);
                self.put_if_ours(revision, &value).await?;
                revision
            }
        };
        let mut cleanup = DeleteOnDrop::new(&client, &self.key);
        cleanup.arm(revision, None);
        let in_line = |key: &[u8]| self.name.is_direct_child(key);
        wait_turn(
            &self.session,
            &self.name.prefix(),
            &in_line,
            &self.key,
            revision,
        )
        .await?;
        cleanup.disarm();
        debug!(revision, "elected");
        Ok(Leadership {
            held: HeldKey::new(
                &self.session,
                self.key.clone(),
                revision,
                OnDrop::Keep,
                None,
            ),
            election: self.clone(),
        })
    }

    async fn put_if_ours(&self, revision: i64, value: &str) -> Result<(), EtcdError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(
                self.key.as_str(),
                value,
                Some(PutOptions::new().with_lease(self.session.lease_id())),
            )]);
        // Guarded by our key's create revision: repeating it is harmless.
        let response = self
            .session
            .client()
            .retried_txn(Repeat::Idempotent, txn)
            .await?;
        if response.succeeded() {
            Ok(())
        } else {
            Err(EtcdError::NotLeader {
                name: self.name.as_str().to_string(),
            })
        }
    }

    /// The current leader, or `None` if there is none.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, EtcdError> {
        Ok(current_leader(&self.session.client(), &self.name).await?.0)
    }

    /// Every change of leader, starting with the current one: `Some(leader)`
    /// when someone leads (again, or with a new value), `None` when nobody
    /// does.
    ///
    /// Nothing is coalesced: the changes are replayed from etcd's watch in
    /// revision order, so each value a leader proclaims is delivered, in
    /// order, however quickly the next follows. Keys of nested names
    /// (`<name>/sub/…`) and keys that are not UTF-8 are not candidates.
    ///
    /// The stream ends after an error. Dropping it stops the watch.
    pub fn observe(&self) -> LeaderChanges {
        observe(self.session.client(), self.name.clone())
    }

    /// Campaigns, then runs `work` while this client leads, and resigns when
    /// it is done.
    ///
    /// `work` is given a token that is cancelled the moment leadership is
    /// lost (session lost, or our key deleted by someone else); the `work`
    /// future itself is also dropped at that moment, so it stops at its next
    /// `.await`. Use the token to stop blocking sections promptly.
    /// Returns the work's output, or [`EtcdError::NotLeader`] if leadership
    /// was lost before the work finished.
    // ANCHOR: lead
    pub async fn lead<F, Fut, T>(
        &self,
        value: impl Into<String>,
        work: F,
    ) -> Result<T, EtcdError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T>,
    {
        let leadership = self.campaign(value).await?;
        let token = CancellationToken::new();
        let outcome = tokio::select! {
            output = work(token.clone()) => Ok(output),
            lost = leadership.lost() => {
                token.cancel();
                Err(lost)
            }
        };
        token.cancel();
        match outcome {
            Ok(output) => {
                leadership.resign().await?;
                Ok(output)
            }
            Err(lost) => Err(lost),
        }
    }
    // ANCHOR_END: lead
}

/// Proof of leadership in an [`Election`].
///
/// Leadership ends with [`resign`](Self::resign), when the session is lost,
/// or if someone deletes our key. Dropping it does *not* resign: the key
/// stays until the session ends.
#[derive(Debug)]
pub struct Leadership {
    held: HeldKey,
    election: Election,
}

impl Leadership {
    /// Changes the value others see, only while still the leader.
    pub async fn proclaim(&self, value: impl Into<String>) -> Result<(), EtcdError> {
        self.election
            .put_if_ours(self.held.revision(), &value.into())
            .await
    }

    /// Steps down: deletes our key only if it is still ours.
    pub async fn resign(self) -> Result<(), EtcdError> {
        self.held.release().await
    }

    /// A compare that is true only while we lead: for the leader's own
    /// transactions.
    pub fn is_leader(&self) -> Compare {
        self.held.is_held()
    }

    /// The create revision of our key: a fencing token for leader-only writes.
    pub fn fencing_token(&self) -> i64 {
        self.held.revision()
    }

    /// Waits until leadership is lost: the session is lost or our key is
    /// deleted. Returns [`EtcdError::NotLeader`] (or the session error).
    pub async fn lost(&self) -> EtcdError {
        let client = self.election.session.client();
        tokio::select! {
            lost = self.election.session.lost() => lost,
            _ = wait_for_delete(&client, self.held.key(), self.held.revision(), self.held.revision()) => EtcdError::NotLeader {
                name: self.election.name.as_str().to_string(),
            },
        }
    }
}

/// The leader: the direct child of `name` with the lowest create revision,
/// and the revision of the read. Read a page at a time, so that keys of a
/// nested name (`<name>/sub/…`) or keys we cannot parse are passed over.
async fn current_leader(
    client: &Client,
    name: &RecipeName,
) -> Result<(Option<LeaderInfo>, i64), EtcdError> {
    const PAGE: i64 = 16;
    let mut after = 0;
    loop {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_min_create_revision(after + 1)
            .with_limit(PAGE);
        let response = client.retried_get(name.prefix(), Some(options)).await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        let kvs = response.kvs();
        if let Some(leader) = kvs.iter().find_map(|kv| candidate(name, kv)) {
            return Ok((Some(leader), revision));
        }
        match kvs.last() {
            Some(last) if kvs.len() as i64 == PAGE => after = last.create_revision(),
            _ => return Ok((None, revision)),
        }
    }
}

/// The candidate a key stands for, if it is one: a direct child of the
/// election's name with a UTF-8 key and value. Anything else under the
/// prefix (a nested election, a foreign key) is passed over; one that
/// looks like a candidate but cannot be read is reported.
fn candidate(name: &RecipeName, kv: &etcd_client::KeyValue) -> Option<LeaderInfo> {
    if !name.is_direct_child(kv.key()) {
        return None;
    }
    match (kv.key_str(), kv.value_str()) {
        (Ok(key), Ok(value)) => Some(LeaderInfo {
            key: key.to_string(),
            value: value.to_string(),
            create_revision: kv.create_revision(),
        }),
        _ => {
            warn!(
                key = %String::from_utf8_lossy(kv.key()),
                "skipping an election key whose name or value is not UTF-8"
            );
            None
        }
    }
}

/// The stream of leader changes returned by [`Election::observe`]. Dropping
/// it stops the watch.
#[derive(Debug)]
pub struct LeaderChanges {
    changes: tokio::sync::mpsc::Receiver<Result<Option<LeaderInfo>, EtcdError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream for LeaderChanges {
    type Item = Result<Option<LeaderInfo>, EtcdError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.changes.poll_recv(cx)
    }
}

impl Drop for LeaderChanges {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn observe(client: Client, name: RecipeName) -> LeaderChanges {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(async move {
        let result: Result<(), EtcdError> = async {
            // Every candidate, then every change to them replayed in order:
            // each value a leader proclaims is seen, however quickly the
            // next one follows.
            let options = GetOptions::new().with_prefix();
            let now = client.retried_get(name.prefix(), Some(options)).await?;
            let revision = now.header().map(|h| h.revision()).unwrap_or(0);
            let mut candidates: Vec<LeaderInfo> = now
                .kvs()
                .iter()
                .filter_map(|kv| candidate(&name, kv))
                .collect();
            let mut last = first_in_line(&candidates);
            if tx.send(Ok(last.clone())).await.is_err() {
                return Ok(());
            }
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let mut watch = client.retried_watch(name.prefix(), Some(options)).await?;
            while let Some(response) = watch.message().await? {
                if response.canceled() {
                    return Err(EtcdError::WatchEnded {
                        key: name.prefix(),
                        reason: response.cancel_reason().to_string(),
                    });
                }
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    candidates.retain(|c| c.key.as_bytes() != kv.key());
                    if event.event_type() == EventType::Put
                        && let Some(changed) = candidate(&name, kv)
                    {
                        candidates.push(changed);
                    }
                    let leader = first_in_line(&candidates);
                    if leader != last {
                        last = leader.clone();
                        if tx.send(Ok(leader)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            Err(EtcdError::WatchEnded {
                key: name.prefix(),
                reason: "the server closed the stream".into(),
            })
        }
        .await;
        if let Err(error) = result {
            let _ = tx.send(Err(error)).await;
        }
    });
    LeaderChanges { changes: rx, task }
}

/// The candidate with the lowest create revision: the leader.
fn first_in_line(candidates: &[LeaderInfo]) -> Option<LeaderInfo> {
    candidates.iter().min_by_key(|c| c.create_revision).cloned()
}
