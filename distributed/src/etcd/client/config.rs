use std::path::PathBuf;
use std::time::Duration;

use crate::etcd::client::{Client, OPERATION_BOUND, check_operation_bound};
use etcd_client::ConnectOptions;
use tracing::{debug, instrument};

use crate::etcd::EtcdError;
use crate::etcd::client::failover;
use crate::etcd::client::retry::{NeverSent, find_cause};
use crate::etcd::client::tls::{self, TlsFiles};

/// The endpoint used when `ETCD_ENDPOINTS` is not set: the long-lived etcd of
/// `cargo xtask services up`.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";

/// Where etcd is and how to log in.
///
/// Defaults: endpoint [`DEFAULT_ENDPOINT`], no credentials, 5 s to connect
/// (including the first request, so a dead endpoint fails in bounded time),
/// 10 s per request thereafter, 15 s for each recipe operation with its
/// retries ([`OPERATION_BOUND`]).
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use std::time::Duration;
/// use cpr_distributed::etcd::EtcdConfig;
///
/// // ETCD_ENDPOINTS=10.0.0.1:2379,10.0.0.2:2379 and ETCD_USER/ETCD_PASSWORD
/// let client = EtcdConfig::from_env()?
///     .operation_bound(Duration::from_secs(5))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdConfig {
    endpoints: Vec<String>,
    credentials: Option<(String, String)>,
    connect_timeout: Duration,
    request_timeout: Duration,
    operation_bound: Duration,
    tls: TlsFiles,
}

impl std::fmt::Debug for EtcdConfig {
    // Written by hand so that a password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("operation_bound", &self.operation_bound)
            .field("ca_cert", &self.tls.ca_cert)
            .field(
                "client_cert",
                &self.tls.client.as_ref().map(|(cert, _)| cert),
            )
            .finish()
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec![DEFAULT_ENDPOINT.to_string()],
            credentials: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            operation_bound: OPERATION_BOUND,
            tls: TlsFiles::default(),
        }
    }
}

