//! Partitions: a client cut off from its server by a link that drops every
//! byte (testkit's `TcpProxy`), while the server and the client both live.
//! A kill closes connections and both sides learn at once; a partition
//! tells nobody, and only the client's own clocks can find it out. These
//! tests check that they do, in time: a holder that can no longer renew
//! learns it lost the lock before anyone else can take it, and what it
//! does after the link heals cannot harm the new holder.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cpr_distributed::etcd::etcd_client::{Compare, Txn, TxnOp};
use cpr_distributed::etcd::{Client, EtcdConfig, Mutex, Queue, Session, WorkQueue};
use cpr_distributed::redis::{RedisConfig, RedisError, RedisLock, Redlock};
use testkit::history::{self, Call, FencedLock, LockOp};
use testkit::{RedisServer, TcpProxy};

/// One hand-over after a cut, checked as a history: the holder's grant
/// (its lock call), its release at the moment it learned of the loss, and
/// the rival's grant, each `(invoked, returned, token)`. Some order with
/// one holder at a time and rising tokens must explain what both saw.
fn assert_handed_over(
    holder: (Instant, Instant, u64),
    lost_at: Instant,
    rival: (Instant, Instant, u64),
) {
    let call = |process, invoked, returned, op| Call {
        process,
        invoked,
        returned: Some(returned),
        op,
    };
    let history = [
        call(0, holder.0, holder.1, LockOp::Acquired(holder.2)),
        call(0, lost_at, lost_at, LockOp::Released(holder.2)),
        call(1, rival.0, rival.1, LockOp::Acquired(rival.2)),
    ];
    if let Err(anomaly) = history::check(&FencedLock, &history) {
        panic!("{anomaly}: {history:#?}");
    }
}

fn token(fencing_token: i64) -> u64 {
    u64::try_from(fencing_token).unwrap()
}

async fn etcd_client(endpoint: String) -> Client {
    EtcdConfig::new([endpoint]).connect().await.unwrap()
}

