//! A rate limiter shared by many processes that never grants more than
//! `limit` permits in any window: a log of grants in a sorted set, as
//! Redisson's `RRateLimiter` keeps.

use std::sync::LazyLock;
use std::time::Duration;

use cpr_resilience::{Decision, RateLimiter};
use redis::Script;

use super::rate_limit::{NEVER, decision};
use super::{RedisConnection, RedisError};

/// A sliding log. KEYS[1] the log (a sorted set of grants scored by
/// server time in µs); ARGV[1] window µs, ARGV[2] limit, ARGV[3] permits
/// asked, ARGV[4] a unique id for this request's entries. Grants if the
/// grants still inside the window leave room; otherwise returns how long
/// until enough of them leave. Returns {1, 0} or {0, microseconds to wait}.
// ANCHOR: window_log
static WINDOW_LOG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local window = tonumber(ARGV[1])
        local limit = tonumber(ARGV[2])
        local n = tonumber(ARGV[3])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
        local used = redis.call('ZCARD', KEYS[1])
        if used + n <= limit then
            for i = 1, n do
                redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. i)
            end
            redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1)
            return {1, 0}
        end
        -- The grant that must leave the window before n more fit.
        local leaving = redis.call('ZRANGE', KEYS[1], used + n - limit - 1,
            used + n - limit - 1, 'WITHSCORES')
        return {0, tonumber(leaving[2]) + window - now}
        ",
    )
});
// ANCHOR_END: window_log

/// At most `limit` permits in any window of length `window`, shared by
/// every process that uses the same key (Redisson's `RRateLimiter`
/// semantics): a grant at server time `t` counts until `t + window`.
///
/// Exact, at a price: one sorted-set entry per permit granted in the last
/// window (memory O(`limit`) per key), where [`RedisRateLimiter`]'s GCRA
/// keeps one number but lets up to `burst + rate × t` through in a span
/// `t` — twice the rate's worth right after an idle spell. Choose this one
/// when a downstream quota is counted per window; GCRA when a smooth rate
/// is what matters.
///
/// The clock is the server's (`TIME`): clients' clocks do not matter.
///
/// [`RedisRateLimiter`]: super::RedisRateLimiter
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::redis::RedisError> {
/// use std::time::Duration;
/// use cpr_distributed::redis::{RedisConfig, RedisWindowLimiter};
/// use cpr_resilience::RateLimiter;
///
/// let conn = RedisConfig::from_env()?.connect().await?;
/// // A partner's quota: 1,000 calls in any hour, across all our processes.
/// let quota = RedisWindowLimiter::new(conn, "partner-x", 1_000, Duration::from_secs(3600))?;
/// if quota.try_acquire().await?.is_allowed() { /* call the partner */ }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisWindowLimiter {
    conn: RedisConnection,
    key: String,
    window_us: u64,
    limit: u32,
}

impl std::fmt::Debug for RedisWindowLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisWindowLimiter")
            .field("key", &self.key)
            .field("window_us", &self.window_us)
            .field("limit", &self.limit)
            .finish()
    }
}

/// The largest limit: the log keeps an entry per permit in the window,
/// and one request for `n` permits adds `n` entries in one script, during
/// which Redis serves nobody else. For more, use
/// [`RedisRateLimiter`](super::RedisRateLimiter) (one number per key).
pub const MAX_WINDOW_LOG_LIMIT: u32 = 65_536;

/// The longest window: a day. Longer windows would keep a day's grants in
/// memory and are better served by a counter with an expiry.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl RedisWindowLimiter {
    /// At most `limit` (1 to [`MAX_WINDOW_LOG_LIMIT`]) permits per `window`
    /// (1 ms to a day), on the key `name`.
    pub fn new(
        conn: RedisConnection,
        name: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Self, RedisError> {
        if name.is_empty() {
            return Err(RedisError::InvalidConfig(
                "a rate limiter name cannot be empty".into(),
            ));
        }
        if limit == 0 || limit > MAX_WINDOW_LOG_LIMIT {
            return Err(RedisError::InvalidConfig(format!(
                "the limit must be from 1 to {MAX_WINDOW_LOG_LIMIT} permits per window, not {limit}"
            )));
        }
        if window < Duration::from_millis(1) || window > MAX_WINDOW {
            return Err(RedisError::InvalidConfig(format!(
                "the window must be between 1 ms and a day, not {window:?}"
            )));
        }
        Ok(RedisWindowLimiter {
            conn,
            key: name.to_string(),
            window_us: u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
            limit,
        })
    }
}

impl RateLimiter for RedisWindowLimiter {
    type Error = RedisError;

    async fn try_acquire_n(&self, n: u32) -> Result<Decision, RedisError> {
        if n > self.limit {
            // More than one window ever holds: never.
            return Ok(NEVER);
        }
        let mut conn = self.conn.clone();
        let request = format!("{:032x}", rand::random::<u128>());
        let (allowed, wait_us): (i64, i64) = WINDOW_LOG
            .key(&self.key)
            .arg(self.window_us)
            .arg(self.limit)
            .arg(n)
            .arg(request)
            .invoke_async(&mut conn)
            .await?;
        Ok(decision(allowed, wait_us))
    }
}
