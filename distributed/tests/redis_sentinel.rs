//! The Redis primitives behind Sentinel: a primary, a replica and three
//! Sentinels from testkit. They follow a failover; and the failover shows
//! why a lock on one Redis is not safe: a lock the primary acknowledged,
//! killed before the write reached the replica, is given to a second client
//! once the replica is promoted. The fencing token still refuses the old
//! holder's write.

mod support;

use std::time::{Duration, Instant};

use cpr_distributed::redis::{
    FencedStore, RedisConfig, RedisConnection, RedisError, RedisLock, RedisRateLimiter,
    RedisSemaphore,
};
use cpr_resilience::RateLimiter;
use support::until_ok;
use testkit::RedisSentinels;

const FAILOVER_LIMIT: Duration = Duration::from_secs(40);

async fn connect(group: &RedisSentinels) -> RedisConnection {
    RedisConfig::new(group.url()).connect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primitives_follow_a_failover() {
    let group = RedisSentinels::start().unwrap();
    let conn = connect(&group).await;
    assert_eq!(conn.server(), group.primary().addr().to_string());
    let lock = RedisLock::with_connection(conn.clone(), "sentinel-follow").unwrap();
    let semaphore =
        RedisSemaphore::with_connection(conn.clone(), "sentinel-sem", 2).unwrap();
    let store = FencedStore::new(conn.clone(), "sentinel-store");
    let limiter =
        RedisRateLimiter::new(conn.clone(), "sentinel-rate", 100.0, 10).unwrap();
    let guard = lock.lock().await.unwrap();
    let before = guard.fencing_token();
    assert!(store.write(before, "before").await.unwrap());
    guard.unlock().await.unwrap();
    semaphore.acquire().await.unwrap().release().await.unwrap();
    assert!(limiter.try_acquire_n(1).await.unwrap().is_allowed());

    group.kill_primary().unwrap();
    group.wait_for_failover(FAILOVER_LIMIT).unwrap();

    let guard = until_ok("the lock", async || lock.lock().await).await;
    assert_eq!(
        conn.server(),
        group.replica().addr().to_string(),
        "the connection did not move to the promoted replica"
    );
    assert!(guard.fencing_token() > before);
    assert_eq!(store.read().await.unwrap().as_deref(), Some("before"));
    assert!(store.write(guard.fencing_token(), "after").await.unwrap());
    guard.unlock().await.unwrap();
    let permit = until_ok("the semaphore", async || semaphore.acquire().await).await;
    permit.release().await.unwrap();
    let decision =
        until_ok("the rate limiter", async || limiter.try_acquire_n(1).await).await;
    assert!(decision.is_allowed());
}

/// The failure that motivates the Redlock debate, reproduced: client A
/// holds a lock on the primary; the write never reaches the replica (its
/// link is cut); the primary dies; Sentinel promotes the replica, which has
/// no lock; client B takes the same lock. Two holders, each with a lease
/// that by its own clock has most of its time left. The fencing tokens tell
/// them apart: B's is larger, and a store that checks tokens refuses A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_gives_an_acknowledged_lock_to_a_second_holder_and_fencing_refuses_the_first()
 {
    let group = RedisSentinels::start().unwrap();
    let (conn_a, conn_b) = (connect(&group).await, connect(&group).await);
    let lock_a = RedisLock::with_connection(conn_a.clone(), "sentinel-unsafe")
        .unwrap()
        .ttl(Duration::from_secs(60))
        .unwrap();
    let lock_b = RedisLock::with_connection(conn_b.clone(), "sentinel-unsafe").unwrap();
    // One acquisition replicated everywhere, so that the fencing counter
    // exists on both servers.
    lock_a.lock().await.unwrap().unlock().await.unwrap();
    wait_until_replicated(&conn_a).await;

    group.cut_replication();
    eprintln!("replication to the replica cut");
    let a = lock_a.lock().await.unwrap();
    eprintln!(
        "A holds the lock on {} (fencing token {})",
        conn_a.server(),
        a.fencing_token()
    );
    assert!(
        lock_b.try_lock().await.unwrap().is_none(),
        "B got the lock while A held it on the primary"
    );
    eprintln!("B: try_lock says busy");
    group.kill_primary().unwrap();
    let killed = Instant::now();
    eprintln!("primary killed");
    group.wait_for_failover(FAILOVER_LIMIT).unwrap();
    eprintln!(
        "Sentinels promoted {} after {:.1?}",
        group.replica().addr(),
        killed.elapsed()
    );
    let b = until_ok("B's lock", async || match lock_b.try_lock().await? {
        Some(guard) => Ok(guard),
        None => Err(RedisError::InvalidConfig("busy".into())),
    })
    .await;
    eprintln!(
        "B holds the lock on {} (fencing token {})",
        conn_b.server(),
        b.fencing_token()
    );
    // Two holders at once: A's lease has most of its 60 s left.
    assert!(!a.is_lost(), "A's lease ran out; the test proves nothing");
    eprintln!("A still holds it by its own clock: two holders");
    assert!(
        b.fencing_token() > a.fencing_token(),
        "B's token {} is not above A's {}",
        b.fencing_token(),
        a.fencing_token()
    );
    // The resource checks tokens: B writes, then A's late write is refused.
    let store_b = FencedStore::new(conn_b.clone(), "sentinel-unsafe-store");
    let store_a = FencedStore::new(conn_a.clone(), "sentinel-unsafe-store");
    assert!(store_b.write(b.fencing_token(), "B").await.unwrap());
    let refused = until_ok("A's write", async || {
        store_a.write(a.fencing_token(), "A").await
    })
    .await;
    assert!(!refused, "the old holder's write was accepted");
    eprintln!("the store took B's write and refused A's");
    assert_eq!(store_b.read().await.unwrap().as_deref(), Some("B"));
    // A's release finds B's token, not its own, and deletes nothing.
    assert!(!a.unlock().await.unwrap());
    assert!(
        lock_a.try_lock().await.unwrap().is_none(),
        "A's release freed B's lock"
    );
    b.unlock().await.unwrap();
}

/// What `WAIT 1` after acquiring buys, and what it does not. With the
/// replica's link cut, `WAIT` times out with no replica: the holder can
/// tell that its lock would not survive a failover (it does not undo the
/// write). With the link up, `WAIT` counts the replica, and the lock does
/// survive the primary's death: B cannot take it from the promoted replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_tells_whether_a_lock_reached_the_replica_and_then_it_survives_a_failover()
{
    let group = RedisSentinels::start().unwrap();
    let conn = connect(&group).await;
    let lock = RedisLock::with_connection(conn.clone(), "sentinel-wait")
        .unwrap()
        .ttl(Duration::from_secs(60))
        .unwrap();
    let mut raw = conn.clone();

    group.cut_replication();
    let unsafe_guard = lock.lock().await.unwrap();
    let acknowledged: i64 = cpr_distributed::redis::redis::cmd("WAIT")
        .arg(1)
        .arg(300)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(acknowledged, 0, "a replica acknowledged through a cut link");
    unsafe_guard.unlock().await.unwrap();
    group.heal_replication();
    wait_until_replicated(&conn).await;

    let guard = lock.lock().await.unwrap();
    let acknowledged: i64 = cpr_distributed::redis::redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(acknowledged, 1, "the replica did not acknowledge the lock");
    group.kill_primary().unwrap();
    group.wait_for_failover(FAILOVER_LIMIT).unwrap();
    let other =
        RedisLock::with_connection(connect(&group).await, "sentinel-wait").unwrap();
    assert!(
        other.try_lock().await.unwrap().is_none(),
        "a lock the replica had acknowledged was lost in the failover"
    );
    let left =
        until_ok("the holder's lease", async || guard.remaining_lease().await).await;
    assert!(left.is_some(), "the surviving lock is not the holder's");
    assert!(guard.unlock().await.unwrap());
}

/// Waits until the primary's writes so far have reached the replica.
async fn wait_until_replicated(conn: &RedisConnection) {
    let mut raw = conn.clone();
    let acknowledged: i64 = cpr_distributed::redis::redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(acknowledged, 1, "the replica is not replicating");
}
