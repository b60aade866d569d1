//! The soak: a randomized schedule of faults — etcd members killed, paused
//! and cut off, the Redis link cut, slowed and reset — against a 3-member
//! etcd behind proxies and a Redis behind one, while tasks use the recipes;
//! every history is checked at the end.
//!
//! Run by `cargo xtask soak --seconds N [--seed S]` (and for 45 s by
//! `cargo xtask test`); the seed is printed first, and the same seed plays
//! the same schedule of faults (the recipes' own timing still varies). It
//! ends with one JSON line:
//! `{"soak":"etcd+redis","seed":…,"seconds":…,"ops":…,"faults":…,"anomalies":0}`.
//!
//! What is checked:
//! - the etcd Mutex and the Redis lock: some order of every grant and
//!   release, each within its call, has one holder at a time and rising
//!   fencing tokens (`testkit::history`);
//! - the etcd Queue: every acknowledged item delivered, none twice, none
//!   that was never enqueued;
//! - the lesson's bank on etcd's STM: some serial order of the committed
//!   transfers, each within its call, reads exactly the balances each one
//!   read, and ends at the balances audited at the end (and the sum is
//!   unchanged).
//!
//! Redis here is one server without persistence, so its faults are those
//! of the network: a restart forgets every lock, which no client can undo
//! (the Redis chapters show it, with Sentinel and with fencing).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use concurrency_patterns::distributed::etcd::etcd_client::GetOptions;
use concurrency_patterns::distributed::etcd::{
    EtcdConfig, EtcdError, Mutex, Queue, Session, StmOptions, run_stm,
};
use concurrency_patterns::distributed::redis::{RedisConfig, RedisLock};
use testkit::history::{self, Bank, BankOp, Call, FencedLock, LockOp};
use testkit::{EtcdCluster, RedisServer, TcpProxy};

