//! Sessions against a real etcd: the lease outlives its TTL while kept
//! alive, loss is reported, close revokes, drop lets the lease expire.

use std::time::Duration;

use cpr_distributed::etcd::etcd_client::PutOptions;
use cpr_distributed::etcd::{Client, EtcdConfig, EtcdError, Session};

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

/// Closing a session while it holds a lock: the key goes, and the session,
/// its clones and the guard all report the loss at once; every recipe used
/// with it afterwards says the session was closed (it used to say etcd's
/// "requested lease not found", while `is_lost()` stayed false).
#[tokio::test]
async fn close_marks_the_session_and_its_guards_lost_and_recipes_say_closed() {
    use cpr_distributed::etcd::{DoubleBarrier, Election, Mutex, RwMutex, WorkQueue};
    let session = Session::new(client().await, Duration::from_secs(60))
        .await
        .unwrap();
    let guard = Mutex::new(&session, "session-close-lock")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let key = guard.key().to_string();
    let clone = session.clone();
    session.close().await.unwrap();
    assert!(!key_exists(&key).await, "the lock key is still there");
    assert!(
        clone.is_lost() && clone.is_closed(),
        "the session says it is alive"
    );
    assert!(guard.is_lost(), "the guard says it still holds the lock");
    let closed = |result: Result<(), EtcdError>, what: &str| {
        assert!(
            matches!(result, Err(EtcdError::SessionClosed { .. })),
            "{what}: {result:?}"
        );
    };
    let mutex = Mutex::new(&clone, "session-close-lock-2").unwrap();
    closed(mutex.lock().await.map(drop), "Mutex::lock");
    closed(mutex.try_lock().await.map(drop), "Mutex::try_lock");
    let rw = RwMutex::new(&clone, "session-close-rw").unwrap();
    closed(rw.write_lock().await.map(drop), "RwMutex::write_lock");
    closed(rw.read_lock().await.map(drop), "RwMutex::read_lock");
    let election = Election::new(&clone, "session-close-election").unwrap();
    closed(election.campaign("x").await.map(drop), "Election::campaign");
    let mut barrier = DoubleBarrier::new(&clone, "session-close-barrier", 2).unwrap();
    closed(barrier.enter().await, "DoubleBarrier::enter");
    let queue = WorkQueue::new(&clone, "session-close-wq").unwrap();
    closed(queue.dequeue().await.map(drop), "WorkQueue::dequeue");
    let lost = tokio::time::timeout(Duration::from_secs(1), guard.lost()).await;
    assert!(
        matches!(lost, Ok(EtcdError::SessionClosed { .. })),
        "{lost:?}"
    );
}
