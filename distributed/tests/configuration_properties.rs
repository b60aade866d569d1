//! Every constructor and builder of this crate, given values from anywhere
//! in their types' ranges: each returns a value or an error, never panics.
//! Those that need a server use testkit's shared etcd and Redis.

use std::sync::LazyLock;
use std::time::Duration;

use cpr_distributed::etcd::{
    Barrier, Client, DoubleBarrier, Election, EtcdConfig, Mutex, PriorityQueue, Queue,
    RwMutex, Session, StmOptions, WorkQueue,
};
use cpr_distributed::redis::RedisConnection;
use cpr_distributed::redis::{
    RedisConfig, RedisLock, RedisRateLimiter, RedisWindowLimiter,
};
use proptest::prelude::*;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});

/// One etcd client, session, Redis connection and lock for every case.
static SERVERS: LazyLock<(Client, Session, RedisConnection, RedisLock)> =
    LazyLock::new(|| {
        RUNTIME.block_on(async {
            let etcd = testkit::shared_etcd().unwrap();
            let client = EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
            let session = Session::new(client.clone(), Duration::from_secs(30))
                .await
                .unwrap();
            let redis = RedisConfig::new(testkit::shared_redis().unwrap().url());
            let conn = redis.connect().await.unwrap();
            let lock = RedisLock::connect(&redis, "props-lock").await.unwrap();
            (client, session, conn, lock)
        })
    });

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..100, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// Names: empty, slashes, NUL, unicode, long.
fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("/".to_string()),
        Just("a\0b".to_string()),
        Just("props/".to_string()),
        "props-[a-z/]{0,12}",
        "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn etcd_recipes(name in any_name(), count in any::<usize>(), deliveries in any::<i64>()) {
        let (client, session, _, _) = &*SERVERS;
        let _ = Queue::new(client.clone(), &name);
        let _ = PriorityQueue::new(client.clone(), &name);
        let _ = Barrier::new(client.clone(), &name);
        let _ = Barrier::with_session(session, &name);
        let _ = Mutex::new(session, &name);
        let _ = RwMutex::new(session, &name);
        let _ = Election::new(session, &name);
        let _ = DoubleBarrier::new(session, &name, count);
        if let Ok(work) = WorkQueue::new(session, &name) {
            let _ = work.dead_letter_after(deliveries);
        }
    }

    #[test]
    fn etcd_config_session_and_stm(
        endpoint in prop_oneof![Just("127.0.0.1:0".to_string()), "[a-z0-9:/.\\[\\]]{0,24}"],
        connect in any_duration(),
        request in any_duration(),
        ttl in any_duration(),
        bound in any_duration(),
        attempts in any::<usize>(),
    ) {
        let (client, _, _, _) = &*SERVERS;
        RUNTIME.block_on(async {
            // Bounded: a well-formed endpoint where nothing answers times out.
            let config = EtcdConfig::new([endpoint])
                .connect_timeout(connect.min(Duration::from_millis(200)))
                .request_timeout(request)
                .operation_bound(bound);
            let _ = tokio::time::timeout(Duration::from_secs(2), config.connect()).await;
            // Accepted or refused, never a panic; when accepted, it holds.
            if let Ok(bounded) = client.clone().with_operation_bound(bound) {
                assert_eq!(bounded.operation_bound(), bound);
            }
            if let Ok(session) = Session::new(client.clone(), ttl).await {
                let _ = session.close().await;
            }
        });
        let _ = StmOptions::default().max_attempts(attempts).prefetch(["a", "b"]);
    }

    #[test]
    fn redis_lock_and_limiters(
        name in any_name(),
        ttl in any_duration(),
        rate in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), Just(0.0), proptest::num::f64::ANY, 0.001f64..10_000.0],
        burst in any::<u32>(),
        limit in prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>(), 1u32..100],
        window in any_duration(),
        n in any::<u32>(),
    ) {
        let (_, _, conn, lock) = &*SERVERS;
        let _ = lock.clone().ttl(ttl);
        RUNTIME.block_on(async {
            use cpr_resilience::RateLimiter;
            if let Ok(limiter) = RedisRateLimiter::new(conn.clone(), &name, rate, burst) {
                let _ = limiter.try_acquire_n(n).await;
            }
            if let Ok(limiter) = RedisWindowLimiter::new(conn.clone(), &name, limit, window) {
                let _ = limiter.try_acquire_n(n).await;
            }
        });
    }
}
