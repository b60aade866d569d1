//! The connection every Redis primitive uses: to one server, or to whichever
//! server Redis Sentinel names as the primary now. Machinery a reader of the
//! recipes may skip.

use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
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
/// It is a [`redis::aio::ConnectionLike`], so `redis::cmd(..)
/// .query_async(&mut conn)` works on it.
#[derive(Clone)]
pub struct RedisConnection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("server", &self.server())
            .field("sentinel", &self.shared.sentinel.is_some())
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

    fn new(
        client: redis::Client,
        manager: ConnectionManager,
        server: String,
        sentinel: Option<SentinelRoute>,
        manager_config: ConnectionManagerConfig,
    ) -> RedisConnection {
        RedisConnection {
            shared: Arc::new(Shared {
                current: Mutex::new(Current {
                    generation: 0,
                    client,
                    manager,
                    server,
                }),
                sentinel,
                manager_config,
                resolving: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn current(&self) -> Current {
        self.shared
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// `host:port` of the server requests go to now.
    pub fn server(&self) -> String {
        self.current().server
    }

    /// A pub/sub connection to the server in use now (for waiters).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisError> {
        Ok(self.current().client.get_async_pubsub().await?)
    }

    /// After `error` on the server of `generation`: for a Sentinel
    /// connection whose server may have changed, asks the Sentinels again
    /// (once, whoever else hit the same error).
    async fn after_error(&self, generation: u64, error: &redis::RedisError) {
        let Some(route) = &self.shared.sentinel else {
            return;
        };
        if !may_be_a_failover(error) {
            return;
        }
        let _one_at_a_time = self.shared.resolving.lock().await;
        if self.current().generation != generation {
            return; // someone else has already found the new primary
        }
        match route.primary(&self.shared.manager_config).await {
            Ok((client, manager, server)) => {
                let mut current = self
                    .shared
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
            let Current {
                generation,
                mut manager,
                ..
            } = self.current();
            let reply = manager.req_packed_command(cmd).await;
            if let Err(error) = &reply {
                self.after_error(generation, error).await;
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let Current {
                generation,
                mut manager,
                ..
            } = self.current();
            let reply = manager.req_packed_commands(pipeline, offset, count).await;
            if let Err(error) = &reply {
                self.after_error(generation, error).await;
            }
            reply
        })
    }

    fn get_db(&self) -> i64 {
        self.current().manager.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentinel_url_names_the_sentinels_the_service_and_the_password() {
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
