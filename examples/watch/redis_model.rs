//! The view of a Redis lock: its key (the holder's token) with the time it
//! has left, the fencing counter beside it, and the releases published on
//! the lock's channel — the three keys and the channel `RedisLock` uses:
//! `<name>`, `<name>:fence`, `<name>:released`.

#![allow(dead_code)] // the tests use parts the example does not

use std::time::Instant;

use concurrency_patterns::distributed::redis::RedisConnection;
use concurrency_patterns::distributed::redis::redis;
use futures::StreamExt;
use serde_json::{Value, json};

/// One Redis lock at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisLockView {
    pub name: String,
    /// The holder's token (the key's value); `None` while free.
    pub holder: Option<String>,
    /// Milliseconds the key has left; `None` while free.
    pub left_ms: Option<i64>,
    /// The last fencing token handed out (`<name>:fence`).
    pub fencing_counter: Option<u64>,
}

/// Reads the lock `name`: three commands in one round trip.
pub async fn redis_snapshot(
    conn: &RedisConnection,
    name: &str,
) -> anyhow::Result<RedisLockView> {
    let mut conn = conn.clone();
    let (holder, left, counter): (Option<String>, i64, Option<u64>) = redis::pipe()
        .cmd("GET")
        .arg(name)
        .cmd("PTTL")
        .arg(name)
        .cmd("GET")
        .arg(format!("{name}:fence"))
        .query_async(&mut conn)
        .await?;
    Ok(RedisLockView {
        name: name.to_string(),
        left_ms: holder.as_ref().map(|_| left),
        holder,
        fencing_counter: counter,
    })
}

impl RedisLockView {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "recipe": "RedisLock",
            "layout": "<name> = token (PX ttl), <name>:fence, channel <name>:released",
            "holder": self.holder,
            "left_ms": self.left_ms,
            "fencing_counter": self.fencing_counter,
        })
    }
}

/// The Redis view over time: the last reading, when it was read, and what
/// happened.
#[derive(Debug, Clone)]
pub struct RedisLive {
    pub now: RedisLockView,
    pub read_at: Instant,
    pub log: Vec<String>,
}

impl RedisLive {
    pub fn new(now: RedisLockView) -> Self {
        RedisLive {
            now,
            read_at: Instant::now(),
            log: Vec::new(),
        }
    }

    /// Takes a new reading, logging a change of holder or of the counter.
    pub fn update(&mut self, next: RedisLockView) {
        if next.holder != self.now.holder {
            self.log.push(match &next.holder {
                Some(token) => format!(
                    "taken by {token} (fencing token {})",
                    next.fencing_counter.unwrap_or(0)
                ),
                None => "free".to_string(),
            });
        }
        self.now = next;
        self.read_at = Instant::now();
        if self.log.len() > 200 {
            self.log.remove(0);
        }
    }
}

/// Follows the lock: a reading every 100 ms (the time left counts down),
/// and every message on its release channel logged as it comes.
pub async fn follow_redis(
    conn: RedisConnection,
    name: String,
    view: tokio::sync::watch::Sender<RedisLive>,
) -> anyhow::Result<()> {
    let mut pubsub = conn.pubsub().await?;
    pubsub.subscribe(format!("{name}:released")).await?;
    let mut releases = pubsub.on_message();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        let released = tokio::select! {
            message = releases.next() => match message {
                Some(message) => Some(message.get_payload::<String>().unwrap_or_default()),
                None => anyhow::bail!("the release channel closed"),
            },
            _ = tick.tick() => None,
        };
        let next = redis_snapshot(&conn, &name).await?;
        view.send_modify(|live| {
            if let Some(payload) = released {
                live.log
                    .push(format!("published on {name}:released: {payload}"));
            }
            live.update(next);
        });
        if view.is_closed() {
            return Ok(());
        }
    }
}
