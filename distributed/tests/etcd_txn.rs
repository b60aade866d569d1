//! The CAS transfer and STM against real etcd: the bank's sum never changes,
//! no balance goes negative, conflicts retry, aborts write nothing — also on
//! a 3-member cluster whose leader is killed mid-run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cpr_distributed::etcd::{
    Client, EtcdConfig, EtcdError, Isolation, StmError, StmOptions, run_stm, transfer,
};
use testkit::EtcdCluster;

const ACCOUNTS: usize = 5;

async fn client() -> Client {
    let etcd = testkit::shared_etcd().unwrap();
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

fn account(bank: &str, i: usize) -> String {
    format!("{bank}/accounts/{i}")
}

async fn open_bank(client: &Client, bank: &str) {
    for i in 0..ACCOUNTS {
        client
            .clone()
            .put(account(bank, i), "100", None)
            .await
            .unwrap();
    }
}

async fn balances(client: &Client, bank: &str) -> Vec<i64> {
    let mut all = Vec::new();
    for i in 0..ACCOUNTS {
        let response = client.clone().get(account(bank, i), None).await.unwrap();
        all.push(response.kvs()[0].value_str().unwrap().parse().unwrap());
    }
    all
}

/// The lesson's bank transfer as an STM closure: half of a random account's
/// balance to another random account.
async fn stm_transfer(
    client: &Client,
    bank: &str,
    options: StmOptions,
) -> Result<usize, StmError<EtcdError>> {
    let (from, to) = loop {
        let (a, b) = (
            rand::random_range(0..ACCOUNTS),
            rand::random_range(0..ACCOUNTS),
        );
        if a != b {
            break (account(bank, a), account(bank, b));
        }
    };
    let (from, to) = (&from, &to);
    let outcome = run_stm(client, options, |stm| async move {
        let from_balance: u64 = stm
            .get_string(from)
            .await?
            .unwrap_or_default()
            .parse()
            .unwrap_or(0);
        let to_balance: u64 = stm
            .get_string(to)
            .await?
            .unwrap_or_default()
            .parse()
            .unwrap_or(0);
        let half = from_balance / 2;
        stm.put(from, (from_balance - half).to_string());
        stm.put(to, (to_balance + half).to_string());
        Ok::<_, EtcdError>(())
    })
    .await?;
    Ok(outcome.attempts)
}

#[tokio::test]
async fn a_transfer_moves_money_and_refuses_to_overdraw() {
    let c = client().await;
    open_bank(&c, "cas-basic").await;
    let attempts = transfer(
        &c,
        &account("cas-basic", 0),
        &account("cas-basic", 1),
        30,
        8,
    )
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert_eq!(balances(&c, "cas-basic").await[..2], [70, 130]);
    let error = transfer(
        &c,
        &account("cas-basic", 0),
        &account("cas-basic", 1),
        71,
        8,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            EtcdError::InsufficientFunds {
                balance: 70,
                amount: 71,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(balances(&c, "cas-basic").await.iter().sum::<i64>(), 500);
}

/// Into a balance of `u64::MAX`, a transfer is an error that names the
/// account, and both balances stay as they were (a release build used to
/// wrap to 0 and report success; a debug build panicked).
#[tokio::test]
async fn a_transfer_that_would_overflow_is_an_error_and_writes_nothing() {
    let mut c = client().await;
    let (from, to) = ("cas-overflow/from", "cas-overflow/to");
    c.put(from, "5", None).await.unwrap();
    c.put(to, u64::MAX.to_string(), None).await.unwrap();
    let error = transfer(&c, from, to, 1, 8).await.unwrap_err();
    assert!(
        matches!(&error, EtcdError::BalanceOverflow { account, amount: 1, .. } if account == to),
        "{error}"
    );
    let value = |key: &'static str| {
        let mut c = c.clone();
        async move {
            c.get(key, None).await.unwrap().kvs()[0]
                .value_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(value(from).await, "5");
    assert_eq!(value(to).await, u64::MAX.to_string());
}

/// A balance that is not a number, or not text, is bad data naming the
/// key, not a configuration error; nothing is written.
#[tokio::test]
async fn a_balance_that_is_not_a_number_names_its_key() {
    let mut c = client().await;
    let (from, to) = ("cas-bad-value/from", "cas-bad-value/to");
    c.put(from, "5", None).await.unwrap();
    for bad in [&b"lots"[..], b"\xff\xfe", b"-3"] {
        c.put(to, bad, None).await.unwrap();
        let error = transfer(&c, from, to, 1, 8).await.unwrap_err();
        assert!(
            matches!(&error, EtcdError::InvalidValue { key, .. } if key == to),
            "{bad:?}: {error}"
        );
        let held = c.get(from, None).await.unwrap();
        assert_eq!(held.kvs()[0].value(), b"5");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_transfers_keep_the_sum() {
    let c = client().await;
    open_bank(&c, "cas-bank").await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let (a, b) = (
                    rand::random_range(0..ACCOUNTS),
                    rand::random_range(0..ACCOUNTS),
                );
                if a == b {
                    continue;
                }
                match transfer(
                    &c,
                    &account("cas-bank", a),
                    &account("cas-bank", b),
                    7,
                    64,
                )
                .await
                {
                    Ok(_) | Err(EtcdError::InsufficientFunds { .. }) => {}
                    Err(other) => panic!("{other}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = balances(&c, "cas-bank").await;
    assert_eq!(all.iter().sum::<i64>(), 500, "{all:?}");
    assert!(all.iter().all(|b| *b >= 0), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stm_bank_keeps_its_sum_with_10_tasks_of_100_transfers() {
    let c = client().await;
    open_bank(&c, "stm-bank").await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (c, attempts) = (c.clone(), Arc::clone(&attempts));
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                attempts.fetch_add(
                    stm_transfer(&c, "stm-bank", StmOptions::default())
                        .await
                        .unwrap(),
                    SeqCst,
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = balances(&c, "stm-bank").await;
    assert_eq!(all.iter().sum::<i64>(), 500, "{all:?}");
    assert!(all.iter().all(|b| *b >= 0), "{all:?}");
    assert!(attempts.load(SeqCst) >= 1000);
}

#[tokio::test]
async fn an_aborted_transaction_writes_nothing() {
    let mut c = client().await;
    c.put("stm-abort/k", "before", None).await.unwrap();
    let outcome = run_stm(&c, StmOptions::default(), |stm| async move {
        stm.put("stm-abort/k", "after");
        stm.del("stm-abort/other");
        Err::<(), _>("changed my mind")
    })
    .await;
    assert!(matches!(outcome, Err(StmError::Aborted("changed my mind"))));
    assert_eq!(
        c.get("stm-abort/k", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "before"
    );
}

#[tokio::test]
async fn retries_are_bounded_and_counted() {
    let c = client().await;
    let outside = &c;
    let outcome = run_stm(
        &c,
        StmOptions::default().max_attempts(3),
        |stm| async move {
            stm.get("stm-bounded/k").await?;
            // Someone else writes what we read, every time.
            outside
                .clone()
                .put("stm-bounded/k", "interference", None)
                .await?;
            stm.put("stm-bounded/k", "mine");
            Ok::<_, EtcdError>(())
        },
    )
    .await;
    assert!(
        matches!(
            outcome,
            Err(StmError::Etcd(EtcdError::TooManyConflicts { attempts: 3 }))
        ),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_increment_under_the_checking_isolation_levels() {
    for (isolation, name) in [
        (Isolation::SerializableSnapshot, "stm-inc-snapshot"),
        (Isolation::Serializable, "stm-inc-serializable"),
        (Isolation::RepeatableReads, "stm-inc-repeatable"),
    ] {
        let c = client().await;
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    run_stm(
                        &c,
                        StmOptions::default().isolation(isolation).max_attempts(100),
                        |stm| async move {
                            let n: u64 = stm
                                .get_string(name)
                                .await?
                                .unwrap_or_default()
                                .parse()
                                .unwrap_or(0);
                            stm.put(name, (n + 1).to_string());
                            Ok::<_, EtcdError>(())
                        },
                    )
                    .await
                    .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let value = c.clone().get(name, None).await.unwrap();
        assert_eq!(
            value.kvs()[0].value_str().unwrap(),
            "100",
            "{isolation:?} lost an update"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stm_bank_survives_the_etcd_leader_dying_mid_run() {
    let etcd = Arc::new(EtcdCluster::start(3).unwrap());
    let c = EtcdConfig::new(etcd.endpoints())
        .request_timeout(Duration::from_secs(3))
        .connect()
        .await
        .unwrap();
    open_bank(&c, "stm-fault").await;
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (c, done) = (c.clone(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut committed = 0;
            while committed < 30 {
                // A failed attempt (the leader died under it) is simply
                // tried again: every transfer conserves the sum.
                if stm_transfer(&c, "stm-fault", StmOptions::default())
                    .await
                    .is_ok()
                {
                    committed += 1;
                    done.fetch_add(1, SeqCst);
                }
            }
        }));
    }
    while done.load(SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = etcd.leader().unwrap();
    etcd.kill(leader).unwrap();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("no progress after the fault")
            .unwrap();
    }
    etcd.restart(leader).unwrap();
    let c = EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
    let all = balances(&c, "stm-fault").await;
    assert_eq!(all.iter().sum::<i64>(), 500, "{all:?}");
    assert!(all.iter().all(|b| *b >= 0), "{all:?}");
}

#[tokio::test]
async fn prefetch_reads_in_one_round_trip_and_commit_is_one_more() {
    let etcd = EtcdCluster::start(1).unwrap();
    let c = EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
    c.clone().put("p/a", "1", None).await.unwrap();
    c.clone().put("p/b", "2", None).await.unwrap();
    let addr = etcd.client_addrs()[0];
    let before = testkit::etcd_grpc_calls(addr).unwrap();
    run_stm(
        &c,
        StmOptions::default().prefetch(["p/a", "p/b"]),
        |stm| async move {
            let a = stm.get_string("p/a").await?.unwrap_or_default();
            let b = stm.get_string("p/b").await?.unwrap_or_default();
            stm.put("p/a", b);
            stm.put("p/b", a);
            Ok::<_, EtcdError>(())
        },
    )
    .await
    .unwrap();
    let calls = testkit::etcd_grpc_calls(addr).unwrap() - before;
    assert_eq!(calls, 2, "prefetch + commit should be two requests");
}

#[tokio::test]
async fn get_many_reads_unread_keys_together_and_sees_own_writes() {
    let etcd = EtcdCluster::start(1).unwrap();
    let c = EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
    c.clone().put("m/a", "1", None).await.unwrap();
    c.clone().put("m/b", "2", None).await.unwrap();
    let addr = etcd.client_addrs()[0];
    let before = testkit::etcd_grpc_calls(addr).unwrap();
    let outcome = run_stm(&c, StmOptions::default(), |stm| async move {
        stm.put("m/b", "written");
        // m/a and m/c are read together (m/c does not exist); m/b is ours.
        let values = stm.get_many(&["m/a", "m/b", "m/c"]).await?;
        // Already read: no further request.
        let again = stm.get_many(&["m/a"]).await?;
        stm.put("m/a", "3");
        Ok::<_, EtcdError>((values, again))
    })
    .await
    .unwrap();
    let calls = testkit::etcd_grpc_calls(addr).unwrap() - before;
    let (values, again) = outcome.value;
    assert_eq!(
        values,
        [Some(b"1".to_vec()), Some(b"written".to_vec()), None]
    );
    assert_eq!(again, [Some(b"1".to_vec())]);
    assert_eq!(calls, 2, "one read for all the keys, one commit");
    let a = c.clone().get("m/a", None).await.unwrap();
    assert_eq!(a.kvs()[0].value(), b"3");
}
