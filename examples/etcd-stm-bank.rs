//! The lesson's STM bank on etcd: 5 accounts of 100, 10 tasks x 100
//! transfers of half a random account's balance to another; the sum must
//! still be 500 at the end.
//!
//!     cargo xtask services up
//!     cargo run --example etcd-stm-bank -- --scripted
//!
//! Flags: `--addr`, `--name`, `--tasks`, `--transfers` (per task).

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::etcd::{
    EtcdError, StmOptions, parse_balance, run_stm,
};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The bank's prefix.
    #[arg(long, default_value = "demo-bank")]
    name: String,
    /// Concurrent tasks.
    #[arg(long, default_value_t = 10)]
    tasks: usize,
    /// Transfers per task.
    #[arg(long, default_value_t = 100)]
    transfers: usize,
    /// Run the scripted demonstration (the only mode).
    #[arg(long)]
    scripted: bool,
}

const ACCOUNTS: usize = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = args.etcd.connect().await?;
    let bank = format!("{}-{}", args.name, std::process::id());
    for i in 0..ACCOUNTS {
        client
            .clone()
            .put(format!("{bank}/{i}"), "100", None)
            .await?;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.tasks {
        let (client, bank, transfers) = (client.clone(), bank.clone(), args.transfers);
        tasks.push(tokio::spawn(async move {
            let mut attempts = 0;
            for _ in 0..transfers {
                let (from, to) = loop {
                    let (a, b) = (
                        rand::random_range(0..ACCOUNTS),
                        rand::random_range(0..ACCOUNTS),
                    );
                    if a != b {
                        break (format!("{bank}/{a}"), format!("{bank}/{b}"));
                    }
                };
                let (from, to) = (&from, &to);
                // ANCHOR: exchange
                let outcome = run_stm(
                    &client,
                    StmOptions::default().max_attempts(1000),
                    |stm| async move {
                        // Both balances in one round trip.
                        let balances = stm.get_many(&[from, to]).await?;
                        let balance = |i: usize, key: &str| {
                            parse_balance(key, balances[i].as_deref().unwrap_or(b"0"))
                        };
                        let (from_balance, to_balance) =
                            (balance(0, from)?, balance(1, to)?);
                        let half = from_balance / 2;
                        // Checked: an overflow is an error naming the
                        // account, and aborts with nothing written.
                        let Some(to_after) = to_balance.checked_add(half) else {
                            return Err(EtcdError::BalanceOverflow {
                                account: to.to_string(),
                                balance: to_balance,
                                amount: half,
                            });
                        };
                        stm.put(from, (from_balance - half).to_string());
                        stm.put(to, to_after.to_string());
                        Ok::<_, EtcdError>(())
                    },
                )
                .await?;
                // ANCHOR_END: exchange
                attempts += outcome.attempts;
            }
            Ok::<_, anyhow::Error>(attempts)
        }));
    }
    let mut attempts = 0;
    for task in tasks {
        attempts += task.await??;
    }
    let elapsed = started.elapsed();
    let mut balances = Vec::new();
    for i in 0..ACCOUNTS {
        let got = client.clone().get(format!("{bank}/{i}"), None).await?;
        balances.push(
            got.kvs()
                .first()
                .map(|kv| kv.value_str().unwrap_or("0").parse::<u64>().unwrap_or(0))
                .unwrap_or(0),
        );
    }
    let txns = args.tasks * args.transfers;
    say(format!(
        "{txns} transactions in {:.2} s ({:.0}/s), {:.2} attempts each; balances {balances:?}, sum {}",
        elapsed.as_secs_f64(),
        txns as f64 / elapsed.as_secs_f64(),
        attempts as f64 / txns as f64,
        balances.iter().sum::<u64>()
    ));
    anyhow::ensure!(balances.iter().sum::<u64>() == 500, "the sum changed");
    Ok(())
}
