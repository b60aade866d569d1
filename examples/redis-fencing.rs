//! Fencing tokens: why a lease lock needs the resource's help.
//!
//! Holder A's lease runs out while it "pauses" (here: sleeps past its TTL,
//! like a GC pause or a frozen VM). B takes the lock and writes. A wakes up,
//! still believing it holds the lock, and writes with its old fencing token:
//! the fenced store refuses it.
//!
//!     cargo xtask services up
//!     cargo run --example redis-fencing -- --scripted
//!
//! Flags: `--url` (default `REDIS_URL`, else redis://127.0.0.1:6379/), `--name`.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::redis::{FencedStore, RedisLock};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    redis: common::RedisFlags,
    /// The lock's name (its key).
    #[arg(long, default_value = "demo-fencing")]
    name: String,
    /// Run the scripted demonstration (the only mode).
    #[arg(long)]
    scripted: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (config, conn) = args.redis.connect().await?;
    let name = format!("{}-{}", args.name, std::process::id());
    let lock = RedisLock::connect(&config, &name).await?;
    let store = FencedStore::new(conn, &format!("{name}-store"));

    // ANCHOR: story
    let short_lease = lock.clone().ttl(Duration::from_millis(200))?;
    let a = short_lease.lock().await?;
    say(format!(
        "A locked (fencing token {}) and writes",
        a.fencing_token()
    ));
    anyhow::ensure!(
        store.write(a.fencing_token(), "from A").await?,
        "A's write was refused"
    );

    say("A pauses past its 200 ms lease...");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let b = lock.lock_timeout(Duration::from_secs(5)).await?;
    say(format!(
        "B locked (fencing token {}) and writes",
        b.fencing_token()
    ));
    anyhow::ensure!(
        store.write(b.fencing_token(), "from B").await?,
        "B's write was refused"
    );

    // A wakes up, unaware, and writes with its old token.
    let late = store.write(a.fencing_token(), "late write from A").await?;
    say(format!(
        "A's late write: {}",
        if late {
            "accepted (two writers!)"
        } else {
            "rejected by the store"
        }
    ));
    anyhow::ensure!(!late, "the stale write went through");
    // ANCHOR_END: story

    anyhow::ensure!(!a.unlock().await?, "A's stale unlock released B's lock");
    say("A's unlock released nothing (the lock holds B's token); B unlocks");
    b.unlock().await?;
    say(format!("the store holds {:?}", store.read().await?));
    Ok(())
}
