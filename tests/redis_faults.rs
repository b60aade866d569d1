//! Redis locks and limits across processes: a holder paused past its lease
//! is refused by the fenced store, and four processes share one rate.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use concurrency_patterns::distributed::redis::{FencedStore, RedisConfig, RedisLock};
use support::{Proc, example_binary};
use testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holders_late_write_is_refused_by_the_fenced_store() {
    let redis = RedisServer::start().unwrap();
    let mut holder = Proc::spawn(
        Command::new(example_binary("redis-lock"))
            .args([
                "--url",
                &redis.url(),
                "--name",
                "paused",
                "--ttl-ms",
                "1000",
            ])
            .env_remove("REDIS_URL"),
    );
    holder.expect_line("ready", Duration::from_secs(10));
    holder.send("lock");
    holder.expect_line("locked", Duration::from_secs(10));
    holder.send("write early");
    holder.expect_line("write accepted: early", Duration::from_secs(10));

    holder.signal(libc::SIGSTOP); // frozen past its 1 s lease
    let config = RedisConfig::new(redis.url());
    let lock = RedisLock::connect(&config, "paused").await.unwrap();
    let guard = lock
        .lock_timeout(Duration::from_secs(5))
        .await
        .expect("the paused holder's lease never ran out");
    let store = FencedStore::new(config.connect().await.unwrap(), "paused-store");
    assert!(
        store
            .write(guard.fencing_token(), "new holder")
            .await
            .unwrap()
    );

    holder.signal(libc::SIGCONT); // it wakes up believing it holds the lock
    holder.send("write late");
    holder.expect_line("write rejected", Duration::from_secs(10));
    assert_eq!(store.read().await.unwrap().as_deref(), Some("new holder"));
    guard.unlock().await.unwrap();
}

#[test]
fn four_processes_share_one_rate() {
    const RATE: f64 = 100.0;
    const BURST: f64 = 10.0;
    let redis = RedisServer::start().unwrap();
    let started = Instant::now();
    let mut processes: Vec<Proc> = (0..4)
        .map(|_| {
            Proc::spawn(Command::new(example_binary("redis-rate-limit")).args([
                "--url",
                &redis.url(),
                "--name",
                "shared-quota",
                "--rate",
                "100",
                "--burst",
                "10",
                "--hammer-seconds",
                "2",
            ]))
        })
        .collect();
    let mut allowed = 0.0;
    for process in &mut processes {
        let line = process.expect_line("allowed", Duration::from_secs(30));
        allowed += line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap();
        assert!(
            process
                .wait_exit(Duration::from_secs(10))
                .is_some_and(|s| s.success())
        );
    }
    // Every request happened within this window, so GCRA allows at most
    // the burst plus the rate times the window, whatever the interleaving.
    let window = started.elapsed().as_secs_f64();
    assert!(
        allowed <= BURST + RATE * window,
        "{allowed} permits in {window:.2} s at {RATE}/s"
    );
    // And the quota was really used, not just refused.
    assert!(
        allowed >= RATE * 1.5,
        "only {allowed} permits in 2 s at {RATE}/s"
    );
}
