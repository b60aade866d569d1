//! A lock on one Redis server: token-checked release, waiting by pub/sub,
//! an optional watchdog, and a fencing token from the same atomic step.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, instrument, warn};

use super::scripts::{ACQUIRE, EXTEND, OWN_LEASE, RELEASE};
use super::waiting::{self, Attempt};
use super::{RedisConfig, RedisConnection, RedisError};

/// The default lease: as Redisson's watchdog default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// A named lock on one Redis server.
///
/// - Acquire is `SET name token NX PX ttl` with a random 128-bit token, and
///   in the same Lua step an `INCR` of `name:fence` for the fencing token.
/// - Release and extend are Lua compare-and-act on the token, so a client
///   never deletes a lock that expired and was taken by someone else.
/// - Waiters sleep on the pub/sub channel `name:released` (published by the
///   release script), re-checking at least every 500 ms or when the
///   holder's lease runs out — not by polling.
/// - With [`watchdog`](Self::watchdog), the lease is renewed every TTL/3
///   while the guard lives, and a failed renewal is reported as lock loss.
///
/// Not fair: after a release, whichever waiter asks first wins.
///
/// Not reentrant: a second `lock()` while holding the lock waits like
/// anyone else's, and `try_lock()` returns `None` (Redisson's `RLock` counts
/// holds per thread instead). An async task has no stable identity to
/// count holds by, and a lock that lets its holder in again hides the bug
/// of re-entering a critical section whose invariants are broken midway.
/// Pass the guard down instead of locking again.
///
/// Keys: the lock is `name` itself, so `redis-cli SET name v NX PX ...` by
/// another program excludes this lock and vice versa. On Redis Cluster, use
/// a hash tag (`{name}`) so that `name` and `name:fence` share a slot.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::redis::RedisError> {
/// use std::time::Duration;
/// use cpr_distributed::redis::{RedisConfig, RedisLock};
///
/// let config = RedisConfig::from_env()?; // REDIS_URL
/// let lock = RedisLock::connect(&config, "invoices")
///     .await?
///     .ttl(Duration::from_secs(10))?
///     .watchdog(true);
/// let guard = lock.lock().await?;
/// // ... one holder at a time; pass guard.fencing_token() to the store ...
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`RedisError::InvalidConfig`] for an empty name or a TTL out of range;
/// the server's errors as [`RedisError`]; a lease lost while holding shows
/// on the guard (`is_lost`), not as an error of `lock`.
#[derive(Clone)]
pub struct RedisLock {
    conn: RedisConnection,
    name: String,
    ttl: Duration,
    watchdog: bool,
}

impl std::fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLock")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("watchdog", &self.watchdog)
            .finish()
    }
}

impl RedisLock {
    /// Connects and makes a lock called `name` (not empty), with the default
    /// TTL of 30 s and no watchdog.
    pub async fn connect(config: &RedisConfig, name: &str) -> Result<Self, RedisError> {
        Self::with_connection(config.connect().await?, name)
    }

    /// A lock on an existing connection (waiters also open pub/sub
    /// connections to its server).
    pub fn with_connection(
        conn: RedisConnection,
        name: &str,
    ) -> Result<Self, RedisError> {
        checked_name(name)?;
        checked_slot(&conn, name)?;
        Ok(RedisLock {
            conn,
            name: name.to_string(),
            ttl: DEFAULT_TTL,
            watchdog: false,
        })
    }

    /// The lease: how long the lock outlives a holder that stops renewing
    /// it. From 10 ms to a year.
    pub fn ttl(mut self, ttl: Duration) -> Result<Self, RedisError> {
        self.ttl = checked_ttl(ttl)?;
        Ok(self)
    }

    /// Renew the lease every TTL/3 while the guard lives.
    pub fn watchdog(mut self, enabled: bool) -> Self {
        self.watchdog = enabled;
        self
    }

    /// The lock's key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether anyone holds the lock now (Redisson's `isLocked`). One round
    /// trip; the answer may be stale as soon as it arrives.
    pub async fn is_locked(&self) -> Result<bool, RedisError> {
        Ok(self.remaining_lease().await?.is_some())
    }

    /// How long the current holder's lease has left (Redisson's
    /// `remainTimeToLive`): `None` if nobody holds the lock, and
    /// `Duration::MAX` if the key was set without an expiry (by another
    /// program). One round trip.
    pub async fn remaining_lease(&self) -> Result<Option<Duration>, RedisError> {
        let mut conn = self.conn.clone();
        let left: i64 = redis::cmd("PTTL")
            .arg(&self.name)
            .query_async(&mut conn)
            .await?;
        Ok(lease_left(left))
    }

