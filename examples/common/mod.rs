//! What the interactive etcd examples share: connecting from `--addr` or
//! the environment, and reading commands from stdin one line at a time.
//!
//! Included by each example with `#[path = "common/mod.rs"] mod common;`.

#![allow(dead_code)] // not every example uses every helper

use std::time::Duration;

use concurrency_patterns::distributed::etcd::{EtcdConfig, Session};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

/// Connects to `--addr` (comma-separated), else `ETCD_ENDPOINTS`, else the
/// local services; credentials from `ETCD_USER` / `ETCD_PASSWORD`.
pub async fn connect(
    addr: Option<&str>,
) -> anyhow::Result<concurrency_patterns::distributed::etcd::Client> {
    let mut config = EtcdConfig::from_env()?;
    if let Some(addr) = addr {
        config = config.endpoints_from_list(addr);
    }
    Ok(config.connect().await?)
}

/// Connects and opens a session with a lease of `ttl_secs`.
pub async fn session(addr: Option<&str>, ttl_secs: u64) -> anyhow::Result<Session> {
    let client = connect(addr).await?;
    Ok(Session::new(client, Duration::from_secs(ttl_secs)).await?)
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
            let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
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

/// Connects to `--url`, else `REDIS_URL`, else the local services.
pub async fn redis(
    url: Option<&str>,
) -> anyhow::Result<(
    concurrency_patterns::distributed::redis::RedisConfig,
    concurrency_patterns::distributed::redis::redis::aio::ConnectionManager,
)> {
    use concurrency_patterns::distributed::redis::RedisConfig;
    let config = match url {
        Some(url) => RedisConfig::new(url),
        None => RedisConfig::from_env()?,
    };
    let conn = config.connect().await?;
    Ok((config, conn))
}
