//! A real `redis-server` on loopback, or several independent ones (Redlock).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use tempfile::TempDir;

use crate::binaries::{Binary, find_binary};
use crate::ports::free_port;
use crate::probe::redis_answers;
use crate::process::{kill_and_wait, signal, spawn_child, wait_until_ready};
use crate::{TestkitError, temp_prefix};

const READY_LIMIT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 3;

/// Options for [`RedisServer`]; see [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct RedisBuilder {
    password: Option<String>,
    tls: bool,
    replica_of: Option<SocketAddr>,
    cluster: bool,
}

impl RedisBuilder {
    /// Requires this password (`requirepass`); [`RedisServer::url`] includes it.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Starts as a node of a Redis Cluster (`--cluster-enabled yes`, its bus
    /// on another free port, 1 s node timeout), not yet joined to others.
    pub fn cluster_node(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Starts as a replica of the server at `primary` (`--replicaof`).
    pub fn replica_of(mut self, primary: SocketAddr) -> Self {
        self.replica_of = Some(primary);
        self
    }

    /// Serves TLS only (`rediss://`), with a certificate for 127.0.0.1 signed
    /// by a throwaway CA made with `openssl`; see [`RedisServer::ca_certificate`].
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Starts the server and waits until it answers `PING`.
    pub fn start(self) -> Result<RedisServer, TestkitError> {
        find_binary(Binary::RedisServer)?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix(&temp_prefix())
                .tempdir()
                .map_err(|e| {
                    TestkitError::io("creating a temporary directory for redis", e)
                })?;
            if self.tls {
                crate::certs::make_certificates(dir.path())?;
            }
            let server = RedisServer {
                addr: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                log: dir.path().join("redis.log"),
                password: self.password.clone(),
                tls: self.tls,
                replica_of: self.replica_of,
                cluster_port: if self.cluster {
                    Some(free_port()?)
                } else {
                    None
                },
                child: Mutex::new(None),
                _dir: dir,
            };
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(error @ TestkitError::Exited { .. }) => last_error = Some(error),
                Err(other) => return Err(other),
            }
        }
        Err(last_error.unwrap_or(TestkitError::BadMemberCount(0)))
    }
}

/// A running `redis-server`, killed when this is dropped.
///
/// No persistence (`save ""`, no AOF): a restart starts empty, like a master
/// that failed over to a replica which had not seen the latest writes.
#[derive(Debug)]
pub struct RedisServer {
    addr: SocketAddr,
    log: PathBuf,
    password: Option<String>,
    tls: bool,
    replica_of: Option<SocketAddr>,
    /// The cluster bus port, for a cluster node.
    cluster_port: Option<u16>,
    child: Mutex<Option<Child>>,
    _dir: TempDir,
}

impl RedisServer {
    /// Options: password.
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// Starts one server without a password.
    pub fn start() -> Result<Self, TestkitError> {
        Self::builder().start()
    }

    /// Starts `n` independent servers (not replicas of each other), as the
    /// Redlock algorithm needs.
    pub fn start_many(n: usize) -> Result<Vec<Self>, TestkitError> {
        (0..n).map(|_| Self::start()).collect()
    }

    fn spawn_and_wait(&self) -> Result<(), TestkitError> {
        let mut command = Command::new(find_binary(Binary::RedisServer)?);
        let port = self.addr.port().to_string();
        let (plain_port, tls_port) = if self.tls {
            ("0", port.as_str())
        } else {
            (port.as_str(), "0")
        };
        command
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(plain_port)
            .arg("--tls-port")
            .arg(tls_port)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--daemonize")
            .arg("no")
            .arg("--dir")
            .arg(self._dir.path());
        if let Some(password) = &self.password {
            command.arg("--requirepass").arg(password);
        }
        if let Some(bus) = self.cluster_port {
            command
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "1000"])
                .arg("--cluster-port")
                .arg(bus.to_string());
        }
        if let Some(primary) = self.replica_of {
            command
                .arg("--replicaof")
                .arg(primary.ip().to_string())
                .arg(primary.port().to_string());
        }
        if self.tls {
            let dir = self._dir.path();
            command
                .arg("--tls-cert-file")
                .arg(dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.crt"))
                .arg("--tls-auth-clients")
                .arg("no");
        }
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let child = guard.insert(spawn_child(command, &self.log)?);
        let addr = self.addr;
        let what = format!("redis-server on {addr}");
        let tls = self.tls;
        // A TLS port does not answer a plain PING; a TCP accept is enough there.
        let result = wait_until_ready(&what, child, &self.log, READY_LIMIT, || {
            if tls {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .is_ok()
            } else {
                redis_answers(addr)
            }
        });
        if result.is_err()
            && let Some(mut child) = guard.take()
        {
            kill_and_wait(&mut child);
        }
        result
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `redis://` (or, with TLS, `rediss://`) URL for this server, with
    /// the password when one is set.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@{}/", self.addr),
            None => format!("{scheme}://{}/", self.addr),
        }
    }

    /// The PEM of the CA that signed a TLS server's certificate.
    pub fn ca_certificate(&self) -> Result<Vec<u8>, TestkitError> {
        let path = self._dir.path().join("ca.crt");
        std::fs::read(&path)
            .map_err(|e| TestkitError::io(format!("reading {}", path.display()), e))
    }

    /// A `redis://` URL without the password, even when one is required.
    pub fn url_without_password(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// The process id, if the server is running.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Child::id)
    }

    /// Kills the server with SIGKILL and reaps it. Its data is lost.
    pub fn kill(&self) -> Result<(), TestkitError> {
        if let Some(mut child) =
            self.child.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            kill_and_wait(&mut child);
        }
        Ok(())
    }

    /// Starts the server again on the same port (empty), killing it first if
    /// it runs, and waits until it answers.
    pub fn restart(&self) -> Result<(), TestkitError> {
        self.kill()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(error @ TestkitError::Exited { .. }) => {
                    last_error = Some(error);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(other) => return Err(other),
            }
        }
        Err(last_error.unwrap_or(TestkitError::BadMemberCount(0)))
    }

    /// Freezes the server with SIGSTOP.
    pub fn pause(&self) -> Result<(), TestkitError> {
        match self
            .child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(child) => signal(child, libc::SIGSTOP),
            None => Ok(()),
        }
    }

    /// Resumes a server frozen by [`pause`](Self::pause).
    pub fn resume(&self) -> Result<(), TestkitError> {
        match self
            .child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(child) => signal(child, libc::SIGCONT),
            None => Ok(()),
        }
    }
}

impl RedisServer {
    /// As [`EtcdCluster::clean_up_at_exit`](crate::EtcdCluster): kills the
    /// server and deletes its directory, for a server kept in a `static`.
    pub(crate) fn clean_up_at_exit(&self) {
        if let Ok(mut child) = self.child.try_lock()
            && let Some(mut child) = child.take()
        {
            kill_and_wait(&mut child);
        }
        let _ = std::fs::remove_dir_all(self._dir.path());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
