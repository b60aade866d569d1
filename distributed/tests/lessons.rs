//! The lesson's etcd code, beside ours: each written here in Rust as the
//! lesson wrote it in Go, with a test against a real etcd that shows what
//! goes wrong. The chapters include them from here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cpr_distributed::etcd::etcd_client::{
    Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use cpr_distributed::etcd::{Client, Election, EtcdConfig, Mutex, Session, transfer};

async fn client() -> Client {
    let etcd = testkit::shared_etcd().unwrap();
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

async fn balance(client: &Client, key: &str) -> u64 {
    let got = client.clone().get(key, None).await.unwrap();
    got.kvs()[0].value_str().unwrap().parse().unwrap()
}

/// The lesson's transfer: both balances read in one transaction, then
/// written in another guarded by their revisions — but the second balance
/// is taken at index 1 of a reply that holds one key.
// ANCHOR: lesson_transfer
async fn lesson_transfer(client: &Client, from: &str, to: &str, amount: u64) {
    let read = Txn::new().and_then([TxnOp::get(from, None), TxnOp::get(to, None)]);
    let reply = client.clone().txn(read).await.unwrap();
    let responses = reply.op_responses();
    let (TxnOpResponse::Get(first), TxnOpResponse::Get(second)) =
        (&responses[0], &responses[1])
    else {
        return;
    };
    let from_kv = &first.kvs()[0];
    let to_kv = &second.kvs()[1]; // a get of one key holds one: [1] is past the end
    let from_balance: u64 = from_kv.value_str().unwrap().parse().unwrap();
    let to_balance: u64 = to_kv.value_str().unwrap().parse().unwrap();
    let write = Txn::new()
        .when([
            Compare::mod_revision(from, CompareOp::Equal, from_kv.mod_revision()),
            Compare::mod_revision(to, CompareOp::Equal, to_kv.mod_revision()),
        ])
        .and_then([
            TxnOp::put(from, (from_balance - amount).to_string(), None),
            TxnOp::put(to, (to_balance + amount).to_string(), None),
        ]);
    client.clone().txn(write).await.unwrap();
}
// ANCHOR_END: lesson_transfer

/// Alice has 100 and Bob 50; Alice sends 10. The lesson's transfer
/// panics on its first run (index out of bounds), having written nothing;
/// ours moves the 10 and keeps the sum.
#[tokio::test]
async fn the_lessons_transfer_panics_on_its_first_run() {
    let c = client().await;
    for (key, value) in [("lesson-bank/alice", "100"), ("lesson-bank/bob", "50")] {
        c.clone().put(key, value, None).await.unwrap();
    }
    let lesson = tokio::spawn({
        let c = c.clone();
        async move { lesson_transfer(&c, "lesson-bank/alice", "lesson-bank/bob", 10).await }
    });
    let outcome = lesson.await;
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_panic()),
        "the lesson's transfer ran: {outcome:?}"
    );
    assert_eq!(
        (
            balance(&c, "lesson-bank/alice").await,
            balance(&c, "lesson-bank/bob").await
        ),
        (100, 50),
        "nothing written"
    );

    transfer(&c, "lesson-bank/alice", "lesson-bank/bob", 10, 10)
        .await
        .unwrap();
    assert_eq!(
        (
            balance(&c, "lesson-bank/alice").await,
            balance(&c, "lesson-bank/bob").await
        ),
        (90, 60)
    );
}

/// The lesson's lock: a key put on a fresh lease if it does not exist, and
/// "unlock" that only stops renewing the lease — so the key stays until
/// the lease runs out. (A failed attempt also leaves its lease granted and
/// renewed by nobody.)
// ANCHOR: lesson_lock
struct LessonLock {
    client: Client,
    key: String,
    ttl: i64,
}

impl LessonLock {
    async fn try_lock(&self) -> Option<i64> {
        let mut client = self.client.clone();
        let lease = client.lease_grant(self.ttl, None).await.ok()?.id();
        let take = Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                self.key.as_str(),
                "locked",
                Some(PutOptions::new().with_lease(lease)),
            )]);
        // On failure the lease is simply forgotten: it lives out its TTL.
        client.txn(take).await.ok()?.succeeded().then_some(lease)
    }

    fn unlock(&self, _lease: i64) {
        // Stops the keep-alive (there is none here): the key stays until
        // the lease expires.
    }
}
// ANCHOR_END: lesson_lock

