//! The connection under every recipe: one channel per etcd endpoint, each
//! connecting lazily over a [`CoalescingStream`] TCP stream (a request leaves in
//! one write). Requests go to one endpoint at a time and move to the next
//! when it fails, as etcd's Go client did with its pinned endpoint.
//!
//! Why not etcd-client's own channel: it balances over tonic's connections,
//! whose TCP streams cannot be replaced, and keeps sending a share of the
//! requests to a dead member (each fails with `NeverSent` and is
//! repeated, see `retry`). Pinned with failover, only the request that
//! finds the member dead fails over; the next ones go straight to a live
//! member.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::Service;
use tracing::debug;

use crate::etcd::EtcdError;
use crate::etcd::client::frame_coalescing::CoalescingStream;
use crate::etcd::client::retry::NeverSent;
use crate::etcd::client::tls::TlsFiles;

/// gRPC's status code for "unavailable": what a member without a leader,
/// or one that cannot serve for now, answers.
const GRPC_UNAVAILABLE: &str = "14";

/// Checks that `authority` is `host:port` with a port from 1 to 65535, so
/// that a typo is a configuration error at once, not a connection that
/// fails later with a vaguer message.
fn check_host_port(given: &str, authority: &str) -> Result<(), EtcdError> {
    let authority = authority.trim_end_matches('/');
    let invalid = |why: &str| {
        EtcdError::InvalidConfig(format!("{given} is not a host:port: {why}"))
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| invalid("no port (etcd listens on 2379 by default)"))?;
    if host.is_empty() || host.contains('/') {
        return Err(invalid("no host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => {
            Err(invalid(&format!("{port:?} is not a port from 1 to 65535")))
        }
        Ok(_) => Ok(()),
    }
}

/// A channel over `endpoints` (`host:port`, `http://host:port` or, all of
/// them, `https://host:port`) for
/// `etcd_client::Client::from_channel`, starting at a random one so that
/// clients spread over the members. Nothing connects until the first
/// request; each connection attempt may take `connect_timeout`, each
/// request `request_timeout`.
pub(crate) fn channel(
    endpoints: &[String],
    connect_timeout: Duration,
    request_timeout: Duration,
    tls: &TlsFiles,
) -> Result<etcd_client::Channel, EtcdError> {
    let uris = endpoints
        .iter()
        .map(|given| {
            let uri = if given.contains("://") {
                given.clone()
            } else {
                format!("http://{given}")
            };
            let Some((scheme, authority)) = uri.split_once("://") else {
                return Err(EtcdError::InvalidConfig(format!("{given} is not a URL")));
            };
            if scheme != "http" && scheme != "https" {
                return Err(EtcdError::InvalidConfig(format!(
                    "{given}: use http:// or https:// (or host:port for http)"
                )));
            }
            check_host_port(given, authority)?;
            let https = scheme == "https";
            Ok((given, uri, https))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let secure = uris.iter().filter(|(_, _, https)| *https).count();
    if secure != 0 && secure != uris.len() {
        return Err(EtcdError::InvalidConfig(
            "some endpoints are https:// and some are not: a cluster serves one or the other"
                .into(),
        ));
    }
    let tls = if secure > 0 {
        Some(TlsConnector::from(tls.client_config()?))
    } else if !tls.is_empty() {
        return Err(EtcdError::InvalidConfig(
            "a CA or client certificate is set (ETCD_CA_CERT, ETCD_CERT), but no endpoint \
             is https://"
                .into(),
        ));
    } else {
        None
    };
    let channels = uris
        .into_iter()
        .map(|(given, uri, _)| {
            let endpoint = Endpoint::from_shared(uri).map_err(|error| {
                EtcdError::InvalidConfig(format!("{given} is not a host:port: {error}"))
            })?;
            let tls = tls.clone();
            Ok::<_, EtcdError>(
                endpoint
                    .connect_timeout(connect_timeout)
                    .timeout(request_timeout)
                    .connect_with_connector_lazy(tower::service_fn(move |uri| {
                        connect(uri, tls.clone())
                    })),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    if channels.is_empty() {
        return Err(EtcdError::InvalidConfig(
            "no endpoints: give at least one host:port".into(),
        ));
    }
    let first = rand::random_range(0..channels.len());
    let pinned = Pinned {
        channels: channels.into(),
        current: Arc::new(AtomicUsize::new(first)),
        ready: None,
    };
    Ok(etcd_client::Channel::Custom(
        tower::util::BoxCloneSyncService::new(pinned),
    ))
}

/// What a connection runs on: TCP, or TLS over TCP.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Opens the stream of one connection: TCP, then TLS for `https://`.
async fn connect(
    uri: Uri,
    tls: Option<TlsConnector>,
) -> io::Result<TokioIo<CoalescingStream<Box<dyn Transport>>>> {
    let host = uri
        .host()
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}"))
        })?
        .trim_start_matches('[')
        .trim_end_matches(']');
    // Any http:// URI without a port means port 80.
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port)).await.map_err(|error| {
        // `retry` repeats requests that failed this way: they were never sent.
        io::Error::new(error.kind(), NeverSent(error))
    })?;
    // A request must not wait for the ACK of the previous one.
    stream.set_nodelay(true)?;
    let transport: Box<dyn Transport> = match tls {
        Some(tls) => {
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            Box::new(tls.connect(name, stream).await?)
        }
        None => Box::new(stream),
    };
    Ok(TokioIo::new(CoalescingStream::new(transport)))
}

/// Requests go to `channels[current % len]`; a request that fails there
/// moves `current` on (once, however many fail together).
struct Pinned {
    channels: Arc<[Channel]>,
    /// Shared by every clone: the client's gRPC services and their clones.
    current: Arc<AtomicUsize>,
    /// The channel `poll_ready` made ready, with the `current` it was for.
    ready: Option<(usize, Channel)>,
}

impl Clone for Pinned {
    fn clone(&self) -> Self {
        Pinned {
            channels: Arc::clone(&self.channels),
            current: Arc::clone(&self.current),
            // A clone must make its own channel ready.
            ready: None,
        }
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, tower::BoxError>> + Send>>;

impl Service<http::Request<Body>> for Pinned {
    type Response = http::Response<Body>;
    type Error = tower::BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let current = self.current.load(Ordering::Relaxed);
        let ready = match self.ready.take() {
            Some((index, channel)) if index == current => (index, channel),
            _ => (
                current,
                self.channels[current % self.channels.len()].clone(),
            ),
        };
        let (_, channel) = self.ready.insert(ready);
        channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some((index, channel)) = self.ready.as_mut() else {
            return Box::pin(async {
                Err("etcd channel called before it was ready".into())
            });
        };
        let index = *index;
        let response = channel.call(request);
        let current = Arc::clone(&self.current);
        let members = self.channels.len();
        Box::pin(async move {
            let result = response.await;
            let failed = match &result {
                // The connection failed, broke, or the request timed out.
                Err(_) => true,
                // An error answered at once carries its status in the headers.
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .is_some_and(|status| status == GRPC_UNAVAILABLE),
            };
            if failed
                && members > 1
                && current
                    .compare_exchange(
                        index,
                        index + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                debug!(
                    from = index % members,
                    to = (index + 1) % members,
                    "etcd endpoint failed; moving to the next"
                );
            }
            result.map_err(Into::into)
        })
    }
}