    fn fence_key(&self) -> String {
        format!("{}:fence", self.name)
    }

    fn channel(&self) -> String {
        format!("{}:released", self.name)
    }

    /// Takes the lock if it is free; `Ok(None)` if someone holds it.
    /// One round trip.
    ///
    /// # Cancel safety
    ///
    /// Safe, as [`lock`](Self::lock).
    #[instrument(level = "debug", skip(self), fields(name = %self.name))]
    pub async fn try_lock(&self) -> Result<Option<RedisLockGuard>, RedisError> {
        let token = new_token();
        match self.attempt(&token).await? {
            Attempt::Acquired(fencing_token) => {
                Ok(Some(self.guard(token, fencing_token)))
            }
            Attempt::Busy(_) => Ok(None),
        }
    }

    /// Waits until the lock is ours.
    ///
    /// # Cancel safety
    ///
    /// Safe. Each attempt runs in a task of its own; if this
    /// future is dropped while an attempt is in flight and the attempt then
    /// succeeds, the task releases the lock with our token at once (not
    /// after the lease). An attempt whose reply is lost is undone the same
    /// way, retried for up to the lease in case the `SET` lands late.
    /// Dropping the future between attempts holds nothing.
    #[instrument(level = "debug", skip(self), fields(name = %self.name))]
    // ANCHOR: lock
    pub async fn lock(&self) -> Result<RedisLockGuard, RedisError> {
        let token = new_token();
        // Attempts until one takes the lock, woken between them by the
        // release messages on the lock's channel.
        let fencing_token =
            waiting::until_acquired(&self.conn, &self.channel(), || {
                let (lock, token) = (self.clone(), token.clone());
                async move { lock.attempt(&token).await }
            })
            .await?;
        Ok(self.guard(token, fencing_token))
    }
    // ANCHOR_END: lock

    /// Waits at most `limit` for the lock.
    ///
    /// # Cancel safety
    ///
    /// Safe, as [`lock`](Self::lock); an attempt cut short by
    /// the limit releases what it took.
    pub async fn lock_timeout(
        &self,
        limit: Duration,
    ) -> Result<RedisLockGuard, RedisError> {
        tokio::time::timeout(limit, self.lock())
            .await
            .map_err(|_| RedisError::Timeout {
                name: self.name.clone(),
                waited: limit,
            })?
    }

    /// One acquire attempt, in a task of its own that releases with our
    /// token what it took if the caller is gone (see
    /// [`waiting::in_own_task`]).
    async fn attempt(&self, token: &str) -> Result<Attempt<u64>, RedisError> {
        let (lock, token) = (self.clone(), token.to_string());
        let undo = {
            let (lock, token) = (lock.clone(), token.clone());
            move || lock.undo_in_background(token)
        };
        waiting::in_own_task(
            &self.name,
            async move { lock.attempt_now(&token).await },
            undo,
        )
        .await
    }

    async fn attempt_now(&self, token: &str) -> Result<Attempt<u64>, RedisError> {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let reply: Result<i64, redis::RedisError> = ACQUIRE
            .key(&self.name)
            .key(self.fence_key())
            .arg(token)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await;
        match reply {
            Ok(fencing_token) if fencing_token > 0 => {
                Ok(Attempt::Acquired(fencing_token.unsigned_abs()))
            }
            Ok(-1) => Ok(Attempt::Busy(None)),
            Ok(negative_left) => Ok(Attempt::Busy(Some(Duration::from_millis(
                negative_left.unsigned_abs(),
            )))),
            Err(error) => {
                // Ambiguous: the SET may have happened and only the reply
                // been lost — or may still be in flight, to be applied
                // later. Our token is unique, so releasing with it undoes
                // exactly our own possible acquisition; it is repeated for
                // the length of the lease, in case the SET lands late.
                self.undo_in_background(token.to_string());
                Err(RedisError::Client(error))
            }
        }
    }

    /// Releases with `token`, repeatedly for the length of the lease.
    fn undo_in_background(&self, token: String) {
        let (conn, name, channel) =
            (self.conn.clone(), self.name.clone(), self.channel());
        waiting::undo_in_background(self.name.clone(), self.ttl, move || {
            let (mut conn, name, channel, token) =
                (conn.clone(), name.clone(), channel.clone(), token.clone());
            async move { release(&mut conn, &name, &channel, &token).await }
        });
    }

