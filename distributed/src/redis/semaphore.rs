//! A counting semaphore on one Redis server, with expirable permits: at most
//! N holders at once, each permit an id with a lease.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::Script;
use tracing::{debug, instrument};

use super::lock::{DEFAULT_TTL, checked_name, checked_slot, checked_ttl};
use super::scripts::NEXT_FENCING_TOKEN;
use super::waiting::{self, Attempt};
use super::{RedisConfig, RedisConnection, RedisError};

/// The most permits a semaphore may have.
pub const MAX_REDIS_PERMITS: u32 = 1_000_000;

/// Lua: the server's time in milliseconds, as `now`. Every script below
/// judges expiry by the server's clock alone, so clients' clocks never
/// matter.
const NOW_MS: &str = r"
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS[1] permits (a sorted set: id → expiry in server ms), KEYS[2] the
/// permit count, KEYS[3] the fencing counter; ARGV[1] permits, ARGV[2] id,
/// ARGV[3] lease ms.
///
/// Returns `{1, fencing token}` when the permit is taken, `{0, ms}` when
/// all are held (the first of them expires in `ms`), `{-1, count}` when the
/// semaphore was set up with another count. Run twice with the same id (a
/// resend after a lost reply), it takes one permit: the second run finds
/// the id held and answers as the first did.
// ANCHOR: acquire_script
static ACQUIRE_PERMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NEXT_FENCING_TOKEN} {NOW_MS}
        local count = redis.call('GET', KEYS[2])
        if not count then
            redis.call('SET', KEYS[2], ARGV[1])
        elseif count ~= ARGV[1] then
            return {{-1, tonumber(count)}}
        end
        -- Permits whose lease ran out are free again.
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
            return {{1, next_fencing_token(KEYS[3])}}
        end
        if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
            redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
            -- The set lives exactly as long as its longest permit.
            local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
            redis.call('PEXPIREAT', KEYS[1], last[2])
            return {{1, next_fencing_token(KEYS[3])}}
        end
        local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
        return {{0, tonumber(first[2]) - now}}
        "
    ))
});
// ANCHOR_END: acquire_script

/// KEYS[1] permits; ARGV[1] id, ARGV[2] channel. Removes the permit and
/// tells the waiters; returns 1 if it was still held, 0 if it was not (its
/// lease had run out, or it was released already).
// ANCHOR: release_script
static RELEASE_PERMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NOW_MS}
        local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
        if not expiry then return 0 end
        redis.call('ZREM', KEYS[1], ARGV[1])
        redis.call('PUBLISH', ARGV[2], 'released')
        if tonumber(expiry) <= now then return 0 end
        return 1
        "
    ))
});
// ANCHOR_END: release_script

/// KEYS[1] permits; ARGV[1] id, ARGV[2] lease ms. Makes a held permit last
/// at least ARGV[2] more (never shortens it); 1, or 0 if not held.
static EXTEND_PERMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NOW_MS}
        local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
        if not expiry or tonumber(expiry) <= now then return 0 end
        local wanted = now + tonumber(ARGV[2])
        if wanted > tonumber(expiry) then
            redis.call('ZADD', KEYS[1], wanted, ARGV[1])
            local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
            redis.call('PEXPIREAT', KEYS[1], last[2])
        end
        return 1
        "
    ))
});

/// KEYS[1] permits, KEYS[2] count. `{count or -1, permits held now}`.
static HELD_NOW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NOW_MS}
        local count = redis.call('GET', KEYS[2])
        local held = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
        return {{tonumber(count or '-1'), held}}
        "
    ))
});

