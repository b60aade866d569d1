//! A barrier on etcd: `wait` blocks while someone holds it.
//!
//! Run `cargo xtask services up`, then in two terminals:
//!
//!     cargo run --example etcd-barrier -- --name gate   # type: hold
//!     cargo run --example etcd-barrier -- --name gate   # type: wait (blocks), then release in the first
//!
//! Commands, one per line: `hold`, `release`, `wait`, `quit`. The barrier is
//! held with this process's session lease, so if it crashes the barrier
//! drops after `--ttl` seconds. `--scripted` runs a demonstration. Flags:
//! `--addr`, `--name`, `--ttl`.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::etcd::Barrier;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The barrier's name (its key).
    #[arg(long, default_value = "demo-barrier")]
    name: String,
    /// Session TTL in seconds: how long a crashed holder keeps the barrier up.
    #[arg(long, default_value_t = 10)]
    ttl: u64,
    /// Run a scripted demonstration instead of reading stdin.
    #[arg(long)]
    scripted: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let session = args.etcd.session(args.ttl).await?;
    if args.scripted {
        let barrier = Barrier::with_session(
            &session,
            &format!("{}-{}", args.name, std::process::id()),
        )?;
        barrier.hold().await?;
        say("the barrier is up; 3 workers wait at it");
        let workers: Vec<_> = (1..=3)
            .map(|id| {
                let barrier = barrier.clone();
                tokio::spawn(async move { barrier.wait().await.map(|()| id) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        anyhow::ensure!(
            workers.iter().all(|w| !w.is_finished()),
            "a worker passed a raised barrier"
        );
        barrier.release().await?;
        for worker in workers {
            let id = tokio::time::timeout(Duration::from_secs(5), worker).await???;
            say(format!("worker {id} passed"));
        }
        return Ok(());
    }
    let barrier = Barrier::with_session(&session, &args.name)?;
    common::repl("hold, release, wait", async |words| {
        match words {
            ["hold"] => match barrier.hold().await {
                Ok(true) => say("holding the barrier"),
                Ok(false) => say("the barrier is already held"),
                Err(error) => say(format!("hold failed: {error}")),
            },
            ["release"] => match barrier.release().await {
                Ok(()) => say("released"),
                Err(error) => say(format!("release failed: {error}")),
            },
            ["wait"] => {
                say("waiting...");
                match barrier.wait().await {
                    Ok(()) => say("the barrier is down: passing"),
                    Err(error) => say(format!("wait failed: {error}")),
                }
            }
            _ => return false,
        }
        true
    })
    .await;
    Ok(())
}
