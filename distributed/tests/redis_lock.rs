//! The Redis lock, fenced store, Redlock and rate limiter against real
//! redis-server processes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cpr_distributed::redis::RedisConnection;
use cpr_distributed::redis::{
    FencedStore, RedisConfig, RedisError, RedisLock, RedisRateLimiter,
    RedisWindowLimiter, Redlock,
};
use cpr_resilience::{Decision, RateLimiter};
use support::cut_after;
use testkit::RedisServer;

async fn shared_lock(name: &str) -> RedisLock {
    let redis = testkit::shared_redis().unwrap();
    RedisLock::connect(&RedisConfig::new(redis.url()), name)
        .await
        .unwrap()
}

async fn shared_conn() -> RedisConnection {
    RedisConfig::new(testkit::shared_redis().unwrap().url())
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time() {
    let holders = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (holders, done) = (Arc::clone(&holders), Arc::clone(&done));
        let lock = shared_lock("redis-exclusion").await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let guard = lock.lock_timeout(Duration::from_secs(20)).await.unwrap();
                assert_eq!(holders.fetch_add(1, SeqCst), 0, "two holders at once");
                tokio::task::yield_now().await;
                holders.fetch_sub(1, SeqCst);
                done.fetch_add(1, SeqCst);
                assert!(guard.unlock().await.unwrap());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(done.load(SeqCst), 100);
}

#[tokio::test]
async fn the_standard_set_nx_pattern_and_ours_exclude_each_other() {
    let redis = testkit::shared_redis().unwrap();
    let lock = shared_lock("redis-interop").await;
    let cli = |args: &[&str]| {
        let output = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &redis.addr().port().to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(
        cli(&["SET", "redis-interop", "other-client", "NX", "PX", "5000"]),
        "OK"
    );
    assert!(
        lock.try_lock().await.unwrap().is_none(),
        "we took a lock redis-cli holds"
    );
    assert_eq!(cli(&["DEL", "redis-interop"]), "1");

    let guard = lock.try_lock().await.unwrap().unwrap();
    assert_eq!(
        cli(&["SET", "redis-interop", "other-client", "NX", "PX", "5000"]),
        "",
        "redis-cli took our lock"
    );
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn a_stale_unlock_never_releases_the_next_holder() {
    let lock = shared_lock("redis-stale")
        .await
        .ttl(Duration::from_millis(100))
        .unwrap();
    let old = lock.lock().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // old's lease ran out
    assert!(old.is_lost());
    let new = lock
        .try_lock()
        .await
        .unwrap()
        .expect("the expired lock is free");
    assert!(
        !old.unlock().await.unwrap(),
        "a stale unlock reported success"
    );
    assert!(
        lock.try_lock().await.unwrap().is_none(),
        "a stale unlock released the new holder"
    );
    assert!(new.fencing_token() > 0);
}

#[tokio::test]
async fn waiters_are_woken_by_the_release_not_by_polling() {
    let lock = shared_lock("redis-wakeup").await;
    for _ in 0..3 {
        let held = lock.lock().await.unwrap();
        let waiter = tokio::spawn({
            let lock = lock.clone();
            async move { lock.lock().await.map(|guard| (guard, Instant::now())) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await; // the waiter subscribes
        let released_at = Instant::now();
        held.unlock().await.unwrap();
        let (guard, acquired_at) = waiter.await.unwrap().unwrap();
        // The fallback check runs every 500 ms; a notified waiter is far quicker.
        assert!(
            acquired_at - released_at < Duration::from_millis(400),
            "{:?}",
            acquired_at - released_at
        );
        guard.unlock().await.unwrap();
    }
}

#[tokio::test]
async fn an_expired_holder_frees_the_lock_without_a_release() {
    let lock = shared_lock("redis-expiry")
        .await
        .ttl(Duration::from_millis(300))
        .unwrap();
    std::mem::forget(lock.lock().await.unwrap()); // a crashed holder: no release, no drop
    let started = Instant::now();
    let next = lock.lock_timeout(Duration::from_secs(3)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    next.unlock().await.unwrap();
}

#[tokio::test]
async fn the_watchdog_keeps_the_lock_and_reports_its_loss() {
    let lock = shared_lock("redis-watchdog")
        .await
        .ttl(Duration::from_millis(600))
        .unwrap()
        .watchdog(true);
    let guard = lock.lock().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await; // more than three TTLs
    assert!(!guard.is_lost());
    assert!(
        lock.try_lock().await.unwrap().is_none(),
        "the watchdog let the lock expire"
    );

    // The lock vanishes behind our back (a failover to a replica that missed it).
    let mut conn = shared_conn().await;
    let _: () = cpr_distributed::redis::redis::cmd("DEL")
        .arg("redis-watchdog")
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("loss not reported");
    assert!(guard.is_lost());
}

#[tokio::test]
async fn fencing_tokens_strictly_increase_and_the_store_refuses_stale_ones() {
    let lock = shared_lock("redis-fencing").await;
    let store = FencedStore::new(shared_conn().await, "redis-fencing-store");
    let mut tokens = Vec::new();
    for i in 0..5 {
        let guard = lock.lock().await.unwrap();
        assert!(
            store
                .write(guard.fencing_token(), &format!("write {i}"))
                .await
                .unwrap()
        );
        tokens.push(guard.fencing_token());
        guard.unlock().await.unwrap();
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert!(!store.write(tokens[0], "stale").await.unwrap());
    assert_eq!(store.read().await.unwrap().as_deref(), Some("write 4"));
}

#[tokio::test]
async fn lock_timeout_gives_up_cleanly() {
    let lock = shared_lock("redis-timeout").await;
    let held = lock.lock().await.unwrap();
    let error = lock
        .lock_timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(error, RedisError::Timeout { .. }), "{error}");
    held.unlock().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let redis = testkit::shared_redis().unwrap();
    let config = RedisConfig::new(redis.url());
    assert!(matches!(
        RedisLock::connect(&config, "").await,
        Err(RedisError::InvalidConfig(_))
    ));
    let lock = RedisLock::connect(&config, "x").await.unwrap();
    assert!(matches!(
        lock.clone().ttl(Duration::ZERO),
        Err(RedisError::InvalidConfig(_))
    ));
    // Not a panic in the watchdog's clock arithmetic later: an error now.
    assert!(matches!(
        lock.ttl(Duration::MAX),
        Err(RedisError::InvalidConfig(_))
    ));
    assert!(matches!(
        Redlock::connect(&[], "x"),
        Err(RedisError::InvalidConfig(_))
    ));
    let conn = shared_conn().await;
    assert!(RedisRateLimiter::new(conn.clone(), "x", 0.0, 1).is_err());
    assert!(RedisRateLimiter::new(conn, "x", 10.0, 0).is_err());
}

#[tokio::test]
async fn a_password_in_the_url_is_used() {
    let server = RedisServer::builder().password("s3cret").start().unwrap();
    let lock = RedisLock::connect(&RedisConfig::new(server.url()), "auth-lock")
        .await
        .unwrap();
    lock.lock().await.unwrap().unlock().await.unwrap();
    let error = RedisLock::connect(
        &RedisConfig::new(server.url_without_password()),
        "auth-lock",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, RedisError::AuthenticationFailed { .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_work_again_after_a_redis_restart() {
    let server = RedisServer::start().unwrap();
    let lock = RedisLock::connect(&RedisConfig::new(server.url()), "restart-lock")
        .await
        .unwrap();
    lock.lock().await.unwrap().unlock().await.unwrap();
    server.restart().unwrap();
    // The connection manager reconnects by itself; the first call may fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lock.try_lock().await {
            Ok(Some(guard)) => {
                guard.unlock().await.unwrap();
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "no lock after the restart: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_acquire_that_lands_later_is_undone() {
    let server = RedisServer::start().unwrap();
    let config =
        RedisConfig::new(server.url()).response_timeout(Duration::from_millis(200));
    let lock = RedisLock::connect(&config, "ambiguous-lock").await.unwrap();
    server.pause().unwrap(); // the SET is sent, but the server answers nothing
    assert!(lock.try_lock().await.is_err());
    server.resume().unwrap(); // ... and now applies it
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = RedisConfig::new(server.url()).connect().await.unwrap();
    loop {
        let exists: i64 = cpr_distributed::redis::redis::cmd("EXISTS")
            .arg("ambiguous-lock")
            .query_async(&mut conn)
            .await
            .unwrap();
        if exists == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a lock whose acquire timed out is still held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lock.lock_timeout(Duration::from_secs(2))
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_survives_one_dead_server_of_three_and_fails_cleanly_with_two() {
    let servers = RedisServer::start_many(3).unwrap();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let redlock = Redlock::connect(&urls, "redlock-test")
        .unwrap()
        .ttl(Duration::from_secs(5))
        .unwrap();
    let guard = redlock.lock().await.unwrap();
    assert!(guard.remaining() > Duration::from_secs(4));
    let other = Redlock::connect(&urls, "redlock-test").unwrap().attempts(1);
    assert!(
        matches!(other.lock().await, Err(RedisError::NoQuorum { .. })),
        "two holders"
    );
    guard.unlock().await;

    servers[0].kill().unwrap();
    let guard = redlock.lock().await.expect("2 of 3 is a majority");
    guard.unlock().await;

    servers[1].kill().unwrap();
    let error = redlock.lock().await.unwrap_err();
    assert!(
        matches!(
            error,
            RedisError::NoQuorum {
                acquired: 1,
                majority: 2,
                ..
            }
        ),
        "{error}"
    );
    // Nothing is left locked on the surviving server.
    let mut conn = RedisConfig::new(servers[2].url()).connect().await.unwrap();
    let exists: i64 = cpr_distributed::redis::redis::cmd("EXISTS")
        .arg("redlock-test")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "a failed Redlock left a partial lock");
}

#[tokio::test]
async fn the_rate_limiter_grants_the_burst_then_the_rate() {
    let limiter =
        RedisRateLimiter::new(shared_conn().await, "limiter-burst", 10.0, 5).unwrap();
    for _ in 0..5 {
        assert_eq!(limiter.try_acquire().await.unwrap(), Decision::Allowed);
    }
    let Decision::Denied { retry_after } = limiter.try_acquire().await.unwrap() else {
        panic!("the sixth permit within the burst window was granted");
    };
    assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}");
    tokio::time::sleep(retry_after).await;
    assert_eq!(limiter.try_acquire().await.unwrap(), Decision::Allowed);
    // More than the burst at once can never be granted.
    assert!(!limiter.try_acquire_n(6).await.unwrap().is_allowed());
}

#[tokio::test]
async fn rediss_with_the_servers_ca_works_and_without_it_fails_clearly() {
    let server = RedisServer::builder()
        .tls()
        .password("tls-pw")
        .start()
        .unwrap();
    assert!(server.url().starts_with("rediss://"));
    let config = RedisConfig::new(server.url())
        .ca_certificate_pem(server.ca_certificate().unwrap());
    let lock = RedisLock::connect(&config, "tls-lock").await.unwrap();
    let guard = lock.lock().await.unwrap();
    assert!(guard.fencing_token() > 0);
    guard.unlock().await.unwrap();

    // Without the CA, the server's certificate is not trusted: an error, not a hang.
    let untrusted =
        RedisConfig::new(server.url()).connect_timeout(Duration::from_secs(3));
    assert!(RedisLock::connect(&untrusted, "tls-lock").await.is_err());
}

#[tokio::test]
async fn dropping_a_guard_releases_the_lock_in_the_background() {
    let lock = shared_lock("redis-drop").await;
    drop(lock.lock().await.unwrap()); // no unlock
    let next = lock.lock_timeout(Duration::from_secs(2)).await;
    assert!(next.is_ok(), "the dropped guard kept the lock: {next:?}");
}

/// Acquires cancelled at random points, hundreds of times, on a free lock
/// with the default 30 s lease: an acquire dropped while its `SET` was in
/// flight must release what it took at once, so the lock is free again
/// within a bound far below the lease. (`lock_timeout` is the same path.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_never_strands_the_lock() {
    const FREE_WITHIN: Duration = Duration::from_secs(1);
    let lock = shared_lock("redis-cancelled-acquire").await;
    let (mut cut, mut completed) = (0, 0);
    for round in 0..400 {
        let polls = rand::random_range(1..1_500);
        let attempt = if round % 2 == 0 {
            cut_after(lock.lock(), polls).await
        } else {
            cut_after(lock.lock_timeout(Duration::from_secs(5)), polls).await
        };
        match attempt {
            Some(guard) => {
                completed += 1;
                assert!(guard.unwrap().unlock().await.unwrap());
            }
            None => cut += 1,
        }
        // Whatever happened, the lock is free again within the bound.
        let deadline = Instant::now() + FREE_WITHIN;
        let guard = loop {
            if let Some(guard) = lock.try_lock().await.unwrap() {
                break guard;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: a cancelled acquire left the lock held by nobody"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(guard.unlock().await.unwrap());
    }
    // Cuts before, during and after the round trip (here about 350 and 50).
    assert!(
        cut >= 100 && completed >= 10,
        "cut {cut}, completed {completed}"
    );
}

/// Redisson's `isLocked` and `remainTimeToLive`, on the lock and the guard.
#[tokio::test]
async fn is_locked_and_the_remaining_lease_follow_the_holder() {
    let lock = shared_lock("redis-is-locked")
        .await
        .ttl(Duration::from_secs(10))
        .unwrap();
    assert!(!lock.is_locked().await.unwrap());
    assert_eq!(lock.remaining_lease().await.unwrap(), None);
    let guard = lock.lock().await.unwrap();
    assert!(lock.is_locked().await.unwrap());
    for left in [
        lock.remaining_lease().await.unwrap().unwrap(),
        guard.remaining_lease().await.unwrap().unwrap(),
    ] {
        assert!(
            left > Duration::from_secs(9) && left <= Duration::from_secs(10),
            "{left:?}"
        );
    }
    // Someone else's lock (the same name, taken after ours expired) is not
    // ours: the guard sees no lease of its own.
    let mut conn = shared_conn().await;
    let _: () = cpr_distributed::redis::redis::cmd("SET")
        .arg("redis-is-locked")
        .arg("someone else")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(guard.remaining_lease().await.unwrap(), None);
    assert_eq!(lock.remaining_lease().await.unwrap(), Some(Duration::MAX));
    assert!(
        !guard.unlock().await.unwrap(),
        "released someone else's lock"
    );
    let _: () = cpr_distributed::redis::redis::cmd("DEL")
        .arg("redis-is-locked")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!lock.is_locked().await.unwrap());
}

/// Not reentrant, on purpose: the holder's second acquire waits like
/// anyone's.
#[tokio::test]
async fn the_lock_is_not_reentrant() {
    let lock = shared_lock("redis-not-reentrant").await;
    let held = lock.lock().await.unwrap();
    assert!(lock.try_lock().await.unwrap().is_none());
    let again = lock.lock_timeout(Duration::from_millis(300)).await;
    assert!(
        matches!(again, Err(RedisError::Timeout { .. })),
        "{again:?}"
    );
    assert!(held.unlock().await.unwrap());
}

/// Asking for more than a limiter can ever grant at once gets the same
/// answer from every implementation, local or on Redis: `Duration::MAX`.
#[tokio::test]
async fn more_than_a_limiter_can_ever_grant_is_never_in_every_implementation() {
    use cpr_resilience::{Gcra, SlidingLog, SlidingWindow};
    let never = Decision::Denied {
        retry_after: Duration::MAX,
    };
    let window = Duration::from_secs(1);
    let conn = shared_conn().await;
    let gcra = RedisRateLimiter::new(conn.clone(), "limit-never-gcra", 5.0, 5).unwrap();
    let log = RedisWindowLimiter::new(conn, "limit-never-log", 5, window).unwrap();
    let answers = [
        (
            "SlidingLog",
            SlidingLog::new(5, window)
                .unwrap()
                .try_acquire_n(6)
                .await
                .unwrap(),
        ),
        (
            "SlidingWindow",
            SlidingWindow::new(5, window)
                .unwrap()
                .try_acquire_n(6)
                .await
                .unwrap(),
        ),
        (
            "Gcra",
            Gcra::new(5, window)
                .unwrap()
                .try_acquire_n(6)
                .await
                .unwrap(),
        ),
        ("RedisRateLimiter", gcra.try_acquire_n(6).await.unwrap()),
        ("RedisWindowLimiter", log.try_acquire_n(6).await.unwrap()),
    ];
    for (limiter, answer) in answers {
        assert_eq!(answer, never, "{limiter}");
    }
    // And asking for exactly the burst is possible: not "never".
    assert!(gcra.try_acquire_n(5).await.unwrap().is_allowed());
    assert!(log.try_acquire_n(5).await.unwrap().is_allowed());
}

/// One grant as a client saw it: the server decided at some instant
/// between `sent` and `received`.
#[derive(Clone, Copy)]
struct Grant {
    sent: Instant,
    received: Instant,
}

/// Four clients ask as fast as they can for `run`; returns every grant.
async fn hammer<L>(limiters: Vec<L>, run: Duration) -> Vec<Grant>
where
    L: RateLimiter + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for limiter in limiters {
        tasks.spawn(async move {
            let mut grants = Vec::new();
            while start.elapsed() < run {
                let sent = Instant::now();
                let decision = limiter.try_acquire().await.unwrap();
                let received = Instant::now();
                match decision {
                    Decision::Allowed => grants.push(Grant { sent, received }),
                    Decision::Denied { retry_after } => {
                        tokio::time::sleep(retry_after.min(Duration::from_millis(5)))
                            .await
                    }
                }
            }
            grants
        });
    }
    let mut all: Vec<Grant> = tasks.join_all().await.into_iter().flatten().collect();
    all.sort_by_key(|g| g.sent);
    all
}

/// The largest number of grants whose server instants must all lie inside
/// one span shorter than `span`, and so were granted within it: grants
/// sent after `first.sent` and received before `first.sent + span`.
fn most_within(grants: &[Grant], span: Duration) -> usize {
    (0..grants.len())
        .map(|i| {
            let end = grants[i].sent + span;
            grants[i..].iter().filter(|g| g.received < end).count()
        })
        .max()
        .unwrap_or(0)
}

/// GCRA across four clients: at most `burst + rate × t` in any span `t`,
/// checked over every span the client timestamps bound; and it is not a
/// per-window limit: right after idling, one second holds about twice the
/// rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcra_on_redis_grants_at_most_burst_plus_rate_times_t() {
    const RATE: f64 = 10.0;
    const BURST: u32 = 10;
    let mut limiters = Vec::new();
    for _ in 0..4 {
        limiters.push(
            RedisRateLimiter::new(shared_conn().await, "limit-gcra-bound", RATE, BURST)
                .unwrap(),
        );
    }
    let grants = hammer(limiters, Duration::from_millis(2_500)).await;
    for (i, first) in grants.iter().enumerate() {
        for (k, last) in grants[i..].iter().enumerate() {
            // Grants i..=i+k were all decided within [first.sent, last.received].
            let span = last
                .received
                .saturating_duration_since(first.sent)
                .as_secs_f64();
            let bound = f64::from(BURST) + RATE * span + 1.0;
            let within = grants[i..]
                .iter()
                .filter(|g| g.received <= last.received)
                .count();
            assert!(
                within as f64 <= bound,
                "{within} grants in {span:.3} s (bound {bound:.1}), from {i}+{k}"
            );
        }
    }
    // Not Redisson's semantics: some one-second span held more than RATE.
    let first_second = most_within(&grants, Duration::from_secs(1));
    assert!(
        first_second > 15,
        "only {first_second} in the busiest second"
    );
    assert!(
        grants.len() >= 30,
        "the quota was not used: {}",
        grants.len()
    );
}

/// The window log across four clients: never more than `limit` in any
/// window, checked over every span the client timestamps bound, and the
/// quota is used, not just refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_log_never_grants_more_than_the_limit_in_any_window() {
    const LIMIT: u32 = 10;
    const WINDOW: Duration = Duration::from_millis(500);
    let mut limiters = Vec::new();
    for _ in 0..4 {
        let conn = shared_conn().await;
        limiters.push(
            RedisWindowLimiter::new(conn, "limit-window-log", LIMIT, WINDOW).unwrap(),
        );
    }
    let grants = hammer(limiters, Duration::from_millis(2_500)).await;
    let busiest = most_within(&grants, WINDOW);
    assert!(
        busiest <= LIMIT as usize,
        "{busiest} grants within one window of {WINDOW:?}"
    );
    assert!(
        grants.len() >= 40,
        "the quota was not used: {}",
        grants.len()
    );
}

/// A holder behind a link that stops forwarding (no reset, no answer): its
/// watchdog must report the loss no later than the key expires, so before
/// another client can take the lock. (Each renewal waited for the client's
/// response timeout, 5 s, and the loss was reported seconds after another
/// client held the lock.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_reports_the_loss_before_another_client_can_take_the_lock() {
    let ttl = Duration::from_secs(1);
    let redis = testkit::shared_redis().unwrap();
    let proxy = testkit::TcpProxy::start(redis.addr()).unwrap();
    let behind_proxy = format!("redis://{}/", proxy.addr());
    let holder =
        RedisLock::connect(&RedisConfig::new(behind_proxy), "redis-watchdog-partition")
            .await
            .unwrap()
            .ttl(ttl)
            .unwrap()
            .watchdog(true);
    let held = holder.lock().await.unwrap();
    // Renewed a few times through the proxy first.
    tokio::time::sleep(ttl * 2).await;
    assert!(!held.is_lost());
    proxy.blackhole();
    let cut = Instant::now();
    let rival = shared_lock("redis-watchdog-partition").await;
    let (lost_at, taken_at) = tokio::join!(
        async {
            tokio::time::timeout(ttl * 4, held.lost())
                .await
                .expect("loss never reported");
            Instant::now()
        },
        async {
            let taken = rival.lock_timeout(ttl * 4).await.unwrap();
            let at = Instant::now();
            taken.unlock().await.unwrap();
            at
        }
    );
    assert!(
        lost_at <= taken_at,
        "lost reported {:?} after the cut, the rival held it at {:?}",
        lost_at - cut,
        taken_at - cut
    );
    assert!(
        lost_at - cut <= ttl,
        "reported {:?} after the cut",
        lost_at - cut
    );
}

/// A Redis without persistence restarts between two holders and loses the
/// fencing counter: the second holder's token must still be higher, or a
/// store that trusts order would take the stale holder's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_keep_increasing_across_a_restart_that_lost_them() {
    let server = RedisServer::start().unwrap();
    let lock = RedisLock::connect(&RedisConfig::new(server.url()), "restart-fencing")
        .await
        .unwrap();
    let mut before = 0;
    for _ in 0..3 {
        let held = lock.lock().await.unwrap();
        before = held.fencing_token();
        held.unlock().await.unwrap();
    }
    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        if let Ok(Some(held)) = lock.try_lock().await {
            let token = held.fencing_token();
            held.unlock().await.unwrap();
            break token;
        }
        assert!(Instant::now() < deadline, "no lock after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        after > before,
        "token {after} after the restart, {before} before"
    );
}