/// An etcd Mutex holder cut off from etcd: its session's loss signal fires
/// no later than the lease's TTL after the cut (plus a margin for the
/// renewal it had just sent), and before another process can take the
/// lock; after the link heals, a write fenced on its guard is refused,
/// and the new holder's is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_holder_cut_off_learns_it_lost_the_lock_before_another_takes_it() {
    let ttl = Duration::from_secs(2);
    let etcd = testkit::shared_etcd().unwrap();
    let link = TcpProxy::start(etcd.client_addrs()[0]).unwrap();
    let cut_off = etcd_client(link.addr().to_string()).await;
    let session = Session::new(cut_off.clone(), ttl).await.unwrap();
    let lock_invoked = Instant::now();
    let held = Mutex::new(&session, "partition-mutex")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let lock_returned = Instant::now();
    // A few renewals through the link first.
    tokio::time::sleep(ttl).await;
    assert!(!held.is_lost());

    // Cut just after a renewal has gone through (the link carries nothing
    // else now): the lease then lasts a whole TTL from about the cut, and a
    // loss reported late is seen as late.
    let quiet = link.bytes_forwarded();
    while link.bytes_forwarded() == quiet {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await; // its answer back
    // ANCHOR: cut_holder
    link.blackhole();
    let cut = Instant::now();
    let direct = etcd_client(etcd.endpoints()[0].clone()).await;
    let rival_session = Session::new(direct.clone(), Duration::from_secs(10))
        .await
        .unwrap();
    let rival = Mutex::new(&rival_session, "partition-mutex").unwrap();
    let rival_invoked = Instant::now();
    let (lost_at, (taken_at, rivals)) = tokio::join!(
        async {
            tokio::time::timeout(ttl * 3, held.lost())
                .await
                .expect("the loss was never reported");
            Instant::now()
        },
        async {
            let taken = tokio::time::timeout(ttl * 3, rival.lock())
                .await
                .expect("the rival never got the lock")
                .unwrap();
            (Instant::now(), taken)
        }
    );
    assert!(
        lost_at <= taken_at,
        "the holder learned {:?} after the cut, the rival held it at {:?}",
        lost_at - cut,
        taken_at - cut
    );
    // The last renewal was sent before the cut, so the lease the holder can
    // count on ends within a TTL of the cut. (The loss was reported 100 ms
    // after that — a retry pause that ran past the deadline — and a rival
    // was granted the lock 65 ms before the holder knew.)
    assert!(
        lost_at - cut <= ttl,
        "the loss was reported {:?} after the cut",
        lost_at - cut
    );
    assert!(rivals.fencing_token() > held.fencing_token());
    // The same as a history: the old holder stops holding the moment it
    // learns of the loss; a legal order of grants and releases with rising
    // tokens must explain what both saw.
    assert_handed_over(
        (lock_invoked, lock_returned, token(held.fencing_token())),
        lost_at,
        (rival_invoked, taken_at, token(rivals.fencing_token())),
    );
    // ANCHOR_END: cut_holder

    // Healed (and the half-sent frames of the cut connection reset): the
    // old holder's fenced write is refused, the new holder's applied.
    link.reset_connections();
    link.heal();
    let fenced = |guard: Compare, value: &'static str| {
        Txn::new().when([guard]).and_then([TxnOp::put(
            "partition-mutex-resource",
            value,
            None,
        )])
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let stale = loop {
        match cut_off
            .clone()
            .txn(fenced(held.is_held(), "from the old holder"))
            .await
        {
            Ok(reply) => break reply,
            Err(error) => {
                assert!(Instant::now() < deadline, "the link never healed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(!stale.succeeded(), "the old holder's fenced write applied");
    let fresh = direct
        .clone()
        .txn(fenced(rivals.is_held(), "from the new holder"))
        .await
        .unwrap();
    assert!(fresh.succeeded());
    let resource = direct
        .clone()
        .get("partition-mutex-resource", None)
        .await
        .unwrap();
    assert_eq!(resource.kvs()[0].value(), b"from the new holder");
    rivals.unlock().await.unwrap();
}

/// A Redis lock holder cut off: its watchdog reports the loss before the
/// key expires; after the link heals, its release returns false and leaves
/// the new holder's lock in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_holder_cut_off_cannot_release_the_new_holders_lock_after_heal() {
    let ttl = Duration::from_secs(1);
    let redis = testkit::shared_redis().unwrap();
    let link = TcpProxy::start(redis.addr()).unwrap();
    let holder = RedisLock::connect(
        &RedisConfig::new(format!("redis://{}/", link.addr())),
        "partition-redis",
    )
    .await
    .unwrap()
    .ttl(ttl)
    .unwrap()
    .watchdog(true);
    let lock_invoked = Instant::now();
    let held = holder.lock().await.unwrap();
    let lock_returned = Instant::now();
    tokio::time::sleep(ttl).await; // renewed through the link
    link.blackhole();
    let cut = Instant::now();
    let direct = RedisLock::connect(&RedisConfig::new(redis.url()), "partition-redis")
        .await
        .unwrap();
    let rival_invoked = Instant::now();
    let (lost_at, (rival, taken_at)) = tokio::join!(
        async {
            tokio::time::timeout(ttl * 3, held.lost())
                .await
                .expect("the loss was never reported");
            Instant::now()
        },
        async {
            let rival = direct.lock_timeout(ttl * 3).await.unwrap();
            (rival, Instant::now())
        }
    );
    assert!(
        lost_at - cut <= ttl,
        "reported {:?} after the cut",
        lost_at - cut
    );
    assert!(rival.fencing_token() > held.fencing_token());
    assert_handed_over(
        (lock_invoked, lock_returned, held.fencing_token()),
        lost_at,
        (rival_invoked, taken_at, rival.fencing_token()),
    );

    link.reset_connections();
    link.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    let released = loop {
        // The guard is consumed by unlock: ask through a fresh try each
        // time the link is not back yet.
        match holder.is_locked().await {
            Ok(_) => break held.unlock().await,
            Err(error) => {
                assert!(Instant::now() < deadline, "the link never healed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(
        matches!(released, Ok(false)),
        "the old holder's release: {released:?}"
    );
    assert!(
        direct.try_lock().await.unwrap().is_none(),
        "the old holder's release freed the new holder's lock"
    );
    assert!(
        rival.unlock().await.unwrap(),
        "the new holder's key was gone"
    );
}

/// Redlock on three servers, each behind its own link: with one cut off
/// it still locks; with two, it fails within a bound and leaves nothing
/// locked anywhere (checked after the links heal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_works_with_one_server_cut_off_and_fails_cleanly_with_two() {
    let servers = RedisServer::start_many(3).unwrap();
    let links: Vec<TcpProxy> = servers
        .iter()
        .map(|s| TcpProxy::start(s.addr()).unwrap())
        .collect();
    let urls: Vec<String> = links
        .iter()
        .map(|l| format!("redis://{}/", l.addr()))
        .collect();
    let redlock = Redlock::connect(&urls, "partition-redlock")
        .unwrap()
        .ttl(Duration::from_secs(5))
        .unwrap()
        .attempts(2);

    links[0].blackhole();
    let guard = redlock.lock().await.expect("2 of 3 is a majority");
    guard.unlock().await;

    links[1].blackhole();
    let started = Instant::now();
    let error = redlock.lock().await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, RedisError::NoQuorum { .. }), "{error}");
    assert!(took < Duration::from_secs(10), "failing took {took:?}");

    for link in &links {
        link.reset_connections();
        link.heal();
    }
    for server in &servers {
        let mut conn = RedisConfig::new(server.url()).connect().await.unwrap();
        let exists: i64 = cpr_distributed::redis::redis::cmd("EXISTS")
            .arg("partition-redlock")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            exists,
            0,
            "a failed Redlock left a lock on {}",
            server.url()
        );
    }
}

/// Two consumers of one Queue, one of them cut off from etcd for 3 s in
/// the middle of a backlog (its takes in flight lose their replies), then
/// healed: every item is delivered, and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_consumer_cut_off_mid_take_loses_and_doubles_nothing() {
    const ITEMS: usize = 150;
    let etcd = testkit::shared_etcd().unwrap();
    let link = TcpProxy::start(etcd.client_addrs()[0]).unwrap();
    let direct = etcd_client(etcd.endpoints()[0].clone()).await;
    let producer = Queue::new(direct.clone(), "partition-queue").unwrap();
    let items: Vec<String> = (0..ITEMS).map(|i| format!("item-{i:03}")).collect();
    producer.enqueue_many(items.clone()).await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let taken_behind_link = Arc::new(AtomicUsize::new(0));
    let consume = |queue: Queue, done: Arc<AtomicBool>, taken: Arc<AtomicUsize>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            while !done.load(SeqCst) {
                // Cut off, a take fails or is still settling: go on.
                if let Ok(Ok(item)) =
                    tokio::time::timeout(Duration::from_millis(500), queue.dequeue())
                        .await
                {
                    got.push(String::from_utf8(item).unwrap());
                    taken.fetch_add(1, SeqCst);
                }
                // Work on the item: the backlog lasts past the cut.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            got
        })
    };
    let behind_link = Queue::new(
        etcd_client(link.addr().to_string()).await,
        "partition-queue",
    )
    .unwrap();
    let cut_consumer = consume(behind_link, done.clone(), taken_behind_link.clone());
    let steady = consume(
        Queue::new(direct, "partition-queue").unwrap(),
        done.clone(),
        Arc::new(AtomicUsize::new(0)),
    );

    // Cut once the consumer behind the link is taking items.
    let deadline = Instant::now() + Duration::from_secs(10);
    while taken_behind_link.load(SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "the consumer behind the link took nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    link.blackhole();
    tokio::time::sleep(Duration::from_secs(3)).await;
    link.reset_connections();
    link.heal();
    // Until the backlog is gone and any settling is over.
    tokio::time::sleep(Duration::from_secs(8)).await;
    done.store(true, SeqCst);
    let (cut, steady) = (cut_consumer.await.unwrap(), steady.await.unwrap());
    let all: Vec<&String> = cut.iter().chain(&steady).collect();
    let unique: HashSet<&String> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "an item was delivered twice");
    let missing: Vec<&String> = items.iter().filter(|i| !unique.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "lost: {missing:?} (cut-off consumer took {}, the other {})",
        cut.len(),
        steady.len()
    );
}

