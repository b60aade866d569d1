//! Redlock: a lock held by a majority of independent Redis servers.
//!
//! Give it several servers (`--urls`, comma-separated). With the single local
//! Redis of `cargo xtask services up`, the scripted mode uses its databases
//! 1, 2 and 3 as stand-ins for three servers, which shows the algorithm's
//! steps but not its fault tolerance (they share one process):
//!
//!     cargo run --example redlock -- --scripted
//!     cargo run --example redlock -- --urls redis://a:6379/,redis://b:6379/,redis://c:6379/ --scripted
//!
//! Needs Redis.

use std::time::Duration;

use clap::Parser;
use concurrency_patterns::distributed::redis::{DEFAULT_URL, RedisError, Redlock};

#[derive(Parser)]
struct Args {
    /// Comma-separated Redis URLs (default: databases 1-3 of REDIS_URL's server).
    #[arg(long)]
    urls: Option<String>,
    /// The lock's name.
    #[arg(long, default_value = "demo-redlock")]
    name: String,
    /// Run the scripted demonstration (the only mode).
    #[arg(long)]
    scripted: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let urls: Vec<String> = match &args.urls {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect(),
        None => {
            let url =
                std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
            let server = without_database(&url);
            (1..=3).map(|db| format!("{server}/{db}")).collect()
        }
    };
    let name = format!("{}-{}", args.name, std::process::id());
    // ANCHOR: redlock
    let redlock = Redlock::connect(&urls, &name)?.ttl(Duration::from_secs(5))?;
    let guard = redlock.lock().await?;
    println!(
        "locked on a majority of {} servers; valid for {:?} (TTL minus the time to acquire, minus drift)",
        urls.len(),
        guard.validity()
    );
    // A second client cannot get a majority while we hold it.
    let rival = Redlock::connect(&urls, &name)?.attempts(2);
    match rival.lock().await {
        Err(RedisError::NoQuorum {
            acquired, majority, ..
        }) => {
            println!(
                "a rival got {acquired} of the {majority} servers it needs, and released them"
            )
        }
        other => anyhow::bail!("the rival should have failed, got {other:?}"),
    }
    guard.unlock().await; // released on every server
    // ANCHOR_END: redlock
    let again = rival.lock().await?;
    println!(
        "after the unlock the rival holds it, {:?} left",
        again.remaining()
    );
    again.unlock().await;
    Ok(())
}

/// `redis://host:6379/0` and `redis://host:6379/` both become `redis://host:6379`.
fn without_database(url: &str) -> &str {
    let url = url.trim_end_matches('/');
    match url.rsplit_once('/') {
        Some((server, db))
            if !db.is_empty() && db.chars().all(|c| c.is_ascii_digit()) =>
        {
            server
        }
        _ => url,
    }
}
