//! A distributed FIFO queue on etcd, driven from two terminals.
//!
//! Run `cargo xtask services up`, then in two terminals:
//!
//!     cargo run --example etcd-queue -- --name jobs      # type: push hello
//!     cargo run --example etcd-queue -- --name jobs      # type: pop
//!
//! Commands, one per line: `push <value>`, `pop` (waits while the queue is
//! empty), `push-many <v1> <v2> ...` (one transaction), `quit`. `--scripted`
//! runs a demonstration instead (FIFO, then a batch and a producer). Flags: `--addr`
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

        // ANCHOR: bulk
        // A batch: one transaction, one revision, keys rising in this order.
        queue.enqueue_many(["a1", "a2", "a3"]).await?;
        // A producer: each enqueue joins the line at once; the ones made
        // while a transaction is in flight all go in the next one.
        let producer = queue.producer();
        let sent: Vec<_> = (1..=100)
            .map(|i| producer.enqueue(format!("p{i}")))
            .collect();
        futures::future::try_join_all(sent).await?;
        let mut taken = Vec::new();
        while let Some(item) = queue.try_dequeue().await? {
            taken.push(String::from_utf8(item)?);
        }
        let expected: Vec<String> = ["a1", "a2", "a3"]
            .into_iter()
            .map(String::from)
            .chain((1..=100).map(|i| format!("p{i}")))
            .collect();
        anyhow::ensure!(taken == expected, "a batch or the producer lost the order");
        say(format!("{} items in 2 ways, taken in order", taken.len()));
        // ANCHOR_END: bulk
        return Ok(());
    }
    let queue = Queue::new(client, &args.name)?;
    common::repl("push <value>, push-many <values...>, pop", async |words| {
        match words {
            ["push-many", values @ ..] if !values.is_empty() => {
                match queue.enqueue_many(values.iter().copied()).await {
                    Ok(keys) => {
                        say(format!("pushed {} in one transaction", keys.len()))
                    }
                    Err(error) => say(format!("push-many failed: {error}")),
                }
            }
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
