//! The lesson's compare-and-swap transfer between two accounts on etcd.
//!
//!     cargo xtask services up
//!     cargo run --example etcd-txn-transfer -- --scripted
//!
//! Opens two accounts of 100, moves money between them from 10 concurrent
//! tasks, and checks that the total is unchanged; then shows the refusal to
//! overdraw. Flags: `--addr`, `--name`.

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::etcd::{
    DEFAULT_TRANSFER_ATTEMPTS, EtcdError, transfer,
};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The accounts' prefix.
    #[arg(long, default_value = "demo-transfer")]
    name: String,
    /// Run the scripted demonstration (the only mode).
    #[arg(long)]
    scripted: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = args.etcd.connect().await?;
    let (alice, bob) = (
        format!("{}-{}/alice", args.name, std::process::id()),
        format!("{}-{}/bob", args.name, std::process::id()),
    );
    client.clone().put(alice.as_str(), "100", None).await?;
    client.clone().put(bob.as_str(), "100", None).await?;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (client, alice, bob) = (client.clone(), alice.clone(), bob.clone());
        tasks.push(tokio::spawn(async move {
            let (from, to) = if i % 2 == 0 {
                (&alice, &bob)
            } else {
                (&bob, &alice)
            };
            transfer(&client, from, to, 10, DEFAULT_TRANSFER_ATTEMPTS).await
        }));
    }
    let mut attempts = Vec::new();
    for task in tasks {
        attempts.push(task.await??);
    }
    let read = |key: String| {
        let mut client = client.clone();
        async move {
            let got = client.get(key, None).await?;
            Ok::<u64, anyhow::Error>(
                got.kvs()
                    .first()
                    .map(|kv| kv.value_str().unwrap_or("0").parse().unwrap_or(0))
                    .unwrap_or(0),
            )
        }
    };
    let (a, b) = (read(alice.clone()).await?, read(bob.clone()).await?);
    say(format!(
        "10 concurrent transfers, attempts each: {attempts:?}; alice {a}, bob {b}, total {}",
        a + b
    ));
    anyhow::ensure!(a + b == 200, "money was created or destroyed");
    match transfer(&client, &alice, &bob, a + 1, DEFAULT_TRANSFER_ATTEMPTS).await {
        Err(EtcdError::InsufficientFunds {
            balance, amount, ..
        }) => say(format!(
            "asking alice for {amount} with {balance}: refused, as it should be"
        )),
        other => anyhow::bail!("an overdraft was not refused: {other:?}"),
    }
    Ok(())
}
