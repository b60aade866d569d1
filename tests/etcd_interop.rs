//! Interoperability with etcd's own clients: `etcdctl lock` and `etcdctl
//! elect` (Go's concurrency package) and this crate's Mutex and Election
//! exclude each other and see each other's leaders, in both directions.

mod support;

use std::time::Duration;

use concurrency_patterns::distributed::etcd::{Election, EtcdConfig, Mutex, Session};
use support::{Proc, etcdctl};

async fn session(etcd: &testkit::EtcdCluster) -> Session {
    let client = EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
    Session::new(client, Duration::from_secs(10)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_excludes_us_and_we_exclude_it() {
    let etcd = testkit::EtcdCluster::start(1).unwrap();
    let ours = session(&etcd).await;
    let mutex = Mutex::new(&ours, "interop-lock").unwrap();

    // etcdctl holds (it prints its key, then holds until signalled).
    let mut go_holder =
        Proc::spawn(etcdctl(&etcd.endpoints_env()).args(["lock", "interop-lock"]));
    let go_key = go_holder.expect_line("interop-lock/", Duration::from_secs(10));
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "we took a lock etcdctl holds ({go_key})"
    );
    let waiting = tokio::spawn({
        let mutex = mutex.clone();
        async move { mutex.lock().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "we acquired while etcdctl held the lock"
    );
    go_holder.signal(libc::SIGTERM); // etcdctl unlocks on SIGTERM
    let guard = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // We hold: etcdctl's command must not run until we unlock.
    let mut go_waiter = Proc::spawn(etcdctl(&etcd.endpoints_env()).args([
        "lock",
        "interop-lock",
        "echo",
        "go-got-the-lock",
    ]));
    assert!(
        !go_waiter.sees_line_within("go-got-the-lock", Duration::from_secs(1)),
        "etcdctl ran its command while we held the lock"
    );
    guard.unlock().await.unwrap();
    go_waiter.expect_line("go-got-the-lock", Duration::from_secs(10));
    assert!(
        go_waiter
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}

/// A name written as Go's examples write it, with a trailing `/`, is the
/// same lock for etcdctl and for us: both use `/my-lock//<lease>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_style_name_with_a_trailing_slash_is_the_same_lock() {
    let etcd = testkit::EtcdCluster::start(1).unwrap();
    let ours = session(&etcd).await;
    let mutex = Mutex::new(&ours, "/my-lock/").unwrap();
    let mut go_holder =
        Proc::spawn(etcdctl(&etcd.endpoints_env()).args(["lock", "/my-lock/"]));
    let go_key = go_holder.expect_line("/my-lock//", Duration::from_secs(10));
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "we took a lock etcdctl holds ({go_key})"
    );
    go_holder.signal(libc::SIGTERM);
    let guard = tokio::time::timeout(Duration::from_secs(10), mutex.lock())
        .await
        .unwrap()
        .unwrap();
    assert!(guard.key().starts_with("/my-lock//"), "{}", guard.key());
    guard.unlock().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_and_our_election_see_one_leader() {
    let etcd = testkit::EtcdCluster::start(1).unwrap();
    let ours = session(&etcd).await;
    let election = Election::new(&ours, "interop-election").unwrap();

    let leading = election.campaign("rust-leader").await.unwrap();
    // etcdctl's observer sees our leader ...
    let mut go_observer = Proc::spawn(etcdctl(&etcd.endpoints_env()).args([
        "elect",
        "-l",
        "interop-election",
    ]));
    go_observer.expect_line("rust-leader", Duration::from_secs(10));
    // ... and an etcdctl candidate waits behind us.
    let mut go_candidate = Proc::spawn(etcdctl(&etcd.endpoints_env()).args([
        "elect",
        "interop-election",
        "go-leader",
    ]));
    assert!(
        !go_candidate.sees_line_within("go-leader", Duration::from_secs(1)),
        "etcdctl was elected while we lead"
    );
    leading.resign().await.unwrap();
    go_candidate.expect_line("go-leader", Duration::from_secs(10));
    go_observer.expect_line("go-leader", Duration::from_secs(10));

    // We see etcdctl's leader too, and cannot campaign past it.
    let leader = election.leader().await.unwrap().unwrap();
    assert_eq!(leader.value, "go-leader");
    let our_campaign = tokio::spawn({
        let election = election.clone();
        async move { election.campaign("rust-again").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!our_campaign.is_finished(), "two leaders");
    go_candidate.signal(libc::SIGTERM); // etcdctl resigns on SIGTERM
    let again = tokio::time::timeout(Duration::from_secs(10), our_campaign)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        election.leader().await.unwrap().unwrap().value,
        "rust-again"
    );
    again.resign().await.unwrap();
}