impl EtcdConfig {
    /// The given endpoints (`host:port` or `http://host:port`), other settings
    /// at their defaults.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdConfig::default()
        }
    }

    /// Reads `ETCD_ENDPOINTS` (comma-separated; default [`DEFAULT_ENDPOINT`]),
    /// `ETCD_USER` / `ETCD_PASSWORD` (both or neither), and for `https://`
    /// endpoints `ETCD_CA_CERT` (the CA to trust; default the system's) and
    /// `ETCD_CERT` / `ETCD_KEY` (a client certificate; both or neither).
    pub fn from_env() -> Result<Self, EtcdError> {
        let mut config = match std::env::var("ETCD_ENDPOINTS") {
            Ok(list) => EtcdConfig::new(split_endpoints(&list)),
            Err(_) => EtcdConfig::default(),
        };
        match (std::env::var("ETCD_USER"), std::env::var("ETCD_PASSWORD")) {
            (Ok(user), Ok(password)) => config = config.credentials(user, password),
            (Err(_), Err(_)) => {}
            _ => {
                return Err(EtcdError::InvalidConfig(
                    "set both ETCD_USER and ETCD_PASSWORD, or neither".into(),
                ));
            }
        }
        if let Some(ca) = std::env::var_os("ETCD_CA_CERT") {
            config = config.ca_cert(ca);
        }
        match (std::env::var_os("ETCD_CERT"), std::env::var_os("ETCD_KEY")) {
            (Some(cert), Some(key)) => config = config.client_cert(cert, key),
            (None, None) => {}
            _ => {
                return Err(EtcdError::InvalidConfig(
                    "set both ETCD_CERT and ETCD_KEY (a client certificate and its key), or \
                     neither"
                        .into(),
                ));
            }
        }
        Ok(config)
    }

    /// Replaces the endpoints with a comma-separated list, as in `--addr`.
    pub fn endpoints_from_list(mut self, list: &str) -> Self {
        self.endpoints = split_endpoints(list);
        self
    }

    /// Logs in with this user and password.
    pub fn credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// How long connecting (and the first request) may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long each later request may take. Default 10 s. A request that
    /// finds a hung member fails after this and moves the client on to the
    /// next member, where a recipe's retry succeeds.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long one recipe operation (a lock, an enqueue, a dequeue's read
    /// and take) keeps retrying requests that fail or hang. Default
    /// [`OPERATION_BOUND`] (15 s); more than zero, at most
    /// [`MAX_OPERATION_BOUND`](crate::etcd::MAX_OPERATION_BOUND).
    ///
    /// Against a hung or partitioned etcd, every call fails within this
    /// with [`EtcdError::TimedOut`], whatever the request timeout. Calls
    /// that wait for others (a lock's turn, a dequeue on an empty queue)
    /// wait as long as they are left to; the bound covers their requests.
    pub fn operation_bound(mut self, bound: Duration) -> Self {
        self.operation_bound = bound;
        self
    }

    /// Trusts the CA certificate(s) in this PEM file for `https://`
    /// endpoints, instead of the system's roots (`ETCD_CA_CERT`).
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_cert = Some(path.into());
        self
    }

    /// Shows this client certificate (PEM chain) and key (PEM) to servers
    /// that ask for one: mutual TLS (`ETCD_CERT`, `ETCD_KEY`).
    pub fn client_cert(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.tls.client = Some((cert.into(), key.into()));
        self
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn validate(&self) -> Result<(), EtcdError> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::InvalidConfig(
                "no endpoints: give at least one host:port".into(),
            ));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(EtcdError::InvalidConfig(
                "timeouts must be greater than zero".into(),
            ));
        }
        check_operation_bound(self.operation_bound)?;
        if let Some((user, _)) = &self.credentials
            && user.is_empty()
        {
            return Err(EtcdError::InvalidConfig("the user name is empty".into()));
        }
        Ok(())
    }

    /// Connects and proves the connection with one request, all within the
    /// connect timeout. Requests go to one endpoint and move to the next
    /// when it fails; the first endpoint is chosen at random, so clients
    /// spread over the members.
    ///
    /// The client is built on a channel of this crate's (see the book's
    /// locks chapter, "The connection"), so `Client::add_endpoint` and
    /// `remove_endpoint` are not available on it: make a new config instead.
    ///
    /// Errors: [`EtcdError::Unreachable`] when no endpoint answers in time,
    /// [`EtcdError::Refused`] when every endpoint failed at once (nothing
    /// listens there), [`EtcdError::NotEtcd`] when the server there does not
    /// speak etcd's gRPC,
    /// [`EtcdError::AuthenticationFailed`] for wrong credentials,
    /// [`EtcdError::Tls`] when the TLS handshake fails (its reason names the
    /// setting to fix), [`EtcdError::InvalidConfig`] for an endpoint that is
    /// not `host:port`, `http://host:port` or `https://host:port`, or a TLS
    /// file that cannot be read.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the half-made connection;
    /// nothing is left behind on the server.
    #[instrument(level = "debug", skip(self), fields(endpoints = ?self.endpoints))]
    pub async fn connect(&self) -> Result<Client, EtcdError> {
        self.validate()?;
        let channel = failover::channel(
            &self.endpoints,
            self.connect_timeout,
            self.request_timeout,
            &self.tls,
        )?;
        let mut options = ConnectOptions::new();
        if let Some((user, password)) = &self.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        let user = self.credentials.as_ref().map(|(user, _)| user.as_str());
        // The channel connects lazily, so a dead endpoint would only show on
        // the first request; `status` is that request. A failed one has
        // moved the channel to the next endpoint: each gets its chance, all
        // within the timeout.
        let attempt = async {
            let mut chances = self.endpoints.len();
            loop {
                chances -= 1;
                let result = async {
                    let mut client = etcd_client::Client::from_channel(
                        channel.clone(),
                        Some(options.clone()),
                    )
                    .await?;
                    client.status().await?;
                    Ok::<_, etcd_client::Error>(client)
                }
                .await;
                match result {
                    Err(error) if chances > 0 && is_unreachable(&error) => {
                        debug!(%error, "etcd endpoint did not answer; trying the next");
                    }
                    other => break other,
                }
            }
        };
        let endpoints = self.endpoints.join(",");
        let outcome = tokio::time::timeout(self.connect_timeout, attempt).await;
        if let Ok(Err(error)) = &outcome
            && broke_at_once(error)
            && let Some(reason) = self.tls_mismatch().await
        {
            return Err(EtcdError::Tls { endpoints, reason });
        }
        match outcome {
            Ok(Ok(client)) => {
                debug!("connected to etcd");
                Client::from(client).with_operation_bound(self.operation_bound)
            }
            // Failed before the timeout: say why, and claim no waiting.
            Ok(Err(error)) if find_cause::<rustls::Error>(&error).is_some() => {
                Err(EtcdError::Tls {
                    endpoints,
                    reason: find_cause::<rustls::Error>(&error)
                        .map(tls::explain)
                        .unwrap_or_default(),
                })
            }
            Ok(Err(error)) if is_unreachable(&error) => Err(EtcdError::Refused {
                endpoints,
                reason: short_reason(&error),
            }),
            Ok(Err(error)) if speaks_no_grpc(&error) => Err(EtcdError::NotEtcd {
                endpoints,
                reason: short_reason(&error),
            }),
            Ok(Err(error)) => Err(EtcdError::from_client(error, user)),
            Err(_elapsed) => Err(EtcdError::Unreachable {
                endpoints,
                waited: self.connect_timeout,
            }),
        }
    }
}

