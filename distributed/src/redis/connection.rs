//! The connection every Redis primitive uses: to one server, to whichever
//! server Redis Sentinel names as the primary now, or to a Redis Cluster.
//! Machinery a reader of the recipes may skip.

use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tracing::{debug, info};

use super::RedisError;

/// A connection to Redis that reconnects by itself, cheap to clone (clones
/// share it). Made by [`RedisConfig::connect`](super::RedisConfig::connect).
///
/// For a `redis://` or `rediss://` URL it talks to that server. For a
/// `redis+sentinel://` URL it asks the Sentinels which server is the
/// primary, and asks them again when the primary stops answering or
/// answers as a replica (`READONLY`): after a failover, the next requests
/// go to the new primary. A request that failed with the old one is not
/// sent again (it may have been applied before the primary died); its
/// error reaches the caller, as any lost reply does.
///
/// For a `redis+cluster://` URL it is the `redis` crate's cluster client,
/// which routes each request to the node that owns its key's slot and
/// follows the slots when a replica takes over from a failed primary. The
/// keys of one recipe must then share a slot: name it with a hash tag, as
/// `{invoices}` (the lock, the semaphore and the fenced store check).
///
/// It is a [`redis::aio::ConnectionLike`], so `redis::cmd(..)
/// .query_async(&mut conn)` works on it.
#[derive(Clone)]
pub struct RedisConnection {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// One server, or the primary behind Sentinel.
    Single(Arc<Shared>),
    Cluster(Arc<ClusterShared>),
}

struct ClusterShared {
    conn: ClusterConnection,
    /// The URLs of the nodes given, for pub/sub (a `PUBLISH` on a cluster
    /// reaches the subscribers of every node).
    nodes: Vec<String>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Single(shared) if shared.sentinel.is_some() => "sentinel",
            Kind::Single(_) => "server",
            Kind::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisConnection")
            .field("kind", &kind)
            .field("server", &self.server())
            .finish()
    }
}

struct Shared {
    /// The server in use now, and a generation that grows when it changes.
    current: Mutex<Current>,
    /// How to find the primary again, for a Sentinel URL.
    sentinel: Option<SentinelRoute>,
    manager_config: ConnectionManagerConfig,
    /// One re-resolution at a time.
    resolving: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Current {
    generation: u64,
    client: redis::Client,
    manager: ConnectionManager,
    server: String,
}

/// The Sentinels of one monitored service, and how to reach its servers.
#[derive(Clone, Debug)]
pub(crate) struct SentinelRoute {
    /// `host:port` of each Sentinel.
    pub(crate) sentinels: Vec<String>,
    /// The name the Sentinels monitor the primary by.
    pub(crate) service: String,
    /// The data servers' password, if any (Sentinels are asked without one).
    pub(crate) password: Option<String>,
    pub(crate) db: i64,
}

impl SentinelRoute {
    /// `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`.
    pub(crate) fn parse(url: &str) -> Option<Result<SentinelRoute, String>> {
        let rest = url.strip_prefix("redis+sentinel://")?;
        Some(Self::parse_rest(rest))
    }

    fn parse_rest(rest: &str) -> Result<SentinelRoute, String> {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let password = auth
            .map(|a| a.split_once(':').map_or(a, |(_, p)| p).to_string())
            .filter(|p| !p.is_empty());
        let (hosts, path) = rest
            .split_once('/')
            .ok_or("no service name after the hosts (…/SERVICE)")?;
        let sentinels: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        if sentinels.is_empty() || sentinels.iter().any(|h| !h.contains(':')) {
            return Err("every Sentinel needs HOST:PORT".into());
        }
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let service = parts.next().ok_or("no service name")?.to_string();
        let db = match parts.next() {
            Some(db) => db
                .parse()
                .map_err(|_| format!("`{db}` is not a database number"))?,
            None => 0,
        };
        Ok(SentinelRoute {
            sentinels,
            service,
            password,
            db,
        })
    }

