//! Mutex and RwMutex against a real etcd: one holder at a time, FIFO, no
//! waiter on a dead session ever acquires, cancel safety, clear errors.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cpr_distributed::etcd::etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use cpr_distributed::etcd::{Client, EtcdConfig, EtcdError, Mutex, RwMutex, Session};

async fn client() -> Client {
    let etcd = testkit::shared_etcd().unwrap();
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

async fn session(ttl: u64) -> Session {
    Session::new(client().await, Duration::from_secs(ttl))
        .await
        .unwrap()
}

/// Keys under `prefix/`.
async fn keys_under(prefix: &str) -> Vec<String> {
    let response = client()
        .await
        .get(format!("{prefix}/"), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_and_no_lost_increment() {
    const CLIENTS: usize = 5;
    const ROUNDS: usize = 10;
    let name = "mutex-exclusion";
    let holders = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let holders = Arc::clone(&holders);
        tasks.push(tokio::spawn(async move {
            let session = session(10).await;
            let mutex = Mutex::new(&session, name).unwrap();
            let mut client = session.client();
            for _ in 0..ROUNDS {
                let guard = mutex.lock().await.unwrap();
                assert_eq!(holders.fetch_add(1, SeqCst), 0, "two holders at once");
                // Read-modify-write of a counter, guarded by the lock only.
                let current =
                    client.get("mutex-exclusion-counter", None).await.unwrap();
                let value: u64 = current
                    .kvs()
                    .first()
                    .map(|kv| kv.value_str().unwrap().parse().unwrap())
                    .unwrap_or(0);
                tokio::task::yield_now().await;
                let txn = Txn::new().when([guard.is_held()]).and_then([TxnOp::put(
                    "mutex-exclusion-counter",
                    (value + 1).to_string(),
                    None,
                )]);
                assert!(client.txn(txn).await.unwrap().succeeded());
                holders.fetch_sub(1, SeqCst);
                guard.unlock().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let counter = client()
        .await
        .get("mutex-exclusion-counter", None)
        .await
        .unwrap();
    assert_eq!(
        counter.kvs()[0].value_str().unwrap(),
        (CLIENTS * ROUNDS).to_string()
    );
    assert!(keys_under(name).await.is_empty(), "lock keys left behind");
}

#[tokio::test]
async fn waiters_acquire_in_arrival_order() {
    let name = "mutex-fifo";
    let holder = session(10).await;
    let first = Mutex::new(&holder, name).unwrap().lock().await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for id in 0..3 {
        let order = Arc::clone(&order);
        let session = session(10).await;
        waiters.push(tokio::spawn(async move {
            let guard = Mutex::new(&session, name).unwrap().lock().await.unwrap();
            order.lock().unwrap().push(id);
            guard.unlock().await.unwrap();
        }));
        // Each waiter's key is written before the next one starts.
        eventually("the waiter is in line", async || {
            keys_under(name).await.len() == id + 2
        })
        .await;
    }
    first.unlock().await.unwrap();
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
}

#[tokio::test]
async fn try_lock_fails_cleanly_when_held() {
    let name = "mutex-try";
    let (a, b) = (session(10).await, session(10).await);
    let held = Mutex::new(&a, name)
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("free lock");
    assert!(
        Mutex::new(&b, name)
            .unwrap()
            .try_lock()
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        keys_under(name).await.len(),
        1,
        "a failed try_lock left its key"
    );
    held.unlock().await.unwrap();
    let now = Mutex::new(&b, name).unwrap().try_lock().await.unwrap();
    assert!(now.is_some());
}

#[tokio::test]
async fn a_cancelled_lock_leaves_no_waiter_behind() {
    let name = "mutex-cancel";
    let (a, b, c) = (session(10).await, session(10).await, session(10).await);
    let held = Mutex::new(&a, name).unwrap().lock().await.unwrap();
    let waiting = Mutex::new(&b, name).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), waiting.lock())
            .await
            .is_err()
    );
    eventually("the cancelled waiter's key is gone", async || {
        keys_under(name).await.len() == 1
    })
    .await;
    held.unlock().await.unwrap();
    // C is not stuck behind a ghost waiter.
    let next = tokio::time::timeout(
        Duration::from_secs(2),
        Mutex::new(&c, name).unwrap().lock(),
    )
    .await;
    assert!(next.expect("blocked by a cancelled waiter").is_ok());
}

#[tokio::test]
async fn a_waiter_whose_session_dies_never_acquires() {
    let name = "mutex-dead-waiter";
    let (a, b) = (session(10).await, session(10).await);
    let held = Mutex::new(&a, name).unwrap().lock().await.unwrap();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { Mutex::new(&b, name).unwrap().lock().await })
    };
    eventually("b is in line", async || keys_under(name).await.len() == 2).await;
    // Kill b's lease behind its back, as an expiry would.
    client().await.lease_revoke(b.lease_id()).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(outcome, Err(EtcdError::SessionLost { .. })),
        "{outcome:?}"
    );
    held.unlock().await.unwrap();
}

#[tokio::test]
async fn a_holder_sees_its_session_loss_and_its_fenced_writes_fail() {
    let name = "mutex-lost-holder";
    let a = session(10).await;
    let guard = Mutex::new(&a, name).unwrap().lock().await.unwrap();
    client().await.lease_revoke(a.lease_id()).await.unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(10), guard.lost())
        .await
        .unwrap();
    assert!(matches!(lost, EtcdError::SessionLost { .. }));
    assert!(guard.is_lost());
    let txn = Txn::new().when([guard.is_held()]).and_then([TxnOp::put(
        "mutex-lost-holder-resource",
        "x",
        None,
    )]);
    assert!(!client().await.txn(txn).await.unwrap().succeeded());
}

