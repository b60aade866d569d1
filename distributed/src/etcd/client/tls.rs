//! TLS for `https://` endpoints: the CA to trust (`ETCD_CA_CERT`, else the
//! system's roots) and, for mutual TLS, a client certificate and key
//! (`ETCD_CERT`, `ETCD_KEY`). The TLS stream sits under the frame
//! coalescing, so a request's frames still leave in one TLS record.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, RootCertStore};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::etcd::EtcdError;

/// Where the TLS files are; paths as given.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFiles {
    /// The CA certificate(s) to trust, PEM (`ETCD_CA_CERT`).
    pub(crate) ca_cert: Option<PathBuf>,
    /// A client certificate chain and its key, PEM (`ETCD_CERT`, `ETCD_KEY`).
    pub(crate) client: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    pub(crate) fn is_empty(&self) -> bool {
        self.ca_cert.is_none() && self.client.is_none()
    }

    /// The client configuration: these roots (or the system's), this
    /// client certificate (if any), HTTP/2 announced by ALPN as gRPC needs.
    pub(crate) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, EtcdError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_cert {
            Some(path) => {
                for cert in read_certificates(path, "ETCD_CA_CERT")? {
                    roots.add(cert).map_err(|e| {
                        bad_file(
                            "ETCD_CA_CERT",
                            path,
                            &format!("not a CA certificate: {e}"),
                        )
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    return Err(EtcdError::InvalidConfig(
                        "no CA certificates found on this system: set ETCD_CA_CERT to the \
                         CA that signed etcd's certificate"
                            .into(),
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EtcdError::InvalidConfig(format!("TLS setup: {e}")))?
            .with_root_certificates(roots);
        let mut config = match &self.client {
            Some((cert, key)) => {
                let chain = read_certificates(cert, "ETCD_CERT")?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    bad_file("ETCD_KEY", key, &format!("no private key in it ({e})"))
                })?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    bad_file(
                        "ETCD_KEY",
                        key,
                        &format!("does not match ETCD_CERT ({e})"),
                    )
                })?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

fn read_certificates(
    path: &Path,
    variable: &str,
) -> Result<Vec<CertificateDer<'static>>, EtcdError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad_file(variable, path, &e.to_string()))?;
    if certs.is_empty() {
        return Err(bad_file(variable, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn bad_file(variable: &str, path: &Path, why: &str) -> EtcdError {
    EtcdError::InvalidConfig(format!("{variable} {}: {why}", path.display()))
}

/// Opens a TLS connection to `host:port` as a diagnosis, after a first
/// request failed with the connection broken: returns the TLS error the
/// server's side shows — a failed handshake, or the alert a server sends
/// after it when it wanted a client certificate (TLS 1.3 sends that only
/// once the client has finished, so the request itself saw a broken pipe).
pub(crate) async fn probe(
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
    limit: Duration,
) -> Option<rustls::Error> {
    let attempt = async {
        let stream = TcpStream::connect((host, port)).await.ok()?;
        let name = ServerName::try_from(host.to_string()).ok()?;
        let mut tls = match TlsConnector::from(config).connect(name, stream).await {
            Ok(tls) => tls,
            Err(error) => return rustls_cause(&error),
        };
        let mut byte = [0u8; 1];
        match tls.read(&mut byte).await {
            Err(error) => rustls_cause(&error),
            Ok(_) => None,
        }
    };
    tokio::time::timeout(limit, attempt).await.ok().flatten()
}

/// A client configuration that trusts nobody: enough to learn whether a
/// server speaks TLS at all (its certificate is then "unknown issuer").
pub(crate) fn trusting_nobody() -> Result<Arc<rustls::ClientConfig>, EtcdError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EtcdError::InvalidConfig(format!("TLS setup: {e}")))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether a probe's error shows a server that speaks TLS.
pub(crate) fn speaks_tls(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_)
    )
}

fn rustls_cause(error: &std::io::Error) -> Option<rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>().cloned()
}

/// What to tell the user when a TLS handshake failed with `error`.
pub(crate) fn explain(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!(
            "etcd's certificate is not signed by a CA we trust ({error}): set ETCD_CA_CERT \
             to the CA certificate that signed it"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "etcd's certificate is not for the host in the endpoint ({error}): use the name \
             or address the certificate was made for"
        ),
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::HandshakeFailure,
        ) => format!(
            "etcd refused the connection ({error}): it wants a client certificate it trusts; \
             set ETCD_CERT and ETCD_KEY"
        ),
        other => format!("TLS failed: {other}"),
    }
}
