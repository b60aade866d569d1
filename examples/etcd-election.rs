//! Leader election on etcd, driven from two terminals.
//!
//! Run `cargo xtask services up`, then in two terminals:
//!
//!     cargo run --example etcd-election -- --name demo   # type: campaign alice
//!     cargo run --example etcd-election -- --name demo   # type: observe, then campaign bob
//!
//! Commands, one per line: `campaign <value>` (waits until elected),
//! `proclaim <value>`, `resign`, `leader`, `observe` (prints leader changes
//! in the background), `work <value>` (in the background: campaign, work
//! while leading under `Election::lead`, campaign again whenever leadership
//! is lost), `quit`. `etcdctl elect demo <value>` and
//! `etcdctl elect -l demo` take part in the same election. `--scripted` runs
//! a hand-over between two candidates instead.
//!
//! Flags: `--addr` (comma-separated endpoints; default `ETCD_ENDPOINTS`, else
//! 127.0.0.1:2379), `--name`, `--ttl` (session lease, seconds).

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::etcd::etcd_client::DeleteOptions;
use concurrency_patterns::distributed::etcd::{
    Election, LeaderChanges, Leadership, Session,
};
use futures::StreamExt;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The election's name (a key prefix).
    #[arg(long, default_value = "demo-election")]
    name: String,
    /// Session TTL in seconds: how long a crashed leader stays leader.
    #[arg(long, default_value_t = 10)]
    ttl: u64,
    /// Run a scripted hand-over instead of reading stdin.
    #[arg(long)]
    scripted: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let session = args.etcd.session(args.ttl).await?;
    if args.scripted {
        return scripted(&args, &session).await;
    }
    interactive(&args, &session).await
}

async fn interactive(args: &Args, session: &Session) -> anyhow::Result<()> {
    let election = Election::new(session, &args.name)?;
    let mut leadership: Option<Leadership> = None;
    say(format!("session {:x}", session.lease_id()));
    common::repl(
        "campaign <v>, proclaim <v>, resign, leader, observe, work <v>",
        async |words| {
            match words {
                ["campaign", value] => {
                    say("campaigning...");
                    match election.campaign(*value).await {
                        Ok(won) => {
                            say(format!(
                                "elected as {value} (revision {})",
                                won.fencing_token()
                            ));
                            leadership = Some(won);
                        }
                        Err(error) => say(format!("campaign failed: {error}")),
                    }
                }
                ["proclaim", value] => match &leadership {
                    Some(won) => match won.proclaim(*value).await {
                        Ok(()) => say(format!("proclaimed {value}")),
                        Err(error) => say(format!("proclaim failed: {error}")),
                    },
                    None => say("not the leader: campaign first"),
                },
                ["resign"] => match leadership.take() {
                    Some(won) => match won.resign().await {
                        Ok(()) => say("resigned"),
                        Err(error) => say(format!("resign failed: {error}")),
                    },
                    None => say("not the leader"),
                },
                ["leader"] => match election.leader().await {
                    Ok(Some(leader)) => {
                        say(format!("leader: {} ({})", leader.value, leader.key))
                    }
                    Ok(None) => say("no leader"),
                    Err(error) => say(format!("leader failed: {error}")),
                },
                ["work", value] => {
                    tokio::spawn(keep_leading(election.clone(), value.to_string()));
                }
                ["observe"] => {
                    let mut changes = election.observe();
                    tokio::spawn(async move {
                        while let Some(change) = changes.next().await {
                            match change {
                                Ok(Some(leader)) => {
                                    say(format!("observed leader: {}", leader.value))
                                }
                                Ok(None) => say("observed: no leader"),
                                Err(error) => say(format!("observe ended: {error}")),
                            }
                        }
                    });
                }
                _ => return false,
            }
            true
        },
    )
    .await;
    if let Some(won) = leadership {
        won.resign().await?;
    }
    Ok(())
}

/// Campaigns, works while leading (a tick a second, under
/// [`Election::lead`], which stops the work the moment leadership is lost),
/// and campaigns again each time it is lost, until the process ends.
// ANCHOR: keep_leading
async fn keep_leading(election: Election, value: String) {
    loop {
        say(format!("{value}: campaigning to work"));
        let worked = election
            .lead(value.clone(), |lost| async move {
                let mut ticks = 0u64;
                loop {
                    ticks += 1;
                    say(format!("working as leader (tick {ticks})"));
                    tokio::select! {
                        _ = lost.cancelled() => return ticks,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            })
            .await;
        match worked {
            // The work loops until leadership ends; it never returns first.
            Ok(ticks) => say(format!("{value}: done after {ticks} ticks")),
            Err(error) => {
                say(format!(
                    "{value}: lost leadership ({error}); campaigning again"
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
// ANCHOR_END: keep_leading

/// Alice leads, Bob waits; an observer sees alice, then bob, then no leader.
/// Then Carol works under `lead`, loses leadership when her key is deleted
/// behind her back, and is elected again.
async fn scripted(args: &Args, first: &Session) -> anyhow::Result<()> {
    let name = format!("{}-scripted-{}", args.name, std::process::id());
    let second = args.etcd.session(args.ttl).await?;
    let (alice, bob) = (Election::new(first, &name)?, Election::new(&second, &name)?);
    let mut observed = alice.observe();
    anyhow::ensure!(
        next(&mut observed).await? == "no leader",
        "someone leads an empty election"
    );

    let alice_leads = alice.campaign("alice").await?;
    say("alice is the leader");
    let bob_campaign = tokio::spawn(async move { bob.campaign("bob").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    anyhow::ensure!(
        !bob_campaign.is_finished(),
        "bob was elected while alice leads"
    );
    alice_leads.proclaim("alice, v2").await?;
    say("alice proclaimed a new value");
    alice_leads.resign().await?;
    say("alice resigned");
    let bob_leads =
        tokio::time::timeout(Duration::from_secs(5), bob_campaign).await???;
    say("bob is the leader");
    bob_leads.resign().await?;

    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("no leader") || seen.len() < 2 {
        seen.push(next(&mut observed).await?);
    }
    say(format!("the observer saw: {}", seen.join(" -> ")));
    anyhow::ensure!(seen.contains(&"bob".to_string()), "the observer missed bob");

    let carol = Election::new(first, &name)?;
    let working = tokio::spawn(keep_leading(carol.clone(), "carol".to_string()));
    let first_term = leader_named(&carol, "carol", 0).await?;
    say("carol leads and works; deleting her key behind her back");
    let mut client = first.client().clone();
    client
        .delete(first_term.key.as_str(), Option::<DeleteOptions>::None)
        .await?;
    let second_term = leader_named(&carol, "carol", first_term.create_revision).await?;
    say(format!(
        "carol was elected again (revision {} > {})",
        second_term.create_revision, first_term.create_revision
    ));
    working.abort();
    Ok(())
}

/// Waits (at most 10 s) until `who` leads with a key newer than `after`.
async fn leader_named(
    election: &Election,
    who: &str,
    after: i64,
) -> anyhow::Result<concurrency_patterns::distributed::etcd::LeaderInfo> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(leader) = election.leader().await?
            && leader.value == who
            && leader.create_revision > after
        {
            return Ok(leader);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{who} was not elected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next(changes: &mut LeaderChanges) -> anyhow::Result<String> {
    let change = tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the observer stopped"))??;
    Ok(change
        .map(|leader| leader.value)
        .unwrap_or_else(|| "no leader".into()))
}