    fn guard(&self, token: String, fencing_token: u64) -> RedisLockGuard {
        let acquired_at = Instant::now();
        let (lost_tx, lost_rx) = watch::channel(false);
        let watchdog = self.watchdog.then(|| {
            tokio::spawn(watchdog(
                self.conn.clone(),
                self.name.clone(),
                token.clone(),
                self.ttl,
                lost_tx,
            ))
        });
        RedisLockGuard {
            conn: self.conn.clone(),
            name: self.name.clone(),
            channel: self.channel(),
            token,
            fencing_token,
            ttl: self.ttl,
            acquired_at,
            lost: lost_rx,
            watchdog,
            released: false,
        }
    }
}

/// The longest lease: a year. A lock meant to outlive its holder longer
/// than that is not a lease, and longer durations overflow clock arithmetic.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Lock TTLs below 10 ms cannot outlast a round trip, and above a year are
/// not leases; refuse them.
pub(crate) fn checked_ttl(ttl: Duration) -> Result<Duration, RedisError> {
    if ttl < Duration::from_millis(10) || ttl > MAX_TTL {
        return Err(RedisError::InvalidConfig(format!(
            "a lease (TTL) must be between 10 ms and a year, not {ttl:?}"
        )));
    }
    Ok(ttl)
}

pub(crate) fn checked_name(name: &str) -> Result<(), RedisError> {
    if name.is_empty() {
        return Err(RedisError::InvalidConfig(
            "a lock or semaphore name cannot be empty".into(),
        ));
    }
    Ok(())
}

/// On a cluster, the keys a script touches must share a hash slot: the
/// name must carry a hash tag (`{...}` with something inside), which Redis
/// hashes alone.
pub(crate) fn checked_slot(
    conn: &RedisConnection,
    name: &str,
) -> Result<(), RedisError> {
    let tagged = name
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .is_some_and(|(tag, _)| !tag.is_empty());
    if conn.is_cluster() && !tagged {
        return Err(RedisError::InvalidConfig(format!(
            "on Redis Cluster the keys of `{name}` must share a hash slot: name it with a \
             hash tag, as `{{{name}}}`"
        )));
    }
    Ok(())
}

/// A `PTTL` answer as a remaining lease: -2 (no key) is none, -1 (no
/// expiry) is forever.
fn lease_left(pttl_ms: i64) -> Option<Duration> {
    match pttl_ms {
        -1 => Some(Duration::MAX),
        ms if ms >= 0 => Some(Duration::from_millis(ms.unsigned_abs())),
        _ => None,
    }
}

fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

async fn release(
    conn: &mut RedisConnection,
    name: &str,
    channel: &str,
    token: &str,
) -> Result<bool, RedisError> {
    let released: i64 = RELEASE
        .key(name)
        .arg(token)
        .arg(channel)
        .invoke_async(conn)
        .await?;
    Ok(released == 1)
}

/// How much of the lease a renewal keeps in hand: if no renewal has been
/// answered by `margin` before the lease would end, the lock is reported
/// lost, while the key may still exist — never after someone else could
/// have taken it. It also covers the acquire's round trip, since the lease
/// is counted from when the guard was made.
fn renewal_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_millis(200))
}

/// Renews the lease every TTL/3; reports loss when the lock is not ours any
/// more, or when no renewal was answered in time.
///
/// Each renewal may take only until the lease (as last renewed, by our
/// clock, less a margin) runs out: a link that stops answering is noticed
/// before the key expires on the server, not after a client-side response
/// timeout that may be longer than the lease.
// ANCHOR: watchdog
async fn watchdog(
    mut conn: RedisConnection,
    name: String,
    token: String,
    ttl: Duration,
    lost: watch::Sender<bool>,
) {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let margin = renewal_margin(ttl);
    let mut renewed_at = tokio::time::Instant::now();
    let mut valid_until = renewed_at + ttl;
    let mut next = renewed_at + ttl / 3;
    loop {
        let give_up = valid_until - margin;
        tokio::time::sleep_until(next.min(give_up)).await;
        let sent_at = tokio::time::Instant::now();
        if sent_at >= give_up {
            warn!(%name, "lock lost: no renewal was answered before the lease ran out");
            let _ = lost.send(true);
            return;
        }
        let mut extend = EXTEND.key(&name);
        extend.arg(&token).arg(ttl_ms);
        match tokio::time::timeout_at(give_up, extend.invoke_async(&mut conn)).await {
            Ok(Ok(1)) => {
                renewed_at = sent_at;
                valid_until = renewed_at + ttl;
                next = renewed_at + ttl / 3;
            }
            Ok(Ok::<i64, redis::RedisError>(_)) => {
                warn!(%name, "lock lost: it is not ours any more");
                let _ = lost.send(true);
                return;
            }
            Ok(Err(error)) => {
                debug!(%name, %error, "renewal failed; retrying while the lease lasts");
                next = sent_at + Duration::from_millis(50);
            }
            // The loop's next turn reports the loss: `give_up` has passed.
            Err(_) => {
                debug!(%name, "no answer to the renewal before the lease ran out")
            }
        }
    }
}
// ANCHOR_END: watchdog