/// A 3-member cluster whose leader is cut off for 4 s — still running, so
/// for a moment it believes it leads — while a producer enqueues and two
/// consumers take, every client connected to all three members: the other
/// two elect a leader and go on (enqueues succeed during the cut), every
/// acknowledged item is delivered exactly once, and nothing is delivered
/// that was not enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_loses_nothing_and_doubles_nothing() {
    const ITEMS: usize = 150;
    let cluster = testkit::EtcdCluster::builder()
        .members(3)
        .behind_proxies()
        .start()
        .unwrap();
    // A request that finds its member cut off waits for the request
    // timeout before the client moves to the next member: 1 s here (10 s
    // by default), so that the run shows the other members taking over.
    let config =
        EtcdConfig::new(cluster.endpoints()).request_timeout(Duration::from_secs(1));
    let connect = || config.connect();
    let name = "leader-cut";
    let done = Arc::new(AtomicBool::new(false));
    let consume = |queue: Queue, done: Arc<AtomicBool>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            while !done.load(SeqCst) {
                if let Ok(Ok(item)) =
                    tokio::time::timeout(Duration::from_secs(1), queue.dequeue()).await
                {
                    got.push(String::from_utf8(item).unwrap());
                }
            }
            got
        })
    };
    let consumers = [
        consume(
            Queue::new(connect().await.unwrap(), name).unwrap(),
            done.clone(),
        ),
        consume(
            Queue::new(connect().await.unwrap(), name).unwrap(),
            done.clone(),
        ),
    ];
    let producer = Queue::new(connect().await.unwrap(), name).unwrap();
    let started = Instant::now();
    let produce = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..ITEMS {
            let item = format!("item-{i:03}");
            if producer.enqueue(item.clone()).await.is_ok() {
                acknowledged.push((item, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acknowledged
    });

    tokio::time::sleep(Duration::from_millis(800)).await;
    let old_leader = cluster.leader().unwrap();
    cluster.isolate(old_leader).unwrap();
    let cut = started.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let healed = started.elapsed();
    cluster.heal().unwrap();

    let acknowledged = produce.await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    done.store(true, SeqCst);
    let mut delivered = Vec::new();
    for consumer in consumers {
        delivered.extend(consumer.await.unwrap());
    }
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), delivered.len(), "an item was delivered twice");
    let enqueued: HashSet<String> =
        (0..ITEMS).map(|i| format!("item-{i:03}")).collect();
    assert!(
        delivered.iter().all(|item| enqueued.contains(item)),
        "an item nobody enqueued"
    );
    let lost: Vec<&String> = acknowledged
        .iter()
        .map(|(item, _)| item)
        .filter(|item| !unique.contains(item))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );
    let during_cut = acknowledged
        .iter()
        .filter(|(_, at)| *at > cut + Duration::from_secs(2) && *at < healed)
        .count();
    assert!(
        during_cut > 0,
        "no enqueue succeeded while the old leader was cut off: no new leader"
    );
}

