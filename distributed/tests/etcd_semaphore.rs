//! The etcd Semaphore: never more than N holders, a crashed holder's permit
//! returns with its lease, a cancelled acquire leaves nothing behind, and
//! the permit count is fixed by the first user.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cpr_distributed::etcd::etcd_client::GetOptions;
use cpr_distributed::etcd::{Client, EtcdConfig, EtcdError, Semaphore, Session};
use testkit::EtcdCluster;

async fn client(etcd: &EtcdCluster) -> Client {
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

async fn session(etcd: &EtcdCluster, ttl_secs: u64) -> Session {
    Session::new(client(etcd).await, Duration::from_secs(ttl_secs))
        .await
        .unwrap()
}

/// Keys directly under `prefix`.
async fn keys_under(client: &Client, prefix: &str) -> usize {
    let options = GetOptions::new().with_prefix().with_keys_only();
    client
        .clone()
        .get(prefix, Some(options))
        .await
        .unwrap()
        .kvs()
        .iter()
        .filter(|kv| !kv.key_str().unwrap()[prefix.len()..].contains('/'))
        .count()
}

/// Six clients, eight acquisitions each, three permits, on a 3-member
/// cluster whose leader is killed and brought back mid-run: never more than
/// three holders, every acquisition served, every fencing token new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_n_holders_while_the_leader_dies() {
    const PERMITS: u32 = 3;
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 8;
    let etcd = Arc::new(EtcdCluster::start(3).unwrap());
    let holding = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let last_token = Arc::new(AtomicI64::new(0));
    let granted = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let session = session(&etcd, 5).await;
        let (holding, most) = (holding.clone(), most.clone());
        let (last_token, granted) = (last_token.clone(), granted.clone());
        tasks.push(tokio::spawn(async move {
            let semaphore = Semaphore::new(&session, "sem-n", PERMITS).unwrap();
            let mut tokens = Vec::new();
            for _ in 0..ROUNDS {
                let permit = semaphore.acquire().await.unwrap();
                granted.fetch_add(1, SeqCst);
                let now = holding.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                tokens.push(permit.fencing_token());
                last_token.fetch_max(permit.fencing_token(), SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                holding.fetch_sub(1, SeqCst);
                permit.release().await.unwrap();
            }
            tokens
        }));
    }
    // The leader dies once a fifth of the permits have been granted, and
    // comes back a second later.
    let faults = {
        let (etcd, granted) = (etcd.clone(), granted.clone());
        tokio::task::spawn_blocking(move || {
            while granted.load(SeqCst) < (CLIENTS * ROUNDS / 5) as u32 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let leader = etcd.leader().unwrap();
            etcd.kill(leader).unwrap();
            let at_kill = granted.load(SeqCst);
            std::thread::sleep(Duration::from_secs(1));
            etcd.restart(leader).unwrap();
            at_kill
        })
    };
    let mut all = Vec::new();
    for task in tasks {
        let tokens = tokio::time::timeout(Duration::from_secs(90), task)
            .await
            .expect("a client never finished")
            .unwrap();
        all.extend(tokens);
    }
    let at_kill = faults.await.unwrap();
    assert!(
        at_kill < (CLIENTS * ROUNDS) as u32,
        "the leader died after the run ({at_kill} grants)"
    );
    assert!(
        most.load(SeqCst) <= PERMITS,
        "{} holders at once",
        most.load(SeqCst)
    );
    assert!(
        most.load(SeqCst) >= 2,
        "never more than one holder: not a semaphore"
    );
    assert_eq!(all.len(), CLIENTS * ROUNDS);
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        CLIENTS * ROUNDS,
        "a fencing token was granted twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_permit_returns_when_its_lease_ends() {
    let etcd = testkit::shared_etcd().unwrap();
    let name = "sem-crash";
    // The holder reaches etcd through a link that can be cut: then it can
    // neither renew its lease nor release, as if its process had died.
    let link = testkit::TcpProxy::start(etcd.client_addrs()[0]).unwrap();
    let cut_off = EtcdConfig::new([link.addr().to_string()])
        .connect()
        .await
        .unwrap();
    let crashed = Session::new(cut_off, Duration::from_secs(2)).await.unwrap();
    let permit = Semaphore::new(&crashed, name, 1)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    link.blackhole();
    // Kept, never released: its holder is gone.
    let _held_by_the_dead = permit;
    let other = session(etcd, 10).await;
    let semaphore = Semaphore::new(&other, name, 1).unwrap();
    assert!(
        semaphore.try_acquire().await.unwrap().is_none(),
        "the permit is held"
    );
    let started = Instant::now();
    let permit = semaphore.acquire().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2 + 3),
        "{:?}",
        started.elapsed()
    );
    permit.release().await.unwrap();
}

#[tokio::test]
async fn the_first_user_fixes_the_number_of_permits() {
    let etcd = testkit::shared_etcd().unwrap();
    let session = session(etcd, 10).await;
    let three = Semaphore::new(&session, "sem-count", 3).unwrap();
    three
        .try_acquire()
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
    let other = self::session(etcd, 10).await;
    let error = Semaphore::new(&other, "sem-count", 4)
        .unwrap()
        .acquire()
        .await
        .unwrap_err();
    assert!(
        matches!(error, EtcdError::PermitCountMismatch { asked: 4, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("has 3 permits"), "{error}");
    for bad in [0, cpr_distributed::etcd::MAX_PERMITS + 1] {
        let error = Semaphore::new(&session, "sem-count", bad).unwrap_err();
        assert!(matches!(error, EtcdError::InvalidConfig(_)), "{error}");
    }
}

/// Acquires cut at every point of their run, with a permit free and with
/// none: afterwards no permit and no place in line is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_leaves_nothing_behind() {
    let etcd = testkit::shared_etcd().unwrap();
    let name = "sem-cancel";
    let holder = session(etcd, 10).await;
    let waiter = session(etcd, 10).await;
    let client = client(etcd).await;
    let semaphore = Semaphore::new(&waiter, name, 1).unwrap();
    for polls in 0..60 {
        if let Some(permit) = support::cut_after(semaphore.acquire(), polls).await {
            permit.unwrap().release().await.unwrap();
        }
    }
    // Now with the permit held by someone else: the waiter must give up
    // its place in line.
    let held = Semaphore::new(&holder, name, 1)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    assert!(
        semaphore
            .acquire_timeout(Duration::from_millis(300))
            .await
            .unwrap()
            .is_none()
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let permits = keys_under(&client, &format!("{name}/permits/")).await;
        let line = keys_under(&client, &format!("{name}/line/")).await;
        if permits == 1 && line == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{permits} permits and {line} waiters left (1 and 0 expected)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held.release().await.unwrap();
    let permit = semaphore.acquire().await.unwrap();
    permit.release().await.unwrap();
}
