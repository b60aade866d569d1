//! A rate limiter shared by many processes: GCRA in one Lua script.

use std::sync::LazyLock;
use std::time::Duration;

use cpr_resilience::{Decision, RateLimiter};
use redis::Script;

use super::{RedisConnection, RedisError};

/// GCRA (the generic cell rate algorithm): one "theoretical arrival time"
/// per key. KEYS[1] tat; ARGV[1] microseconds per permit, ARGV[2] burst,
/// ARGV[3] permits asked. The clock is the server's (`TIME`), so clients'
/// clocks do not matter. Returns {1, 0} or {0, microseconds to wait}.
// ANCHOR: gcra
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local interval = tonumber(ARGV[1])
        local burst = tonumber(ARGV[2])
        local n = tonumber(ARGV[3])
        local tat = tonumber(redis.call('GET', KEYS[1]) or now)
        if tat < now then tat = now end
        local new_tat = tat + n * interval
        local allowed_at = new_tat - burst * interval
        if allowed_at > now then
            return {0, allowed_at - now}
        end
        local keep_ms = math.ceil((new_tat - now) / 1000) + 1
        redis.call('SET', KEYS[1], new_tat, 'PX', keep_ms)
        return {1, 0}
        ",
    )
});
// ANCHOR_END: gcra

/// `rate` permits per second with bursts of up to `burst`, shared by every
/// process that uses the same key: each decision is one atomic script on
/// the server.
///
/// The guarantee: in any span of time `t`, at most `burst + rate × t`
/// permits are granted (one emission interval of rounding aside), and a
/// caller that keeps asking gets one every `1 / rate` once the burst is
/// spent. So with rate 10/s and burst 10, an idle limiter grants 10 at
/// once and 10 more within the next second: 20 in about one second, never
/// more. It is not "at most `rate` per window"; for that, use
/// [`RedisWindowLimiter`](super::RedisWindowLimiter) (Redisson's
/// semantics).
///
/// GCRA keeps one number per key (no per-request log), has no window
/// edges for traffic to bunch at, and tells a refused caller how long to
/// wait. A request for more than `burst` permits at once can never succeed:
/// it is denied with `retry_after` of `Duration::MAX`.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::redis::RedisError> {
/// use cpr_distributed::redis::{RedisConfig, RedisRateLimiter};
/// use cpr_resilience::{Decision, RateLimiter};
///
/// let conn = RedisConfig::from_env()?.connect().await?;
/// // 100 a second for every process that uses the key, bursts of 20.
/// let limiter = RedisRateLimiter::new(conn, "api:search", 100.0, 20)?;
/// match limiter.try_acquire().await? {
///     Decision::Allowed => { /* serve */ }
///     Decision::Denied { retry_after } => { /* answer 429, Retry-After */ }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: RedisConnection,
    key: String,
    interval_us: u64,
    burst: u32,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("key", &self.key)
            .field("interval_us", &self.interval_us)
            .field("burst", &self.burst)
            .finish()
    }
}

impl RedisRateLimiter {
    /// `rate_per_second` (> 0) permits a second, `burst` (>= 1) at once, on
    /// the key `name`.
    pub fn new(
        conn: RedisConnection,
        name: &str,
        rate_per_second: f64,
        burst: u32,
    ) -> Result<Self, RedisError> {
        if name.is_empty() {
            return Err(RedisError::InvalidConfig(
                "a rate limiter name cannot be empty".into(),
            ));
        }
        if !(rate_per_second.is_finite() && rate_per_second > 0.0) {
            return Err(RedisError::InvalidConfig(format!(
                "the rate must be a positive number, not {rate_per_second}"
            )));
        }
        if burst == 0 {
            return Err(RedisError::InvalidConfig(
                "the burst must be at least 1".into(),
            ));
        }
        let interval_us = (1_000_000.0 / rate_per_second).round().max(1.0) as u64;
        Ok(RedisRateLimiter {
            conn,
            key: name.to_string(),
            interval_us,
            burst,
        })
    }
}

impl RateLimiter for RedisRateLimiter {
    type Error = RedisError;

    async fn try_acquire_n(&self, n: u32) -> Result<Decision, RedisError> {
        if n > self.burst {
            // More than the burst never fits, however long one waits.
            return Ok(NEVER);
        }
        let mut conn = self.conn.clone();
        let (allowed, wait_us): (i64, i64) = GCRA
            .key(&self.key)
            .arg(self.interval_us)
            .arg(self.burst)
            .arg(n)
            .invoke_async(&mut conn)
            .await?;
        Ok(decision(allowed, wait_us))
    }
}

/// The answer to a request for more permits than a limiter can ever grant
/// at once.
pub(crate) const NEVER: Decision = Decision::Denied {
    retry_after: Duration::MAX,
};

/// A limiter script's `{allowed, microseconds to wait}` as a [`Decision`].
pub(crate) fn decision(allowed: i64, wait_us: i64) -> Decision {
    if allowed == 1 {
        Decision::Allowed
    } else {
        Decision::Denied {
            retry_after: Duration::from_micros(wait_us.unsigned_abs()),
        }
    }
}
