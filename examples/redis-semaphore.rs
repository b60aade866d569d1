//! A semaphore on Redis: at most `--permits` holders at once, across
//! terminals, each permit an id with a lease.
//!
//! Run `cargo xtask services up`, then in three terminals:
//!
//!     cargo run --example redis-semaphore -- --name slots --permits 2   # acquire
//!     cargo run --example redis-semaphore -- --name slots --permits 2   # acquire
//!     cargo run --example redis-semaphore -- --name slots --permits 2   # acquire (waits)
//!
//! Commands, one per line: `acquire` (waits for a permit), `try` (takes one
//! only if free), `release`, `quit`. `--scripted` runs three clients on two
//! permits in one process, then lets a lease run out. Flags: `--url`,
//! `--name`, `--permits`, `--lease` (seconds: how long a permit outlives a
//! holder that neither releases nor extends it).
//!
//! This file repeats the shape of `etcd-semaphore.rs` on purpose: each
//! example reads whole, next to its chapter.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::redis::{
    RedisError, RedisPermit, RedisSemaphore,
};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    redis: common::RedisFlags,
    /// The semaphore's name (its keys are `<name>:permits`, `<name>:count`, ...).
    #[arg(long, default_value = "demo-semaphore")]
    name: String,
    /// How many holders at once (the first user's number wins).
    #[arg(long, default_value_t = 2)]
    permits: u32,
    /// Each permit's lease, in seconds.
    #[arg(long, default_value_t = 30)]
    lease: u64,
    /// Run a scripted demonstration instead of reading stdin.
    #[arg(long)]
    scripted: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (_, conn) = args.redis.connect().await?;
    let name = if args.scripted {
        format!("{}-scripted-{}", args.name, std::process::id())
    } else {
        args.name.clone()
    };
    let semaphore = RedisSemaphore::with_connection(conn, &name, args.permits)?
        .lease(Duration::from_secs(args.lease))?;
    if args.scripted {
        return scripted(&semaphore).await;
    }
    say(format!(
        "{} permits, leases of {} s",
        args.permits, args.lease
    ));
    let mut held: Vec<RedisPermit> = Vec::new();
    common::repl("acquire, try, release", async |words| {
        match words {
            ["acquire"] => {
                say("waiting...");
                match semaphore.acquire().await {
                    Ok(permit) => {
                        say(format!(
                            "acquired {} (fencing token {})",
                            permit.id(),
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
                        "acquired {} (fencing token {})",
                        permit.id(),
                        permit.fencing_token()
                    ));
                    held.push(permit);
                }
                Ok(None) => say("busy: every permit is held"),
                Err(error) => say(format!("try failed: {error}")),
            },
            ["release"] => match held.pop() {
                Some(permit) => match permit.release().await {
                    Ok(()) => say("released"),
                    Err(error) => say(format!("release refused: {error}")),
                },
                None => say("no permit held"),
            },
            _ => return false,
        }
        true
    })
    .await;
    for permit in held {
        if let Err(error) = permit.release().await {
            say(format!("release refused: {error}"));
        }
    }
    Ok(())
}

/// Three clients, two permits: the third waits until one is released. Then
/// a permit whose lease runs out is taken by a waiter, and its holder's
/// late release is refused.
async fn scripted(semaphore: &RedisSemaphore) -> anyhow::Result<()> {
    let (a, b, c) = (semaphore.clone(), semaphore.clone(), semaphore.clone());
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

    let short = semaphore.clone().lease(Duration::from_millis(500))?;
    let (stale, other) = (short.acquire().await?, short.acquire().await?);
    say("D and E hold both permits on 500 ms leases; D stalls, E releases");
    other.release().await?;
    let late = semaphore.acquire().await?; // E's permit, at once, on a long lease
    let next = short.acquire_timeout(Duration::from_secs(5)).await?;
    say("F got D's permit once D's lease ran out");
    match stale.release().await {
        Err(RedisError::StalePermit { .. }) => say("D's late release was refused"),
        other => anyhow::bail!("D's late release was {other:?}"),
    }
    late.release().await?;
    next.release().await?;
    say("done");
    Ok(())
}
