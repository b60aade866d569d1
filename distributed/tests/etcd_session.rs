//! Sessions against a real etcd: the lease outlives its TTL while kept
//! alive, loss is reported, close revokes, drop lets the lease expire.

use std::time::Duration;

use distributed::etcd::etcd_client::PutOptions;
use distributed::etcd::{Client, EtcdConfig, EtcdError, Session};

async fn client() -> Client {
    let etcd = testkit::shared_etcd().unwrap();
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

async fn key_exists(key: &str) -> bool {
    client().await.get(key, None).await.unwrap().count() == 1
}

#[tokio::test]
async fn keep_alive_holds_the_lease_past_its_ttl() {
    let session = Session::new(client().await, Duration::from_secs(2))
        .await
        .unwrap();
    let options = PutOptions::new().with_lease(session.lease_id());
    client()
        .await
        .put("session-kept", "", Some(options))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await; // 2.5 TTLs
    assert!(!session.is_lost());
    assert!(
        key_exists("session-kept").await,
        "the lease expired although kept alive"
    );
}

#[tokio::test]
async fn dropping_the_session_lets_the_lease_expire() {
    let session = Session::new(client().await, Duration::from_secs(1))
        .await
        .unwrap();
    let options = PutOptions::new().with_lease(session.lease_id());
    client()
        .await
        .put("session-dropped", "", Some(options))
        .await
        .unwrap();
    drop(session);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while key_exists("session-dropped").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key outlived the dropped session's TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn close_revokes_at_once_and_loss_is_reported() {
    let session = Session::new(client().await, Duration::from_secs(60))
        .await
        .unwrap();
    let options = PutOptions::new().with_lease(session.lease_id());
    client()
        .await
        .put("session-closed", "", Some(options))
        .await
        .unwrap();
    session.clone().close().await.unwrap();
    assert!(
        !key_exists("session-closed").await,
        "close did not revoke the lease"
    );

    // Loss is noticed at the next renewal, TTL/3 after the last one.
    let other = Session::new(client().await, Duration::from_secs(3))
        .await
        .unwrap();
    client().await.lease_revoke(other.lease_id()).await.unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(5), other.lost())
        .await
        .expect("loss not reported");
    assert!(matches!(lost, EtcdError::SessionLost { .. }));
    assert!(other.is_lost());
}
