//! Redis behind Sentinel on loopback: a primary, a replica that replicates
//! through a [`TcpProxy`] (so replication can be cut while both servers
//! live), and three Sentinels watching them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binaries::{Binary, find_binary};
use crate::ports::free_port;
use crate::probe::redis_answers;
use crate::process::{kill_and_wait, spawn_child, wait_until_ready};
use crate::{RedisServer, TcpProxy, TestkitError, temp_prefix};

/// The name the Sentinels monitor the primary by.
pub const SENTINEL_SERVICE: &str = "testkit";

/// How long the Sentinels wait before they call a silent primary down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

const READY_LIMIT: Duration = Duration::from_secs(20);

/// A primary, its replica and three Sentinels, each killed when this is
/// dropped.
///
/// The Sentinels agree (2 of 3) that the primary is down after
/// [`DOWN_AFTER`] and promote the replica. The replica's link to the
/// primary runs through a proxy: [`cut_replication`](Self::cut_replication)
/// stops it while both servers keep running, so the primary can
/// acknowledge writes the replica never sees.
#[derive(Debug)]
pub struct RedisSentinels {
    primary: RedisServer,
    replica: RedisServer,
    link: TcpProxy,
    sentinels: Vec<SentinelProcess>,
}

#[derive(Debug)]
struct SentinelProcess {
    addr: SocketAddr,
    child: Mutex<Option<Child>>,
    _dir: TempDir,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        if let Some(mut child) =
            self.child.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            kill_and_wait(&mut child);
        }
    }
}

impl RedisSentinels {
    /// Starts the primary, the replica (and waits until it has synced),
    /// then the Sentinels (and waits until each knows the replica and the
    /// other two).
    pub fn start() -> Result<RedisSentinels, TestkitError> {
        let sentinel_binary = find_binary(Binary::RedisSentinel)?;
        let primary = RedisServer::start()?;
        let link = TcpProxy::start(primary.addr())?;
        let replica = RedisServer::builder().replica_of(link.addr()).start()?;
        wait_for("the replica to sync", READY_LIMIT, || {
            ask(replica.addr(), &["INFO", "replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        })?;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(start_sentinel(&sentinel_binary, primary.addr())?);
        }
        let group = RedisSentinels {
            primary,
            replica,
            link,
            sentinels,
        };
        wait_for(
            "the Sentinels to know the replica and each other",
            READY_LIMIT,
            || {
                group.sentinels.iter().all(|s| {
                    let replicas =
                        ask(s.addr, &["SENTINEL", "REPLICAS", SENTINEL_SERVICE]);
                    let others =
                        ask(s.addr, &["SENTINEL", "SENTINELS", SENTINEL_SERVICE]);
                    replicas.is_some_and(|r| {
                        r.contains(&group.replica.addr().port().to_string())
                    }) && others.is_some_and(|o| o.matches("name").count() >= 2)
                })
            },
        )?;
        Ok(group)
    }

    /// `redis+sentinel://` URL naming the three Sentinels and the service.
    pub fn url(&self) -> String {
        let hosts: Vec<String> =
            self.sentinels.iter().map(|s| s.addr.to_string()).collect();
        format!("redis+sentinel://{}/{SENTINEL_SERVICE}", hosts.join(","))
    }

    /// The server that started as the primary.
    pub fn primary(&self) -> &RedisServer {
        &self.primary
    }

    /// The server that started as the replica.
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// Stops replication from the primary to the replica: both keep
    /// running, and the primary's writes no longer reach the replica.
    pub fn cut_replication(&self) {
        self.link.blackhole();
    }

    /// Lets replication through again.
    pub fn heal_replication(&self) {
        self.link.heal();
    }

    /// Kills the primary (SIGKILL).
    pub fn kill_primary(&self) -> Result<(), TestkitError> {
        self.primary.kill()
    }

    /// The address the Sentinels name as the primary, if they agree.
    pub fn named_primary(&self) -> Option<SocketAddr> {
        let named: Vec<Option<SocketAddr>> = self
            .sentinels
            .iter()
            .map(|s| {
                let reply = ask(
                    s.addr,
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE],
                )?;
                let words: Vec<&str> = reply
                    .lines()
                    .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
                    .collect();
                format!("{}:{}", words.first()?, words.get(1)?).parse().ok()
            })
            .collect();
        let first = *named.first()?;
        named.iter().all(|n| *n == first).then_some(first).flatten()
    }

    /// Waits until every Sentinel names the replica as the primary and the
    /// replica says it is one.
    pub fn wait_for_failover(&self, limit: Duration) -> Result<(), TestkitError> {
        wait_for("the Sentinels to promote the replica", limit, || {
            self.named_primary() == Some(self.replica.addr())
                && ask(self.replica.addr(), &["ROLE"])
                    .is_some_and(|r| r.contains("master"))
        })
    }
}

fn start_sentinel(
    binary: &PathBuf,
    primary: SocketAddr,
) -> Result<SentinelProcess, TestkitError> {
    let dir = tempfile::Builder::new()
        .prefix(&temp_prefix())
        .tempdir()
        .map_err(|e| {
            TestkitError::io("creating a temporary directory for a sentinel", e)
        })?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    // Sentinel rewrites its configuration file as it learns: it must be its own.
    let config = dir.path().join("sentinel.conf");
    let text = format!(
        "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
         sentinel monitor {SENTINEL_SERVICE} {ip} {primary_port} 2\n\
         sentinel down-after-milliseconds {SENTINEL_SERVICE} {down}\n\
         sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
         sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
        port = addr.port(),
        dir = dir.path().display(),
        ip = primary.ip(),
        primary_port = primary.port(),
        down = DOWN_AFTER.as_millis(),
    );
    std::fs::write(&config, text)
        .map_err(|e| TestkitError::io(format!("writing {}", config.display()), e))?;
    let log = dir.path().join("sentinel.log");
    let mut command = Command::new(binary);
    command.arg(&config);
    let mut child = spawn_child(command, &log)?;
    let ready = wait_until_ready(
        &format!("redis-sentinel on {addr}"),
        &mut child,
        &log,
        READY_LIMIT,
        || redis_answers(addr),
    );
    if let Err(error) = ready {
        kill_and_wait(&mut child);
        return Err(error);
    }
    Ok(SentinelProcess {
        addr,
        child: Mutex::new(Some(child)),
        _dir: dir,
    })
}

/// Polls `done` every 100 ms for at most `limit`.
pub(crate) fn wait_for(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), TestkitError> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return Err(TestkitError::NotReady {
                what: what.to_string(),
                seconds: limit.as_secs(),
                log: PathBuf::new(),
                tail: String::new(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Sends one command to a Redis or Sentinel at `addr` and returns its raw
/// reply (RESP, as text), or `None` if it does not answer within a second.
pub(crate) fn ask(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(1);
    // Read until the server pauses: the replies asked for here are small.
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buffer[..n]),
            Err(_) if !reply.is_empty() => break,
            Err(_) => {}
        }
    }
    (!reply.is_empty()).then(|| String::from_utf8_lossy(&reply).into_owned())
}
