//! Software transactional memory on etcd: run a closure against a consistent
//! view of some keys, and commit its writes only if nothing it depended on
//! changed — retrying otherwise.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::etcd::Client;
use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tracing::{debug, instrument};

use crate::etcd::EtcdError;
use crate::etcd::client::retry::Repeat;

/// What a transaction is protected against, from weakest to strongest.
/// How much an STM transaction is isolated from concurrent writers: the
/// four levels of etcd's `concurrency.STM`, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Each key is read once per attempt, at the latest committed value;
    /// nothing is checked at commit, so a concurrent write to
    /// a key read is overwritten (a lost update is possible).
    ReadCommitted,
    /// Each key reads the same value for the whole attempt, and commit
    /// fails if any key read was changed or deleted since it was read.
    RepeatableReads,
    /// All reads come from one snapshot (the revision of the first read),
    /// and commit fails if any key read was changed or deleted since.
    Serializable,
    /// As `Serializable`, and commit also fails if any key *written* changed
    /// after the snapshot: no lost updates through blind writes. The
    /// default. A transaction that reads nothing has no snapshot, and its
    /// writes commit as they are.
    #[default]
    SerializableSnapshot,
}

/// Conflicts retried at once, before backing off.
const IMMEDIATE_RETRIES: usize = 3;

/// Options for [`run_stm`]. Defaults: `SerializableSnapshot`, 32 attempts,
/// three immediate retries then a random backoff around 1 ms doubling to
/// 64 ms, no prefetch.
#[derive(Debug, Clone)]
pub struct StmOptions {
    isolation: Isolation,
    max_attempts: usize,
    prefetch: Vec<String>,
}

impl Default for StmOptions {
    fn default() -> Self {
        StmOptions {
            isolation: Isolation::default(),
            max_attempts: 32,
            prefetch: Vec::new(),
        }
    }
}

impl StmOptions {
    /// The isolation level.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// How many times to run the closure before giving up (at least 1).
    pub fn max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Keys to read in one round trip before the closure runs.
    pub fn prefetch<S: Into<String>>(
        mut self,
        keys: impl IntoIterator<Item = S>,
    ) -> Self {
        self.prefetch = keys.into_iter().map(Into::into).collect();
        self
    }
}

/// A value a transaction read: its bytes (if the key exists) and the mod
/// revision that produced them (0 if absent).
#[derive(Debug, Clone)]
struct Read {
    value: Option<Vec<u8>>,
    mod_revision: i64,
}

/// The transaction's view: reads are recorded, writes are buffered until
/// commit. A cheap handle: the closure gets its own copy, by value.
#[derive(Clone)]
pub struct Stm {
    client: Client,
    isolation: Isolation,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The snapshot revision, fixed by the first read (serializable levels).
    snapshot: Option<i64>,
    reads: HashMap<String, Read>,
    writes: HashMap<String, Write>,
}

/// A write buffered until commit.
#[derive(Debug, Clone)]
enum Write {
    /// Put `value`, attached to `lease` if it is not 0.
    Put {
        value: Vec<u8>,
        lease: i64,
    },
    Delete,
}

impl Write {
    /// The value the transaction sees after this write.
    fn value(&self) -> Option<Vec<u8>> {
        match self {
            Write::Put { value, .. } => Some(value.clone()),
            Write::Delete => None,
        }
    }
}

impl std::fmt::Debug for Stm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Stm")
            .field("isolation", &self.isolation)
            .field("snapshot", &state.snapshot)
            .field("reads", &state.reads.len())
            .field("writes", &state.writes.len())
            .finish()
    }
}

