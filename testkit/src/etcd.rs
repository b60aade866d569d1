//! A real etcd cluster of 1 or 3 members on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binaries::{Binary, find_binary};
use crate::certs::{Certificates, make_certificates};
use crate::ports::free_port;
use crate::probe::{etcd_is_healthy, etcd_is_leader};
use crate::process::{kill_and_wait, signal, spawn_child, wait_until_ready};
use crate::{TcpProxy, TestkitError, temp_prefix};

/// How long a cluster may take to elect a leader and answer `/health`.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How many times a start is retried on fresh ports (another process may take
/// a port between our probe and etcd's bind).
const START_ATTEMPTS: usize = 3;

/// Options for [`EtcdCluster`]; see [`EtcdCluster::builder`].
#[derive(Debug, Clone)]
pub struct EtcdBuilder {
    members: usize,
    root_password: Option<String>,
    tls: Option<ClientCertificates>,
    behind_proxies: bool,
}

/// Whether a TLS cluster asks its clients for certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientCertificates {
    NotAsked,
    Required,
}

impl EtcdBuilder {
    /// The number of members: 1 (default) or 3.
    pub fn members(mut self, members: usize) -> Self {
        self.members = members;
        self
    }

    /// Enables authentication with a `root` user that has this password.
    /// Clients must then log in as `root`; see [`EtcdCluster::credentials`].
    pub fn root_password(mut self, password: impl Into<String>) -> Self {
        self.root_password = Some(password.into());
        self
    }

    /// Serves clients over TLS only (`https://` endpoints), with a server
    /// certificate from a throwaway CA; see [`EtcdCluster::certificates`].
    pub fn tls(mut self) -> Self {
        self.tls = Some(ClientCertificates::NotAsked);
        self
    }

    /// As [`tls`](Self::tls), and clients must show a certificate signed by
    /// the same CA (mutual TLS).
    pub fn mutual_tls(mut self) -> Self {
        self.tls = Some(ClientCertificates::Required);
        self
    }

    /// Puts a [`TcpProxy`] in front of every member's client port and peer
    /// port, and has the members advertise the proxies: clients and the
    /// other members reach a member only through them, so
    /// [`EtcdCluster::isolate`] can cut one off while it runs.
    pub fn behind_proxies(mut self) -> Self {
        self.behind_proxies = true;
        self
    }

    /// Starts the cluster and waits until every member is healthy.
    pub fn start(self) -> Result<EtcdCluster, TestkitError> {
        if self.members != 1 && self.members != 3 {
            return Err(TestkitError::BadMemberCount(self.members));
        }
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match EtcdCluster::start_once(&self) {
                Ok(cluster) => return Ok(cluster),
                // A port taken by someone else shows up as an early exit.
                Err(error @ TestkitError::Exited { .. }) => last_error = Some(error),
                Err(other) => return Err(other),
            }
        }
        Err(last_error.unwrap_or(TestkitError::BadMemberCount(self.members)))
    }
}

#[derive(Debug)]
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    /// Plain HTTP `/health` and `/metrics`, for the probes, TLS or not.
    metrics: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// In front of `client` and `peer`, when the cluster is behind proxies.
    proxies: Option<MemberProxies>,
}

#[derive(Debug)]
struct MemberProxies {
    client: TcpProxy,
    peer: TcpProxy,
}

impl Member {
    /// Where clients reach this member: its proxy, if it has one.
    fn advertised_client(&self) -> SocketAddr {
        self.proxies
            .as_ref()
            .map_or(self.client, |p| p.client.addr())
    }

    /// Where the other members reach it.
    fn advertised_peer(&self) -> SocketAddr {
        self.proxies.as_ref().map_or(self.peer, |p| p.peer.addr())
    }
}

