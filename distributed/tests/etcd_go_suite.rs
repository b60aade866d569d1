//! etcd's own integration tests for its Go recipes and `concurrency`
//! package (etcd 3.4's `integration/v3_*_test.go`), ported scenario by
//! scenario to these recipes, on a real etcd. Each test names the Go test it
//! follows; where this API differs on purpose, the test says how.
//!
//! Single-member scenarios share testkit's etcd; the "multi node" ones run
//! on one 3-member cluster with clients spread over the members.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cpr_distributed::etcd::etcd_client::{EventType, WatchOptions};
use cpr_distributed::etcd::{
    Barrier, Client, DoubleBarrier, Election, EtcdConfig, EtcdError, Isolation, Mutex,
    PriorityQueue, Queue, RwMutex, Session, StmOptions, run_stm,
};
use futures::StreamExt;
use testkit::EtcdCluster;
use tokio::sync::mpsc;
use tokio::time::timeout;

const SECOND: Duration = Duration::from_secs(1);

async fn connect(endpoints: Vec<String>) -> Client {
    EtcdConfig::new(endpoints).connect().await.unwrap()
}

async fn shared_client() -> Client {
    connect(testkit::shared_etcd().unwrap().endpoints()).await
}

async fn session(client: &Client) -> Session {
    Session::new(client.clone(), Duration::from_secs(10))
        .await
        .unwrap()
}

/// New clients, each pinned to one member chosen in turn (Go's
/// `makeMultiNodeClients` picks at random).
struct Clients {
    endpoints: Vec<String>,
    next: AtomicUsize,
}

impl Clients {
    fn over(endpoints: Vec<String>) -> Arc<Clients> {
        Arc::new(Clients {
            endpoints,
            next: AtomicUsize::new(0),
        })
    }

    async fn next(&self) -> Client {
        let i = self.next.fetch_add(1, SeqCst) % self.endpoints.len();
        connect(vec![self.endpoints[i].clone()]).await
    }
}

// ---- v3_queue_test.go ----

/// A queue of either kind behind one interface, as Go's `testQueue`.
#[derive(Clone)]
enum TestQueue {
    Fifo(Queue),
    /// `flatPriorityQueue`: each item at priority 0 or 1, at random.
    Flat(PriorityQueue),
}

impl TestQueue {
    async fn enqueue(&self, value: &str) {
        match self {
            TestQueue::Fifo(q) => drop(q.enqueue(value).await.unwrap()),
            TestQueue::Flat(q) => {
                drop(q.enqueue(value, rand::random_range(0..2)).await.unwrap())
            }
        }
    }

    async fn dequeue(&self) -> Vec<u8> {
        match self {
            TestQueue::Fifo(q) => q.dequeue().await.unwrap(),
            TestQueue::Flat(q) => q.dequeue().await.unwrap(),
        }
    }
}

/// Go's `testReadersWriters`: writers enqueue 2 items each; readers together
/// dequeue exactly as many. Bounded here: a reader stuck beside queued items
/// fails the test instead of hanging it.
async fn readers_writers(readers: Vec<TestQueue>, writers: Vec<TestQueue>) {
    const ITEMS_PER_WRITER: usize = 2;
    let total = writers.len() * ITEMS_PER_WRITER;
    let reads = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for queue in writers {
        tasks.spawn(async move {
            for _ in 0..ITEMS_PER_WRITER {
                queue.enqueue("foo").await;
            }
        });
    }
    for queue in readers {
        let reads = reads.clone();
        tasks.spawn(async move {
            while reads.fetch_add(1, SeqCst) < total {
                assert_eq!(queue.dequeue().await, b"foo");
            }
        });
    }
    timeout(10 * SECOND, tasks.join_all())
        .await
        .expect("a reader waited while items were queued");
}

async fn queues(clients: &Clients, name: &str, n: usize, flat: bool) -> Vec<TestQueue> {
    let mut all = Vec::new();
    for _ in 0..n {
        let client = clients.next().await;
        all.push(if flat {
            TestQueue::Flat(PriorityQueue::new(client, name).unwrap())
        } else {
            TestQueue::Fifo(Queue::new(client, name).unwrap())
        });
    }
    all
}