/// After the lesson's unlock, another client cannot take the lock until
/// the lease's TTL has run out; after ours, at once. And every failed
/// attempt leaves a lease behind. (Its own etcd, so that the leases
/// counted are only this test's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lessons_unlock_leaves_the_key_until_the_lease_ends() {
    let etcd = testkit::EtcdCluster::start(1).unwrap();
    let c = EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
    let lesson = LessonLock {
        client: c.clone(),
        key: "lesson-lock".into(),
        ttl: 3,
    };
    let lease = lesson.try_lock().await.expect("free at first");
    for _ in 0..5 {
        assert!(lesson.try_lock().await.is_none(), "held");
    }
    let leases = c.clone().leases().await.unwrap().leases().len();
    assert_eq!(leases, 6, "the holder's lease and one per failed attempt");
    lesson.unlock(lease);
    let unlocked = Instant::now();
    let retaken = loop {
        if lesson.try_lock().await.is_some() {
            break unlocked.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        retaken >= Duration::from_secs(1),
        "taken again {retaken:?} after the lesson's unlock"
    );

    let session = Session::new(c.clone(), Duration::from_secs(3))
        .await
        .unwrap();
    let ours = Mutex::new(&session, "ours-lock").unwrap();
    ours.lock().await.unwrap().unlock().await.unwrap();
    let other = Session::new(c, Duration::from_secs(3)).await.unwrap();
    let unlocked = Instant::now();
    let taken = Mutex::new(&other, "ours-lock")
        .unwrap()
        .try_lock()
        .await
        .unwrap();
    assert!(taken.is_some(), "our unlock left the key behind");
    assert!(unlocked.elapsed() < Duration::from_secs(1));
}

/// The lesson's leader: campaign, then hand over to a leadership handler
/// that works until the process ends. Nothing tells the work that
/// leadership is gone.
// ANCHOR: lesson_leader
async fn lesson_leader(election: Election, name: &str, work_done: Arc<AtomicU64>) {
    let Ok(_leadership) = election.campaign(name).await else {
        return;
    };
    handle_leadership(&work_done).await
}

/// The leader's work, in a loop.
async fn handle_leadership(work_done: &AtomicU64) {
    loop {
        work_done.fetch_add(1, SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
// ANCHOR_END: lesson_leader

/// Counts the work done by one leader over `period`.
async fn work_during(work_done: &AtomicU64, period: Duration) -> u64 {
    let before = work_done.load(SeqCst);
    tokio::time::sleep(period).await;
    work_done.load(SeqCst) - before
}

/// Alice leads; her key is deleted behind her back (an operator, or a
/// lease that ran out during a pause), and Bob is elected. The lesson's
/// Alice goes on working beside Bob: two leaders. Under `Election::lead`
/// her work is stopped as soon as her key goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lessons_leader_keeps_working_after_losing_leadership() {
    let c = client().await;
    for (name, ours) in [("lesson-leader", false), ("our-leader", true)] {
        let session = |c: Client| async move {
            Session::new(c, Duration::from_secs(5)).await.unwrap()
        };
        let (alice_session, bob_session) =
            (session(c.clone()).await, session(c.clone()).await);
        let alice = Election::new(&alice_session, name).unwrap();
        let alice_work = Arc::new(AtomicU64::new(0));
        let alice_running = if ours {
            let work_done = Arc::clone(&alice_work);
            tokio::spawn(async move {
                let _ = alice
                    .lead("alice", async move |_stop| {
                        handle_leadership(&work_done).await
                    })
                    .await;
            })
        } else {
            tokio::spawn(lesson_leader(alice, "alice", Arc::clone(&alice_work)))
        };
        let bob = Election::new(&bob_session, name).unwrap();
        let leader = loop {
            if let Some(leader) = bob.leader().await.unwrap() {
                break leader;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(leader.value, "alice");
        assert!(work_during(&alice_work, Duration::from_millis(200)).await > 0);

        c.clone().delete(leader.key, None).await.unwrap();
        let _bob_leads = bob.campaign("bob").await.unwrap();
        let alice_beside_bob =
            work_during(&alice_work, Duration::from_millis(300)).await;
        if ours {
            assert_eq!(alice_beside_bob, 0, "our Alice worked on after losing");
        } else {
            assert!(
                alice_beside_bob > 0,
                "the lesson's Alice stopped: the failure was not shown"
            );
        }
        alice_running.abort();
    }
}
