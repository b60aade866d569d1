//! Leader election on etcd, compatible with etcd's Go `concurrency.Election`
//! and `etcdctl elect`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, WatchOptions,
};
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument};

use super::guarded_delete::{DeleteOnDrop, delete_if_created_at};
use super::name::RecipeName;
use super::wait::{wait_for_delete, wait_turn};
use super::{EtcdError, Session};

/// An election: at most one leader at a time among the clients using `name`.
///
/// A candidate writes `<name>/<lease id in hex>` = its value with its
/// session's lease; the key with the lowest create revision is the leader,
/// and each candidate waits only for the one just before it. The same layout
/// as Go's Election, so `etcdctl elect <name>` candidates and observers take
/// part in the same election.
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
    /// An election called `name` (not empty, no trailing `/`).
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
    /// Cancel safety: safe; a dropped campaign withdraws its key in the
    /// background.
    #[instrument(level = "debug", skip(self, value), fields(key = %self.key))]
    pub async fn campaign(&self, value: impl Into<String>) -> Result<Leadership, EtcdError> {
        let value = value.into();
        let client = self.session.client();
        let lease = self.session.lease_id();
        let created =
            super::keys::create_if_absent(&client, &self.key, value.as_str(), lease).await?;
        let revision = match created {
            Some(revision) => revision,
            None => {
                // Resuming: keep our place in line, with the new value.
                let existing = client.clone().get(self.key.as_str(), None).await?;
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
        wait_turn(&self.session, &self.name.prefix(), &self.key, revision).await?;
        cleanup.disarm();
        debug!(revision, "elected");
        Ok(Leadership {
            election: self.clone(),
            revision,
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
        if self.session.client().txn(txn).await?.succeeded() {
            Ok(())
        } else {
            Err(EtcdError::NotLeader {
                name: self.name.as_str().to_string(),
            })
        }
    }

    /// The current leader, or `None` if there is none.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, EtcdError> {
        Ok(current_leader(&self.session.client(), &self.name.prefix())
            .await?
            .0)
    }

    /// Every change of leader, starting with the current one: `Some(leader)`
    /// when someone leads (again, or with a new value), `None` when nobody
    /// does (Go's `Observe` never reports that).
    ///
    /// The stream ends after an error. Dropping it stops the watch.
    pub fn observe(&self) -> LeaderChanges {
        observe(self.session.client(), self.name.prefix())
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
    pub async fn lead<F, Fut, T>(&self, value: impl Into<String>, work: F) -> Result<T, EtcdError>
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
/// stays until the session ends (as in Go).
#[derive(Debug)]
pub struct Leadership {
    election: Election,
    revision: i64,
}

impl Leadership {
    /// Changes the value others see, only while still the leader.
    pub async fn proclaim(&self, value: impl Into<String>) -> Result<(), EtcdError> {
        self.election
            .put_if_ours(self.revision, &value.into())
            .await
    }

    /// Steps down: deletes our key only if it is still ours.
    pub async fn resign(self) -> Result<(), EtcdError> {
        delete_if_created_at(
            &self.election.session.client(),
            &self.election.key,
            self.revision,
        )
        .await?;
        Ok(())
    }

    /// A compare that is true only while we lead: for the leader's own
    /// transactions.
    pub fn is_leader(&self) -> Compare {
        Compare::create_revision(self.election.key.as_str(), CompareOp::Equal, self.revision)
    }

    /// The create revision of our key: a fencing token for leader-only writes.
    pub fn fencing_token(&self) -> i64 {
        self.revision
    }

    /// Waits until leadership is lost: the session is lost or our key is
    /// deleted. Returns [`EtcdError::NotLeader`] (or the session error).
    pub async fn lost(&self) -> EtcdError {
        let client = self.election.session.client();
        tokio::select! {
            lost = self.election.session.lost() => lost,
            _ = wait_for_delete(&client, &self.election.key, self.revision, self.revision) => EtcdError::NotLeader {
                name: self.election.name.as_str().to_string(),
            },
        }
    }
}

async fn current_leader(
    client: &Client,
    prefix: &str,
) -> Result<(Option<LeaderInfo>, i64), EtcdError> {
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1);
    let response = client.clone().get(prefix, Some(options)).await?;
    let revision = response.header().map(|h| h.revision()).unwrap_or(0);
    let leader = match response.kvs().first() {
        Some(kv) => Some(LeaderInfo {
            key: kv.key_str()?.to_string(),
            value: kv.value_str()?.to_string(),
            create_revision: kv.create_revision(),
        }),
        None => None,
    };
    Ok((leader, revision))
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

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.changes.poll_recv(cx)
    }
}

impl Drop for LeaderChanges {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn observe(client: Client, prefix: String) -> LeaderChanges {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(async move {
        let result: Result<(), EtcdError> = async {
            let (mut last, revision) = current_leader(&client, &prefix).await?;
            if tx.send(Ok(last.clone())).await.is_err() {
                return Ok(());
            }
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let mut watch = client.clone().watch(prefix.as_str(), Some(options)).await?;
            while let Some(response) = watch.message().await? {
                if response.canceled() {
                    return Err(EtcdError::WatchEnded {
                        key: prefix.clone(),
                        reason: response.cancel_reason().to_string(),
                    });
                }
                let relevant = response
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete || e.kv().is_some());
                if !relevant {
                    continue;
                }
                // Any change under the prefix may change the leader: read it
                // again rather than replaying events, and report only changes.
                let (leader, _) = current_leader(&client, &prefix).await?;
                if leader != last {
                    last = leader.clone();
                    if tx.send(Ok(leader)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Err(EtcdError::WatchEnded {
                key: prefix.clone(),
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