impl Stm {
    fn new(client: Client, isolation: Isolation) -> Self {
        Stm {
            client,
            isolation,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    // Never held across an `.await`.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key` as this transaction sees it (its own writes
    /// included), or `None` if the key does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        Ok(self.get_many(&[key]).await?.pop().flatten())
    }

    /// [`get`](Self::get) as UTF-8 text.
    pub async fn get_string(&self, key: &str) -> Result<Option<String>, EtcdError> {
        match self.get(key).await? {
            Some(bytes) => Ok(Some(String::from_utf8(bytes).map_err(|_| {
                EtcdError::InvalidValue {
                    key: key.to_string(),
                    reason: "not UTF-8 text".into(),
                }
            })?)),
            None => Ok(None),
        }
    }

    /// The values of several keys, read in one round trip (those not read
    /// yet): what [`get`](Self::get) would return for each, in order.
    /// Reading keys together saves a request per key when the transaction
    /// knows them up front, as a transfer knows both accounts.
    pub async fn get_many(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<Vec<u8>>>, EtcdError> {
        let unread: Vec<String> = {
            let state = self.lock();
            keys.iter()
                .filter(|k| !state.writes.contains_key(**k))
                .filter(|k| !state.reads.contains_key(**k))
                .map(|k| k.to_string())
                .collect()
        };
        self.fetch(&unread).await?;
        let state = self.lock();
        Ok(keys
            .iter()
            .map(|k| match state.writes.get(*k) {
                Some(written) => written.value(),
                None => state.reads.get(*k).and_then(|read| read.value.clone()),
            })
            .collect())
    }

    /// The mod revision of `key` as read by this transaction (0 if absent).
    pub async fn rev(&self, key: &str) -> Result<i64, EtcdError> {
        Ok(self.read(key).await?.mod_revision)
    }

    /// Sets `key` at commit.
    pub fn put(&self, key: &str, value: impl Into<Vec<u8>>) {
        self.put_with_lease(key, value, 0);
    }

    /// Sets `key` at commit, attached to `lease` (a lease id, such as
    /// [`Session::lease_id`](crate::etcd::Session::lease_id)): the key goes when
    /// the lease ends. A lease of 0 means none, as in [`put`](Self::put).
    /// If the lease no longer exists, the commit fails with etcd's "lease
    /// not found" and nothing is written.
    pub fn put_with_lease(&self, key: &str, value: impl Into<Vec<u8>>, lease: i64) {
        let value = value.into();
        self.lock()
            .writes
            .insert(key.to_string(), Write::Put { value, lease });
    }

    /// Deletes `key` at commit.
    pub fn del(&self, key: &str) {
        self.lock().writes.insert(key.to_string(), Write::Delete);
    }

    async fn read(&self, key: &str) -> Result<Read, EtcdError> {
        if let Some(read) = self.lock().reads.get(key) {
            return Ok(read.clone());
        }
        self.fetch(&[key.to_string()]).await?;
        Ok(self.lock().reads.get(key).cloned().unwrap_or(Read {
            value: None,
            mod_revision: 0,
        }))
    }

    /// Reads `keys` in one round trip, at the snapshot revision if there is
    /// one (and fixes it if not).
    async fn fetch(&self, keys: &[String]) -> Result<(), EtcdError> {
        if keys.is_empty() {
            return Ok(());
        }
        let snapshot = self.lock().snapshot;
        let at = match (self.isolation, snapshot) {
            // At a fixed past revision, any member's copy is as good as the
            // leader's: a serializable read, served without a raft round
            // (Go's STM does the same after its first read).
            (
                Isolation::Serializable | Isolation::SerializableSnapshot,
                Some(revision),
            ) => Some(
                GetOptions::new()
                    .with_revision(revision)
                    .with_serializable(),
            ),
            _ => None,
        };
        let gets: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::get(k.as_str(), at.clone()))
            .collect();
        let txn = Txn::new().and_then(gets);
        let response = self.client.retried_txn(Repeat::Idempotent, txn).await?;
        let mut state = self.lock();
        if state.snapshot.is_none() {
            state.snapshot = response.header().map(|h| h.revision());
        }
        for (key, op) in keys.iter().zip(response.op_responses()) {
            let TxnOpResponse::Get(get) = op else {
                continue;
            };
            let read = match get.kvs().first() {
                Some(kv) => Read {
                    value: Some(kv.value().to_vec()),
                    mod_revision: kv.mod_revision(),
                },
                None => Read {
                    value: None,
                    mod_revision: 0,
                },
            };
            state.reads.insert(key.clone(), read);
        }
        Ok(())
    }

    /// The commit transaction: the compares that make it fail if the
    /// transaction's assumptions no longer hold, then the buffered writes.
    // ANCHOR: conflicts
    fn commit_txn(&self) -> Txn {
        let state = self.lock();
        // Each key read must still be at the revision it was read at (0 if
        // it was absent): a change, a delete or a re-creation all fail it.
        let reads_unchanged = state.reads.iter().map(|(key, read)| {
            Compare::mod_revision(key.as_str(), CompareOp::Equal, read.mod_revision)
        });
        let conflicts: Vec<Compare> = match (self.isolation, state.snapshot) {
            (Isolation::ReadCommitted, _) => Vec::new(),
            // Keys written must not have changed after the snapshot. With
            // no read there is no snapshot, and so nothing to conflict
            // with: a blind write commits (as in Go).
            (Isolation::SerializableSnapshot, Some(snapshot)) => {
                let written_before = |key: &String| {
                    Compare::mod_revision(key.as_str(), CompareOp::Less, snapshot + 1)
                };
                let writes = state.writes.keys().map(written_before);
                reads_unchanged.chain(writes).collect()
            }
            // RepeatableReads, Serializable, and a snapshot level that read
            // nothing: the reads alone.
            _ => reads_unchanged.collect(),
        };
        let writes: Vec<TxnOp> = state
            .writes
            .iter()
            .map(|(key, write)| match write {
                Write::Put { value, lease } => {
                    let options =
                        (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
                    TxnOp::put(key.as_str(), value.clone(), options)
                }
                Write::Delete => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        Txn::new().when(conflicts).and_then(writes)
    }
    // ANCHOR_END: conflicts

    async fn commit(&self) -> Result<bool, EtcdError> {
        let txn = self.commit_txn();
        let response = self.client.retried_txn(Repeat::IfUnsent, txn).await?;
        Ok(response.succeeded())
    }
}

/// What a successful [`run_stm`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StmOutcome<T> {
    /// The closure's result from the attempt that committed.
    pub value: T,
    /// How many times the closure ran (1 = no conflict).
    pub attempts: usize,
}

/// Why [`run_stm`] did not commit.
#[derive(Debug, thiserror::Error)]
pub enum StmError<E> {
    /// The closure returned an error: nothing was written.
    #[error("the transaction was aborted: {0}")]
    Aborted(E),
    /// etcd failed, or conflicts did not stop within the attempts allowed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// Runs `apply` in a transaction until it commits without conflict.
///
/// ```no_run
/// # async fn demo(client: &cpr_distributed::etcd::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use cpr_distributed::etcd::{EtcdError, StmOptions, run_stm};
///
/// let outcome = run_stm(client, StmOptions::default(), |stm| async move {
///     let n: u64 = stm.get_string("counter").await?.unwrap_or_default().parse().unwrap_or(0);
///     stm.put("counter", (n + 1).to_string());
///     Ok::<_, EtcdError>(n + 1)
/// })
/// .await?;
/// println!("counter is now {} ({} attempts)", outcome.value, outcome.attempts);
/// # Ok(()) }
/// ```
///
/// `apply` reads with [`Stm::get`] and writes with [`Stm::put`] /
/// [`Stm::del`]; writes reach etcd only at commit, all at once. If the
/// closure returns an error, the transaction is aborted and nothing is
/// written. On a conflict the closure runs again from scratch (it must not
/// have side effects outside `Stm`) — at once for the first three
/// conflicts, then after a short random backoff — up to the attempts
/// allowed.
///
/// Is this a distributed transaction? It is atomic and isolated *over etcd
/// keys* (one etcd transaction commits all writes, guarded by the reads),
/// but it coordinates nothing else: writes to a database from inside the
/// closure are not part of it, and would be repeated on retry.
#[instrument(level = "debug", skip(client, apply))]
pub async fn run_stm<T, E, F, Fut>(
    client: &Client,
    options: StmOptions,
    mut apply: F,
) -> Result<StmOutcome<T>, StmError<E>>
where
    F: FnMut(Stm) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    // The first retries go at once: each reads afresh, and a conflict
    // means someone else committed, so the new reads are likely to hold
    // (waiting only leaves etcd idle). Past that, contention is heavy:
    // each retry waits a random time up to a doubling bound, so that
    // contenders stop colliding in lock step.
    let mut backoff = Duration::from_millis(1);
    for attempt in 1..=options.max_attempts {
        let stm = Stm::new(client.clone(), options.isolation);
        stm.fetch(&options.prefetch).await?;
        let value = apply(stm.clone()).await.map_err(StmError::Aborted)?;
        if stm.commit().await? {
            return Ok(StmOutcome {
                value,
                attempts: attempt,
            });
        }
        debug!(attempt, "stm conflict; retrying");
        if attempt > IMMEDIATE_RETRIES {
            tokio::time::sleep(backoff.mul_f64(0.5 + rand::random::<f64>())).await;
            backoff = (backoff * 2).min(Duration::from_millis(64));
        }
    }
    Err(StmError::Etcd(EtcdError::TooManyConflicts {
        attempts: options.max_attempts,
    }))
}
