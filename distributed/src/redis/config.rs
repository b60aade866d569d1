use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{debug, instrument};

use super::RedisError;
use super::connection::{RedisConnection, SentinelRoute, cluster_nodes};
use super::error::is_auth_error;

/// The URL used when `REDIS_URL` is not set: the long-lived Redis of
/// `cargo xtask services up`.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/";

/// Where Redis is. The password, database and TLS (`rediss://`) all come from
/// the URL. A primary behind Redis Sentinel is named by its Sentinels and
/// service: `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`
/// (the password is the data servers'; the Sentinels are asked without one).
/// A Redis Cluster by some of its nodes:
/// `redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...]`.
///
/// Defaults: [`DEFAULT_URL`], 5 s to connect (including a first `PING`),
/// 5 s per response.
#[derive(Clone)]
pub struct RedisConfig {
    url: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    ca_certificate: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &mask_password(&self.url))
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl RedisConfig {
    /// This URL, other settings at their defaults.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            ca_certificate: None,
        }
    }

    /// Reads `REDIS_URL`, defaulting to [`DEFAULT_URL`], and for `rediss://`
    /// servers with a private CA, `REDIS_CA_CERT` (a PEM file's path).
    pub fn from_env() -> Result<Self, RedisError> {
        let config = RedisConfig::new(
            std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_string()),
        );
        match std::env::var_os("REDIS_CA_CERT") {
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|e| {
                    RedisError::InvalidConfig(format!(
                        "cannot read REDIS_CA_CERT {}: {e}",
                        path.to_string_lossy()
                    ))
                })?;
                Ok(config.ca_certificate_pem(pem))
            }
            None => Ok(config),
        }
    }

    /// Trusts this CA (PEM) for `rediss://` instead of the system's roots.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificate = Some(pem.into());
        self
    }

    /// How long connecting (and the first `PING`) may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long each response may take. Default 5 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The URL with any password replaced by `***`, for messages.
    pub fn display_url(&self) -> String {
        mask_password(&self.url)
    }

    /// A `redis::Client` for this URL; fails with [`RedisError::BadUrl`],
    /// also for a Sentinel URL, which names no single server (use
    /// [`connect`](Self::connect)).
    pub fn client(&self) -> Result<redis::Client, RedisError> {
        if self.url.starts_with("redis+sentinel://")
            || self.url.starts_with("redis+cluster://")
        {
            return Err(RedisError::BadUrl {
                url: self.display_url(),
                reason: "a Sentinel or Cluster URL names no single server; connect() finds them"
                    .into(),
            });
        }
        // rustls needs a process-wide crypto provider for rediss://;
        // installing it twice is harmless (the second call is refused).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match &self.ca_certificate {
            Some(pem) => redis::Client::build_with_tls(
                self.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(self.url.as_str()),
        };
        client.map_err(|error| RedisError::BadUrl {
            url: self.display_url(),
            reason: error.to_string(),
        })
    }

    /// Connects and proves the connection with a `PING` (for a Sentinel URL:
    /// finds the primary and checks its role), all within the connect
    /// timeout. The returned connection reconnects by itself later, and
    /// through Sentinel follows a failover.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the half-made connection.
    #[instrument(level = "debug", skip(self), fields(url = %self.display_url()))]
    pub async fn connect(&self) -> Result<RedisConnection, RedisError> {
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(RedisError::InvalidConfig(
                "timeouts must be greater than zero".into(),
            ));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(2);
        if let Some(route) = SentinelRoute::parse(&self.url) {
            let route = route.map_err(|reason| RedisError::BadUrl {
                url: self.display_url(),
                reason,
            })?;
            return match tokio::time::timeout(
                self.connect_timeout,
                RedisConnection::through_sentinel(route, config),
            )
            .await
            {
                Ok(connected) => connected,
                Err(_elapsed) => Err(self.unreachable()),
            };
        }
        if let Some(nodes) = cluster_nodes(&self.url) {
            let nodes = nodes.map_err(|reason| RedisError::BadUrl {
                url: self.display_url(),
                reason,
            })?;
            let client = redis::cluster::ClusterClient::builder(nodes.clone())
                .connection_timeout(self.connect_timeout)
                .response_timeout(self.response_timeout)
                .build()
                .map_err(|error| RedisError::BadUrl {
                    url: self.display_url(),
                    reason: error.to_string(),
                })?;
            let attempt = async {
                let mut conn = client.get_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await?;
                Ok::<_, redis::RedisError>(conn)
            };
            let conn = self.within_connect_timeout(attempt).await?;
            return Ok(RedisConnection::to_cluster(conn, nodes));
        }
        let client = self.client()?;
        let server = client.get_connection_info().addr().to_string();
        let attempt = async {
            let mut manager =
                ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await?;
            redis::cmd("PING")
                .query_async::<String>(&mut manager)
                .await?;
            Ok::<_, redis::RedisError>(manager)
        };
        let manager = self.within_connect_timeout(attempt).await?;
        debug!("connected to redis");
        Ok(RedisConnection::to_server(client, manager, server, config))
    }

    /// Runs a connection `attempt` within the connect timeout, and says what
    /// went wrong as a user can act on it: a refused password, no answer, or
    /// the server's own error.
    async fn within_connect_timeout<T>(
        &self,
        attempt: impl Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(connected)) => Ok(connected),
            Ok(Err(error)) if is_auth_error(&error) => {
                Err(RedisError::AuthenticationFailed {
                    url: self.display_url(),
                    detail: error.to_string(),
                })
            }
            Ok(Err(error)) if error.is_io_error() || error.is_timeout() => {
                Err(self.unreachable())
            }
            Ok(Err(error)) => Err(RedisError::Client(error)),
            Err(_elapsed) => Err(self.unreachable()),
        }
    }

    fn unreachable(&self) -> RedisError {
        RedisError::Unreachable {
            url: self.display_url(),
            waited: self.connect_timeout,
        }
    }
}

/// `redis://user:secret@host/` becomes `redis://user:***@host/`.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_password("redis://:pw@h:1/"), "redis://:***@h:1/");
        assert_eq!(mask_password("rediss://u:pw@h:1/0"), "rediss://u:***@h:1/0");
        assert_eq!(mask_password("redis://h:1/"), "redis://h:1/");
    }

    #[test]
    fn a_bad_url_is_a_clear_error() {
        let error = RedisConfig::new("http://nope").client().unwrap_err();
        assert!(matches!(error, RedisError::BadUrl { .. }), "{error}");
        assert!(error.to_string().contains("redis://"), "{error}");
    }
}