/// `TestQueueOneReaderOneWriter`: FIFO order across two clients.
#[tokio::test]
async fn test_queue_one_reader_one_writer() {
    let writer = Queue::new(shared_client().await, "go-testq").unwrap();
    let reader = Queue::new(shared_client().await, "go-testq").unwrap();
    let writing = tokio::spawn(async move {
        for i in 0..5 {
            writer.enqueue(i.to_string()).await.unwrap();
        }
    });
    for i in 0..5 {
        let value = timeout(5 * SECOND, reader.dequeue())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value, i.to_string().into_bytes());
    }
    writing.await.unwrap();
}

/// `TestPrQueueOneReaderOneWriter`: five items at priorities 0..=2 (so that
/// priorities collide and sequence keys are exercised) come out lowest
/// number first.
#[tokio::test]
async fn test_pr_queue_one_reader_one_writer() {
    let queue = PriorityQueue::new(shared_client().await, "go-testprq").unwrap();
    for _ in 0..5 {
        let priority: u16 = rand::random_range(0..3);
        queue.enqueue(priority.to_string(), priority).await.unwrap();
    }
    let mut last = 0;
    for _ in 0..5 {
        let value = queue.dequeue().await.unwrap();
        let priority: u16 = String::from_utf8(value).unwrap().parse().unwrap();
        assert!(last <= priority, "priority {priority} came after {last}");
        last = priority;
    }
}

// ---- v3_stm_test.go ----

/// `TestSTMPutNewKey`: a put of a new key is there after commit.
#[tokio::test]
async fn test_stm_put_new_key() {
    let client = shared_client().await;
    let options = StmOptions::default().isolation(Isolation::RepeatableReads);
    run_stm(&client, options, |stm| async move {
        stm.put("go-stm-new/foo", "bar");
        Ok::<_, EtcdError>(())
    })
    .await
    .unwrap();
    let response = client.clone().get("go-stm-new/foo", None).await.unwrap();
    assert_eq!(response.kvs()[0].value(), b"bar");
}

/// `TestSTMAbort`: an aborted transaction writes nothing. Go aborts through
/// a cancelled context; here the closure returns an error.
#[tokio::test]
async fn test_stm_abort() {
    let client = shared_client().await;
    let options = StmOptions::default().isolation(Isolation::RepeatableReads);
    let outcome = run_stm(&client, options, |stm| async move {
        stm.put("go-stm-abort/foo", "baz");
        stm.put("go-stm-abort/foo", "bap");
        Err::<(), _>("aborted")
    })
    .await;
    assert!(outcome.is_err());
    let response = client.clone().get("go-stm-abort/foo", None).await.unwrap();
    assert!(response.kvs().is_empty());
}

/// `TestSTMApplyOnConcurrentDeletion`, at every level that checks reads:
/// a key read, then deleted by someone else before commit, makes the
/// closure run again (twice in all), and the second attempt's write lands.
#[tokio::test]
async fn test_stm_apply_on_concurrent_deletion() {
    let client = shared_client().await;
    for level in [
        Isolation::RepeatableReads,
        Isolation::Serializable,
        Isolation::SerializableSnapshot,
    ] {
        let (key, written) = (
            format!("go-stm-del/{level:?}/foo"),
            format!("go-stm-del/{level:?}/foo2"),
        );
        client.clone().put(key.as_str(), "bar", None).await.unwrap();
        let tries = AtomicUsize::new(0);
        let outcome = run_stm(&client, StmOptions::default().isolation(level), |stm| {
            let (key, written, tries, mut client) =
                (key.clone(), written.clone(), &tries, client.clone());
            async move {
                stm.get(&key).await?;
                if tries.fetch_add(1, SeqCst) == 0 {
                    client.delete(key.as_str(), None).await?;
                }
                stm.put(&written, "bar2");
                Ok::<_, EtcdError>(())
            }
        })
        .await
        .unwrap();
        assert_eq!(outcome.attempts, 2, "{level:?}: a stale read committed");
        let response = client.clone().get(written.as_str(), None).await.unwrap();
        assert_eq!(response.kvs()[0].value(), b"bar2", "{level:?}");
    }
}

