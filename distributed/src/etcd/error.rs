use std::time::Duration;

/// Errors from the etcd recipes. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// No etcd answered in time.
    #[error(
        "no etcd answered at {endpoints} within {waited:?}: run `cargo xtask services up` \
         or set ETCD_ENDPOINTS to your cluster (comma-separated host:port)"
    )]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// How long we waited.
        waited: Duration,
    },

    /// Every endpoint failed at once (for example, nothing listens there).
    #[error(
        "no etcd at {endpoints}: {reason}. Run `cargo xtask services up` or set \
         ETCD_ENDPOINTS to your cluster (comma-separated host:port)"
    )]
    Refused {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What went wrong, as the system said it.
        reason: String,
    },

    /// A server answered, but not as etcd does: another service listens
    /// at that address.
    #[error(
        "the server at {endpoints} is not etcd (it does not speak etcd's gRPC: {reason}): \
         check ETCD_ENDPOINTS — is that another service's port, such as Redis's, or an etcd \
         that serves TLS (then write https://)?"
    )]
    NotEtcd {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What the client saw.
        reason: String,
    },

    /// The TLS handshake with etcd failed: the reason says which setting to
    /// fix (`ETCD_CA_CERT`, or `ETCD_CERT` and `ETCD_KEY`).
    #[error("TLS with etcd at {endpoints}: {reason}")]
    Tls {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What failed, and what to set.
        reason: String,
    },

    /// etcd did not answer in time: every request of the operation, retried
    /// for the client's whole operation bound
    /// ([`EtcdConfig::operation_bound`](crate::etcd::EtcdConfig::operation_bound),
    /// default [`OPERATION_BOUND`](crate::etcd::OPERATION_BOUND)), failed or hung (a hung or partitioned member, a lost quorum). A
    /// write cut this way may or may not have been applied.
    #[error(
        "etcd did not answer within {waited:?} (a hung or partitioned member, or no quorum?); \
         a write may or may not have been applied"
    )]
    TimedOut {
        /// How long the operation tried.
        waited: Duration,
    },

    /// The server rejected the user name or password.
    #[error(
        "etcd rejected the credentials of user `{user}`: check ETCD_USER and ETCD_PASSWORD"
    )]
    AuthenticationFailed {
        /// The user that tried to log in.
        user: String,
    },

    /// The configuration is unusable (empty endpoint list, zero timeout, ...).
    #[error("invalid etcd configuration: {0}")]
    InvalidConfig(String),

    /// A recipe name that cannot be used as a key prefix.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The session's lease expired or could not be kept alive, so whatever
    /// it held (a lock, leadership) is no longer held.
    #[error(
        "the etcd session (lease {lease:x}) was lost: anything it held is no longer held; \
         create a new session and start again"
    )]
    SessionLost {
        /// The lease id of the lost session.
        lease: i64,
    },

    /// The session was closed ([`Session::close`](crate::etcd::Session::close)):
    /// its lease is revoked, and nothing can be held through it.
    #[error(
        "the etcd session (lease {lease:x}) was closed, so nothing can be held through it: \
         create a new session"
    )]
    SessionClosed {
        /// The lease id of the closed session.
        lease: i64,
    },

    /// The same session already holds or waits for this key.
    #[error(
        "this session already holds or waits for `{key}`: use one session per concurrent \
         holder, or wait for the first lock to be released"
    )]
    AlreadyHeldBySession {
        /// The key both holders would share.
        key: String,
    },

    /// A semaphore was made with another number of permits than the one
    /// its first user wrote.
    #[error(
        "the semaphore `{name}` has {found} permits, set by its first user; this one asked \
         for {asked}: use the same number everywhere (or a new name)"
    )]
    PermitCountMismatch {
        /// The semaphore's name.
        name: String,
        /// The number this user asked for.
        asked: u32,
        /// The number stored, as found.
        found: String,
    },

    /// More participants entered a double barrier than it was made for.
    #[error(
        "the double barrier `{name}` is for {count} participants and is full: this one was turned away"
    )]
    TooManyParticipants {
        /// The barrier's name.
        name: String,
        /// Its participant count.
        count: usize,
    },

    /// A transfer would overdraw its source account.
    #[error("account `{account}` holds {balance}, which does not cover {amount}")]
    InsufficientFunds {
        /// The source account's key.
        account: String,
        /// Its balance.
        balance: u64,
        /// The amount asked for.
        amount: u64,
    },

    /// A transfer would take a balance past the largest one (`u64::MAX`).
    #[error(
        "account `{account}` holds {balance}, and adding {amount} would exceed the largest \
         balance, {max}: nothing was written",
        max = u64::MAX
    )]
    BalanceOverflow {
        /// The destination account's key.
        account: String,
        /// Its balance.
        balance: u64,
        /// The amount asked for.
        amount: u64,
    },

    /// A key holds a value the operation cannot use (not a number, not
    /// UTF-8). The key is named; nothing was written.
    #[error("`{key}` holds a value that cannot be used here: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },

    /// A transaction kept losing races with other writers.
    #[error(
        "gave up after {attempts} attempts, each beaten by a concurrent write: retry later, or with fewer writers"
    )]
    TooManyConflicts {
        /// Attempts made.
        attempts: usize,
    },

    /// A leader-only operation was attempted without leadership.
    #[error("not the leader of `{name}` any more (resigned, or the session was lost)")]
    NotLeader {
        /// The election's name.
        name: String,
    },

    /// A watch ended before the event it waited for.
    #[error("the watch on `{key}` ended unexpectedly ({reason}); try again")]
    WatchEnded {
        /// The key or prefix watched.
        key: String,
        /// Why it ended, as far as the server said.
        reason: String,
    },

    /// An exactly-once write found its receipt lane changed by someone else.
    #[error(
        "the receipt lane `{key}` keeps changing under this process; another process is writing it (a copied lane id?)"
    )]
    ReceiptConflict {
        /// The lane.
        key: String,
    },

    /// A write's reply was lost, and whether it applied could not be
    /// learned. It applied at most once: it may or may not be there.
    #[error(
        "the reply to the write of `{key}` was lost and whether it applied could not be learned ({reason}); it applied at most once — check for it before writing it again"
    )]
    OutcomeUnknown {
        /// The key written.
        key: String,
        /// Why it could not be learned.
        reason: String,
    },

    /// The batch a [`QueueProducer`](crate::etcd::QueueProducer) sent this
    /// item in failed; the item shares that batch's fate (all of a batch is
    /// written or none, and an [`EtcdError::OutcomeUnknown`] means at most
    /// once).
    #[error("the batch this item was sent in failed: {0}")]
    BatchFailed(std::sync::Arc<EtcdError>),

    /// A [`QueueProducer`](crate::etcd::QueueProducer)'s task has ended —
    /// its tokio runtime is shutting down — so the item was not sent (or,
    /// if it was, its answer is lost: at most once).
    #[error(
        "the queue producer's task has ended (its runtime is shutting down); make a new producer on a running runtime"
    )]
    ProducerGone,

    /// Any other error from the server or the client library.
    #[error("etcd request failed: {0}")]
    Client(#[from] etcd_client::Error),
}

impl EtcdError {
    /// Classifies an error from `etcd-client`: a rejected login becomes
    /// [`EtcdError::AuthenticationFailed`], everything else stays as it is.
    pub(crate) fn from_client(error: etcd_client::Error, user: Option<&str>) -> Self {
        let rejected_login = matches!(&error, etcd_client::Error::GRpcStatus(status)
            if status.message().contains("authentication failed"));
        match (rejected_login, user) {
            (true, Some(user)) => EtcdError::AuthenticationFailed {
                user: user.to_string(),
            },
            _ => EtcdError::Client(error),
        }
    }
}