impl EtcdConfig {
    /// After a connection that broke at once: whether TLS is why — a
    /// plain `http://` endpoint whose server speaks TLS, or a TLS server
    /// that wants a client certificate we did not show. Asks the first
    /// endpoint's server with a TLS handshake of its own.
    async fn tls_mismatch(&self) -> Option<String> {
        let first = self.endpoints.first()?;
        let (https, authority) = match first.split_once("://") {
            Some((scheme, rest)) => (scheme == "https", rest),
            None => (false, first.as_str()),
        };
        let (host, port) = authority.trim_end_matches('/').rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse().ok()?;
        let limit = self.connect_timeout.min(Duration::from_secs(1));
        if https {
            let config = self.tls.client_config().ok()?;
            let error = tls::probe(host, port, config, limit).await?;
            Some(tls::explain(&error))
        } else {
            let error =
                tls::probe(host, port, tls::trusting_nobody().ok()?, limit).await?;
            tls::speaks_tls(&error).then(|| {
                "the server speaks TLS: write its endpoints as https:// (and set ETCD_CA_CERT \
                 to the CA that signed its certificate)"
                    .to_string()
            })
        }
    }
}

/// Whether a connection was made and then broke under the first request
/// (reset, broken pipe, closed, garbled), rather than never being made.
/// What breaks it may be TLS on one side only; how it shows (a broken
/// pipe, or the server's alert as text) depends on timing.
fn broke_at_once(error: &etcd_client::Error) -> bool {
    find_cause::<NeverSent>(error).is_none()
        && find_cause::<std::io::Error>(error).is_some()
}

/// What went wrong, in the words a person needs, such as "tcp connect
/// error: Connection refused (os error 111)": the gRPC status's message,
/// without the layers around it.
fn short_reason(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => status.message().to_string(),
        other => other.to_string(),
    }
}

/// Whether the server answered, but not in HTTP/2 gRPC: another kind of
/// server (Redis, a web server) at that port.
fn speaks_no_grpc(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Internal
                && status.message().contains("h2 protocol error")
        }
        _ => false,
    }
}

/// Whether `error` says the endpoint could not be reached or served
/// nothing (rather than refusing the request).
fn is_unreachable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable
        }
        _ => false,
    }
}

fn split_endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_list_is_split_and_trimmed() {
        let config = EtcdConfig::default().endpoints_from_list(" a:1, b:2,,c:3 ");
        assert_eq!(config.endpoints(), ["a:1", "b:2", "c:3"]);
    }

    #[tokio::test]
    async fn a_bad_setting_is_rejected_before_any_io() {
        let missing = std::env::temp_dir().join("cpr-no-such-ca.pem");
        for (config, says) in [
            (EtcdConfig::new(Vec::<String>::new()), "no endpoints"),
            (
                EtcdConfig::default().connect_timeout(Duration::ZERO),
                "greater than zero",
            ),
            (
                EtcdConfig::new(["ftp://127.0.0.1:2379"]),
                "http:// or https://",
            ),
            (EtcdConfig::new(["127.0.0.1:2379 extra"]), "not a host:port"),
            (
                EtcdConfig::new(["https://127.0.0.1:2379", "127.0.0.1:2380"]),
                "some endpoints are https://",
            ),
            (
                EtcdConfig::new(["127.0.0.1:2379"]).ca_cert(&missing),
                "no endpoint is https://",
            ),
            (
                EtcdConfig::new(["https://127.0.0.1:2379"]).ca_cert(&missing),
                "ETCD_CA_CERT",
            ),
        ] {
            let error = config.connect().await.err().unwrap();
            assert!(matches!(error, EtcdError::InvalidConfig(_)), "{error}");
            assert!(error.to_string().contains(says), "{config:?}: {error}");
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let config = EtcdConfig::default().credentials("root", "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