#[tokio::test]
async fn fencing_tokens_grow_with_each_holder() {
    let name = "mutex-tokens";
    let mut last = 0;
    for _ in 0..3 {
        let s = session(10).await;
        let guard = Mutex::new(&s, name).unwrap().lock().await.unwrap();
        assert!(guard.fencing_token() > last);
        last = guard.fencing_token();
        // The compare names our key at our revision.
        let compare = Compare::create_revision(guard.key(), CompareOp::Equal, last);
        assert!(
            client()
                .await
                .txn(Txn::new().when([compare]))
                .await
                .unwrap()
                .succeeded()
        );
        guard.unlock().await.unwrap();
    }
}

#[tokio::test]
async fn two_mutexes_on_one_session_do_not_share_the_lock() {
    let s = session(10).await;
    let first = Mutex::new(&s, "mutex-shared-session")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let error = Mutex::new(&s, "mutex-shared-session")
        .unwrap()
        .lock()
        .await
        .unwrap_err();
    assert!(
        matches!(error, EtcdError::AlreadyHeldBySession { .. }),
        "{error}"
    );
    first.unlock().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let s = session(10).await;
    assert!(matches!(
        Mutex::new(&s, ""),
        Err(EtcdError::InvalidName { .. })
    ));
    assert!(matches!(
        RwMutex::new(&s, "nul\0byte"),
        Err(EtcdError::InvalidName { .. })
    ));
    let zero = Session::new(client().await, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(zero, EtcdError::InvalidConfig(_)), "{zero}");
    let fractional = Session::new(client().await, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(
        matches!(fractional, EtcdError::InvalidConfig(_)),
        "{fractional}"
    );
}

#[tokio::test]
async fn dropping_a_guard_releases_the_lock_in_the_background() {
    let name = "mutex-drop";
    let (a, b) = (session(10).await, session(10).await);
    drop(Mutex::new(&a, name).unwrap().lock().await.unwrap());
    let next = tokio::time::timeout(
        Duration::from_secs(2),
        Mutex::new(&b, name).unwrap().lock(),
    )
    .await;
    assert!(next.expect("the dropped guard kept the lock").is_ok());
}

#[tokio::test]
async fn closing_the_session_releases_its_lock_at_once() {
    let name = "mutex-close";
    let (a, b) = (session(60).await, session(10).await);
    let guard = Mutex::new(&a, name).unwrap().lock().await.unwrap();
    std::mem::forget(guard); // no unlock, no background delete
    a.close().await.unwrap();
    let next = tokio::time::timeout(
        Duration::from_secs(2),
        Mutex::new(&b, name).unwrap().lock(),
    )
    .await;
    assert!(next.expect("a revoked lease kept the lock").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwmutex_readers_share_writers_exclude() {
    let name = "rw-invariant";
    let readers = Arc::new(AtomicUsize::new(0));
    let writers = Arc::new(AtomicUsize::new(0));
    let max_readers = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for id in 0..6 {
        let (readers, writers, max_readers) = (
            Arc::clone(&readers),
            Arc::clone(&writers),
            Arc::clone(&max_readers),
        );
        tasks.push(tokio::spawn(async move {
            let s = session(10).await;
            let rw = RwMutex::new(&s, name).unwrap();
            for round in 0..5 {
                if (id + round) % 3 == 0 {
                    let guard = rw.write_lock().await.unwrap();
                    assert!(guard.is_writer());
                    assert_eq!(writers.fetch_add(1, SeqCst), 0, "two writers");
                    assert_eq!(readers.load(SeqCst), 0, "a reader during a write");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    writers.fetch_sub(1, SeqCst);
                    guard.unlock().await.unwrap();
                } else {
                    let guard = rw.read_lock().await.unwrap();
                    let now = readers.fetch_add(1, SeqCst) + 1;
                    max_readers.fetch_max(now, SeqCst);
                    assert_eq!(writers.load(SeqCst), 0, "a write during a read");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    readers.fetch_sub(1, SeqCst);
                    guard.unlock().await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        max_readers.load(SeqCst) >= 2,
        "readers never shared the lock"
    );
    assert!(keys_under(name).await.is_empty());
}

#[tokio::test]
async fn rwmutex_an_expired_waiter_is_not_handed_the_lock() {
    let name = "rw-expired-waiter";
    let (w, r) = (session(10).await, session(10).await);
    let write = RwMutex::new(&w, name).unwrap().write_lock().await.unwrap();
    let reader = {
        let r = r.clone();
        tokio::spawn(async move { RwMutex::new(&r, name).unwrap().read_lock().await })
    };
    eventually("the reader waits", async || {
        keys_under(name).await.len() == 2
    })
    .await;
    client().await.lease_revoke(r.lease_id()).await.unwrap();
    write.unlock().await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(outcome, Err(EtcdError::SessionLost { .. })),
        "two holders: {outcome:?}"
    );
}

#[tokio::test]
async fn rwmutex_a_waiting_writer_blocks_later_readers() {
    let name = "rw-fifo";
    let (r1, w, r2) = (session(10).await, session(10).await, session(10).await);
    let first_read = RwMutex::new(&r1, name).unwrap().read_lock().await.unwrap();
    let writer = tokio::spawn({
        let w = w.clone();
        async move { RwMutex::new(&w, name).unwrap().write_lock().await.unwrap() }
    });
    eventually("the writer waits", async || {
        keys_under(name).await.len() == 2
    })
    .await;
    let late_reader = RwMutex::new(&r2, name).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), late_reader.read_lock())
            .await
            .is_err(),
        "a reader overtook a waiting writer"
    );
    first_read.unlock().await.unwrap();
    let write = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .unwrap()
        .unwrap();
    write.unlock().await.unwrap();
}

#[tokio::test]
async fn relocking_on_the_same_session_right_after_a_drop_or_a_cancel_works() {
    let name = "mutex-relock";
    let (a, b) = (session(10).await, session(10).await);
    let mutex = Mutex::new(&a, name).unwrap();
    for _ in 0..5 {
        drop(mutex.lock().await.unwrap()); // background release
        let again = tokio::time::timeout(Duration::from_secs(5), mutex.lock())
            .await
            .unwrap()
            .unwrap();
        again.unlock().await.unwrap();
    }
    // A cancelled wait, then a new wait on the same session.
    let held = Mutex::new(&b, name).unwrap().lock().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), mutex.lock())
            .await
            .is_err()
    );
    let waiting = tokio::spawn({
        let mutex = mutex.clone();
        async move { mutex.lock().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    held.unlock().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(got.is_ok(), "{got:?}");
}

/// `lock()` and `try_lock()` cut at every point of their run, on a free
/// lock: no key may stay in line behind them, or the next contender (on
/// another session) would wait for it until this session ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_cut_at_any_point_leaves_nobody_waiting_behind_it() {
    let etcd = testkit::shared_etcd().unwrap();
    let name = "mutex-cut-anywhere";
    let client = EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
    let cut = Session::new(client.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let other = Session::new(client, Duration::from_secs(30)).await.unwrap();
    let mutex = Mutex::new(&cut, name).unwrap();
    let contender = Mutex::new(&other, name).unwrap();
    for polls in 0..40 {
        if let Some(guard) = support::cut_after(mutex.lock(), polls).await {
            guard.unwrap().unlock().await.unwrap();
        }
        if let Some(Ok(Some(guard))) = support::cut_after(mutex.try_lock(), polls).await
        {
            guard.unlock().await.unwrap();
        }
        let next = tokio::time::timeout(Duration::from_secs(5), contender.lock())
            .await
            .unwrap_or_else(|_| {
                panic!("a lock cut after {polls} polls left a key in line")
            })
            .unwrap();
        next.unlock().await.unwrap();
    }
}

/// The same for the read-write lock: a `write_lock()` cut at any point
/// leaves no waiter key that would hold the next writer back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_cut_at_any_point_leaves_nobody_waiting_behind_it() {
    let etcd = testkit::shared_etcd().unwrap();
    let name = "rwmutex-cut-anywhere";
    let client = EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
    let cut = Session::new(client.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let other = Session::new(client, Duration::from_secs(30)).await.unwrap();
    let lock = RwMutex::new(&cut, name).unwrap();
    let contender = RwMutex::new(&other, name).unwrap();
    for polls in 0..40 {
        if let Some(guard) = support::cut_after(lock.write_lock(), polls).await {
            guard.unwrap().unlock().await.unwrap();
        }
        let next = tokio::time::timeout(Duration::from_secs(5), contender.write_lock())
            .await
            .unwrap_or_else(|_| {
                panic!("a write lock cut after {polls} polls stayed in line")
            })
            .unwrap();
        next.unlock().await.unwrap();
    }
}
