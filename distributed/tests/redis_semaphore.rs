//! The Redis semaphore against real redis-server processes. The scenarios
//! of Redisson's `RedissonPermitExpirableSemaphoreTest` are ported where
//! marked with their Java name; its `testAddPermits` has no counterpart
//! (the count is fixed by the first user, as etcd's `Semaphore` does).

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cpr_distributed::redis::{RedisConfig, RedisError, RedisSemaphore};
use support::cut_after;
use testkit::RedisServer;

async fn shared(name: &str, permits: u32) -> RedisSemaphore {
    let redis = testkit::shared_redis().unwrap();
    RedisSemaphore::connect(&RedisConfig::new(redis.url()), name, permits)
        .await
        .unwrap()
}

/// Six tasks with a connection each take 15 permits each from three: never
/// more than three inside at once, every acquisition done, and every
/// fencing token handed out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_n_holders() {
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (inside, most) = (Arc::clone(&inside), Arc::clone(&most));
        let semaphore = shared("sem-bound", 3).await;
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for _ in 0..15 {
                let permit = semaphore
                    .acquire_timeout(Duration::from_secs(20))
                    .await
                    .unwrap();
                let now = inside.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, SeqCst);
                tokens.push(permit.fencing_token());
                permit.release().await.unwrap();
            }
            tokens
        }));
    }
    let mut tokens = HashSet::new();
    for task in tasks {
        for token in task.await.unwrap() {
            assert!(tokens.insert(token), "token {token} handed out twice");
        }
    }
    assert_eq!(tokens.len(), 90);
    let most = most.load(SeqCst);
    assert!(most <= 3, "{most} holders at once");
    assert_eq!(most, 3, "the three permits were never all in use");
}

/// Redisson: `testTryAcquire`, `testBlockingAcquire` (no permit while all
/// are held, `availablePermits` counts).
#[tokio::test]
async fn try_acquire_takes_only_what_is_free_and_available_permits_counts() {
    let semaphore = shared("sem-try", 2).await;
    assert_eq!(semaphore.available_permits().await.unwrap(), 2);
    let a = semaphore.try_acquire().await.unwrap().unwrap();
    assert_eq!(semaphore.available_permits().await.unwrap(), 1);
    let b = semaphore.try_acquire().await.unwrap().unwrap();
    assert_ne!(a.id(), b.id());
    assert!(b.fencing_token() > a.fencing_token());
    assert!(semaphore.try_acquire().await.unwrap().is_none());
    assert_eq!(semaphore.available_permits().await.unwrap(), 0);
    a.release().await.unwrap();
    let c = semaphore.try_acquire().await.unwrap();
    assert!(c.is_some(), "a released permit was not free again");
    b.release().await.unwrap();
    c.unwrap().release().await.unwrap();
    assert_eq!(semaphore.available_permits().await.unwrap(), 2);
}

/// Redisson: `testExpireTryAcquire`. A permit whose lease ran out is free
/// for the next acquirer, and its holder's release is refused: it learns
/// that its protection had lapsed.
#[tokio::test]
async fn an_expired_permit_is_free_again_and_its_release_is_refused() {
    let semaphore = shared("sem-expiry", 1)
        .await
        .lease(Duration::from_millis(300))
        .unwrap();
    let stale = semaphore.try_acquire().await.unwrap().unwrap();
    assert!(semaphore.try_acquire().await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(stale.is_expired());
    let next = semaphore
        .acquire_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    match stale.release().await {
        Err(RedisError::StalePermit { id, .. }) => assert_ne!(id, next.id()),
        other => panic!("an expired permit's release was {other:?}"),
    }
    // The refused release did not free the new holder's permit.
    assert!(semaphore.try_acquire().await.unwrap().is_none());
    next.release().await.unwrap();
}

/// Redisson's `updateLeaseTime`: extending keeps a permit held past its
/// first lease; extending one that ran out says so.
#[tokio::test]
async fn extend_keeps_a_permit_past_its_first_lease() {
    let semaphore = shared("sem-extend", 1)
        .await
        .lease(Duration::from_millis(300))
        .unwrap();
    let permit = semaphore.try_acquire().await.unwrap().unwrap();
    assert!(permit.extend(Duration::from_secs(10)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        semaphore.try_acquire().await.unwrap().is_none(),
        "the extended permit ran out with its first lease"
    );
    permit.release().await.unwrap();
    let short = semaphore.try_acquire().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!short.extend(Duration::from_secs(10)).await.unwrap());
}

/// Redisson: `testReleaseWithoutPermits`, and `release(permitId)` from
/// another instance. Another process (here another connection) releases a
/// permit by its id; a second release of the same id, or of an id never
/// handed out, is refused.
#[tokio::test]
async fn a_permit_is_released_by_id_once() {
    let ours = shared("sem-by-id", 1).await;
    let theirs = shared("sem-by-id", 1).await;
    let permit = ours.try_acquire().await.unwrap().unwrap();
    let id = permit.id().to_string();
    theirs.release_id(&id).await.unwrap();
    assert!(matches!(
        theirs.release_id(&id).await,
        Err(RedisError::StalePermit { .. })
    ));
    assert!(matches!(
        permit.release().await,
        Err(RedisError::StalePermit { .. })
    ));
    assert!(matches!(
        ours.release_id("no-such-permit").await,
        Err(RedisError::StalePermit { .. })
    ));
    ours.try_acquire()
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
}

/// Redisson: `testTrySetPermits` keeps the first count; here a user who
/// asks for another count is told so instead of silently changing the bound.
#[tokio::test]
async fn a_second_user_with_another_count_is_refused() {
    let three = shared("sem-count", 3).await;
    let permit = three.try_acquire().await.unwrap().unwrap();
    let four = shared("sem-count", 4).await;
    match four.try_acquire().await {
        Err(RedisError::PermitCountMismatch { asked, set, .. }) => {
            assert_eq!((asked, set), (4, 3));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        four.acquire().await,
        Err(RedisError::PermitCountMismatch { .. })
    ));
    permit.release().await.unwrap();
}

#[tokio::test]
async fn bad_configuration_is_refused_with_a_reason() {
    let redis = testkit::shared_redis().unwrap();
    let config = RedisConfig::new(redis.url());
    for (name, permits) in [("", 1), ("sem", 0), ("sem", u32::MAX)] {
        match RedisSemaphore::connect(&config, name, permits).await {
            Err(RedisError::InvalidConfig(why)) => assert!(!why.is_empty()),
            other => panic!("{name:?}, {permits}: {other:?}"),
        }
    }
    let semaphore = shared("sem-config", 1).await;
    assert!(matches!(
        semaphore.lease(Duration::from_millis(1)),
        Err(RedisError::InvalidConfig(_))
    ));
}

/// A holder that drops its permit without releasing gives it back at once
/// (in the background), not after its 30 s lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_permit_is_released() {
    let semaphore = shared("sem-drop", 1).await;
    drop(semaphore.acquire().await.unwrap());
    let next = semaphore.acquire_timeout(Duration::from_secs(2)).await;
    assert!(next.is_ok(), "the dropped permit was kept: {next:?}");
}