/// Proof of holding a [`RedisLock`].
///
/// Release it with [`unlock`](Self::unlock). Dropping it without unlocking
/// releases it in a background task when a tokio runtime is running;
/// otherwise the TTL frees it.
pub struct RedisLockGuard {
    conn: RedisConnection,
    name: String,
    channel: String,
    token: String,
    fencing_token: u64,
    ttl: Duration,
    acquired_at: Instant,
    lost: watch::Receiver<bool>,
    watchdog: Option<JoinHandle<()>>,
    released: bool,
}

impl std::fmt::Debug for RedisLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLockGuard")
            .field("name", &self.name)
            .field("fencing_token", &self.fencing_token)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl RedisLockGuard {
    /// Strictly increasing per lock, also across a server restart that
    /// lost the counter and a failover to a replica that had not seen the
    /// latest tokens: each is at least the server's time in microseconds
    /// and above the last one the server saw (so the servers' clocks must
    /// agree to within the time a failover takes). Give it to the resource
    /// you protect, which refuses tokens lower than the highest it has seen
    /// (see [`FencedStore`](super::FencedStore)).
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The random value stored in the lock key.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// True if the lock may have been lost: the watchdog reported it, or,
    /// without a watchdog, the lease has run out by our clock.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
            || (self.watchdog.is_none() && self.acquired_at.elapsed() >= self.ttl)
    }

    /// Waits until the watchdog reports the lock lost. Without a watchdog,
    /// waits until the lease runs out by our clock.
    pub async fn lost(&self) {
        if self.watchdog.is_none() {
            tokio::time::sleep(self.ttl.saturating_sub(self.acquired_at.elapsed()))
                .await;
            return;
        }
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// How long our lease has left, as Redis counts it: `None` if the lock
    /// is not ours any more (it expired, and perhaps someone else holds it).
    /// One round trip.
    pub async fn remaining_lease(&self) -> Result<Option<Duration>, RedisError> {
        let mut conn = self.conn.clone();
        let left: i64 = OWN_LEASE
            .key(&self.name)
            .arg(&self.token)
            .invoke_async(&mut conn)
            .await?;
        Ok(lease_left(left))
    }

    /// Makes the lease last at least `ttl` more (never shortens it). False
    /// if the lock is not ours any more.
    pub async fn extend(&self, ttl: Duration) -> Result<bool, RedisError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let extended: i64 = EXTEND
            .key(&self.name)
            .arg(&self.token)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(extended == 1)
    }

    /// Releases the lock if it is still ours and wakes the waiters. Returns
    /// false if it had already expired (and so the protection had lapsed).
    pub async fn unlock(mut self) -> Result<bool, RedisError> {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        let mut conn = self.conn.clone();
        let released =
            release(&mut conn, &self.name, &self.channel, &self.token).await?;
        self.released = true;
        Ok(released)
    }
}

impl Drop for RedisLockGuard {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (mut conn, name, channel, token) = (
                self.conn.clone(),
                std::mem::take(&mut self.name),
                std::mem::take(&mut self.channel),
                std::mem::take(&mut self.token),
            );
            runtime.spawn(async move {
                if let Err(error) = release(&mut conn, &name, &channel, &token).await {
                    debug!(%name, %error, "background release failed; the TTL will free the lock");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client library may send a script again when a reply is lost (the
    /// cluster client does, on a connection error). The second run of an
    /// acquire that succeeded must not report the lock as busy: the caller
    /// would wait for its own lock until the lease ran out.
    #[tokio::test]
    async fn an_acquire_sent_twice_with_one_token_takes_the_lock_once() {
        let redis = testkit::shared_redis().unwrap();
        let config = RedisConfig::new(redis.url());
        let lock = RedisLock::connect(&config, "unit-acquire-twice")
            .await
            .unwrap();
        let token = new_token();
        let Attempt::Acquired(first) = lock.attempt_now(&token).await.unwrap() else {
            panic!("the free lock was busy");
        };
        let Attempt::Acquired(second) = lock.attempt_now(&token).await.unwrap() else {
            panic!("the resent acquire found its own lock busy");
        };
        assert!(second > first);
        let rival = new_token();
        assert!(matches!(
            lock.attempt_now(&rival).await.unwrap(),
            Attempt::Busy(_)
        ));
        let mut conn = lock.conn.clone();
        assert!(
            release(&mut conn, &lock.name, &lock.channel(), &token)
                .await
                .unwrap()
        );
    }
}
