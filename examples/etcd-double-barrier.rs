//! A double barrier on etcd: `--count` participants enter together and
//! leave together.
//!
//! Run `cargo xtask services up`, then in two terminals:
//!
//!     cargo run --example etcd-double-barrier -- --name round --count 2   # type: enter
//!     cargo run --example etcd-double-barrier -- --name round --count 2   # type: enter (both go in)
//!
//! Commands, one per line: `enter`, `leave`, `quit`. `--scripted` runs three
//! participants in one process. Flags: `--addr`, `--name`, `--count`, `--ttl`.
//! The command loop mirrors `etcd-barrier`'s on purpose: one barrier beside
//! the other.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::etcd::DoubleBarrier;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The barrier's name (a key prefix).
    #[arg(long, default_value = "demo-double-barrier")]
    name: String,
    /// How many participants the barrier waits for.
    #[arg(long, default_value_t = 2)]
    count: usize,
    /// Session TTL in seconds: how long a crashed participant holds the others.
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
        let name = format!("{}-{}", args.name, std::process::id());
        let mut participants = Vec::new();
        for id in 1..=3 {
            let session = args.etcd.session(args.ttl).await?;
            let name = name.clone();
            participants.push(tokio::spawn(async move {
                let mut barrier = DoubleBarrier::new(&session, &name, 3)?;
                // Arrive one by one: nobody gets in before the third.
                tokio::time::sleep(Duration::from_millis(100 * id)).await;
                say(format!("participant {id} arrives"));
                barrier.enter().await?;
                say(format!("participant {id} is in"));
                tokio::time::sleep(Duration::from_millis(100 * (4 - id))).await;
                say(format!("participant {id} wants to leave"));
                barrier.leave().await?;
                say(format!("participant {id} left"));
                Ok::<_, anyhow::Error>(())
            }));
        }
        for participant in participants {
            tokio::time::timeout(Duration::from_secs(10), participant).await???;
        }
        return Ok(());
    }
    let session = args.etcd.session(args.ttl).await?;
    let mut barrier = DoubleBarrier::new(&session, &args.name, args.count)?;
    say(format!("a barrier for {} participants", args.count));
    common::repl("enter, leave", async |words| {
        match words {
            ["enter"] => {
                say("waiting for everyone to enter...");
                match barrier.enter().await {
                    Ok(()) => say("all entered"),
                    Err(error) => say(format!("enter failed: {error}")),
                }
            }
            ["leave"] => {
                say("waiting for everyone to leave...");
                match barrier.leave().await {
                    Ok(()) => say("all left"),
                    Err(error) => say(format!("leave failed: {error}")),
                }
            }
            _ => return false,
        }
        true
    })
    .await;
    Ok(())
}
