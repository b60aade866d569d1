//! A distributed FIFO queue on etcd, driven from two terminals.
//!
//! Run `cargo xtask services up`, then in two terminals:
//!
//!     cargo run --example etcd-queue -- --name jobs      # type: push hello
//!     cargo run --example etcd-queue -- --name jobs      # type: pop
//!
//! Commands, one per line: `push <value>`, `pop` (waits while the queue is
//! empty), `quit`. `--scripted` runs a demonstration instead. Flags: `--addr`
//! (comma-separated endpoints; default `ETCD_ENDPOINTS`, else
//! 127.0.0.1:2379), `--name`.

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::etcd::Queue;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The queue's name (a key prefix).
    #[arg(long, default_value = "demo-queue")]
    name: String,
    /// Run a scripted demonstration instead of reading stdin.
    #[arg(long)]
    scripted: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = args.etcd.connect().await?;
    if args.scripted {
        // ANCHOR: scripted
        let name = format!("{}-{}", args.name, std::process::id());
        let queue = Queue::new(client.clone(), &name)?;
        let other = Queue::new(client, &format!("{name}x"))?; // a name that extends ours
        other.enqueue("not ours").await?;
        for job in ["first", "second", "third"] {
            queue.enqueue(job).await?;
        }
        let mut popped = Vec::new();
        while let Some(item) = queue.try_dequeue().await? {
            popped.push(String::from_utf8(item)?);
        }
        say(format!("popped in order: {popped:?}"));
        anyhow::ensure!(
            popped == ["first", "second", "third"],
            "not FIFO, or saw another queue's item"
        );
        // ANCHOR_END: scripted
        other.try_dequeue().await?;
        return Ok(());
    }
    let queue = Queue::new(client, &args.name)?;
    common::repl("push <value>, pop", async |words| {
        match words {
            ["push", value @ ..] if !value.is_empty() => {
                match queue.enqueue(value.join(" ")).await {
                    Ok(key) => say(format!("pushed ({key})")),
                    Err(error) => say(format!("push failed: {error}")),
                }
            }
            ["pop"] => {
                say("waiting for an item...");
                match queue.dequeue().await {
                    Ok(item) => {
                        say(format!("popped: {}", String::from_utf8_lossy(&item)))
                    }
                    Err(error) => say(format!("pop failed: {error}")),
                }
            }
            _ => return false,
        }
        true
    })
    .await;
    Ok(())
}