/// At most `permits` holders at once among every client that uses the same
/// name on one Redis server: a pool of licences, connections or GPU slots
/// (Redisson's `RPermitExpirableSemaphore`).
///
/// - Each permit is an id with a lease, in the sorted set `name:permits`
///   scored by its expiry on the server's clock. A holder that crashes
///   gives its permit back when the lease runs out; a live one can
///   [`extend`](RedisPermit::extend) it.
/// - Acquire and release are one Lua script each. Acquire first frees the
///   permits whose lease ran out, then takes one if fewer than `permits`
///   are held, with a fencing token from `name:fence` in the same step.
/// - Release is by id and refuses an id that is not held any more
///   ([`RedisError::StalePermit`]): its holder learns that its protection
///   had lapsed.
/// - Waiters sleep on the channel `name:released`, published by every
///   release, and check again at least every 500 ms or when the first
///   permit's lease runs out.
/// - The number of permits is written once, by the first user, in
///   `name:count`; a user who asks for another number gets
///   [`RedisError::PermitCountMismatch`].
///
/// Not fair: after a release, whichever waiter asks first gets the permit.
/// One server: a failover to a replica that had not seen a permit loses it
/// (see the Redis chapter on Sentinel). On Redis Cluster, put the name in
/// a hash tag (`{gpu}`) so that its keys share a slot.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::redis::RedisError> {
/// use std::time::Duration;
/// use cpr_distributed::redis::{RedisConfig, RedisSemaphore};
///
/// let config = RedisConfig::from_env()?; // REDIS_URL
/// let gpus = RedisSemaphore::connect(&config, "gpu-slots", 3)
///     .await?
///     .lease(Duration::from_secs(60))?;
/// let permit = gpus.acquire().await?; // one of 3, across all processes
/// // ... use the slot; permit.fencing_token() orders the holders ...
/// permit.release().await?; // refused if the lease had run out
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`RedisError::InvalidConfig`] for an empty name, a count of permits out
/// of range or a lease out of range; [`RedisError::PermitCountMismatch`]
/// when the name is in use with another count; the server's errors as
/// [`RedisError`].
#[derive(Clone)]
pub struct RedisSemaphore {
    conn: RedisConnection,
    name: String,
    permits: u32,
    lease: Duration,
}

impl std::fmt::Debug for RedisSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSemaphore")
            .field("name", &self.name)
            .field("permits", &self.permits)
            .field("lease", &self.lease)
            .finish()
    }
}

impl RedisSemaphore {
    /// Connects and makes a semaphore called `name` (not empty) with
    /// `permits` permits (1 to [`MAX_REDIS_PERMITS`]) and a lease of 30 s.
    pub async fn connect(
        config: &RedisConfig,
        name: &str,
        permits: u32,
    ) -> Result<Self, RedisError> {
        Self::with_connection(config.connect().await?, name, permits)
    }

    /// A semaphore on an existing connection (waiters also open pub/sub
    /// connections to its server).
    pub fn with_connection(
        conn: RedisConnection,
        name: &str,
        permits: u32,
    ) -> Result<Self, RedisError> {
        checked_name(name)?;
        checked_slot(&conn, name)?;
        if permits == 0 || permits > MAX_REDIS_PERMITS {
            return Err(RedisError::InvalidConfig(format!(
                "a semaphore needs between 1 and {MAX_REDIS_PERMITS} permits, not {permits}"
            )));
        }
        Ok(RedisSemaphore {
            conn,
            name: name.to_string(),
            permits,
            lease: DEFAULT_TTL,
        })
    }

