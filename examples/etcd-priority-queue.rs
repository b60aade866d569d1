//! A distributed priority queue on etcd: the lowest number comes out first.
//!
//! Run `cargo xtask services up`, then in two terminals:
//!
//!     cargo run --example etcd-priority-queue -- --name tasks   # type: push backup 9, push page 1
//!     cargo run --example etcd-priority-queue -- --name tasks   # type: pop (gets "page")
//!
//! Commands, one per line: `push <value> <priority 0-65535>`, `pop` (waits
//! while empty), `quit`. `--scripted` runs a demonstration. Flags: `--addr`,
//! `--name`.

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use common::{Commands, say};
use concurrency_patterns::distributed::etcd::PriorityQueue;

#[derive(Parser)]
struct Args {
    /// Comma-separated etcd endpoints (default: ETCD_ENDPOINTS, else 127.0.0.1:2379).
    #[arg(long, env = "ETCD_ENDPOINTS")]
    addr: Option<String>,
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
    let client = common::connect(args.addr.as_deref()).await?;
    if args.scripted {
        let queue = PriorityQueue::new(client, &format!("{}-{}", args.name, std::process::id()))?;
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
    let mut commands = Commands::from_stdin();
    say(
        "ready; commands: push <value> <priority>, pop, quit (lower priority numbers come out first)",
    );
    while let Some(words) = commands.next().await {
        match words
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["push", value @ .., priority] if !value.is_empty() => match priority.parse::<u16>() {
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
                    Ok(item) => say(format!("popped: {}", String::from_utf8_lossy(&item))),
                    Err(error) => say(format!("pop failed: {error}")),
                }
            }
            ["quit"] => break,
            other => say(format!(
                "unknown command {:?}; try push <value> <priority>, pop, quit",
                other.join(" ")
            )),
        }
    }
    Ok(())
}
