//! etcd over TLS and mutual TLS, through this crate's own channel: the
//! recipes work, and each misconfiguration is a clear error that names
//! the setting to fix, in bounded time.

use std::time::{Duration, Instant};

use cpr_distributed::etcd::{EtcdConfig, EtcdError, Mutex, Queue, Session};
use testkit::EtcdCluster;

/// A wrong setting must fail at once, not after a timeout.
const PROMPTLY: Duration = Duration::from_secs(4);

async fn connect_error(config: EtcdConfig) -> EtcdError {
    let started = Instant::now();
    let error = config.connect().await.expect_err("connected");
    assert!(
        started.elapsed() < PROMPTLY,
        "took {:?}: {error}",
        started.elapsed()
    );
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipes_work_over_mutual_tls() {
    let etcd = EtcdCluster::builder().mutual_tls().start().unwrap();
    let certs = etcd.certificates().unwrap();
    let client = EtcdConfig::new(etcd.endpoints())
        .ca_cert(&certs.ca_cert)
        .client_cert(&certs.client_cert, &certs.client_key)
        .connect()
        .await
        .unwrap();
    let queue = Queue::new(client.clone(), "tls-queue").unwrap();
    for item in ["a", "b", "c"] {
        queue.enqueue(item).await.unwrap();
    }
    let mut taken = Vec::new();
    while let Some(item) = queue.try_dequeue().await.unwrap() {
        taken.push(String::from_utf8(item).unwrap());
    }
    assert_eq!(taken, ["a", "b", "c"]);
    let (first, second) = (
        Session::new(client.clone(), Duration::from_secs(5))
            .await
            .unwrap(),
        Session::new(client, Duration::from_secs(5)).await.unwrap(),
    );
    let held = Mutex::new(&first, "tls-lock")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let other = Mutex::new(&second, "tls-lock").unwrap();
    assert!(other.try_lock().await.unwrap().is_none(), "two holders");
    held.unlock().await.unwrap();
    let guard = other.try_lock().await.unwrap().expect("free after unlock");
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn a_wrong_ca_names_etcd_ca_cert() {
    let etcd = EtcdCluster::builder().tls().start().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let stranger = testkit::make_certificates(elsewhere.path()).unwrap();
    let error =
        connect_error(EtcdConfig::new(etcd.endpoints()).ca_cert(&stranger.ca_cert))
            .await;
    assert!(matches!(error, EtcdError::Tls { .. }), "{error}");
    assert!(error.to_string().contains("ETCD_CA_CERT"), "{error}");
    // With the right CA, the same server is fine.
    let certs = etcd.certificates().unwrap();
    EtcdConfig::new(etcd.endpoints())
        .ca_cert(&certs.ca_cert)
        .connect()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_client_certificate_names_etcd_cert_and_etcd_key() {
    let etcd = EtcdCluster::builder().mutual_tls().start().unwrap();
    let certs = etcd.certificates().unwrap();
    let error =
        connect_error(EtcdConfig::new(etcd.endpoints()).ca_cert(&certs.ca_cert)).await;
    let text = error.to_string();
    assert!(matches!(error, EtcdError::Tls { .. }), "{error}");
    assert!(
        text.contains("ETCD_CERT") && text.contains("ETCD_KEY"),
        "{error}"
    );
}

#[tokio::test]
async fn http_to_a_tls_server_is_a_clear_error_not_a_hang() {
    let etcd = EtcdCluster::builder().tls().start().unwrap();
    let plain: Vec<String> = etcd
        .client_addrs()
        .iter()
        .map(|addr| format!("http://{addr}"))
        .collect();
    let error = connect_error(EtcdConfig::new(plain)).await;
    assert!(error.to_string().contains("https://"), "{error}");
}
