//! A distributed priority queue on etcd: the lowest number comes out first.
//!
//! Run `cargo xtask services up`, then in two terminals:
//!
//!     cargo run --example etcd-priority-queue -- --name tasks   # type: push backup 9, push page 1
//!     cargo run --example etcd-priority-queue -- --name tasks   # type: pop (gets "page")
//!
//! Commands, one per line: `push <value> <priority 0-65535>`, `pop` (waits
//! while empty), `quit`. `--scripted` runs a demonstration. Flags: `--addr`,
//! `--name`. The `push`/`pop` handling repeats `etcd-queue`'s on purpose, so
//! that the two read side by side.

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::etcd::PriorityQueue;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The queue's name (a key prefix).
    #[arg(long, default_value = "demo-priority-queue")]
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
        let queue = PriorityQueue::new(
            client,
            &format!("{}-{}", args.name, std::process::id()),
        )?;
        for (task, priority) in [
            ("backup", 9),
            ("page the on-call", 0),
            ("rotate logs", 9),
            ("deploy", 1),
        ] {
            queue.enqueue(task, priority).await?;
            say(format!("pushed {task:?} with priority {priority}"));
        }
        let mut order = Vec::new();
        while let Some(item) = queue.try_dequeue().await? {
            order.push(String::from_utf8(item)?);
        }
        say(format!("popped: {order:?}"));
        anyhow::ensure!(
            order == ["page the on-call", "deploy", "backup", "rotate logs"],
            "wrong order"
        );
        return Ok(());
    }
    let queue = PriorityQueue::new(client, &args.name)?;
    say("lower priority numbers come out first");
    common::repl("push <value> <priority>, pop", async |words| {
        match words {
            ["push", value @ .., priority] if !value.is_empty() => match priority
                .parse::<u16>()
            {
                Ok(priority) => match queue.enqueue(value.join(" "), priority).await {
                    Ok(key) => say(format!("pushed ({key})")),
                    Err(error) => say(format!("push failed: {error}")),
                },
                Err(_) => say(format!(
                    "{priority:?} is not a priority: use a whole number from 0 to 65535"
                )),
            },
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
