//! Redlock: a lock over N independent Redis masters, held by a majority.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{debug, instrument};

use super::lock::{checked_name, checked_ttl};
use super::scripts::{RELEASE, SET_IF_FREE};
use super::{RedisConfig, RedisError};

/// The Redlock algorithm (from the Redis documentation) over independent
/// servers.
///
/// To acquire: send `SET name token NX PX ttl` to every server, each bounded
/// by a short timeout; if a majority (N/2 + 1) said yes and the time left,
/// `ttl - elapsed - drift`, is positive, the lock is held for that long.
/// Otherwise release on *all* servers (a server may have said yes without
/// us hearing it) and retry after a random delay.
///
/// What it does not give you: safety under long pauses or clock jumps
/// (Kleppmann's critique). Treat [`RedlockGuard::validity`] as an upper
/// bound, check it before acting, and prefer a fenced resource for
/// correctness; see the book's chapter.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::redis::RedisError> {
/// use cpr_distributed::redis::Redlock;
///
/// let servers = ["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/", "redis://10.0.0.3:6379/"]
///     .map(String::from);
/// let redlock = Redlock::connect(&servers, "nightly-job")?;
/// let guard = redlock.lock().await?;
/// if guard.remaining() > std::time::Duration::from_secs(1) {
///     // ... act, knowing the lock may still be lost (see above) ...
/// }
/// guard.unlock().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Redlock {
    servers: Vec<ConnectionManager>,
    name: String,
    ttl: Duration,
    attempts: usize,
    max_retry_delay: Duration,
    server_timeout: Duration,
}

impl std::fmt::Debug for Redlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redlock")
            .field("servers", &self.servers.len())
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Proof of holding a [`Redlock`] on a majority of servers.
#[derive(Debug)]
pub struct RedlockGuard {
    redlock: Redlock,
    token: String,
    validity: Duration,
    acquired_at: Instant,
    released: bool,
}

impl Redlock {
    /// Connects lazily to each URL (a server that is down now may answer
    /// later) and makes a lock called `name`. Defaults: TTL 10 s, 3
    /// attempts, 0–200 ms between them, 50 ms per server per request.
    pub fn connect(urls: &[String], name: &str) -> Result<Self, RedisError> {
        if urls.is_empty() {
            return Err(RedisError::InvalidConfig(
                "Redlock needs at least one server URL".into(),
            ));
        }
        checked_name(name)?;
        let server_timeout = Duration::from_millis(50);
        let servers = urls
            .iter()
            .map(|url| {
                let client = RedisConfig::new(url.clone()).client()?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(server_timeout))
                    .set_response_timeout(Some(server_timeout))
                    .set_number_of_retries(1);
                Ok(ConnectionManager::new_lazy_with_config(client, config)?)
            })
            .collect::<Result<Vec<_>, RedisError>>()?;
        Ok(Redlock {
            servers,
            name: name.to_string(),
            ttl: Duration::from_secs(10),
            attempts: 3,
            max_retry_delay: Duration::from_millis(200),
            server_timeout,
        })
    }

    /// The lease on each server. At least 10 ms.
    pub fn ttl(mut self, ttl: Duration) -> Result<Self, RedisError> {
        self.ttl = checked_ttl(ttl)?;
        Ok(self)
    }

    /// How many rounds to try before giving up (at least 1).
    pub fn attempts(mut self, attempts: usize) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    fn majority(&self) -> usize {
        self.servers.len() / 2 + 1
    }

    /// Tries up to `attempts` rounds; fails with [`RedisError::NoQuorum`],
    /// leaving nothing locked, if no round reaches a majority in time.
    #[instrument(level = "debug", skip(self), fields(name = %self.name, servers = self.servers.len()))]
    // ANCHOR: redlock
    pub async fn lock(&self) -> Result<RedlockGuard, RedisError> {
        let token = format!("{:032x}", rand::random::<u128>());
        let mut acquired = 0;
        for attempt in 1..=self.attempts {
            let started = Instant::now();
            acquired = self
                .on_all(|conn| set_if_free(conn, &self.name, &token, self.ttl))
                .await;
            let elapsed = started.elapsed();
            // Clocks drift: 1% of the TTL plus 2 ms, as the algorithm says.
            let drift = self.ttl / 100 + Duration::from_millis(2);
            let validity = self.ttl.saturating_sub(elapsed + drift);
            if acquired >= self.majority() && !validity.is_zero() {
                debug!(acquired, ?validity, "locked");
                return Ok(RedlockGuard {
                    redlock: self.clone(),
                    token,
                    validity,
                    acquired_at: started,
                    released: false,
                });
            }
            // Undo everywhere, including servers whose "yes" we never heard.
            self.on_all(|conn| release(conn, &self.name, &token)).await;
            if attempt < self.attempts {
                let delay = self.max_retry_delay.mul_f64(rand::random::<f64>());
                tokio::time::sleep(delay).await;
            }
        }
        Err(RedisError::NoQuorum {
            name: self.name.clone(),
            acquired,
            servers: self.servers.len(),
            majority: self.majority(),
            attempts: self.attempts,
        })
    }
    // ANCHOR_END: redlock

    /// Runs `op` on every server at once, each bounded by the per-server
    /// timeout; returns how many said yes.
    async fn on_all<'a, F, Fut>(&'a self, op: F) -> usize
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<bool, redis::RedisError>> + 'a,
    {
        let calls = self.servers.iter().map(|conn| {
            let call = op(conn.clone());
            async move {
                matches!(
                    tokio::time::timeout(self.server_timeout, call).await,
                    Ok(Ok(true))
                )
            }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|yes| *yes)
            .count()
    }
}

async fn set_if_free(
    mut conn: ConnectionManager,
    name: &str,
    token: &str,
    ttl: Duration,
) -> Result<bool, redis::RedisError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let set: i64 = SET_IF_FREE
        .key(name)
        .arg(token)
        .arg(ttl_ms)
        .invoke_async(&mut conn)
        .await?;
    Ok(set == 1)
}

async fn release(
    mut conn: ConnectionManager,
    name: &str,
    token: &str,
) -> Result<bool, redis::RedisError> {
    let channel = format!("{name}:released");
    let released: i64 = RELEASE
        .key(name)
        .arg(token)
        .arg(channel)
        .invoke_async(&mut conn)
        .await?;
    Ok(released == 1)
}

impl RedlockGuard {
    /// How long the lock is certainly held from acquisition, by our clock:
    /// `ttl - time to acquire - drift`.
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// What is left of [`validity`](Self::validity) now. Zero means: stop
    /// acting as the holder.
    pub fn remaining(&self) -> Duration {
        self.validity.saturating_sub(self.acquired_at.elapsed())
    }

    /// Releases on every server (token-checked), even those that did not
    /// grant it.
    pub async fn unlock(mut self) {
        let redlock = self.redlock.clone();
        redlock
            .on_all(|conn| release(conn, &redlock.name, &self.token))
            .await;
        self.released = true;
    }
}

impl Drop for RedlockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (redlock, token) =
                (self.redlock.clone(), std::mem::take(&mut self.token));
            runtime.spawn(async move {
                redlock
                    .on_all(|conn| release(conn, &redlock.name, &token))
                    .await;
            });
        }
    }
}
