//! A lock on Redis, driven from two terminals.
//!
//! Run `cargo xtask services up`, then in two terminals:
//!
//!     cargo run --example redis-lock -- --name demo     # type: lock
//!     cargo run --example redis-lock -- --name demo     # type: lock (waits), then unlock in the first
//!
//! Commands, one per line: `lock`, `trylock`, `unlock`, `write <value>` (a
//! write to the fenced store `<name>-store` with this holder's fencing
//! token), `quit`. `redis-cli SET demo x NX PX 10000` takes the same lock.
//! `--scripted` runs a two-client demonstration instead (see also the
//! `redis-fencing` example).
//!
//! Flags: `--url` (default `REDIS_URL`, else redis://127.0.0.1:6379/),
//! `--name`, `--ttl-ms`, `--watchdog`.
//!
//! Its commands and their handling repeat `etcd-lock`'s on purpose: the
//! same session typed against both shows where the two locks differ.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::redis::{
    FencedStore, RedisLock, RedisLockGuard,
};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    redis: common::RedisFlags,
    /// The lock's name (its key).
    #[arg(long, default_value = "demo-redis-lock")]
    name: String,
    /// The lease in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    ttl_ms: u64,
    /// Renew the lease every TTL/3 while holding it.
    #[arg(long)]
    watchdog: bool,
    /// Run a scripted two-client demonstration instead of reading stdin.
    #[arg(long)]
    scripted: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (config, conn) = args.redis.connect().await?;
    let lock = RedisLock::connect(&config, &args.name)
        .await?
        .ttl(Duration::from_millis(args.ttl_ms))?
        .watchdog(args.watchdog);
    let store = FencedStore::new(conn, &format!("{}-store", args.name));
    if args.scripted {
        return scripted(&lock, &store).await;
    }
    interactive(&lock, &store).await
}

async fn interactive(lock: &RedisLock, store: &FencedStore) -> anyhow::Result<()> {
    let mut held: Option<RedisLockGuard> = None;
    common::repl("lock, trylock, unlock, write <value>", async |words| {
        match words {
            ["lock" | "trylock"] if held.is_some() => say("already locked"),
            ["lock"] => {
                say("waiting...");
                match lock.lock().await {
                    Ok(guard) => {
                        say(format!("locked (fencing token {})", guard.fencing_token()));
                        held = Some(guard);
                    }
                    Err(error) => say(format!("lock failed: {error}")),
                }
            }
            ["trylock"] => match lock.try_lock().await {
                Ok(Some(guard)) => {
                    say(format!("locked (fencing token {})", guard.fencing_token()));
                    held = Some(guard);
                }
                Ok(None) => say("busy: someone else holds it"),
                Err(error) => say(format!("trylock failed: {error}")),
            },
            ["unlock"] => match held.take() {
                Some(guard) => match guard.unlock().await {
                    Ok(true) => say("unlocked"),
                    Ok(false) => {
                        say("it had already expired: someone else may have held it meanwhile")
                    }
                    Err(error) => say(format!("unlock failed: {error}")),
                },
                None => say("not locked"),
            },
            ["write", value] => match &held {
                // ANCHOR: fenced_write
                Some(guard) => match store.write(guard.fencing_token(), value).await {
                    Ok(true) => say(format!("write accepted: {value}")),
                    Ok(false) => {
                        say("write rejected: a newer holder has written (stale fencing token)")
                    }
                    Err(error) => say(format!("write failed: {error}")),
                },
                // ANCHOR_END: fenced_write
                None => say("not locked: lock first"),
            },
            _ => return false,
        }
        true
    })
    .await;
    if let Some(guard) = held {
        guard.unlock().await?;
    }
    Ok(())
}

/// Two clients: the second waits, and is woken by the first one's release
/// (a pub/sub message), not by polling.
async fn scripted(lock: &RedisLock, store: &FencedStore) -> anyhow::Result<()> {
    let first = lock.lock().await?;
    say(format!(
        "A locked (fencing token {})",
        first.fencing_token()
    ));
    anyhow::ensure!(
        lock.try_lock().await?.is_none(),
        "B got the lock while A held it"
    );
    say("B: try_lock says busy; B waits");
    let waiter = tokio::spawn({
        let lock = lock.clone();
        async move {
            lock.lock()
                .await
                .map(|guard| (guard, std::time::Instant::now()))
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    anyhow::ensure!(!waiter.is_finished(), "B acquired while A held the lock");
    anyhow::ensure!(
        store.write(first.fencing_token(), "from A").await?,
        "A's write was refused"
    );
    let released_at = std::time::Instant::now();
    anyhow::ensure!(first.unlock().await?, "A's lock had expired");
    let (second, acquired_at) =
        tokio::time::timeout(Duration::from_secs(5), waiter).await???;
    say(format!(
        "A unlocked; B was woken and locked {:.1} ms later (fencing token {})",
        (acquired_at - released_at).as_secs_f64() * 1000.0,
        second.fencing_token()
    ));
    anyhow::ensure!(
        store.write(second.fencing_token(), "from B").await?,
        "B's write was refused"
    );
    second.unlock().await?;
    say(format!("the store holds {:?}", store.read().await?));
    Ok(())
}
