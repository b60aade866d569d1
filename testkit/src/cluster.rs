//! A Redis Cluster on loopback: three primaries, each with one replica,
//! joined by `redis-cli --cluster create`.

use std::process::Command;
use std::time::Duration;

use crate::binaries::{Binary, find_binary};
use crate::sentinel::{ask, wait_for};
use crate::{RedisServer, TestkitError};

const READY_LIMIT: Duration = Duration::from_secs(30);

/// Six `redis-server` nodes in cluster mode (three primaries, three
/// replicas, 1 s node timeout), each killed when this is dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster, and waits until every node
    /// says the cluster is `ok` and every replica has synced.
    pub fn start() -> Result<RedisCluster, TestkitError> {
        let cli = find_binary(Binary::RedisCli)?;
        let nodes = (0..6)
            .map(|_| RedisServer::builder().cluster_node().start())
            .collect::<Result<Vec<_>, _>>()?;
        let mut create = Command::new(cli);
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(node.addr().to_string());
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let output = create
            .output()
            .map_err(|e| TestkitError::io("running redis-cli --cluster create", e))?;
        if !output.status.success() {
            return Err(TestkitError::io(
                "creating the cluster",
                std::io::Error::other(
                    String::from_utf8_lossy(&output.stdout).into_owned(),
                ),
            ));
        }
        let cluster = RedisCluster { nodes };
        wait_for("the cluster to be ok on every node", READY_LIMIT, || {
            cluster.nodes.iter().all(|node| {
                ask(node.addr(), &["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            }) && cluster.replicas_synced()
        })?;
        Ok(cluster)
    }

    /// `redis+cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> =
            self.nodes.iter().map(|n| n.addr().to_string()).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The index of the node that is the primary for `key`'s slot now.
    pub fn primary_for(&self, key: &str) -> Option<usize> {
        let slot: u16 = self
            .nodes
            .iter()
            .find_map(|n| ask(n.addr(), &["CLUSTER", "KEYSLOT", key]))?
            .trim()
            .trim_start_matches(':')
            .parse()
            .ok()?;
        let layout = self
            .nodes
            .iter()
            .find_map(|n| ask(n.addr(), &["CLUSTER", "NODES"]))?;
        let port = layout.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let is_primary = fields.get(2)?.split(',').any(|f| f == "master")
                && !fields.get(2)?.contains("fail");
            let owns = fields.iter().skip(8).any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(l), Ok(h)) if (l..=h).contains(&slot))
            });
            (is_primary && owns).then(|| {
                fields.get(1)?.split('@').next()?.rsplit(':').next()?.parse::<u16>().ok()
            })?
        })?;
        self.nodes.iter().position(|n| n.addr().port() == port)
    }

    /// Kills node `index` (SIGKILL).
    pub fn kill(&self, index: usize) -> Result<(), TestkitError> {
        match self.nodes.get(index) {
            Some(node) => node.kill(),
            None => Ok(()),
        }
    }

    /// Waits until another node than `old` is the primary for `key`'s slot
    /// and the cluster is `ok` again.
    pub fn wait_for_failover(
        &self,
        key: &str,
        old: usize,
        limit: Duration,
    ) -> Result<usize, TestkitError> {
        let mut promoted = None;
        wait_for("a replica to take over the slot", limit, || {
            promoted = self.primary_for(key).filter(|p| *p != old);
            promoted.is_some_and(|p| {
                ask(self.nodes[p].addr(), &["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            })
        })?;
        promoted.ok_or(TestkitError::NotReady {
            what: "a replica to take over the slot".into(),
            seconds: limit.as_secs(),
            log: std::path::PathBuf::new(),
            tail: String::new(),
        })
    }

    fn replicas_synced(&self) -> bool {
        let replicas: Vec<&RedisServer> = self
            .nodes
            .iter()
            .filter(|n| {
                ask(n.addr(), &["ROLE"]).is_some_and(|role| role.contains("slave"))
            })
            .collect();
        replicas.len() == 3
            && replicas.iter().all(|n| {
                ask(n.addr(), &["INFO", "replication"])
                    .is_some_and(|info| info.contains("master_link_status:up"))
            })
    }
}
