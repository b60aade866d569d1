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

    /// An acquire attempt's task ended without an answer (the runtime is
    /// shutting down). A lock it may have taken is freed by its lease.
    #[error(
        "an acquire attempt on the lock `{name}` ended without an answer (is the runtime \
         shutting down?); it is not held by this caller: try again"
    )]
    AttemptAborted {
        /// The lock's name.
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