/// `TestSTMSerializableSnapshotPut`: writing a key whose last change comes
/// after an older key read commits at once, twice (version 2).
#[tokio::test]
async fn test_stm_serializable_snapshot_put() {
    let client = shared_client().await;
    client
        .clone()
        .put("go-stm-snap/a", "0", None)
        .await
        .unwrap();
    let options = StmOptions::default()
        .isolation(Isolation::SerializableSnapshot)
        .max_attempts(3);
    for _ in 0..2 {
        let outcome = run_stm(&client, options.clone(), |stm| async move {
            stm.get("go-stm-snap/a").await?;
            stm.put("go-stm-snap/b", "1");
            Ok::<_, EtcdError>(())
        })
        .await
        .unwrap();
        assert_eq!(outcome.attempts, 1);
    }
    let response = client.clone().get("go-stm-snap/b", None).await.unwrap();
    assert_eq!(response.kvs()[0].version(), 2);
}

// ---- v3_barrier_test.go ----

/// Go's `testBarrier`: a second hold fails (here: `hold` returns false, a
/// value where Go returns an error); waiters wait until the release, then
/// all pass within 100 ms each.
async fn barrier_scenario(clients: &Clients, name: &str, waiters: usize) {
    let barrier = Barrier::new(clients.next().await, name).unwrap();
    assert!(barrier.hold().await.unwrap());
    assert!(
        !barrier.hold().await.unwrap(),
        "able to double-hold barrier"
    );
    let (done, mut passed) = mpsc::unbounded_channel();
    for _ in 0..waiters {
        let (waiter, done) = (
            Barrier::new(clients.next().await, name).unwrap(),
            done.clone(),
        );
        tokio::spawn(async move {
            waiter.wait().await.unwrap();
            done.send(()).unwrap();
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(passed.try_recv().is_err(), "barrier did not wait");
    barrier.release().await.unwrap();
    let all = Duration::from_millis(100) * waiters as u32 + SECOND;
    timeout(all, async {
        for _ in 0..waiters {
            passed.recv().await.unwrap();
        }
    })
    .await
    .expect("barrier timed out");
}

/// `TestBarrierSingleNode`.
#[tokio::test]
async fn test_barrier_single_node() {
    let clients = Clients::over(testkit::shared_etcd().unwrap().endpoints());
    barrier_scenario(&clients, "go-test-barrier", 5).await;
}

// ---- v3_double_barrier_test.go ----

/// `TestDoubleBarrier`: 9 of 10 enter and wait; the 10th lets them in;
/// they wait in leave until the 10th leaves.
#[tokio::test]
async fn test_double_barrier() {
    const WAITERS: usize = 10;
    let name = "go-test-double-barrier";
    let client = shared_client().await;
    let (done, mut events) = mpsc::unbounded_channel();
    let mut sessions = Vec::new();
    for _ in 0..WAITERS - 1 {
        let session = session(&client).await;
        let mut barrier = DoubleBarrier::new(&session, name, WAITERS).unwrap();
        let done = done.clone();
        tokio::spawn(async move {
            barrier.enter().await.unwrap();
            done.send("entered").unwrap();
            barrier.leave().await.unwrap();
            done.send("left").unwrap();
        });
        sessions.push(session);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(events.try_recv().is_err(), "barrier did not enter-wait");
    let last_session = session(&client).await;
    let mut last = DoubleBarrier::new(&last_session, name, WAITERS).unwrap();
    last.enter().await.unwrap();
    for _ in 0..WAITERS - 1 {
        let event = timeout(10 * SECOND, events.recv())
            .await
            .expect("enter timed out");
        assert_eq!(event, Some("entered"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(events.try_recv().is_err(), "barrier did not leave-wait");
    last.leave().await.unwrap();
    for _ in 0..WAITERS - 1 {
        let event = timeout(10 * SECOND, events.recv())
            .await
            .expect("leave timed out");
        assert_eq!(event, Some("left"));
    }
}

/// `TestDoubleBarrierFailover`: one participant on its own session, nine on
/// another; all enter; the first's session closes without leaving, and the
/// nine still get out.
#[tokio::test]
async fn test_double_barrier_failover() {
    const WAITERS: usize = 10;
    let name = "go-test-double-barrier-failover";
    let client = shared_client().await;
    let (s0, s1) = (session(&client).await, session(&client).await);
    let (done, mut events) = mpsc::unbounded_channel();
    let mut sacrificial = DoubleBarrier::new(&s0, name, WAITERS).unwrap();
    let entered = done.clone();
    tokio::spawn(async move {
        sacrificial.enter().await.unwrap();
        entered.send("entered").unwrap();
        // Never leaves: its session is closed below.
        std::future::pending::<()>().await;
    });
    for _ in 0..WAITERS - 1 {
        let mut barrier = DoubleBarrier::new(&s1, name, WAITERS).unwrap();
        let done = done.clone();
        tokio::spawn(async move {
            barrier.enter().await.unwrap();
            done.send("entered").unwrap();
            barrier.leave().await.unwrap();
            done.send("left").unwrap();
        });
    }
    for i in 0..WAITERS {
        let event = timeout(10 * SECOND, events.recv()).await;
        assert_eq!(
            event.unwrap_or_else(|_| panic!("enter {i} timed out")),
            Some("entered")
        );
    }
    s0.close().await.unwrap();
    for i in 0..WAITERS - 1 {
        let event = timeout(10 * SECOND, events.recv()).await;
        assert_eq!(
            event.unwrap_or_else(|_| panic!("leave {i} timed out")),
            Some("left")
        );
    }
}

// ---- v3_lock_test.go ----

/// Go's `testMutex`: waiters on sessions of their own queue up; each time
/// one holds the lock, no other does, until it unlocks.
async fn mutex_scenario(clients: &Clients, name: &str, waiters: usize) {
    let (locked, mut holders) = mpsc::unbounded_channel();
    let mut sessions = Vec::new();
    for _ in 0..waiters {
        let session = session(&clients.next().await).await;
        let mutex = Mutex::new(&session, name).unwrap();
        let locked = locked.clone();
        tokio::spawn(async move { locked.send(mutex.lock().await.unwrap()).unwrap() });
        sessions.push(session);
    }
    for i in 0..waiters {
        let guard = timeout(waiters as u32 * SECOND, holders.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for lock {i}"))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            holders.try_recv().is_err(),
            "lock {i}: followers did not wait"
        );
        guard.unlock().await.unwrap();
    }
}

/// `TestMutexSingleNode`.
#[tokio::test]
async fn test_mutex_single_node() {
    let clients = Clients::over(testkit::shared_etcd().unwrap().endpoints());
    mutex_scenario(&clients, "go-test-mutex", 5).await;
}

/// `TestMutexSessionRelock`: Go lets a second Mutex on the same session and
/// name "acquire" at once (both share one key, so either unlock frees
/// both). This API refuses it on purpose, with an error naming the key.
#[tokio::test]
async fn test_mutex_session_relock() {
    let session = session(&shared_client().await).await;
    let first = Mutex::new(&session, "go-test-mutex-relock").unwrap();
    let _held = first.lock().await.unwrap();
    let second = Mutex::new(&session, "go-test-mutex-relock").unwrap();
    let refused = timeout(5 * SECOND, second.lock()).await.unwrap();
    assert!(matches!(
        refused,
        Err(EtcdError::AlreadyHeldBySession { .. })
    ));
}

/// `TestMutexWaitsOnCurrentHolder`: when the waiter next in line goes away
/// (its session closes), the waiter behind it still waits for the holder.
#[tokio::test]
async fn test_mutex_waits_on_current_holder() {
    let name = "go-test-mutex-holder";
    let client = shared_client().await;
    let mut watch_client = client.clone();
    let mut events = watch_client
        .watch(format!("{name}/"), Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let owner_session = session(&client).await;
    let owner = Mutex::new(&owner_session, name)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let victim_session = session(&client).await;
    let victim = {
        let mutex = Mutex::new(&victim_session, name).unwrap();
        tokio::spawn(async move { mutex.lock().await.map(drop) })
    };
    let mut puts = 0;
    while puts < 2 {
        let message = timeout(SECOND, events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        puts += message
            .events()
            .iter()
            .filter(|e| e.event_type() == EventType::Put)
            .count();
    }
    let new_owner_session = session(&client).await;
    let new_owner = {
        let mutex = Mutex::new(&new_owner_session, name).unwrap();
        tokio::spawn(async move { mutex.lock().await })
    };
    let message = timeout(SECOND, events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(message.events()[0].event_type(), EventType::Put);
    victim_session.close().await.unwrap();
    let message = timeout(SECOND, events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(message.events()[0].event_type(), EventType::Delete);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !new_owner.is_finished(),
        "new owner obtained lock before first owner unlocked"
    );
    owner.unlock().await.unwrap();
    let got = timeout(SECOND, new_owner)
        .await
        .expect("new owner failed to obtain lock");
    got.unwrap().unwrap().unlock().await.unwrap();
    // The victim's lock call ends too: here with "session closed" (its
    // session was closed under it), where Go's returns once the lock it can
    // no longer hold is free.
    let victim = timeout(SECOND, victim).await.expect("victim did not exit");
    assert!(matches!(
        victim.unwrap(),
        Err(EtcdError::SessionClosed { .. })
    ));
}

/// Go's `testRWMutex`: waiters take a read or a write lock at random; a
/// writer never holds beside anyone, a reader never beside a writer.
async fn rwmutex_scenario(clients: &Clients, name: &str, waiters: usize) {
    let (locked, mut holders) = mpsc::unbounded_channel();
    let mut sessions = Vec::new();
    for _ in 0..waiters {
        let session = session(&clients.next().await).await;
        let rw = RwMutex::new(&session, name).unwrap();
        let locked = locked.clone();
        tokio::spawn(async move {
            let guard = if rand::random::<bool>() {
                rw.read_lock().await
            } else {
                rw.write_lock().await
            };
            locked.send(guard.unwrap()).unwrap();
        });
        sessions.push(session);
    }
    let mut held = Vec::new();
    let mut released = 0;
    while released < waiters {
        let guard = timeout(waiters as u32 * SECOND, holders.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for lock {released}"))
            .unwrap();
        held.push(guard);
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(more) = holders.try_recv() {
            held.push(more);
        }
        let writers = held.iter().filter(|g| g.is_writer()).count();
        assert!(
            writers == 0 || held.len() == 1,
            "a writer held beside others"
        );
        for guard in held.drain(..) {
            guard.unlock().await.unwrap();
            released += 1;
        }
    }
}

/// `TestRWMutexSingleNode`.
#[tokio::test]
async fn test_rwmutex_single_node() {
    let clients = Clients::over(testkit::shared_etcd().unwrap().endpoints());
    rwmutex_scenario(&clients, "go-test-rwmutex", 5).await;
}

// ---- v3_election_test.go ----

/// `TestElectionSessionRecampaign`: campaigning again on the same session
/// replaces the value (Go: proclaims) instead of deadlocking.
#[tokio::test]
async fn test_election_session_recampaign() {
    let session = session(&shared_client().await).await;
    let first = Election::new(&session, "go-test-elect-recampaign").unwrap();
    let _leading = first.campaign("abc").await.unwrap();
    let second = Election::new(&session, "go-test-elect-recampaign").unwrap();
    let _again = timeout(5 * SECOND, second.campaign("def"))
        .await
        .unwrap()
        .unwrap();
    let mut changes = first.observe();
    let leader = timeout(5 * SECOND, changes.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(leader.unwrap().value, "def");
}

/// `TestElectionOnPrefixOfExistingKey` (etcd issue 6278): a key `testa`
/// does not stop a campaign on `test`.
#[tokio::test]
async fn test_election_on_prefix_of_existing_key() {
    let client = shared_client().await;
    client.clone().put("go-testa", "value", None).await.unwrap();
    let session = session(&client).await;
    let election = Election::new(&session, "go-test").unwrap();
    timeout(5 * SECOND, election.campaign("abc"))
        .await
        .expect("campaign deadlocked beside a key that shares the prefix")
        .unwrap();
}

/// `TestElectionObserveCompacted`: observing works when the leader's key
/// is older than the compacted revision. On a member of its own, so that
/// the compaction cannot cut the watches of tests running beside it.
#[tokio::test]
async fn test_election_observe_compacted() {
    let etcd = EtcdCluster::start(1).unwrap();
    let client = connect(etcd.endpoints()).await;
    let session = session(&client).await;
    let election = Election::new(&session, "go-test-elect-compacted").unwrap();
    let _leading = election.campaign("abc").await.unwrap();
    let put = client
        .clone()
        .put("go-test-elect-compacted-foo", "bar", None)
        .await
        .unwrap();
    client
        .clone()
        .compact(put.header().unwrap().revision(), None)
        .await
        .unwrap();
    let mut changes = election.observe();
    let leader = timeout(5 * SECOND, changes.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(leader.unwrap().value, "abc");
}

/// `TestElectionOnSessionRestart` needs a session made on an existing lease
/// (Go's `WithLease`); this API's sessions always grant their own lease, so
/// a restarted process campaigns anew. Not ported.
///
/// `TestElectionFailover`: the leader's session closes; the candidate
/// waiting behind it becomes leader, and an observer sees its value.
#[tokio::test]
async fn test_election_failover() {
    let name = "go-test-election-failover";
    let client = shared_client().await;
    let sessions = [
        session(&client).await,
        session(&client).await,
        session(&client).await,
    ];
    let first = Election::new(&sessions[0], name).unwrap();
    let _leading = first.campaign("foo").await.unwrap();
    let mut changes = first.observe();
    let leader = timeout(5 * SECOND, changes.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(leader.unwrap().value, "foo");
    let next = Election::new(&sessions[1], name).unwrap();
    let elected = tokio::spawn(async move { next.campaign("bar").await.map(drop) });
    let [s0, _s1, s2] = sessions;
    s0.close().await.unwrap();
    let observer = Election::new(&s2, name).unwrap();
    let mut changes = observer.observe();
    let leader = loop {
        let change = timeout(5 * SECOND, changes.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(leader) = change.filter(|l| l.value == "bar") {
            break leader;
        }
    };
    assert_eq!(leader.value, "bar");
    timeout(5 * SECOND, elected)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

// ---- the multi-node variants, on one 3-member cluster ----

/// `TestMutexMultiNode`, `TestRWMutexMultiNode`, `TestBarrierMultiNode`,
/// `TestQueueManyReaderOneWriter`, `TestQueueOneReaderManyWriter`,
/// `TestQueueManyReaderManyWriter`, `TestPrQueueManyReaderManyWriter`,
/// `TestElectionWait`, `TestSTMConflict` and `TestSTMSerialize`, with
/// clients spread over three members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_scenarios() {
    let cluster = EtcdCluster::start(3).unwrap();
    let clients = Clients::over(cluster.endpoints());
    mutex_scenario(&clients, "go-mn-mutex", 5).await;
    rwmutex_scenario(&clients, "go-mn-rwmutex", 5).await;
    barrier_scenario(&clients, "go-mn-barrier", 5).await;
    for (readers, writers) in [(3, 1), (1, 3), (3, 3)] {
        let name = format!("go-mn-q-{readers}-{writers}");
        let (r, w) = (
            queues(&clients, &name, readers, false).await,
            queues(&clients, &name, writers, false).await,
        );
        readers_writers(r, w).await;
    }
    for round in 0..5 {
        let name = format!("go-mn-prq-{round}");
        let (r, w) = (
            queues(&clients, &name, 3, true).await,
            queues(&clients, &name, 3, true).await,
        );
        readers_writers(r, w).await;
    }
    election_wait(&clients).await;
    stm_conflict(&clients).await;
    stm_serialize(&clients).await;
}

/// `TestElectionWait`: three leaders in turn; three followers each observe
/// every leader's value, in the order they lead.
async fn election_wait(clients: &Clients) {
    const LEADERS: usize = 3;
    const FOLLOWERS: usize = 3;
    let name = "go-mn-election";
    let mut observers = Vec::new();
    for _ in 0..FOLLOWERS {
        let session = session(&clients.next().await).await;
        let changes = Election::new(&session, name).unwrap().observe();
        observers.push((session, changes));
    }
    for i in 0..LEADERS {
        let session = session(&clients.next().await).await;
        let election = Election::new(&session, name).unwrap();
        let value = format!("electval-{i}");
        let leading = election.campaign(value.as_str()).await.unwrap();
        for (_, changes) in &mut observers {
            let seen = loop {
                let change = timeout(5 * SECOND, changes.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                if let Some(leader) = change {
                    break leader;
                }
            };
            assert_eq!(seen.value, value, "wrong election value");
        }
        leading.resign().await.unwrap();
    }
}

/// `TestSTMConflict`: five accounts of 100; a transaction per account moves
/// a random share of it to another, concurrently, at RepeatableReads; the
/// sum stays 500.
async fn stm_conflict(clients: &Clients) {
    const KEYS: usize = 5;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("go-mn-stm/foo-{i}")).collect();
    let client = clients.next().await;
    for key in &keys {
        client.clone().put(key.as_str(), "100", None).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for source in 0..KEYS {
        let (client, keys) = (clients.next().await, keys.clone());
        tasks.spawn(async move {
            let options = StmOptions::default().isolation(Isolation::RepeatableReads);
            run_stm(&client, options, |stm| {
                let keys = keys.clone();
                async move {
                    let target = loop {
                        let t = rand::random_range(0..KEYS);
                        if t != source {
                            break t;
                        }
                    };
                    let read = |k: &str| {
                        let stm = stm.clone();
                        let k = k.to_string();
                        async move {
                            let v = stm.get_string(&k).await?.unwrap_or_default();
                            Ok::<i64, EtcdError>(v.parse().unwrap_or(0))
                        }
                    };
                    let (from, to) =
                        (read(&keys[source]).await?, read(&keys[target]).await?);
                    if from == 0 {
                        return Ok(());
                    }
                    let moved = rand::random_range(0..from) / 2;
                    stm.put(&keys[source], (from - moved).to_string());
                    stm.put(&keys[target], (to + moved).to_string());
                    Ok::<_, EtcdError>(())
                }
            })
            .await
            .unwrap();
        });
    }
    timeout(30 * SECOND, tasks.join_all()).await.unwrap();
    let mut sum = 0;
    for key in &keys {
        let response = client.clone().get(key.as_str(), None).await.unwrap();
        sum += response.kvs()[0]
            .value_str()
            .unwrap()
            .parse::<i64>()
            .unwrap();
    }
    assert_eq!(sum, 500, "bad sum");
}

/// `TestSTMSerialize`: five batches each write one value to all five keys;
/// a Serializable transaction started after each batch reads five equal
/// values.
async fn stm_serialize(clients: &Clients) {
    use cpr_distributed::etcd::etcd_client::{Txn, TxnOp};
    let keys: Vec<String> =
        (0..5).map(|i| format!("go-mn-serialize/foo-{i}")).collect();
    let writer = clients.next().await;
    let mut readers = tokio::task::JoinSet::new();
    for batch in 0..5 {
        let puts: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::put(k.as_str(), batch.to_string(), None))
            .collect();
        writer.clone().txn(Txn::new().and_then(puts)).await.unwrap();
        let (client, keys) = (clients.next().await, keys.clone());
        readers.spawn(async move {
            let options = StmOptions::default().isolation(Isolation::Serializable);
            run_stm(&client, options, |stm| {
                let keys = keys.clone();
                async move {
                    let mut values = HashSet::new();
                    for key in &keys {
                        values.insert(stm.get_string(key).await?);
                    }
                    Ok::<_, EtcdError>(values.len())
                }
            })
            .await
            .unwrap()
            .value
        });
    }
    for distinct in timeout(30 * SECOND, readers.join_all()).await.unwrap() {
        assert_eq!(distinct, 1, "a serializable read saw two batches");
    }
}
