//! Barrier and DoubleBarrier against a real etcd, with 5 participants.

use std::time::Duration;

use cpr_distributed::etcd::etcd_client::GetOptions;
use cpr_distributed::etcd::{
    Barrier, Client, DoubleBarrier, EtcdConfig, EtcdError, Session,
};

async fn client() -> Client {
    let etcd = testkit::shared_etcd().unwrap();
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

async fn session() -> Session {
    Session::new(client().await, Duration::from_secs(10))
        .await
        .unwrap()
}

async fn keys_under(prefix: &str) -> i64 {
    let options = GetOptions::new().with_prefix().with_count_only();
    client()
        .await
        .get(prefix, Some(options))
        .await
        .unwrap()
        .count()
}

#[tokio::test]
async fn wait_returns_at_once_when_the_barrier_is_down_and_blocks_while_up() {
    let barrier = Barrier::new(client().await, "barrier-basic").unwrap();
    tokio::time::timeout(Duration::from_secs(2), barrier.wait())
        .await
        .unwrap()
        .unwrap();

    assert!(barrier.hold().await.unwrap());
    assert!(!barrier.hold().await.unwrap(), "held twice");
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let barrier = barrier.clone();
            tokio::spawn(async move { barrier.wait().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "a waiter passed a raised barrier"
    );
    barrier.release().await.unwrap();
    for waiter in waiters {
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn a_release_right_after_the_read_is_not_missed() {
    // Many rounds of "wait starts, release comes at once": a watch started
    // from the wrong revision would hang in some of them.
    let barrier = Barrier::new(client().await, "barrier-race").unwrap();
    for _ in 0..20 {
        barrier.hold().await.unwrap();
        let waiter = tokio::spawn({
            let barrier = barrier.clone();
            async move { barrier.wait().await }
        });
        barrier.release().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("missed release")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn a_crashed_holder_on_a_session_does_not_block_waiters_forever() {
    let holder = session().await;
    let barrier = Barrier::with_session(&holder, "barrier-crash").unwrap();
    barrier.hold().await.unwrap();
    let waiter = tokio::spawn({
        let barrier = Barrier::new(client().await, "barrier-crash").unwrap();
        async move { barrier.wait().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    client()
        .await
        .lease_revoke(holder.lease_id())
        .await
        .unwrap(); // as an expiry would
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_enter_together_and_leave_together_leaving_no_keys() {
    let name = "double-five";
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(session().await);
    }
    let mut barriers: Vec<DoubleBarrier> = sessions
        .iter()
        .map(|s| DoubleBarrier::new(s, name, 5).unwrap())
        .collect();
    let last = barriers.pop().unwrap();
    let entering: Vec<_> = barriers
        .into_iter()
        .map(|mut b| tokio::spawn(async move { b.enter().await.map(|()| b) }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        entering.iter().all(|e| !e.is_finished()),
        "entered before all 5 arrived"
    );
    let mut last = last;
    last.enter().await.unwrap();
    let mut inside = vec![last];
    for e in entering {
        inside.push(
            tokio::time::timeout(Duration::from_secs(5), e)
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }

    // Four leave; none gets out before the fifth leaves too.
    let mut fifth = inside.pop().unwrap();
    let leaving: Vec<_> = inside
        .into_iter()
        .map(|mut b| tokio::spawn(async move { b.leave().await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        leaving.iter().all(|l| !l.is_finished()),
        "left before all 5 left"
    );
    fifth.leave().await.unwrap();
    for l in leaving {
        tokio::time::timeout(Duration::from_secs(5), l)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    assert_eq!(keys_under(&format!("{name}/")).await, 0, "keys left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_participant_too_many_is_turned_away_clearly() {
    let name = "double-full";
    let (a, b, c) = (session().await, session().await, session().await);
    let mut first = DoubleBarrier::new(&a, name, 2).unwrap();
    let mut second = DoubleBarrier::new(&b, name, 2).unwrap();
    let entering = tokio::spawn(async move { first.enter().await.map(|()| first) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    second.enter().await.unwrap();
    let mut first = entering.await.unwrap().unwrap();
    let mut third = DoubleBarrier::new(&c, name, 2).unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), third.enter())
        .await
        .expect("hung")
        .unwrap_err();
    assert!(
        matches!(error, EtcdError::TooManyParticipants { count: 2, .. }),
        "{error}"
    );
    let both = tokio::join!(first.leave(), second.leave());
    both.0.unwrap();
    both.1.unwrap();
    assert_eq!(keys_under(&format!("{name}/")).await, 0);
    assert!(DoubleBarrier::new(&c, name, 0).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_participant_holds_the_others_only_until_its_lease_ends() {
    let name = "double-crash";
    let (a, b, c) = (session().await, session().await, session().await);
    let mut barriers = vec![
        DoubleBarrier::new(&a, name, 3).unwrap(),
        DoubleBarrier::new(&b, name, 3).unwrap(),
        DoubleBarrier::new(&c, name, 3).unwrap(),
    ];
    let mut entering = Vec::new();
    for mut barrier in barriers.drain(..) {
        entering.push(tokio::spawn(async move {
            barrier.enter().await.map(|()| barrier)
        }));
    }
    let mut inside = Vec::new();
    for e in entering {
        inside.push(
            tokio::time::timeout(Duration::from_secs(5), e)
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    // The participant on session `c` crashes inside the barrier.
    let crashed = inside.pop().unwrap();
    std::mem::forget(crashed);
    let leaving: Vec<_> = inside
        .into_iter()
        .map(|mut b| tokio::spawn(async move { b.leave().await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        leaving.iter().all(|l| !l.is_finished()),
        "left while a participant was still inside"
    );
    client().await.lease_revoke(c.lease_id()).await.unwrap(); // its lease ends
    for l in leaving {
        tokio::time::timeout(Duration::from_secs(5), l)
            .await
            .expect("stuck behind a dead participant")
            .unwrap()
            .unwrap();
    }
    assert_eq!(keys_under(&format!("{name}/")).await, 0);
}
