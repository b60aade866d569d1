//! What the examples share: the `--addr` / `--url` flags and connecting
//! through them, and the loop that reads commands from stdin.
//!
//! Included by each example with `#[path = "common/mod.rs"] mod common;`.

#![allow(dead_code)] // not every example uses every helper

use std::time::Duration;

use concurrency_patterns::distributed::etcd::{Client, EtcdConfig, Session};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

/// Where etcd is; flatten into an example's arguments with
/// `#[command(flatten)]`.
#[derive(clap::Args)]
pub struct EtcdFlags {
    /// Comma-separated etcd endpoints (default: ETCD_ENDPOINTS, else 127.0.0.1:2379).
    #[arg(long, env = "ETCD_ENDPOINTS")]
    pub addr: Option<String>,
}

impl EtcdFlags {
    /// Connects to `--addr`, else `ETCD_ENDPOINTS`, else the local
    /// services; credentials from `ETCD_USER` / `ETCD_PASSWORD`.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let mut config = EtcdConfig::from_env()?;
        if let Some(addr) = &self.addr {
            config = config.endpoints_from_list(addr);
        }
        Ok(config.connect().await?)
    }

    /// Connects and opens a session with a lease of `ttl_secs`.
    pub async fn session(&self, ttl_secs: u64) -> anyhow::Result<Session> {
        let client = self.connect().await?;
        Ok(Session::new(client, Duration::from_secs(ttl_secs)).await?)
    }
}

/// Where Redis is; flatten into an example's arguments.
#[derive(clap::Args)]
pub struct RedisFlags {
    /// Redis URL (default: REDIS_URL, else redis://127.0.0.1:6379/).
    #[arg(long)]
    pub url: Option<String>,
}

impl RedisFlags {
    /// The configuration from `--url`, else `REDIS_URL`, else the local
    /// services, and a connection made with it.
    pub async fn connect(
        &self,
    ) -> anyhow::Result<(
        concurrency_patterns::distributed::redis::RedisConfig,
        concurrency_patterns::distributed::redis::RedisConnection,
    )> {
        use concurrency_patterns::distributed::redis::RedisConfig;
        let config = match &self.url {
            Some(url) => RedisConfig::new(url.as_str()),
            None => RedisConfig::from_env()?,
        };
        let conn = config.connect().await?;
        Ok((config, conn))
    }
}

/// Reads commands from stdin until `quit` (or `exit`) or the end of input,
/// after printing `ready; commands: <commands>, quit`. Each line, split into
/// words, goes to `handle`, which answers false for a line it does not take.
/// The loop then says why: a known command with the wrong arguments gets
/// its usage (`usage: push <value>`), anything else the list of commands.
pub async fn repl(commands: &str, mut handle: impl AsyncFnMut(&[&str]) -> bool) {
    say(format!("ready; commands: {commands}, quit"));
    let mut lines = Commands::from_stdin();
    while let Some(words) = lines.next().await {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        if matches!(words.as_slice(), ["quit" | "exit"]) {
            break;
        }
        if !handle(&words).await {
            say(refusal(commands, &words));
        }
    }
}

/// What to say about a line `handle` did not take, given the commands'
/// usage list (`"push <value>, pop"`).
fn refusal(commands: &str, words: &[&str]) -> String {
    let usage = commands
        .split(',')
        .map(str::trim)
        .find(|usage| usage.split_whitespace().next() == words.first().copied());
    match usage {
        Some(usage) => format!("usage: {usage}"),
        None => format!(
            "unknown command {:?}; try {commands}, quit",
            words.join(" ")
        ),
    }
}

/// Commands typed on stdin, one per line, trimmed; blank lines skipped.
pub struct Commands {
    lines: Lines<BufReader<Stdin>>,
}

impl Commands {
    pub fn from_stdin() -> Self {
        Commands {
            lines: BufReader::new(tokio::io::stdin()).lines(),
        }
    }

    /// The next command split into words, or `None` at end of input.
    ///
    /// Cancel safety: safe (tokio's `Lines::next_line` keeps partial input).
    pub async fn next(&mut self) -> Option<Vec<String>> {
        loop {
            let line = self.lines.next_line().await.ok()??;
            let words: Vec<String> =
                line.split_whitespace().map(str::to_string).collect();
            if !words.is_empty() {
                return Some(words);
            }
        }
    }
}

/// Prints a prompt-free line and flushes, so that a program driving us
/// through a pipe sees it at once.
pub fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
