use std::time::Duration;

/// Errors from the Redis primitives. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL could not be parsed.
    #[error(
        "`{url}` is not a usable Redis URL ({reason}): write redis://[:PASSWORD@]HOST:PORT[/DB] \
         or rediss:// for TLS"
    )]
    BadUrl {
        /// The URL with any password masked.
        url: String,
        /// Why it was rejected.
        reason: String,
    },

    /// No Redis answered in time.
    #[error(
        "no Redis answered at {url} within {waited:?}: run `cargo xtask services up` \
         or set REDIS_URL"
    )]
    Unreachable {
        /// The URL with any password masked.
        url: String,
        /// How long we waited.
        waited: Duration,
    },

    /// The server wants a password that was not given, or rejected the one given.
    #[error(
        "Redis at {url} refused us ({detail}): put the right password in REDIS_URL, \
         as redis://:PASSWORD@HOST:PORT/"
    )]
    AuthenticationFailed {
        /// The URL with any password masked.
        url: String,
        /// What the server said.
        detail: String,
    },

    /// No Sentinel named a reachable primary.
    #[error(
        "no Sentinel named a reachable primary for the service `{service}` ({detail}): check \
         that the Sentinels run and monitor it under that name, or wait for a failover to end"
    )]
    NoPrimary {
        /// The service the Sentinels monitor.
        service: String,
        /// What each Sentinel answered.
        detail: String,
    },

    /// The configuration is unusable.
    #[error("invalid Redis configuration: {0}")]
    InvalidConfig(String),

    /// `lock_timeout` gave up.
    #[error("the lock `{name}` was not free within {waited:?}")]
    Timeout {
        /// The lock's name.
        name: String,
        /// How long we waited.
        waited: Duration,
    },

    /// `RedisSemaphore::acquire_timeout` gave up.
    #[error("no permit of the semaphore `{name}` was free within {waited:?}")]
    NoPermitInTime {
        /// The semaphore's name.
        name: String,
        /// How long we waited.
        waited: Duration,
    },

    /// The semaphore is in use with another number of permits.
    #[error(
        "the semaphore `{name}` has {set} permits, set by its first user, and this one          asked for {asked}: use the same number everywhere, or delete `{name}:count`          while no permit is held to set another"
    )]
    PermitCountMismatch {
        /// The semaphore's name.
        name: String,
        /// What this user asked for.
        asked: u32,
        /// What is stored on the server.
        set: i64,
    },

    /// A permit released (by its holder or by id) was not held any more.
    #[error(
        "the permit `{id}` of the semaphore `{name}` is not held any more (its lease ran          out, or it was released already): whatever it protected may have been used by          another holder since; acquire again, and use a longer lease or `extend`"
    )]
    StalePermit {
        /// The semaphore's name.
        name: String,
        /// The permit's id.
        id: String,
    },

    /// An acquire attempt's task ended without an answer (the runtime is
    /// shutting down). A lock it may have taken is freed by its lease.
    #[error(
        "an acquire attempt on `{name}` ended without an answer (is the runtime \
         shutting down?); nothing is held by this caller: try again"
    )]
    AttemptAborted {
        /// The lock's or semaphore's name.
        name: String,
    },

    /// Redlock could not reach a majority.
    #[error(
        "Redlock on `{name}`: only {acquired} of {servers} servers granted the lock \
         (a majority of {majority} is needed) after {attempts} attempts; nothing is left locked"
    )]
    NoQuorum {
        /// The lock's name.
        name: String,
        /// Servers that granted it in the last attempt.
        acquired: usize,
        /// Servers in all.
        servers: usize,
        /// Servers needed.
        majority: usize,
        /// Attempts made.
        attempts: usize,
    },

    /// Any other error from the server or the client library.
    #[error("Redis request failed: {0}")]
    Client(#[from] redis::RedisError),
}

/// True when `error` says that a password is missing or wrong.
pub(crate) fn is_auth_error(error: &redis::RedisError) -> bool {
    if error.kind() == redis::ErrorKind::AuthenticationFailed {
        return true;
    }
    matches!(error.code(), Some("NOAUTH") | Some("WRONGPASS"))
}
