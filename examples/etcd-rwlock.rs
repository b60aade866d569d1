//! A readers-writer lock on etcd, across terminals: many readers or one
//! writer, in arrival order.
//!
//! Run `cargo xtask services up`, then in three terminals:
//!
//!     cargo run --example etcd-rwlock -- --name settings   # read
//!     cargo run --example etcd-rwlock -- --name settings   # read (shares it)
//!     cargo run --example etcd-rwlock -- --name settings   # write (waits for both)
//!
//! Commands, one per line: `read`, `write` (each waits for the lock),
//! `unlock`, `quit`. `--scripted` runs two readers and a writer in one
//! process. Flags: `--addr`, `--name`, `--ttl` (session lease, seconds).
//!
//! This file repeats the shape of `etcd-lock.rs` on purpose: each example
//! reads whole, next to its chapter.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::etcd::{RwMutex, RwMutexGuard};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The lock's name (a key prefix; Go's `recipes.RWMutex` layout).
    #[arg(long, default_value = "demo-rwlock")]
    name: String,
    /// Session TTL in seconds: how long a crashed holder keeps the lock.
    #[arg(long, default_value_t = 10)]
    ttl: u64,
    /// Run a scripted demonstration instead of reading stdin.
    #[arg(long)]
    scripted: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.scripted {
        return scripted(&args).await;
    }
    let session = args.etcd.session(args.ttl).await?;
    let lock = RwMutex::new(&session, &args.name)?;
    let mut held: Option<RwMutexGuard> = None;
    say(format!("session {:x}", session.lease_id()));
    common::repl("read, write, unlock", async |words| {
        match words {
            ["read" | "write"] if held.is_some() => {
                say("already holding it: unlock first")
            }
            ["read"] => {
                say("waiting for earlier writers...");
                match lock.read_lock().await {
                    Ok(guard) => {
                        say(format!("reading (revision {})", guard.fencing_token()));
                        held = Some(guard);
                    }
                    Err(error) => say(format!("read lock failed: {error}")),
                }
            }
            ["write"] => {
                say("waiting for everyone before us...");
                match lock.write_lock().await {
                    Ok(guard) => {
                        say(format!("writing (revision {})", guard.fencing_token()));
                        held = Some(guard);
                    }
                    Err(error) => say(format!("write lock failed: {error}")),
                }
            }
            ["unlock"] => match held.take() {
                Some(guard) => match guard.unlock().await {
                    Ok(()) => say("unlocked"),
                    Err(error) => say(format!("unlock failed: {error}")),
                },
                None => say("not holding it"),
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

/// Two readers share the lock; a writer waits for both; a reader that
/// comes after the writer waits behind it.
async fn scripted(args: &Args) -> anyhow::Result<()> {
    let name = format!("{}-scripted-{}", args.name, std::process::id());
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(args.etcd.session(args.ttl).await?);
    }
    let lock = |i: usize| RwMutex::new(&sessions[i], &name);
    let (first, second) = (lock(0)?.read_lock().await?, lock(1)?.read_lock().await?);
    say("two readers hold the lock together");
    let writer = lock(2)?;
    let writing = tokio::spawn(async move { writer.write_lock().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    anyhow::ensure!(!writing.is_finished(), "the writer got in beside readers");
    say("the writer waits for both");
    let late = lock(3)?;
    let late_reading = tokio::spawn(async move { late.read_lock().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    anyhow::ensure!(
        !late_reading.is_finished(),
        "a reader that came after the writer went ahead of it"
    );
    say("a third reader, later than the writer, waits behind it");
    first.unlock().await?;
    second.unlock().await?;
    let written = tokio::time::timeout(Duration::from_secs(5), writing).await???;
    anyhow::ensure!(
        !late_reading.is_finished(),
        "the late reader joined the writer"
    );
    say("both readers left: the writer writes, alone");
    written.unlock().await?;
    let read = tokio::time::timeout(Duration::from_secs(5), late_reading).await???;
    say("the writer left: the late reader reads");
    read.unlock().await?;
    Ok(())
}