/// Every account's balance, read in one request (retried while the
/// cluster settles).
async fn client_balances(config: &EtcdConfig, accounts: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = async {
            let mut client = config.connect().await?;
            let options = GetOptions::new().with_prefix();
            let reply = client.get("soak-bank/", Some(options)).await?;
            let mut balances = vec![0; accounts];
            for kv in reply.kvs() {
                let account: usize = kv
                    .key_str()?
                    .trim_start_matches("soak-bank/")
                    .parse()
                    .unwrap_or(0);
                balances[account] = kv.value_str()?.parse().unwrap_or(0);
            }
            Ok::<_, EtcdError>(balances)
        };
        match read.await {
            Ok(balances) => return balances,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "could not read the bank: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A small seeded generator (xorshift): the schedule depends on the seed
/// alone.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// The calls of one lock, from every task, on one clock.
#[derive(Clone, Default)]
struct LockHistory(Arc<StdMutex<Vec<Call<LockOp>>>>);

impl LockHistory {
    fn record(
        &self,
        process: usize,
        invoked: Instant,
        returned: Option<Instant>,
        op: LockOp,
    ) {
        self.0.lock().unwrap().push(Call {
            process,
            invoked,
            returned,
            op,
        });
    }

    /// The history to check: a holder whose release never happened (its
    /// task was stopped, or gave up) stopped holding at some unknown
    /// moment after its grant — a release with no response.
    fn calls(&self) -> Vec<Call<LockOp>> {
        let mut calls = self.0.lock().unwrap().clone();
        history::close_open_holds(&mut calls);
        calls
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak: run by `cargo xtask soak` and `cargo xtask test`"]
async fn soak() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("soak: seed {seed}, {seconds} s (replay with --seed {seed})");
    // xorshift must not start at zero.
    let mut schedule = Schedule(seed | 1 << 63);

    let etcd = Arc::new(
        EtcdCluster::builder()
            .members(3)
            .behind_proxies()
            .start()
            .unwrap(),
    );
    let redis = RedisServer::start().unwrap();
    let redis_link = TcpProxy::start(redis.addr()).unwrap();
    let etcd_config =
        EtcdConfig::new(etcd.endpoints()).request_timeout(Duration::from_secs(1));
    let redis_config = RedisConfig::new(format!("redis://{}/", redis_link.addr()));

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();

    // etcd Mutex: three tasks take turns; each holds for a moment.
    let mutex_history = LockHistory::default();
    for process in 0..3 {
        let (config, stop, ops, history) = (
            etcd_config.clone(),
            stop.clone(),
            ops.clone(),
            mutex_history.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut session = None;
            while !stop.load(SeqCst) {
                if session.as_ref().is_none_or(Session::is_lost) {
                    let Ok(client) = config.connect().await else {
                        continue;
                    };
                    session = Session::new(client, Duration::from_secs(2)).await.ok();
                    continue;
                }
                let Some(live) = session.as_ref() else {
                    continue;
                };
                let Ok(mutex) = Mutex::new(live, "soak-mutex") else {
                    return;
                };
                let invoked = Instant::now();
                let Ok(Ok(guard)) =
                    tokio::time::timeout(Duration::from_secs(3), mutex.lock()).await
                else {
                    continue;
                };
                let token = u64::try_from(guard.fencing_token()).unwrap_or(0);
                history.record(
                    process,
                    invoked,
                    Some(Instant::now()),
                    LockOp::Acquired(token),
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
                let unlocking = Instant::now();
                let unlocked = guard.unlock().await.is_ok().then(Instant::now);
                history.record(process, unlocking, unlocked, LockOp::Released(token));
                ops.fetch_add(2, SeqCst);
            }
        }));
    }

    // Redis lock: two tasks behind the cut-able link.
    let redis_history = LockHistory::default();
    for process in 0..2 {
        let (config, stop, ops, history) = (
            redis_config.clone(),
            stop.clone(),
            ops.clone(),
            redis_history.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(lock) = RedisLock::connect(&config, "soak-redis-lock").await else {
                return;
            };
            let Ok(lock) = lock.ttl(Duration::from_secs(2)) else {
                return;
            };
            while !stop.load(SeqCst) {
                let invoked = Instant::now();
                let Ok(Ok(guard)) = tokio::time::timeout(
                    Duration::from_secs(3),
                    lock.lock_timeout(Duration::from_secs(2)),
                )
                .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let token = guard.fencing_token();
                history.record(
                    process,
                    invoked,
                    Some(Instant::now()),
                    LockOp::Acquired(token),
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
                let unlocking = Instant::now();
                let unlocked =
                    tokio::time::timeout(Duration::from_secs(3), guard.unlock())
                        .await
                        .is_ok_and(|r| r.is_ok())
                        .then(Instant::now);
                history.record(process, unlocking, unlocked, LockOp::Released(token));
                ops.fetch_add(2, SeqCst);
            }
        }));
    }

    // etcd Queue: one producer, two consumers.
    let acknowledged = Arc::new(StdMutex::new(Vec::<String>::new()));
    let attempted = Arc::new(StdMutex::new(HashSet::<String>::new()));
    let delivered = Arc::new(StdMutex::new(Vec::<String>::new()));
    {
        let (config, stop, ops, acknowledged, attempted) = (
            etcd_config.clone(),
            stop.clone(),
            ops.clone(),
            acknowledged.clone(),
            attempted.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(client) = config.connect().await else {
                return;
            };
            let Ok(queue) = Queue::new(client, "soak-queue") else {
                return;
            };
            let mut i = 0u64;
            while !stop.load(SeqCst) {
                let item = format!("item-{i}");
                i += 1;
                attempted.lock().unwrap().insert(item.clone());
                if queue.enqueue(item.clone()).await.is_ok() {
                    acknowledged.lock().unwrap().push(item);
                }
                ops.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for _ in 0..2 {
        let (config, stop, ops, delivered) = (
            etcd_config.clone(),
            stop.clone(),
            ops.clone(),
            delivered.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(client) = config.connect().await else {
                return;
            };
            let Ok(queue) = Queue::new(client, "soak-queue") else {
                return;
            };
            while !stop.load(SeqCst) {
                if let Ok(Ok(item)) =
                    tokio::time::timeout(Duration::from_secs(1), queue.dequeue()).await
                {
                    delivered
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&item).into());
                    ops.fetch_add(1, SeqCst);
                }
            }
        }));
    }

    // The lesson's bank on etcd's STM: three tasks transfer half of one
    // account's balance to another; every committed transfer is recorded
    // with the balances it read, for the serial-order check.
    const ACCOUNTS: usize = 4;
    const OPENING: u64 = 100;
    let bank_history: Arc<StdMutex<Vec<Call<BankOp>>>> = Arc::default();
    {
        let mut client = etcd_config.connect().await.unwrap();
        for account in 0..ACCOUNTS {
            client
                .put(format!("soak-bank/{account}"), OPENING.to_string(), None)
                .await
                .unwrap();
        }
    }
    for process in 0..3 {
        let (config, stop, ops, history) = (
            etcd_config.clone(),
            stop.clone(),
            ops.clone(),
            bank_history.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(client) = config.connect().await else {
                return;
            };
            let mut turn = process as u64 * 7919 + 1;
            while !stop.load(SeqCst) {
                turn = turn
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let from = (turn >> 33) as usize % ACCOUNTS;
                let to = (from + 1 + (turn >> 40) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                // The transfer of the attempt that was sent last.
                let attempt: Arc<StdMutex<Option<BankOp>>> = Arc::default();
                let invoked = Instant::now();
                let outcome =
                    run_stm(&client, StmOptions::default().max_attempts(20), |stm| {
                        let attempt = attempt.clone();
                        async move {
                            let keys = [
                                format!("soak-bank/{from}"),
                                format!("soak-bank/{to}"),
                            ];
                            let read = stm.get_many(&[&keys[0], &keys[1]]).await?;
                            let balance = |i: usize| -> u64 {
                                read[i]
                                    .as_deref()
                                    .and_then(|b| std::str::from_utf8(b).ok())
                                    .and_then(|t| t.parse().ok())
                                    .unwrap_or(0)
                            };
                            let (seen_from, seen_to) = (balance(0), balance(1));
                            stm.put(&keys[0], (seen_from - seen_from / 2).to_string());
                            stm.put(&keys[1], (seen_to + seen_from / 2).to_string());
                            *attempt.lock().unwrap() = Some(BankOp::Transfer {
                                from,
                                to,
                                seen_from,
                                seen_to,
                            });
                            Ok::<_, EtcdError>(())
                        }
                    })
                    .await;
                let returned = outcome.is_ok().then(Instant::now);
                if let Some(op) = attempt.lock().unwrap().take() {
                    history.lock().unwrap().push(Call {
                        process,
                        invoked,
                        returned,
                        op,
                    });
                }
                ops.fetch_add(1, SeqCst);
            }
        }));
    }

    // The faults: one at a time, each healed before the next.
    let started = Instant::now();
    let mut faults = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(schedule.millis(300, 1_500)).await;
        let member = schedule.below(3) as usize;
        let lasting = schedule.millis(500, 3_000);
        let kind = schedule.below(6);
        let etcd = etcd.clone();
        let fault = match kind {
            0 => "etcd kill",
            1 => "etcd pause",
            2 => "etcd partition",
            3 => "redis partition",
            4 => "redis slow link",
            _ => "redis reset",
        };
        eprintln!(
            "soak: {:>5.1} s {fault} (member {member}, {lasting:?})",
            started.elapsed().as_secs_f64()
        );
        match kind {
            0 => {
                etcd.kill(member).unwrap();
                tokio::time::sleep(lasting).await;
                tokio::task::spawn_blocking(move || etcd.restart(member))
                    .await
                    .unwrap()
                    .unwrap();
            }
            1 => {
                etcd.pause(member).unwrap();
                tokio::time::sleep(lasting).await;
                etcd.resume(member).unwrap();
            }
            2 => {
                etcd.isolate(member).unwrap();
                tokio::time::sleep(lasting).await;
                etcd.heal().unwrap();
            }
            3 => {
                redis_link.blackhole();
                tokio::time::sleep(lasting).await;
                redis_link.reset_connections();
                redis_link.heal();
            }
            4 => {
                redis_link.delay(Duration::from_millis(50), Duration::from_millis(100));
                tokio::time::sleep(lasting).await;
                redis_link.heal();
            }
            _ => redis_link.reset_connections(),
        }
        faults += 1;
    }

    stop.store(true, SeqCst);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a soak task did not stop")
            .unwrap();
    }
    // Take what is left in the queue, then check.
    let client = etcd_config.connect().await.unwrap();
    let queue = Queue::new(client, "soak-queue").unwrap();
    let drained_by = Instant::now() + Duration::from_secs(30);
    loop {
        match queue.try_dequeue().await {
            Ok(Some(item)) => delivered
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&item).into()),
            Ok(None) => break,
            Err(error) => {
                assert!(
                    Instant::now() < drained_by,
                    "could not drain the queue: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let mut anomalies = Vec::new();
    let audit_at = Instant::now();
    let balances = client_balances(&etcd_config, ACCOUNTS).await;
    let mut bank_calls = bank_history.lock().unwrap().clone();
    bank_calls.push(Call {
        process: 99,
        invoked: audit_at,
        returned: Some(Instant::now()),
        op: BankOp::Audit(balances.clone()),
    });
    if balances.iter().sum::<u64>() != ACCOUNTS as u64 * OPENING {
        anomalies.push(format!("bank: the sum changed: {balances:?}"));
    }
    let bank = Bank {
        accounts: ACCOUNTS,
        opening: OPENING,
    };
    if let Err(anomaly) = history::check(&bank, &bank_calls) {
        anomalies.push(format!("bank: no serial order of the transfers: {anomaly}"));
    }
    for (name, lock) in [
        ("etcd mutex", &mutex_history),
        ("redis lock", &redis_history),
    ] {
        let calls = lock.calls();
        if let Err(anomaly) = history::check(&FencedLock, &calls) {
            anomalies.push(format!("{name}: {anomaly}"));
        }
    }
    let delivered = delivered.lock().unwrap().clone();
    let unique: HashSet<&String> = delivered.iter().collect();
    if unique.len() != delivered.len() {
        anomalies.push(format!(
            "queue: {} deliveries of {} items",
            delivered.len(),
            unique.len()
        ));
    }
    let attempted = attempted.lock().unwrap().clone();
    for item in &unique {
        if !attempted.contains(*item) {
            anomalies.push(format!("queue: {item} delivered, never enqueued"));
        }
    }
    for item in acknowledged.lock().unwrap().iter() {
        if !unique.contains(item) {
            anomalies.push(format!("queue: {item} acknowledged, never delivered"));
        }
    }
    println!(
        "{{\"soak\":\"etcd+redis\",\"seed\":{seed},\"seconds\":{seconds},\"ops\":{},\"faults\":{faults},\"anomalies\":{}}}",
        ops.load(SeqCst),
        anomalies.len()
    );
    assert!(
        anomalies.is_empty(),
        "seed {seed}: {}",
        anomalies.join("\n")
    );
    assert!(
        mutex_history.0.lock().unwrap().len() > 10
            && redis_history.0.lock().unwrap().len() > 10
            && bank_calls.len() > 10
            && acknowledged.lock().unwrap().len() > 10
            && delivered.len() > 10,
        "the recipes were hardly used: nothing was tested"
    );
}