/// A running etcd cluster; every member is killed when this is dropped.
///
/// Methods take `&self`, so one cluster can be shared by the tasks of a test
/// (behind an `Arc` or a `static`). Members are numbered from 0.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Mutex<Member>>,
    initial_cluster: String,
    root_password: Option<String>,
    tls: Option<(Certificates, ClientCertificates)>,
    // Dropped after the members (fields drop in order), so data dirs outlive
    // the processes that use them.
    _dir: TempDir,
}

impl EtcdCluster {
    /// Options: member count and authentication.
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder {
            members: 1,
            root_password: None,
            tls: None,
            behind_proxies: false,
        }
    }

    /// Starts `members` members (1 or 3) without authentication.
    pub fn start(members: usize) -> Result<Self, TestkitError> {
        Self::builder().members(members).start()
    }

    fn start_once(options: &EtcdBuilder) -> Result<Self, TestkitError> {
        // Fail early, and clearly, when the packages are not installed.
        find_binary(Binary::Etcd)?;
        if options.root_password.is_some() {
            find_binary(Binary::Etcdctl)?;
        }
        let dir = tempfile::Builder::new()
            .prefix(&temp_prefix())
            .tempdir()
            .map_err(|e| {
                TestkitError::io("creating a temporary directory for etcd", e)
            })?;
        let mut members = Vec::with_capacity(options.members);
        for index in 0..options.members {
            let name = format!("m{index}");
            let client = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let peer = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let proxies = if options.behind_proxies {
                Some(MemberProxies {
                    client: TcpProxy::start(client)?,
                    peer: TcpProxy::start(peer)?,
                })
            } else {
                None
            };
            members.push(Member {
                client,
                peer,
                proxies,
                metrics: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                data_dir: dir.path().join(format!("{name}.etcd")),
                log: dir.path().join(format!("{name}.log")),
                name,
                child: None,
                paused: false,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.advertised_peer()))
            .collect::<Vec<_>>()
            .join(",");
        let tls = match options.tls {
            Some(asked) => Some((make_certificates(dir.path())?, asked)),
            None => None,
        };
        let cluster = EtcdCluster {
            members: members.into_iter().map(Mutex::new).collect(),
            initial_cluster,
            root_password: options.root_password.clone(),
            tls,
            _dir: dir,
        };
        // Members of a new cluster wait for each other, so start them all
        // before waiting for any.
        for index in 0..cluster.members.len() {
            let mut member = cluster.lock(index)?;
            let child = cluster.spawn_member(&member)?;
            member.child = Some(child);
        }
        for index in 0..cluster.members.len() {
            cluster.wait_healthy(index)?;
        }
        if let Some(password) = &cluster.root_password {
            cluster.enable_auth(password)?;
        }
        Ok(cluster)
    }

    fn lock(
        &self,
        index: usize,
    ) -> Result<std::sync::MutexGuard<'_, Member>, TestkitError> {
        let member = self.members.get(index).ok_or(TestkitError::NoSuchMember {
            index,
            members: self.members.len(),
        })?;
        Ok(member
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn spawn_member(&self, member: &Member) -> Result<Child, TestkitError> {
        let mut command = Command::new(find_binary(Binary::Etcd)?);
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg(format!(
                "--listen-client-urls={}://{}",
                self.scheme(),
                member.client
            ))
            .arg(format!(
                "--advertise-client-urls={}://{}",
                self.scheme(),
                member.advertised_client()
            ))
            .arg(format!("--listen-metrics-urls=http://{}", member.metrics))
            .arg(format!("--listen-peer-urls=http://{}", member.peer))
            .arg(format!(
                "--initial-advertise-peer-urls=http://{}",
                member.advertised_peer()
            ))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=testkit")
            // Faster failure detection than the defaults (100 ms / 1 s), so
            // fault tests see a new leader quickly; still safe on loopback.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-level=warn");
        if let Some((certs, asked)) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&certs.server_cert)
                .arg("--key-file")
                .arg(&certs.server_key);
            // etcd asks for client certificates whenever it has a CA to
            // check them with.
            if *asked == ClientCertificates::Required {
                command
                    .arg("--trusted-ca-file")
                    .arg(&certs.ca_cert)
                    .arg("--client-cert-auth");
            }
        }
        spawn_child(command, &member.log)
    }

    fn wait_healthy(&self, index: usize) -> Result<(), TestkitError> {
        let mut member = self.lock(index)?;
        let (client, metrics) = (member.client, member.metrics);
        let log = member.log.clone();
        let what = format!("etcd member {index} ({client})");
        let Some(child) = member.child.as_mut() else {
            return Ok(());
        };
        wait_until_ready(&what, child, &log, READY_LIMIT, || etcd_is_healthy(metrics))
    }

    fn enable_auth(&self, password: &str) -> Result<(), TestkitError> {
        self.etcdctl(&["user", "add", &format!("root:{password}")])?;
        self.etcdctl(&["user", "grant-role", "root", "root"])?;
        self.etcdctl(&["auth", "enable"])?;
        Ok(())
    }

    fn etcdctl(&self, args: &[&str]) -> Result<(), TestkitError> {
        let mut command = Command::new(find_binary(Binary::Etcdctl)?);
        if let Some((certs, _)) = &self.tls {
            command
                .arg("--cacert")
                .arg(&certs.ca_cert)
                .arg("--cert")
                .arg(&certs.client_cert)
                .arg("--key")
                .arg(&certs.client_key);
        }
        let output = command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints_env()))
            .arg("--dial-timeout=5s")
            .arg("--command-timeout=10s")
            .args(args)
            .output()
            .map_err(|e| TestkitError::io("running etcdctl", e))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Etcdctl {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Client endpoints as `127.0.0.1:PORT` (`https://127.0.0.1:PORT` for a
    /// TLS cluster), one per member, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        let prefix = if self.tls.is_some() { "https://" } else { "" };
        self.client_addrs()
            .iter()
            .map(|a| format!("{prefix}{a}"))
            .collect()
    }

    /// The TLS files of a cluster started with [`EtcdBuilder::tls`] or
    /// [`EtcdBuilder::mutual_tls`]: the CA to trust, and a client
    /// certificate and key.
    pub fn certificates(&self) -> Option<&Certificates> {
        self.tls.as_ref().map(|(certs, _)| certs)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The endpoints joined by commas: the format of `ETCD_ENDPOINTS`.
    pub fn endpoints_env(&self) -> String {
        self.endpoints().join(",")
    }

    /// Client socket addresses, one per member (their proxies', for a
    /// cluster behind proxies).
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .map(|m| {
                m.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .advertised_client()
            })
            .collect()
    }

    /// `Some(("root", password))` when authentication is enabled.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.root_password.as_deref().map(|p| ("root", p))
    }

    /// The process id of member `index`, if it is running.
    pub fn pid(&self, index: usize) -> Result<Option<u32>, TestkitError> {
        Ok(self.lock(index)?.child.as_ref().map(Child::id))
    }

    /// Kills member `index` with SIGKILL (no clean shutdown) and reaps it.
    /// Its data directory is kept, so [`restart`](Self::restart) brings back
    /// the same member.
    pub fn kill(&self, index: usize) -> Result<(), TestkitError> {
        let mut member = self.lock(index)?;
        if let Some(mut child) = member.child.take() {
            kill_and_wait(&mut child);
        }
        member.paused = false;
        Ok(())
    }

    /// Starts member `index` again on the same ports and data directory, and
    /// waits until it has rejoined (answers `/health`). A running member is
    /// killed first.
    pub fn restart(&self, index: usize) -> Result<(), TestkitError> {
        self.kill(index)?;
        let mut last_error = None;
        // The old process's ports can linger for a moment after SIGKILL.
        for _ in 0..START_ATTEMPTS {
            {
                let mut member = self.lock(index)?;
                let child = self.spawn_member(&member)?;
                member.child = Some(child);
            }
            match self.wait_healthy(index) {
                Ok(()) => return Ok(()),
                Err(error @ TestkitError::Exited { .. }) => {
                    last_error = Some(error);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(other) => return Err(other),
            }
        }
        Err(last_error.unwrap_or(TestkitError::NoLeader(0)))
    }

    /// Freezes member `index` with SIGSTOP: it keeps its sockets but answers
    /// nothing, like a machine in a long GC pause.
    pub fn pause(&self, index: usize) -> Result<(), TestkitError> {
        let mut member = self.lock(index)?;
        if let Some(child) = member.child.as_ref() {
            signal(child, libc::SIGSTOP)?;
            member.paused = true;
        }
        Ok(())
    }

    /// Resumes a member frozen by [`pause`](Self::pause) with SIGCONT.
    pub fn resume(&self, index: usize) -> Result<(), TestkitError> {
        let mut member = self.lock(index)?;
        if let Some(child) = member.child.as_ref() {
            signal(child, libc::SIGCONT)?;
            member.paused = false;
        }
        Ok(())
    }

    /// Cuts member `index` off from clients and from the other members
    /// while it keeps running — a partition: its client and peer proxies
    /// drop every byte, and the other members' peer proxies drop what it
    /// sends them (its requests name it in `X-Server-From`). Only for a
    /// cluster [`behind_proxies`](EtcdBuilder::behind_proxies).
    pub fn isolate(&self, index: usize) -> Result<(), TestkitError> {
        let id = self.member_id(index)?;
        for other in 0..self.members.len() {
            let member = self.lock(other)?;
            let proxies = member
                .proxies
                .as_ref()
                .ok_or(TestkitError::NotBehindProxies)?;
            if other == index {
                proxies.client.blackhole();
                proxies.peer.blackhole();
            } else {
                proxies.peer.blackhole_from(&id);
            }
        }
        Ok(())
    }

    /// Ends every partition made by [`isolate`](Self::isolate): all proxies
    /// forward again, and the connections that were cut are reset (their
    /// half-delivered frames would confuse both ends).
    pub fn heal(&self) -> Result<(), TestkitError> {
        for index in 0..self.members.len() {
            let member = self.lock(index)?;
            let proxies = member
                .proxies
                .as_ref()
                .ok_or(TestkitError::NotBehindProxies)?;
            for proxy in [&proxies.client, &proxies.peer] {
                proxy.reset_connections();
                proxy.heal();
            }
        }
        Ok(())
    }

    /// Member `index`'s id in hex, as it names itself to its peers; read
    /// from its metrics (`etcd_server_id`).
    pub fn member_id(&self, index: usize) -> Result<String, TestkitError> {
        let metrics = self.lock(index)?.metrics;
        crate::probe::etcd_member_id(metrics).ok_or(TestkitError::NoMemberId(index))
    }

    /// The index of the current Raft leader, waiting up to 10 s for one to be
    /// elected (for example right after the old leader was killed).
    pub fn leader(&self) -> Result<usize, TestkitError> {
        const LIMIT: Duration = Duration::from_secs(10);
        let deadline = Instant::now() + LIMIT;
        loop {
            for index in 0..self.members.len() {
                let (metrics, running) = {
                    let member = self.lock(index)?;
                    (member.metrics, member.child.is_some() && !member.paused)
                };
                if running && etcd_is_leader(metrics) {
                    return Ok(index);
                }
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::NoLeader(LIMIT.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl EtcdCluster {
    /// Kills every member and deletes the data directory, for a cluster that
    /// is never dropped (a `static`) when its process exits. Members whose
    /// lock is held elsewhere are left to `PR_SET_PDEATHSIG`; nothing here
    /// blocks or panics.
    pub(crate) fn clean_up_at_exit(&self) {
        for member in &self.members {
            if let Ok(mut member) = member.try_lock()
                && let Some(mut child) = member.child.take()
            {
                kill_and_wait(&mut child);
            }
        }
        let _ = std::fs::remove_dir_all(self._dir.path());
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &self.members {
            let mut member = member.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(mut child) = member.child.take() {
                kill_and_wait(&mut child);
            }
        }
    }
}
