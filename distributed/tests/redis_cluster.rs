//! The Redis primitives on a Redis Cluster from testkit (three primaries,
//! three replicas), through the `redis` crate's cluster client: a recipe's
//! keys share a slot through a hash tag, and a primary killed is replaced
//! by its replica while the primitives carry on.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cpr_distributed::redis::{
    FencedStore, RedisConfig, RedisConnection, RedisError, RedisLock, RedisRateLimiter,
    RedisSemaphore,
};
use cpr_resilience::RateLimiter;
use support::until_ok;
use testkit::RedisCluster;

async fn connect(cluster: &RedisCluster) -> RedisConnection {
    RedisConfig::new(cluster.url()).connect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primitives_work_on_a_cluster_with_hash_tags_and_refuse_names_without() {
    let cluster = RedisCluster::start().unwrap();
    let conn = connect(&cluster).await;
    for bad in ["orders", "{}orders", "orders}{"] {
        assert!(
            matches!(
                RedisLock::with_connection(conn.clone(), bad),
                Err(RedisError::InvalidConfig(why)) if why.contains("hash tag")
            ),
            "{bad} was accepted"
        );
    }
    assert!(RedisSemaphore::with_connection(conn.clone(), "gpu", 2).is_err());
    assert!(matches!(
        FencedStore::new(conn.clone(), "report").write(1, "x").await,
        Err(RedisError::InvalidConfig(_))
    ));

    // Locks named with different tags live on different primaries.
    let names = [
        "{orders}",
        "{users}",
        "{invoices}",
        "{gpu}",
        "{report}",
        "{a}",
        "{b}",
    ];
    let homes: HashSet<usize> = names
        .iter()
        .filter_map(|n| cluster.primary_for(n))
        .collect();
    assert!(homes.len() >= 2, "every name on one node: {homes:?}");
    for name in names {
        let lock = RedisLock::with_connection(conn.clone(), name).unwrap();
        let guard = lock.lock().await.unwrap();
        let store = FencedStore::new(conn.clone(), &format!("{name}:store"));
        assert!(store.write(guard.fencing_token(), "v").await.unwrap());
        assert!(guard.unlock().await.unwrap());
    }
    let semaphore = RedisSemaphore::with_connection(conn.clone(), "{gpu}", 2).unwrap();
    let (a, b) = (
        semaphore.acquire().await.unwrap(),
        semaphore.acquire().await.unwrap(),
    );
    assert!(semaphore.try_acquire().await.unwrap().is_none());
    a.release().await.unwrap();
    b.release().await.unwrap();
    let limiter = RedisRateLimiter::new(conn, "cluster-rate", 1.0, 3).unwrap();
    let mut granted = 0;
    for _ in 0..5 {
        granted += usize::from(limiter.try_acquire_n(1).await.unwrap().is_allowed());
    }
    assert_eq!(granted, 3, "the burst of 3 was not kept on the cluster");
}

/// Four tasks on their own connections pass a lock around ten times each,
/// the waiters woken by the release published on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let lock =
            RedisLock::with_connection(connect(&cluster).await, "{cluster-excl}")
                .unwrap();
        let inside = Arc::clone(&inside);
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for _ in 0..10 {
                let guard = lock.lock_timeout(Duration::from_secs(20)).await.unwrap();
                assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders at once");
                tokio::time::sleep(Duration::from_millis(1)).await;
                inside.fetch_sub(1, SeqCst);
                tokens.push(guard.fencing_token());
                assert!(guard.unlock().await.unwrap());
            }
            tokens
        }));
    }
    let mut tokens = HashSet::new();
    for task in tasks {
        for token in task.await.unwrap() {
            assert!(tokens.insert(token), "token {token} twice");
        }
    }
    assert_eq!(tokens.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_by_its_replica_and_the_primitives_carry_on() {
    let cluster = RedisCluster::start().unwrap();
    let conn = connect(&cluster).await;
    let lock = RedisLock::with_connection(conn.clone(), "{failover}").unwrap();
    let semaphore =
        RedisSemaphore::with_connection(conn.clone(), "{failover}-sem", 1).unwrap();
    let guard = lock.lock().await.unwrap();
    let before = guard.fencing_token();
    assert!(guard.unlock().await.unwrap());
    semaphore.acquire().await.unwrap().release().await.unwrap();

    let old = cluster.primary_for("{failover}").unwrap();
    cluster.kill(old).unwrap();
    let new = cluster
        .wait_for_failover("{failover}", old, Duration::from_secs(30))
        .unwrap();
    assert_ne!(new, old);

    let guard = until_ok("the lock", async || {
        lock.try_lock()
            .await
            .and_then(|g| g.ok_or_else(|| RedisError::InvalidConfig("busy".into())))
    })
    .await;
    assert!(
        guard.fencing_token() > before,
        "the token went back after the failover"
    );
    assert!(guard.unlock().await.unwrap());
    let permit = until_ok("the semaphore", async || semaphore.acquire().await).await;
    permit.release().await.unwrap();
}