    /// The URL of a data server at `host:port`.
    fn server_url(&self, addr: &str) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@{addr}/{}", self.db),
            None => format!("redis://{addr}/{}", self.db),
        }
    }

    /// Asks each Sentinel in turn for the primary's address, and checks
    /// that the server there says it is a primary.
    async fn primary(
        &self,
        manager_config: &ConnectionManagerConfig,
    ) -> Result<(redis::Client, ConnectionManager, String), RedisError> {
        let mut why = Vec::new();
        for sentinel in &self.sentinels {
            match self.ask(sentinel, manager_config).await {
                Ok(found) => return Ok(found),
                Err(error) => why.push(format!("{sentinel}: {error}")),
            }
        }
        Err(RedisError::NoPrimary {
            service: self.service.clone(),
            detail: why.join("; "),
        })
    }

    async fn ask(
        &self,
        sentinel: &str,
        manager_config: &ConnectionManagerConfig,
    ) -> Result<(redis::Client, ConnectionManager, String), redis::RedisError> {
        let mut asked = redis::Client::open(format!("redis://{sentinel}/"))?
            .get_multiplexed_async_connection()
            .await?;
        let (host, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.service)
            .query_async(&mut asked)
            .await?;
        let addr = format!("{host}:{port}");
        let client = redis::Client::open(self.server_url(&addr))?;
        let mut manager =
            ConnectionManager::new_with_config(client.clone(), manager_config.clone())
                .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut manager).await?;
        let is_primary =
            matches!(role.first(), Some(Value::BulkString(b)) if b == b"master");
        if !is_primary {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "named as the primary but answers as a replica (a failover is under way)",
                addr,
            )));
        }
        Ok((client, manager, addr))
    }
}

/// The nodes of a cluster URL:
/// `redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...][/]`, as `redis://`
/// URLs of each node (with the password).
pub(crate) fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, String>> {
    let rest = url.strip_prefix("redis+cluster://")?;
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (Some(auth), hosts),
        None => (None, rest),
    };
    let hosts = hosts.trim_end_matches('/');
    if hosts.contains('/') {
        return Some(Err(
            "a cluster has one database; give no path after the hosts".into(),
        ));
    }
    let nodes: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
    if nodes.is_empty() || nodes.iter().any(|h| !h.contains(':')) {
        return Some(Err("every node needs HOST:PORT".into()));
    }
    let prefix = match auth {
        Some(auth) => format!("{auth}@"),
        None => String::new(),
    };
    Some(Ok(nodes
        .iter()
        .map(|node| format!("redis://{prefix}{node}/"))
        .collect()))
}

impl RedisConnection {
    /// A connection to one server.
    pub(crate) fn to_server(
        client: redis::Client,
        manager: ConnectionManager,
        server: String,
        manager_config: ConnectionManagerConfig,
    ) -> RedisConnection {
        RedisConnection::new(client, manager, server, None, manager_config)
    }

    /// A connection to the primary the Sentinels of `route` name now.
    pub(crate) async fn through_sentinel(
        route: SentinelRoute,
        manager_config: ConnectionManagerConfig,
    ) -> Result<RedisConnection, RedisError> {
        let (client, manager, server) = route.primary(&manager_config).await?;
        Ok(RedisConnection::new(
            client,
            manager,
            server,
            Some(route),
            manager_config,
        ))
    }

    /// A connection to the cluster whose nodes (some of them) are `nodes`.
    pub(crate) fn to_cluster(
        conn: ClusterConnection,
        nodes: Vec<String>,
    ) -> RedisConnection {
        RedisConnection {
            kind: Kind::Cluster(Arc::new(ClusterShared { conn, nodes })),
        }
    }

    /// Whether this is a cluster connection, whose recipes' keys must share
    /// a slot.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }

    fn new(
        client: redis::Client,
        manager: ConnectionManager,
        server: String,
        sentinel: Option<SentinelRoute>,
        manager_config: ConnectionManagerConfig,
    ) -> RedisConnection {
        RedisConnection {
            kind: Kind::Single(Arc::new(Shared {
                current: Mutex::new(Current {
                    generation: 0,
                    client,
                    manager,
                    server,
                }),
                sentinel,
                manager_config,
                resolving: tokio::sync::Mutex::new(()),
            })),
        }
    }