    /// The lease of each permit: how long it outlives a holder that neither
    /// releases nor extends it. From 10 ms to a year.
    pub fn lease(mut self, lease: Duration) -> Result<Self, RedisError> {
        self.lease = checked_ttl(lease)?;
        Ok(self)
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn permits_key(&self) -> String {
        format!("{}:permits", self.name)
    }

    fn count_key(&self) -> String {
        format!("{}:count", self.name)
    }

    fn fence_key(&self) -> String {
        format!("{}:fence", self.name)
    }

    fn channel(&self) -> String {
        format!("{}:released", self.name)
    }

    /// Takes a permit if one is free; `Ok(None)` if all are held. One round
    /// trip.
    ///
    /// # Cancel safety
    ///
    /// Safe, as [`acquire`](Self::acquire).
    #[instrument(level = "debug", skip(self), fields(name = %self.name))]
    pub async fn try_acquire(&self) -> Result<Option<RedisPermit>, RedisError> {
        let id = new_permit_id();
        match self.attempt(&id).await? {
            Attempt::Acquired(fencing_token) => {
                Ok(Some(self.permit(id, fencing_token)))
            }
            Attempt::Busy(_) => Ok(None),
        }
    }

    /// Waits until a permit is ours.
    ///
    /// # Cancel safety
    ///
    /// Safe. Each attempt runs in a task of its own; if this future is
    /// dropped while an attempt is in flight and the attempt then succeeds,
    /// the task releases the permit at once (not after the lease). An
    /// attempt whose reply is lost is undone the same way, retried for up
    /// to the lease in case the script lands late. Dropping the future
    /// between attempts holds nothing.
    #[instrument(level = "debug", skip(self), fields(name = %self.name))]
    // ANCHOR: acquire
    pub async fn acquire(&self) -> Result<RedisPermit, RedisError> {
        let id = new_permit_id();
        let fencing_token =
            waiting::until_acquired(&self.conn, &self.channel(), || {
                let (semaphore, id) = (self.clone(), id.clone());
                async move { semaphore.attempt(&id).await }
            })
            .await?;
        Ok(self.permit(id, fencing_token))
    }
    // ANCHOR_END: acquire

    /// Waits at most `limit` for a permit.
    ///
    /// # Cancel safety
    ///
    /// Safe, as [`acquire`](Self::acquire); an attempt cut short by the
    /// limit releases what it took.
    pub async fn acquire_timeout(
        &self,
        limit: Duration,
    ) -> Result<RedisPermit, RedisError> {
        tokio::time::timeout(limit, self.acquire())
            .await
            .map_err(|_| RedisError::NoPermitInTime {
                name: self.name.clone(),
                waited: limit,
            })?
    }

    /// How many permits are free now (the count less the permits held and
    /// not expired). One round trip; the answer may be stale as soon as it
    /// arrives.
    pub async fn available_permits(&self) -> Result<u32, RedisError> {
        let mut conn = self.conn.clone();
        let (count, held): (i64, i64) = HELD_NOW
            .key(self.permits_key())
            .key(self.count_key())
            .invoke_async(&mut conn)
            .await?;
        let count = if count < 0 {
            i64::from(self.permits)
        } else {
            count
        };
        Ok(u32::try_from((count - held).max(0)).unwrap_or(u32::MAX))
    }

    /// Releases the permit `id`, held by this process or handed over by
    /// another (Redisson's `release(permitId)`).
    ///
    /// # Errors
    ///
    /// [`RedisError::StalePermit`] if the permit is not held any more.
    pub async fn release_id(&self, id: &str) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        release(&mut conn, &self.permits_key(), &self.channel(), id)
            .await?
            .then_some(())
            .ok_or_else(|| RedisError::StalePermit {
                name: self.name.clone(),
                id: id.to_string(),
            })
    }

    /// One acquire attempt, in a task of its own that releases what it took
    /// if the caller is gone (see [`waiting::in_own_task`]).
    async fn attempt(&self, id: &str) -> Result<Attempt<u64>, RedisError> {
        let (semaphore, id) = (self.clone(), id.to_string());
        let undo = {
            let (semaphore, id) = (semaphore.clone(), id.clone());
            move || semaphore.undo_in_background(id)
        };
        waiting::in_own_task(
            &self.name,
            async move { semaphore.attempt_now(&id).await },
            undo,
        )
        .await
    }

    async fn attempt_now(&self, id: &str) -> Result<Attempt<u64>, RedisError> {
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let reply: Result<(i64, i64), redis::RedisError> = ACQUIRE_PERMIT
            .key(self.permits_key())
            .key(self.count_key())
            .key(self.fence_key())
            .arg(self.permits)
            .arg(id)
            .arg(lease_ms)
            .invoke_async(&mut conn)
            .await;
        match reply {
            Ok((1, fencing_token)) => {
                Ok(Attempt::Acquired(fencing_token.unsigned_abs()))
            }
            Ok((-1, count)) => Err(RedisError::PermitCountMismatch {
                name: self.name.clone(),
                asked: self.permits,
                set: count,
            }),
            Ok((_, left_ms)) => Ok(Attempt::Busy(Some(Duration::from_millis(
                left_ms.max(0).unsigned_abs(),
            )))),
            Err(error) => {
                // Ambiguous: the permit may have been taken and only the
                // reply lost. The id is ours alone, so releasing it undoes
                // exactly our own possible permit.
                self.undo_in_background(id.to_string());
                Err(RedisError::Client(error))
            }
        }
    }

    /// Releases `id`, repeatedly for the length of the lease.
    fn undo_in_background(&self, id: String) {
        let (conn, key, channel) =
            (self.conn.clone(), self.permits_key(), self.channel());
        waiting::undo_in_background(self.name.clone(), self.lease, move || {
            let (mut conn, key, channel, id) =
                (conn.clone(), key.clone(), channel.clone(), id.clone());
            async move {
                // Gone or released: either way, nothing of ours is left.
                release(&mut conn, &key, &channel, &id).await.map(|_| true)
            }
        });
    }