/// A waiter blocked in `acquire` gets the permit when the holder releases
/// it, long before the holder's lease would have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gets_the_released_permit() {
    let semaphore = shared("sem-wake", 1).await;
    let held = semaphore.acquire().await.unwrap();
    let waiter = {
        let semaphore = semaphore.clone();
        tokio::spawn(async move { semaphore.acquire().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter got a permit that was held"
    );
    held.release().await.unwrap();
    let permit = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter was not given the released permit")
        .unwrap()
        .unwrap();
    permit.release().await.unwrap();
}

/// Acquires cancelled at random points on a semaphore of one permit with
/// a 30 s lease: an acquire dropped while its script was in flight must
/// give back what it took at once, so the permit is free again within a
/// bound far below the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_never_strands_a_permit() {
    const FREE_WITHIN: Duration = Duration::from_secs(1);
    let semaphore = shared("sem-cancelled", 1).await;
    let (mut cut, mut completed) = (0, 0);
    for round in 0..300 {
        let polls = rand::random_range(1..1_500);
        match cut_after(semaphore.acquire(), polls).await {
            Some(permit) => {
                completed += 1;
                permit.unwrap().release().await.unwrap();
            }
            None => cut += 1,
        }
        let deadline = Instant::now() + FREE_WITHIN;
        let permit = loop {
            if let Some(permit) = semaphore.try_acquire().await.unwrap() {
                break permit;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: a cancelled acquire kept the permit"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        permit.release().await.unwrap();
    }
    assert!(
        cut >= 50 && completed >= 10,
        "cut {cut}, completed {completed}"
    );
}

/// A restart without persistence loses every permit: a holder from before
/// it is refused at release (it learns that its permit is gone), and the
/// fencing tokens handed out after it are above every one from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_the_permits_and_the_tokens_keep_increasing() {
    let server = RedisServer::start().unwrap();
    let semaphore =
        RedisSemaphore::connect(&RedisConfig::new(server.url()), "sem-restart", 1)
            .await
            .unwrap();
    let before = semaphore.try_acquire().await.unwrap().unwrap();
    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        if let Ok(Some(permit)) = semaphore.try_acquire().await {
            break permit;
        }
        assert!(Instant::now() < deadline, "no permit after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        after.fencing_token() > before.fencing_token(),
        "token {} after the restart, {} before",
        after.fencing_token(),
        before.fencing_token()
    );
    assert!(matches!(
        before.release().await,
        Err(RedisError::StalePermit { .. })
    ));
    after.release().await.unwrap();
}

/// Redisson: `testExpire`. A waiter blocked in `acquire` behind a holder
/// that neither releases nor extends gets the permit when the lease runs
/// out, not before (the server judges expiry), and not much later (the
/// waiter sleeps until the first lease ends, not a fixed poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gets_the_permit_when_the_holders_lease_runs_out() {
    const LEASE: Duration = Duration::from_millis(1500);
    let semaphore = shared("sem-expire-wait", 1).await.lease(LEASE).unwrap();
    let stale = semaphore.try_acquire().await.unwrap().unwrap();
    let taken_at = Instant::now();
    let next = semaphore
        .acquire_timeout(Duration::from_secs(10))
        .await
        .unwrap();
    let waited = taken_at.elapsed();
    assert!(
        waited >= LEASE - Duration::from_millis(100),
        "the waiter got the permit {waited:?} into a {LEASE:?} lease"
    );
    assert!(waited < LEASE + Duration::from_secs(2), "waited {waited:?}");
    assert!(matches!(
        stale.release().await,
        Err(RedisError::StalePermit { .. })
    ));
    next.release().await.unwrap();
}

/// Redisson: `testConcurrency_SingleInstance`, `testConcurrencyLoop_MultiInstance`.
/// One permit used as a lock by eight tasks on their own connections: an
/// unsynchronised read-then-write of a counter loses no increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_permit_serialises_a_read_then_write() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let counter = Arc::clone(&counter);
        let semaphore = shared("sem-one", 1).await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let permit = semaphore
                    .acquire_timeout(Duration::from_secs(20))
                    .await
                    .unwrap();
                let value = counter.load(SeqCst);
                tokio::task::yield_now().await;
                counter.store(value + 1, SeqCst);
                permit.release().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(counter.load(SeqCst), 200);
}
