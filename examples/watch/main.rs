//! A live view of one recipe's keys in etcd: who holds, who waits for
//! whom, which items are next, how long each lease has left — updated as
//! the keys change. Run it in a third terminal beside a two-terminal
//! example:
//!
//!     cargo run --example etcd-lock -- --name demo      # twice, type: lock
//!     cargo run --example watch -- --name demo
//!
//! The recipe is recognised from the key layout (or named with `--recipe
//! mutex|rwmutex|semaphore|election|queue|priority-queue|work-queue|
//! barrier|double-barrier`). `--once --json` prints one snapshot of the
//! same model instead, for scripts. Flags: `--addr` (comma-separated etcd
//! endpoints; default `ETCD_ENDPOINTS`, else 127.0.0.1:2379), `--name`.
//!
//! The model is in `model.rs`, the drawing in `ui.rs`.

#[path = "../common/mod.rs"]
mod common;
mod model;
mod redis_model;
mod ui;

use std::time::{Duration, Instant};

use clap::Parser;
use model::{Live, Recipe};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdFlags,
    /// The recipe's name (its key prefix).
    #[arg(long, default_value = "demo")]
    name: String,
    /// The recipe, if its layout does not say (an empty lock, say).
    #[arg(long)]
    recipe: Option<String>,
    /// Print one snapshot and exit.
    #[arg(long)]
    once: bool,
    /// With --once: as JSON.
    #[arg(long)]
    json: bool,
    /// Make a lock with a holder and two waiters, show it once, check it.
    #[arg(long)]
    scripted: bool,
    /// Follow the Redis lock `--name` on this Redis instead (its key, its
    /// fencing counter, its release channel).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Write the book's picture of the view (watch-mutex.svg) into DIR.
    #[arg(long, value_name = "DIR")]
    svg: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.svg {
        let picture = ui::svg(&ui::sample(), 110, 16)?;
        std::fs::write(dir.join("watch-mutex.svg"), picture)?;
        return Ok(());
    }
    let forced = match &args.recipe {
        Some(name) => Some(Recipe::parse(name).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown recipe {name:?}: mutex, rwmutex, semaphore, election, queue, priority-queue, work-queue, barrier or double-barrier"
            )
        })?),
        None => None,
    };
    if let Some(url) = &args.redis {
        return redis_view(url, &args).await;
    }
    let client = args.etcd.connect().await?;
    if args.scripted {
        return scripted(&args.etcd).await;
    }
    let first = model::snapshot(&client, &args.name, forced).await?;
    if args.once {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&first.to_json())?);
        } else {
            println!(
                "{}: {:?} ({})",
                first.name,
                first.recipe,
                first.recipe.layout()
            );
            for key in &first.keys {
                let watches = key
                    .watches
                    .as_deref()
                    .map(|w| format!(" → {w}"))
                    .unwrap_or_default();
                println!(
                    "  {:<11} {} (rev {}){watches}",
                    key.role.as_str(),
                    key.key,
                    key.create_revision
                );
            }
        }
        return Ok(());
    }
    let (view, looking) = tokio::sync::watch::channel(Live::new(first));
    let following =
        tokio::spawn(model::follow(client, args.name.clone(), forced, view));
    let shown = tokio::task::spawn_blocking(move || show(looking)).await?;
    following.abort();
    shown
}

/// A holder and two waiters on one lock, seen once: the line as the
/// recipe wrote it.
async fn scripted(etcd: &common::EtcdFlags) -> anyhow::Result<()> {
    use concurrency_patterns::distributed::etcd::Mutex;
    // ANCHOR: scripted
    let name = format!("watch-demo-{}", std::process::id());
    let holder = etcd.session(10).await?;
    let held = Mutex::new(&holder, &name)?.lock().await?;
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let session = etcd.session(10).await?;
        let mutex = Mutex::new(&session, &name)?;
        waiters.push((session, tokio::spawn(async move { mutex.lock().await })));
        tokio::time::sleep(Duration::from_millis(100)).await; // in this order
    }
    let client = etcd.connect().await?;
    let seen = model::snapshot(&client, &name, None).await?;
    for key in &seen.keys {
        let watches = key
            .watches
            .as_deref()
            .map(|w| format!(" → {w}"))
            .unwrap_or_default();
        common::say(format!(
            "{:<7} {} (rev {}){watches}",
            key.role.as_str(),
            key.key,
            key.create_revision
        ));
    }
    let roles: Vec<&str> = seen.keys.iter().map(|k| k.role.as_str()).collect();
    anyhow::ensure!(
        seen.recipe == Recipe::Mutex,
        "not seen as a Mutex: {:?}",
        seen.recipe
    );
    anyhow::ensure!(roles == ["holder", "waiter", "waiter"], "roles {roles:?}");
    anyhow::ensure!(
        seen.keys[2].watches.as_deref() == Some(seen.keys[1].key.as_str()),
        "the last waiter does not watch the one before it"
    );
    // ANCHOR_END: scripted
    held.unlock().await?;
    for (session, waiter) in waiters {
        waiter.await??.unlock().await?;
        session.close().await?;
    }
    holder.close().await?;
    Ok(())
}

/// The Redis lock `--name`: once, or live.
async fn redis_view(url: &str, args: &Args) -> anyhow::Result<()> {
    use concurrency_patterns::distributed::redis::RedisConfig;
    let conn = RedisConfig::new(url).connect().await?;
    let first = redis_model::redis_snapshot(&conn, &args.name).await?;
    if args.once {
        println!("{}", serde_json::to_string_pretty(&first.to_json())?);
        return Ok(());
    }
    let (view, looking) =
        tokio::sync::watch::channel(redis_model::RedisLive::new(first));
    let following =
        tokio::spawn(redis_model::follow_redis(conn, args.name.clone(), view));
    let shown = tokio::task::spawn_blocking(move || {
        show_with(|frame| ui::draw_redis(frame, &looking.borrow(), Instant::now()))
    })
    .await?;
    following.abort();
    shown
}

/// Draws the etcd view four times a second until q, Esc or Ctrl-C.
fn show(looking: tokio::sync::watch::Receiver<Live>) -> anyhow::Result<()> {
    show_with(|frame| ui::draw(frame, &looking.borrow(), Instant::now()))
}

/// Draws with `draw` four times a second until q, Esc or Ctrl-C.
fn show_with(mut draw: impl FnMut(&mut ratatui::Frame<'_>)) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        loop {
            terminal.draw(&mut draw)?;
            if event::poll(Duration::from_millis(250))?
                && let Event::Key(key) = event::read()?
            {
                let ctrl_c = key.code == KeyCode::Char('c')
                    && key.modifiers.contains(KeyModifiers::CONTROL);
                if matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                    return Ok(());
                }
            }
        }
    })();
    ratatui::restore();
    result
}
