//! The lesson's etcd code, beside ours: each written here in Rust as the
//! lesson wrote it in Go, with a test against a real etcd that shows what
//! goes wrong; and, where the lesson has none, the first version one would
//! write (the Redis semaphore). The chapters include them from here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cpr_distributed::etcd::etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use cpr_distributed::etcd::{
    Barrier, Client, Election, EtcdConfig, Mutex, Queue, Session, WorkQueue, transfer,
};
use cpr_distributed::redis::{FencedStore, RedisConfig, RedisLock, RedisSemaphore};

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
        // Alice hears of the delete about when Bob does; a step of work
        // may still be under way then.
        tokio::time::sleep(Duration::from_millis(100)).await;
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

/// The lesson's dequeue (Go's recipe): the oldest key under the queue's
/// name — read as a bare prefix — deleted if it is still the version read.
/// The item is gone from etcd before the caller has done anything with it.
// ANCHOR: lesson_dequeue
async fn lesson_dequeue(client: &Client, name: &str) -> Option<String> {
    let mut client = client.clone();
    loop {
        let oldest = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let read = client.get(name, Some(oldest)).await.ok()?;
        let item = read.kvs().first()?; // (Go waits for a put here.)
        let take = Txn::new()
            .when([Compare::mod_revision(
                item.key(),
                CompareOp::Equal,
                item.mod_revision(),
            )])
            .and_then([TxnOp::delete(item.key(), None)]);
        if client.txn(take).await.ok()?.succeeded() {
            return item.value_str().ok().map(str::to_string);
        }
    }
}
// ANCHOR_END: lesson_dequeue

/// Two queues, `mail` and `mail-urgent`. The lesson's consumer of `mail`
/// takes `mail-urgent`'s item: its bare prefix `mail` matches both. Ours
/// reads under `mail/` and finds its queue empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lessons_queue_takes_another_queues_items() {
    let c = client().await;
    let urgent = Queue::new(c.clone(), "lesson-mail-urgent").unwrap();
    urgent.enqueue("for the urgent queue").await.unwrap();
    let ours = Queue::new(c.clone(), "lesson-mail").unwrap();
    assert_eq!(ours.try_dequeue().await.unwrap(), None, "ours: empty");
    assert_eq!(
        lesson_dequeue(&c, "lesson-mail").await.as_deref(),
        Some("for the urgent queue"),
        "the lesson's consumer of lesson-mail did not take the other's item"
    );
}

/// A consumer takes an item and dies before finishing it. With the
/// lesson's queue the item is lost: it was deleted when it was taken. With
/// a `WorkQueue` the item is only claimed, on the consumer's lease; when the
/// lease ends the next consumer gets it, as its second delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lessons_queue_loses_the_item_of_a_consumer_that_dies() {
    let c = client().await;
    let queue = Queue::new(c.clone(), "lesson-at-most-once").unwrap();
    queue.enqueue("invoice 7").await.unwrap();
    let taken = lesson_dequeue(&c, "lesson-at-most-once/").await;
    assert_eq!(taken.as_deref(), Some("invoice 7"));
    // The consumer dies here, before it has sent the invoice.
    assert_eq!(
        queue.try_dequeue().await.unwrap(),
        None,
        "the lesson's item survived its consumer"
    );

    let dying = Session::new(c.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let work = WorkQueue::new(&dying, "ours-at-least-once").unwrap();
    work.enqueue("invoice 8").await.unwrap();
    let first = work.dequeue().await.unwrap();
    c.clone().lease_revoke(dying.lease_id()).await.unwrap(); // it dies
    let next = Session::new(c.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let work = WorkQueue::new(&next, "ours-at-least-once").unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), work.dequeue())
        .await
        .expect("the dead consumer's item never came back")
        .unwrap();
    assert_eq!(
        (again.id.as_str(), again.deliveries),
        (first.id.as_str(), 2)
    );
    assert_eq!(again.value, b"invoice 8");
    work.ack(&again).await.unwrap();
}

/// The lesson's barrier holder: the key, with no lease.
// ANCHOR: lesson_barrier
async fn lesson_hold(client: &Client, name: &str) {
    client.clone().put(name, "", None).await.unwrap();
}
// ANCHOR_END: lesson_barrier