/// A WorkQueue consumer cut off while it works on an item: its claim dies
/// with its lease, the item is delivered again to a consumer that can
/// reach etcd, and after the link heals the first consumer's late ack is
/// refused. Every item is acked; the cut one was delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_queue_consumer_cut_off_mid_item_loses_nothing() {
    const ITEMS: usize = 20;
    let etcd = testkit::shared_etcd().unwrap();
    let link = TcpProxy::start(etcd.client_addrs()[0]).unwrap();
    let direct = etcd_client(etcd.endpoints()[0].clone()).await;
    let steady_session = Session::new(direct, Duration::from_secs(10)).await.unwrap();
    let steady = WorkQueue::new(&steady_session, "partition-work").unwrap();
    for i in 0..ITEMS {
        steady.enqueue(format!("job-{i:02}")).await.unwrap();
    }

    let cut_session = Session::new(
        etcd_client(link.addr().to_string()).await,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let cut_consumer = WorkQueue::new(&cut_session, "partition-work").unwrap();
    let in_hand = cut_consumer.dequeue().await.unwrap();
    link.blackhole();

    let mut acked = HashSet::new();
    let mut redelivered = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.len() < ITEMS {
        assert!(Instant::now() < deadline, "only {} acked", acked.len());
        let item = tokio::time::timeout(Duration::from_secs(5), steady.dequeue())
            .await
            .expect("no item came back")
            .unwrap();
        if item.id == in_hand.id {
            redelivered = Some(item.deliveries);
        }
        steady.ack(&item).await.unwrap();
        acked.insert(String::from_utf8(item.value).unwrap());
    }
    assert_eq!(
        redelivered,
        Some(2),
        "the cut consumer's item was not delivered again"
    );

    link.reset_connections();
    link.heal();
    assert!(
        cut_consumer.ack(&in_hand).await.is_err(),
        "a late ack from a consumer whose claim had died was accepted"
    );
}
