//! A semaphore on etcd: at most `--permits` holders at once, across
//! terminals.
//!
//! Run `cargo xtask services up`, then in three terminals:
//!
//!     cargo run --example etcd-semaphore -- --name slots --permits 2   # acquire
//!     cargo run --example etcd-semaphore -- --name slots --permits 2   # acquire
//!     cargo run --example etcd-semaphore -- --name slots --permits 2   # acquire (waits)
//!
//! Commands, one per line: `acquire` (waits for a permit), `try` (takes one
//! only if free), `release`, `quit`. `--scripted` runs three clients on two
//! permits in one process. Flags: `--addr`, `--name`, `--permits`, `--ttl`
//! (session lease, seconds: how long a crashed holder keeps its permit).

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::etcd::{Semaphore, SemaphorePermit};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The semaphore's name (a key prefix).
    #[arg(long, default_value = "demo-semaphore")]
    name: String,
    /// How many holders at once (the first user's number wins).
    #[arg(long, default_value_t = 2)]
    permits: u32,
    /// Session TTL in seconds: how long a crashed holder keeps its permit.
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
    let semaphore = Semaphore::new(&session, &args.name, args.permits)?;
    let mut held: Vec<SemaphorePermit> = Vec::new();
    say(format!(
        "session {:x}, {} permits",
        session.lease_id(),
        args.permits
    ));
    common::repl("acquire, try, release", async |words| {
        match words {
            ["acquire"] => {
                say("waiting...");
                match semaphore.acquire().await {
                    Ok(permit) => {
                        say(format!(
                            "acquired (fencing token {})",
                            permit.fencing_token()
                        ));
                        held.push(permit);
                    }
                    Err(error) => say(format!("acquire failed: {error}")),
                }
            }
            ["try"] => match semaphore.try_acquire().await {
                Ok(Some(permit)) => {
                    say(format!(
                        "acquired (fencing token {})",
                        permit.fencing_token()
                    ));
                    held.push(permit);
                }
                Ok(None) => say("busy: every permit is held, or someone waits"),
                Err(error) => say(format!("try failed: {error}")),
            },
            ["release"] => match held.pop() {
                Some(permit) => match permit.release().await {
                    Ok(()) => say("released"),
                    Err(error) => say(format!("release failed: {error}")),
                },
                None => say("no permit held"),
            },
            _ => return false,
        }
        true
    })
    .await;
    for permit in held {
        permit.release().await?;
    }
    Ok(())
}

/// Three clients, two permits: the third waits until one is released.
async fn scripted(args: &Args) -> anyhow::Result<()> {
    let name = format!("{}-scripted-{}", args.name, std::process::id());
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(args.etcd.session(args.ttl).await?);
    }
    let [a, b, c] = [0, 1, 2].map(|i| Semaphore::new(&sessions[i], &name, 2));
    let (a, b, c) = (a?, b?, c?);
    let first = a.acquire().await?;
    let second = b.acquire().await?;
    say("A and B hold the two permits");
    anyhow::ensure!(c.try_acquire().await?.is_none(), "C got a third permit");
    say("C: try says busy");
    let waiter = tokio::spawn(async move { c.acquire().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    anyhow::ensure!(!waiter.is_finished(), "C acquired while both were held");
    first.release().await?;
    say("A released");
    let third = tokio::time::timeout(Duration::from_secs(5), waiter).await???;
    say(format!(
        "C acquired (fencing token {} > {})",
        third.fencing_token(),
        second.fencing_token()
    ));
    anyhow::ensure!(third.fencing_token() > second.fencing_token());
    second.release().await?;
    third.release().await?;
    say("done");
    Ok(())
}
