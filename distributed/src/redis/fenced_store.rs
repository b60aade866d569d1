//! A resource that checks fencing tokens: the part of the locking story that
//! makes a paused holder harmless.

use std::sync::LazyLock;

use redis::Script;

use super::lock::checked_slot;
use super::{RedisConnection, RedisError};

/// KEYS[1] value, KEYS[2] highest token seen; ARGV[1] token, ARGV[2] value.
static FENCED_WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local highest = tonumber(redis.call('GET', KEYS[2]) or '0')
        if tonumber(ARGV[1]) < highest then return 0 end
        redis.call('SET', KEYS[2], ARGV[1])
        redis.call('SET', KEYS[1], ARGV[2])
        return 1
        ",
    )
});

/// A value on Redis that accepts a write only with a fencing token at least
/// as high as any it has accepted before.
///
/// A lock holder that was paused past its lease and wakes up with an old
/// token is refused, because the next holder has written with a higher one.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::redis::RedisError> {
/// use cpr_distributed::redis::{FencedStore, RedisConfig, RedisLock};
///
/// let config = RedisConfig::from_env()?;
/// let store = FencedStore::new(config.connect().await?, "report");
/// let guard = RedisLock::connect(&config, "report-lock").await?.lock().await?;
/// let accepted = store.write(guard.fencing_token(), "v2").await?;
/// assert!(accepted, "a newer holder wrote first");
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FencedStore {
    conn: RedisConnection,
    name: String,
}

impl FencedStore {
    /// The store called `name` (keys `name` and `name:highest-token`; on
    /// Redis Cluster, give the name a hash tag, as `{report}`, or `write`
    /// says so).
    pub fn new(conn: RedisConnection, name: &str) -> Self {
        FencedStore {
            conn,
            name: name.to_string(),
        }
    }

    /// Writes `value` if `fencing_token` is not stale; returns whether it did.
    pub async fn write(
        &self,
        fencing_token: u64,
        value: &str,
    ) -> Result<bool, RedisError> {
        checked_slot(&self.conn, &self.name)?;
        let mut conn = self.conn.clone();
        let written: i64 = FENCED_WRITE
            .key(&self.name)
            .key(format!("{}:highest-token", self.name))
            .arg(fencing_token)
            .arg(value)
            .invoke_async(&mut conn)
            .await?;
        Ok(written == 1)
    }

    /// The current value.
    pub async fn read(&self) -> Result<Option<String>, RedisError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(&self.name)
            .query_async(&mut conn)
            .await?)
    }
}