    /// `host:port` of the server requests go to now; for a cluster, the
    /// nodes it was given, comma-separated.
    pub fn server(&self) -> String {
        match &self.kind {
            Kind::Single(shared) => shared.current().server,
            Kind::Cluster(cluster) => cluster
                .nodes
                .iter()
                .map(|url| url.trim_start_matches("redis://").trim_end_matches('/'))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// A pub/sub connection to the server in use now, or to the first
    /// cluster node that answers (for waiters).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisError> {
        match &self.kind {
            Kind::Single(shared) => {
                Ok(shared.current().client.get_async_pubsub().await?)
            }
            Kind::Cluster(cluster) => {
                let mut last = None;
                for url in &cluster.nodes {
                    match redis::Client::open(url.as_str())?.get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(error) => last = Some(error),
                    }
                }
                Err(last.map(RedisError::Client).unwrap_or_else(|| {
                    RedisError::InvalidConfig("a cluster with no nodes".into())
                }))
            }
        }
    }
}

impl Shared {
    fn current(&self) -> Current {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// After `error` on the server of `generation`: for a Sentinel
    /// connection whose server may have changed, asks the Sentinels again
    /// (once, whoever else hit the same error).
    async fn after_error(&self, generation: u64, error: &redis::RedisError) {
        let Some(route) = &self.sentinel else {
            return;
        };
        if !may_be_a_failover(error) {
            return;
        }
        let _one_at_a_time = self.resolving.lock().await;
        if self.current().generation != generation {
            return; // someone else has already found the new primary
        }
        match route.primary(&self.manager_config).await {
            Ok((client, manager, server)) => {
                let mut current = self
                    .current
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if current.server != server {
                    info!(from = %current.server, to = %server, "following a failover");
                }
                *current = Current {
                    generation: generation + 1,
                    client,
                    manager,
                    server,
                };
            }
            Err(error) => {
                debug!(%error, "no primary found yet; trying again on the next error")
            }
        }
    }
}

/// An error after which the primary may be another server: the connection
/// failed, or the server has become a replica.
fn may_be_a_failover(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.code() == Some("READONLY")
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match &self.kind {
                Kind::Single(shared) => {
                    let Current {
                        generation,
                        mut manager,
                        ..
                    } = shared.current();
                    let reply = manager.req_packed_command(cmd).await;
                    if let Err(error) = &reply {
                        shared.after_error(generation, error).await;
                    }
                    reply
                }
                Kind::Cluster(cluster) => {
                    cluster.conn.clone().req_packed_command(cmd).await
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match &self.kind {
                Kind::Single(shared) => {
                    let Current {
                        generation,
                        mut manager,
                        ..
                    } = shared.current();
                    let reply =
                        manager.req_packed_commands(pipeline, offset, count).await;
                    if let Err(error) = &reply {
                        shared.after_error(generation, error).await;
                    }
                    reply
                }
                Kind::Cluster(cluster) => {
                    cluster
                        .conn
                        .clone()
                        .req_packed_commands(pipeline, offset, count)
                        .await
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        match &self.kind {
            Kind::Single(shared) => shared.current().manager.get_db(),
            Kind::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_and_cluster_urls_name_their_servers() {
        let route = SentinelRoute::parse(
            "redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/cache/3",
        )
        .unwrap()
        .unwrap();
        assert_eq!(route.sentinels, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(route.service, "cache");
        assert_eq!(route.password.as_deref(), Some("pw"));
        assert_eq!(route.db, 3);
        assert_eq!(
            route.server_url("10.0.0.1:6379"),
            "redis://:pw@10.0.0.1:6379/3"
        );
        assert!(SentinelRoute::parse("redis://127.0.0.1:6379/").is_none());
        let nodes = cluster_nodes("redis+cluster://:pw@127.0.0.1:1,127.0.0.1:2/")
            .unwrap()
            .unwrap();
        assert_eq!(
            nodes,
            ["redis://:pw@127.0.0.1:1/", "redis://:pw@127.0.0.1:2/"]
        );
        assert!(
            cluster_nodes("redis+cluster://127.0.0.1:1/0")
                .unwrap()
                .is_err()
        );
        assert!(cluster_nodes("redis+cluster://localhost").unwrap().is_err());
        assert!(cluster_nodes("redis://127.0.0.1:1/").is_none());
        for bad in [
            "redis+sentinel://127.0.0.1:1",
            "redis+sentinel://127.0.0.1:1/",
            "redis+sentinel:///cache",
            "redis+sentinel://localhost/cache",
            "redis+sentinel://127.0.0.1:1/cache/x",
        ] {
            assert!(SentinelRoute::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