/// A holder dies without releasing. The lesson's barrier key has no lease,
/// so it stays, and the waiters wait for ever. Held through
/// `Barrier::with_session`, the key goes with the holder's lease, and the
/// waiters go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lessons_barrier_blocks_for_ever_when_its_holder_dies() {
    let c = client().await;
    lesson_hold(&c, "lesson-barrier").await;
    // The holder dies here. Its key has no lease to end.
    let waiter = Barrier::new(c.clone(), "lesson-barrier").unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(3), waiter.wait()).await;
    assert!(waited.is_err(), "the lesson's barrier opened on its own");

    let holder = Session::new(c.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let held = Barrier::with_session(&holder, "our-barrier").unwrap();
    assert!(held.hold().await.unwrap());
    let waiter = Barrier::new(c.clone(), "our-barrier").unwrap();
    let waiting = tokio::spawn(async move { waiter.wait().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "our barrier opened while held");
    c.clone().lease_revoke(holder.lease_id()).await.unwrap(); // it dies
    tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("our barrier stayed closed after its holder died")
        .unwrap()
        .unwrap();
}

/// Not from the lesson, which has no semaphore: the one usually written
/// first. A counter of holders: `INCR` takes a permit if the count stays
/// within `permits` (and gives it back at once if not), `DECR` releases.
// ANCHOR: counter_semaphore
async fn counter_try_acquire(
    redis: &mut redis::aio::MultiplexedConnection,
    name: &str,
    permits: i64,
) -> redis::RedisResult<bool> {
    let holders: i64 = redis::cmd("INCR").arg(name).query_async(redis).await?;
    if holders <= permits {
        return Ok(true);
    }
    let _: i64 = redis::cmd("DECR").arg(name).query_async(redis).await?;
    Ok(false)
}
// ANCHOR_END: counter_semaphore

/// One permit; its holder dies without releasing. The counter semaphore
/// never gets the permit back: nothing but the holder could decrement it.
/// `RedisSemaphore`'s permits have a lease: the permit is free again when
/// the lease ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_semaphore_loses_the_permit_of_a_holder_that_dies() {
    let server = testkit::shared_redis().unwrap();
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert!(
        counter_try_acquire(&mut redis, "counter-sem", 1)
            .await
            .unwrap()
    );
    // The holder dies here, before its DECR.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert!(
            !counter_try_acquire(&mut redis, "counter-sem", 1)
                .await
                .unwrap(),
            "the dead holder's permit came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ours = RedisSemaphore::connect(&RedisConfig::new(server.url()), "our-sem", 1)
        .await
        .unwrap()
        .lease(Duration::from_millis(500))
        .unwrap();
    let held = ours.try_acquire().await.unwrap().unwrap();
    std::mem::forget(held); // it dies: no release, no drop
    let next = ours.acquire_timeout(Duration::from_secs(3)).await;
    assert!(
        next.is_ok(),
        "our semaphore kept the dead holder's permit: {next:?}"
    );
}

/// The lesson's enqueue: a put of a fresh key `<name>/<unix nanos>`. Its
/// caller, when the reply does not come, can only send it again — or not.
// ANCHOR: lesson_enqueue
async fn lesson_enqueue(client: &Client, name: &str, value: &str) -> bool {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let key = format!("{name}/{nanos}");
    client.clone().put(key, value, None).await.is_ok()
}
// ANCHOR_END: lesson_enqueue

/// How many keys are under `prefix`.
async fn items_under(client: &Client, prefix: &str) -> usize {
    let options = GetOptions::new().with_prefix().with_count_only();
    let count = client
        .clone()
        .get(prefix, Some(options))
        .await
        .unwrap()
        .count();
    usize::try_from(count).unwrap()
}

/// The link loses an enqueue's reply: the request reaches etcd and is
/// applied, the reply is dropped on the way back, and the client gives up
/// waiting. The lesson's caller sends the enqueue again and the queue
/// holds the item twice (or more). Our enqueue, through the same link,
/// settles the lost reply by its fence and adds the item once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lessons_enqueue_sent_again_after_a_lost_reply_adds_the_item_twice() {
    let etcd = testkit::shared_etcd().unwrap();
    let link = testkit::TcpProxy::start(etcd.client_addrs()[0]).unwrap();
    let lossy = EtcdConfig::new([link.addr().to_string()])
        .request_timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .unwrap();
    let direct = client().await;
    // Connected before the faults: the requests below go out at once.
    assert_eq!(items_under(&lossy, "lesson-twice/").await, 0);

    let first = tokio::spawn({
        let lossy = lossy.clone();
        async move { lesson_enqueue(&lossy, "lesson-twice", "pay invoice 9").await }
    });
    lose_the_reply(&link, &direct, "lesson-twice/").await;
    assert!(!first.await.unwrap(), "the reply came: nothing was lost");
    // The caller cannot know that the enqueue was applied, and sends it
    // again until it hears back (each unanswered try may be applied too).
    while !lesson_enqueue(&lossy, "lesson-twice", "pay invoice 9").await {}
    let copies = items_under(&direct, "lesson-twice/").await;
    assert!(copies >= 2, "the lesson's retry did not double the item");

    let ours = Queue::new(lossy, "ours-once").unwrap();
    // Connected again, and past the queue's first reads, before the fault.
    ours.enqueue("warm-up").await.unwrap();
    assert_eq!(ours.dequeue().await.unwrap(), b"warm-up");
    let enqueued = tokio::spawn(async move { ours.enqueue("pay invoice 9").await });
    lose_the_reply(&link, &direct, "ours-once/").await;
    enqueued.await.unwrap().unwrap();
    assert_eq!(items_under(&direct, "ours-once/").await, 1);
}