    fn permit(&self, id: String, fencing_token: u64) -> RedisPermit {
        RedisPermit {
            conn: self.conn.clone(),
            name: self.name.clone(),
            permits_key: self.permits_key(),
            channel: self.channel(),
            id,
            fencing_token,
            lease: self.lease,
            acquired_at: Instant::now(),
            released: false,
        }
    }
}

fn new_permit_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

async fn release(
    conn: &mut RedisConnection,
    permits_key: &str,
    channel: &str,
    id: &str,
) -> Result<bool, RedisError> {
    let released: i64 = RELEASE_PERMIT
        .key(permits_key)
        .arg(id)
        .arg(channel)
        .invoke_async(conn)
        .await?;
    Ok(released == 1)
}

/// One permit of a [`RedisSemaphore`].
///
/// Give it back with [`release`](Self::release). Dropping it without
/// releasing releases it in a background task when a tokio runtime is
/// running; otherwise its lease frees it.
pub struct RedisPermit {
    conn: RedisConnection,
    name: String,
    permits_key: String,
    channel: String,
    id: String,
    fencing_token: u64,
    lease: Duration,
    acquired_at: Instant,
    released: bool,
}

impl std::fmt::Debug for RedisPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPermit")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("fencing_token", &self.fencing_token)
            .finish()
    }
}

impl RedisPermit {
    /// The permit's id: hand it to another process, which can release it
    /// with [`RedisSemaphore::release_id`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Strictly increasing per semaphore, also across a restart or a
    /// failover that lost the counter (see
    /// [`RedisLockGuard::fencing_token`](super::RedisLockGuard::fencing_token)):
    /// give it to the resource you protect, which can refuse tokens lower
    /// than the highest it has seen.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// True once the lease has run out by our clock (counted from when
    /// the permit was handed to us, so never later than on the server).
    /// An [`extend`](Self::extend) is not counted: ask the server then.
    pub fn is_expired(&self) -> bool {
        self.acquired_at.elapsed() >= self.lease
    }

    /// Makes the lease last at least `lease` more (never shortens it).
    /// False if the permit is not held any more.
    pub async fn extend(&self, lease: Duration) -> Result<bool, RedisError> {
        let lease_ms =
            u64::try_from(checked_ttl(lease)?.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let extended: i64 = EXTEND_PERMIT
            .key(&self.permits_key)
            .arg(&self.id)
            .arg(lease_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(extended == 1)
    }

    /// Gives the permit back and wakes a waiter.
    ///
    /// # Errors
    ///
    /// [`RedisError::StalePermit`] if the permit was not held any more: its
    /// lease had run out (someone else may have held it since), so the
    /// protection had lapsed.
    pub async fn release(mut self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let released =
            release(&mut conn, &self.permits_key, &self.channel, &self.id).await;
        // On an error the request may not have arrived: `Drop` tries again.
        self.released = released.is_ok();
        released?
            .then_some(())
            .ok_or_else(|| RedisError::StalePermit {
                name: std::mem::take(&mut self.name),
                id: std::mem::take(&mut self.id),
            })
    }
}

impl Drop for RedisPermit {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (mut conn, key, channel, id, name) = (
                self.conn.clone(),
                std::mem::take(&mut self.permits_key),
                std::mem::take(&mut self.channel),
                std::mem::take(&mut self.id),
                std::mem::take(&mut self.name),
            );
            runtime.spawn(async move {
                if let Err(error) = release(&mut conn, &key, &channel, &id).await {
                    debug!(%name, %error, "background release failed; the lease will free the permit");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As for the lock: an acquire run twice with one id takes one permit,
    /// also when it was the last one.
    #[tokio::test]
    async fn an_acquire_sent_twice_with_one_id_takes_one_permit() {
        let redis = testkit::shared_redis().unwrap();
        let config = RedisConfig::new(redis.url());
        let semaphore = RedisSemaphore::connect(&config, "unit-sem-twice", 1)
            .await
            .unwrap();
        let id = new_permit_id();
        for _ in 0..2 {
            assert!(matches!(
                semaphore.attempt_now(&id).await.unwrap(),
                Attempt::Acquired(_)
            ));
        }
        assert_eq!(semaphore.available_permits().await.unwrap(), 0);
        semaphore.release_id(&id).await.unwrap();
        assert_eq!(semaphore.available_permits().await.unwrap(), 1);
    }
}
