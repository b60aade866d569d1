//! A distributed lock on etcd, driven from two terminals.
//!
//! Run `cargo xtask services up`, then in two terminals:
//!
//!     cargo run --example etcd-lock -- --name demo     # type: lock
//!     cargo run --example etcd-lock -- --name demo     # type: lock (waits), then unlock in the first
//!
//! Commands, one per line: `lock`, `trylock`, `unlock`, `write <value>` (a
//! write to `<name>-resource` that succeeds only while this client holds the
//! lock: the fencing check), `quit`. `etcdctl lock demo` takes part in the
//! same lock. `--scripted` runs a two-client demonstration instead.
//!
//! Flags: `--addr` (comma-separated endpoints; default `ETCD_ENDPOINTS`, else
//! 127.0.0.1:2379), `--name`, `--ttl` (session lease, seconds).

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use common::say;
use concurrency_patterns::distributed::etcd::etcd_client::{
    Compare, CompareOp, Txn, TxnOp,
};
use concurrency_patterns::distributed::etcd::{Mutex, MutexGuard, Session};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The lock's name (a key prefix).
    #[arg(long, default_value = "demo-lock")]
    name: String,
    /// Session TTL in seconds: how long a crashed holder keeps the lock.
    #[arg(long, default_value_t = 10)]
    ttl: u64,
    /// Run a scripted two-client demonstration instead of reading stdin.
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
    let mutex = Mutex::new(session, &args.name)?;
    let mut held: Option<MutexGuard> = None;
    say(format!("session {:x}", session.lease_id()));
    common::repl("lock, trylock, unlock, write <value>", async |words| {
        match words {
            ["lock"] if held.is_some() => say("already locked"),
            ["lock"] => {
                say("waiting...");
                // Waiting can be interrupted by the session ending.
                match mutex.lock().await {
                    Ok(guard) => {
                        say(format!(
                            "locked (fencing token {})",
                            guard.fencing_token()
                        ));
                        held = Some(guard);
                    }
                    Err(error) => say(format!("lock failed: {error}")),
                }
            }
            ["trylock"] if held.is_some() => say("already locked"),
            ["trylock"] => match mutex.try_lock().await {
                Ok(Some(guard)) => {
                    say(format!("locked (fencing token {})", guard.fencing_token()));
                    held = Some(guard);
                }
                Ok(None) => say("busy: someone else holds it"),
                Err(error) => say(format!("trylock failed: {error}")),
            },
            ["unlock"] => match held.take() {
                Some(guard) => match guard.unlock().await {
                    Ok(()) => say("unlocked"),
                    Err(error) => say(format!("unlock failed: {error}")),
                },
                None => say("not locked"),
            },
            ["write", value] => match &held {
                Some(guard) => {
                    match fenced_write(
                        session,
                        guard,
                        &format!("{}-resource", args.name),
                        value,
                    )
                    .await
                    {
                        Ok(true) => say(format!("write accepted: {value}")),
                        Ok(false) => say("write rejected: the lock is no longer ours"),
                        Err(error) => say(format!("write failed: {error}")),
                    }
                }
                None => say("not locked: lock first"),
            },
            _ => return false,
        }
        true
    })
    .await;
    if let Some(guard) = held {
        guard.unlock().await?;
    }
    Ok(())
}

// ANCHOR: fenced_write
/// Writes `value` to `resource` only if we still hold the lock, in one
/// transaction: a holder that was paused past its lease cannot overwrite
/// the work of the next holder.
async fn fenced_write(
    session: &Session,
    guard: &MutexGuard,
    resource: &str,
    value: &str,
) -> anyhow::Result<bool> {
    let txn = Txn::new()
        .when([guard.is_held()])
        .and_then([TxnOp::put(resource, value, None)]);
    Ok(session.client().txn(txn).await?.succeeded())
}
// ANCHOR_END: fenced_write

/// Two clients, two sessions: the second waits for the first, and a write
/// fenced by the first's lock is refused once the second holds it.
async fn scripted(args: &Args, first: &Session) -> anyhow::Result<()> {
    let name = format!("{}-scripted-{}", args.name, std::process::id());
    let second = args.etcd.session(args.ttl).await?;
    let (a, b) = (Mutex::new(first, &name)?, Mutex::new(&second, &name)?);

    let guard_a = a.lock().await?;
    say(format!(
        "A locked (fencing token {})",
        guard_a.fencing_token()
    ));
    anyhow::ensure!(
        b.try_lock().await?.is_none(),
        "B got the lock while A held it"
    );
    say("B: try_lock says busy");

    let waiter = tokio::spawn(async move { b.lock().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    anyhow::ensure!(!waiter.is_finished(), "B acquired while A held the lock");
    let resource = format!("{name}-resource");
    anyhow::ensure!(
        fenced_write(first, &guard_a, &resource, "from A").await?,
        "A's fenced write failed"
    );
    say("A wrote under the lock; A unlocks");
    let token_a = guard_a.fencing_token();
    // A stale copy of A's compare, to show what fencing refuses later.
    let stale = Compare::create_revision(guard_a.key(), CompareOp::Equal, token_a);
    guard_a.unlock().await?;

    let guard_b = tokio::time::timeout(Duration::from_secs(5), waiter).await???;
    say(format!(
        "B locked (fencing token {} > {token_a})",
        guard_b.fencing_token()
    ));
    anyhow::ensure!(
        guard_b.fencing_token() > token_a,
        "fencing tokens must grow"
    );
    let late = Txn::new().when([stale]).and_then([TxnOp::put(
        resource.as_str(),
        "late write from A",
        None,
    )]);
    anyhow::ensure!(
        !first.client().txn(late).await?.succeeded(),
        "a stale fenced write went through"
    );
    say("A's late fenced write was rejected");
    guard_b.unlock().await?;
    first.client().delete(resource, None).await?;
    say("done");
    Ok(())
}