/// How long the lossy client waits for a reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Slows the link by a second each way, waits (on a direct connection)
/// until the enqueue under `prefix` has been applied, and cuts the link
/// while its reply is still on the way back. Past the client's request
/// timeout, the link heals on fresh connections.
async fn lose_the_reply(link: &testkit::TcpProxy, direct: &Client, prefix: &str) {
    link.delay(Duration::from_secs(1), Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(10);
    while items_under(direct, prefix).await == 0 {
        assert!(Instant::now() < deadline, "the enqueue never reached etcd");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    link.blackhole();
    tokio::time::sleep(REQUEST_TIMEOUT).await;
    link.heal();
    link.reset_connections();
}

/// The lesson's Redis lock: `SET key token NX PX ttl`, and an unlock that
/// deletes the key only while it still holds our token.
// ANCHOR: lesson_redis_lock
async fn lesson_redis_lock(
    redis: &mut redis::aio::MultiplexedConnection,
    key: &str,
    token: &str,
    ttl: Duration,
) -> redis::RedisResult<bool> {
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis().to_string())
        .query_async(redis)
        .await?;
    Ok(set.is_some())
}

async fn lesson_redis_unlock(
    redis: &mut redis::aio::MultiplexedConnection,
    key: &str,
    token: &str,
) -> redis::RedisResult<bool> {
    let only_ours = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
         return redis.call('DEL', KEYS[1]) else return 0 end",
    );
    let deleted: i64 = only_ours.key(key).arg(token).invoke_async(redis).await?;
    Ok(deleted == 1)
}
// ANCHOR_END: lesson_redis_lock

/// A holder stops for longer than its lease (a pause, a stalled VM); the
/// next client takes the lock and writes the report; the first wakes and
/// writes too. With the lesson's lock nothing tells the first that it is
/// late: its write lands over the new holder's. With ours the write
/// carries the lock's fencing token, and the store refuses the stale one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lessons_redis_lock_lets_a_paused_holder_overwrite_the_next() {
    const LEASE: Duration = Duration::from_millis(300);
    let server = testkit::shared_redis().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut a = client.get_multiplexed_async_connection().await.unwrap();
    let mut b = client.get_multiplexed_async_connection().await.unwrap();
    assert!(
        lesson_redis_lock(&mut a, "lesson-report-lock", "a", LEASE)
            .await
            .unwrap()
    );
    tokio::time::sleep(LEASE * 2).await; // A stops, past its lease
    assert!(
        lesson_redis_lock(&mut b, "lesson-report-lock", "b", LEASE * 10)
            .await
            .unwrap()
    );
    let write =
        |value: &'static str| redis::cmd("SET").arg("lesson-report").arg(value).clone();
    let _: () = write("B's report").query_async(&mut b).await.unwrap();
    let _: () = write("A's report").query_async(&mut a).await.unwrap(); // A wakes
    let report: String = redis::cmd("GET")
        .arg("lesson-report")
        .query_async(&mut b)
        .await
        .unwrap();
    assert_eq!(report, "A's report", "the lesson's late holder was stopped");
    // The compare-and-delete does keep A from releasing B's lock.
    assert!(
        !lesson_redis_unlock(&mut a, "lesson-report-lock", "a")
            .await
            .unwrap()
    );
    assert!(
        lesson_redis_unlock(&mut b, "lesson-report-lock", "b")
            .await
            .unwrap()
    );

    let config = RedisConfig::new(server.url());
    let lock = RedisLock::connect(&config, "our-report-lock")
        .await
        .unwrap()
        .ttl(LEASE)
        .unwrap()
        .watchdog(false);
    let store = FencedStore::new(config.connect().await.unwrap(), "our-report");
    let first = lock.lock().await.unwrap();
    tokio::time::sleep(LEASE * 2).await; // A stops, past its lease
    let second = lock.lock_timeout(Duration::from_secs(2)).await.unwrap();
    assert!(
        store
            .write(second.fencing_token(), "B's report")
            .await
            .unwrap()
    );
    let late = store
        .write(first.fencing_token(), "A's report")
        .await
        .unwrap();
    assert!(!late, "the store took the late holder's write");
    assert_eq!(store.read().await.unwrap().as_deref(), Some("B's report"));
    second.unlock().await.unwrap();
}
