//! An at-least-once work queue on etcd: items are claimed until acknowledged,
//! and delivered again if their consumer dies.
//!
//! Run `cargo xtask services up`, then in two terminals:
//!
//!     cargo run --example etcd-work-queue -- --name work --ttl 5   # type: push resize-image, take (then Ctrl-C)
//!     cargo run --example etcd-work-queue -- --name work           # type: take (gets it again after 5 s)
//!
//! Commands, one per line: `push <value>`, `take` (waits for an item),
//! `ack`, `quit`. `--scripted` runs a demonstration. Flags: `--addr`,
//! `--name`, `--ttl`.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::etcd::{WorkItem, WorkQueue};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The queue's name (a key prefix).
    #[arg(long, default_value = "demo-work-queue")]
    name: String,
    /// Session TTL in seconds: how soon a dead consumer's item comes back.
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
        let name = format!("{}-{}", args.name, std::process::id());
        let queue = WorkQueue::new(&session, &name)?;
        queue.enqueue("resize image 42").await?;
        // ANCHOR: redelivery
        // A consumer on its own session takes the item, then dies.
        let doomed = args.etcd.session(1).await?;
        let item = WorkQueue::new(&doomed, &name)?.dequeue().await?;
        say(format!(
            "consumer A took {:?} (delivery {})",
            String::from_utf8_lossy(&item.value),
            item.deliveries
        ));
        drop(doomed); // no more renewals: its lease, and its claim, expire
        say("consumer A died without an ack");
        let again =
            tokio::time::timeout(Duration::from_secs(10), queue.dequeue()).await??;
        say(format!(
            "consumer B got it again (delivery {})",
            again.deliveries
        ));
        queue.ack(&again).await?;
        // ANCHOR_END: redelivery
        say("B acked it: done");
        anyhow::ensure!(
            again.id == item.id && again.deliveries == 2,
            "not redelivered"
        );
        return Ok(());
    }
    let queue = WorkQueue::new(&session, &args.name)?;
    let mut current: Option<WorkItem> = None;
    common::repl("push <value>, take, ack", async |words| {
        match words {
            ["push", value @ ..] if !value.is_empty() => {
                match queue.enqueue(value.join(" ")).await {
                    Ok(id) => say(format!("pushed {id}")),
                    Err(error) => say(format!("push failed: {error}")),
                }
            }
            ["take"] if current.is_some() => say("ack the current item first"),
            ["take"] => {
                say("waiting for an item...");
                match queue.dequeue().await {
                    Ok(item) => {
                        say(format!(
                            "took {} (delivery {}): {}",
                            item.id,
                            item.deliveries,
                            String::from_utf8_lossy(&item.value)
                        ));
                        current = Some(item);
                    }
                    Err(error) => say(format!("take failed: {error}")),
                }
            }
            ["ack"] => match current.take() {
                Some(item) => match queue.ack(&item).await {
                    Ok(()) => say(format!("acked {}", item.id)),
                    Err(error) => say(format!("ack failed: {error}")),
                },
                None => say("nothing to ack: take first"),
            },
            _ => return false,
        }
        true
    })
    .await;
    Ok(())
}
