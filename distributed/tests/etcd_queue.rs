//! The etcd Queue: FIFO, isolation, exactly-once delivery under concurrency,
//! cancel safety, no herd, and Go-layout interoperability.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpr_distributed::etcd::etcd_client::{GetOptions, WatchOptions};
use cpr_distributed::etcd::{Client, EtcdConfig, PriorityQueue, Queue};
use testkit::EtcdCluster;
use testkit::history::{self, Call, QueueOp};

async fn client() -> Client {
    let etcd = testkit::shared_etcd().unwrap();
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn fifo_and_a_queue_never_sees_another_queues_items() {
    let (a, ab) = (
        Queue::new(client().await, "q-a").unwrap(),
        Queue::new(client().await, "q-ab").unwrap(),
    );
    ab.enqueue("not for a").await.unwrap();
    for i in 0..5 {
        a.enqueue(format!("item {i}")).await.unwrap();
    }
    for i in 0..5 {
        assert_eq!(text(a.dequeue().await.unwrap()), format!("item {i}"));
    }
    assert_eq!(
        a.try_dequeue().await.unwrap(),
        None,
        "queue a saw an item of queue ab"
    );
    assert_eq!(text(ab.try_dequeue().await.unwrap().unwrap()), "not for a");
}

#[tokio::test]
async fn a_waiting_consumer_wakes_for_a_new_item() {
    let queue = Queue::new(client().await, "q-wake").unwrap();
    let consumer = tokio::spawn({
        let queue = queue.clone();
        async move { queue.dequeue().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !consumer.is_finished(),
        "dequeue returned from an empty queue"
    );
    queue.enqueue("hello").await.unwrap();
    let value = tokio::time::timeout(Duration::from_secs(5), consumer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(text(value), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_is_delivered_exactly_once_to_concurrent_consumers() {
    const PRODUCERS: usize = 4;
    const ITEMS: usize = 50;
    let name = "q-concurrent";
    // Every call, on one clock, for the FIFO check at the end.
    let calls: Arc<Mutex<Vec<Call<QueueOp>>>> = Arc::default();
    let record = |calls: &Mutex<Vec<Call<QueueOp>>>, invoked: Instant, op| {
        calls.lock().unwrap().push(Call {
            process: 0,
            invoked,
            returned: Some(Instant::now()),
            op,
        });
    };
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let queue = Queue::new(client().await, name).unwrap();
        let calls = calls.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..ITEMS {
                let item = format!("{p}-{i}");
                let invoked = Instant::now();
                queue.enqueue(item.clone()).await.unwrap();
                record(&calls, invoked, QueueOp::Enqueued(item));
            }
        }));
    }
    // Two consumer processes' worth: two Queue objects, two clones each.
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let queue = Queue::new(client().await, name).unwrap();
        for _ in 0..2 {
            let (queue, calls) = (queue.clone(), calls.clone());
            consumers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let invoked = Instant::now();
                    let Ok(Ok(value)) =
                        tokio::time::timeout(Duration::from_secs(2), queue.dequeue())
                            .await
                    else {
                        break;
                    };
                    record(&calls, invoked, QueueOp::Dequeued(text(value.clone())));
                    got.push(text(value));
                }
                got
            }));
        }
    }
    for producer in producers {
        producer.await.unwrap();
    }
    let mut all = Vec::new();
    for consumer in consumers {
        all.extend(consumer.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "an item was delivered twice");
    assert_eq!(all.len(), PRODUCERS * ITEMS, "an item was lost");
    // And in order: some order of the calls, each within its own span, is
    // a FIFO queue's (checked by its patterns: 400 overlapping calls are
    // too many for the general search).
    let calls = calls.lock().unwrap().clone();
    if let Err(anomaly) = history::check_fifo(&calls, true) {
        panic!("not FIFO: {anomaly}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_dequeues_lose_no_item() {
    let name = "q-cancel";
    let queue = Queue::new(client().await, name).unwrap();
    let producer = tokio::spawn({
        let queue = Queue::new(client().await, name).unwrap();
        async move {
            for i in 0..100 {
                queue.enqueue(format!("{i}")).await.unwrap();
            }
        }
    });
    let mut got = Vec::new();
    // Dequeues cut short at every point: before, during and after the take.
    for round in 0..400u64 {
        let limit = Duration::from_micros(200 + (round * 37) % 1500);
        if let Ok(value) = tokio::time::timeout(limit, queue.dequeue()).await {
            got.push(text(value.unwrap()));
        }
    }
    producer.await.unwrap();
    // Put-backs of cancelled takes land in the background: collect until all
    // 100 are seen or a generous deadline passes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 100 && tokio::time::Instant::now() < deadline {
        match queue.try_dequeue().await.unwrap() {
            Some(value) => got.push(text(value)),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "an item was delivered twice");
    assert_eq!(got.len(), 100, "a cancelled dequeue lost an item");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_item_wakes_one_of_eight_idle_consumers() {
    // A cluster of its own, so that its request counter sees only this test.
    let etcd = EtcdCluster::start(1).unwrap();
    let client = EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
    let queue = Queue::new(client.clone(), "q-herd").unwrap();
    let consumers: Vec<_> = (0..8)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.dequeue().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await; // all idle
    let addr = etcd.client_addrs()[0];
    let before = testkit::etcd_grpc_calls(addr).unwrap();
    queue.enqueue("only one").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !consumers.iter().any(|c| c.is_finished()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody got the item"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // any herd would show by now
    let calls = testkit::etcd_grpc_calls(addr).unwrap() - before;
    // The enqueue, the winner's read and take, and a little slack; a herd
    // would be at least one read and one take per consumer.
    assert!(
        calls <= 5,
        "{calls} requests for one item with 8 idle consumers"
    );
    assert_eq!(consumers.iter().filter(|c| c.is_finished()).count(), 1);
    for consumer in consumers {
        consumer.abort();
    }
}

#[tokio::test]
async fn an_enqueue_writes_its_item_and_nothing_else() {
    let mut c = client().await;
    let queue = Queue::new(client().await, "q-one-key").unwrap();
    let priorities = PriorityQueue::new(client().await, "q-one-key-pq").unwrap();
    for i in 0..3 {
        let key = queue.enqueue(format!("item {i}")).await.unwrap();
        // The Go layout: `<name>/<unix nanos>`.
        let nanos = key.strip_prefix("q-one-key/").unwrap();
        assert!(nanos.parse::<u128>().is_ok(), "{key}");
        // What the transaction wrote, from etcd's history: the item alone,
        // as Go's enqueue does (its exactly-once fence costs nothing until
        // a reply is lost). The priority queue's enqueue, which carries a
        // receipt, shows that the count sees a second key when there is one.
        assert_eq!(keys_written_with(&mut c, &key).await, 1);
        let with_receipt = priorities.enqueue(format!("item {i}"), 1).await.unwrap();
        assert_eq!(keys_written_with(&mut c, &with_receipt).await, 2);
    }
    for i in 0..3 {
        assert_eq!(text(queue.dequeue().await.unwrap()), format!("item {i}"));
    }
    assert_eq!(queue.try_dequeue().await.unwrap(), None);
}

/// How many keys the transaction that created `key` wrote: the events of
/// its revision, replayed by a watch over the whole key space.
async fn keys_written_with(c: &mut Client, key: &str) -> usize {
    let created = c.get(key, None).await.unwrap().kvs()[0].create_revision();
    let options = WatchOptions::new()
        .with_from_key()
        .with_start_revision(created);
    let mut events = c.watch("\0", Some(options)).await.unwrap();
    // A revision's events arrive together, in the first response that
    // carries any (after the one confirming the watch).
    let mut written = 0;
    let mut watch_id = 0;
    while written == 0 {
        let response = events.message().await.unwrap().unwrap();
        watch_id = response.watch_id();
        written = response
            .events()
            .iter()
            .filter(|event| event.kv().is_some_and(|kv| kv.mod_revision() == created))
            .count();
    }
    events.cancel(watch_id).await.unwrap();
    written
}

#[tokio::test]
async fn items_written_in_the_go_layout_are_dequeued() {
    // etcd's Go Queue writes `<name>/<unix nanos>`; so does `etcdctl put`.
    let mut c = client().await;
    c.put("q-go/1700000000000000001", "from go", None)
        .await
        .unwrap();
    let queue = Queue::new(client().await, "q-go").unwrap();
    assert_eq!(text(queue.dequeue().await.unwrap()), "from go");
    let left = c
        .get(
            "q-go/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(left.count(), 0);
}

#[tokio::test]
async fn the_priority_queue_hands_out_the_lowest_number_first_fifo_within_a_level() {
    let queue = PriorityQueue::new(client().await, "pq-order").unwrap();
    let other = PriorityQueue::new(client().await, "pq-order2").unwrap();
    other.enqueue("not mine", 0).await.unwrap();
    for (value, priority) in [
        ("low-1", 9),
        ("urgent-1", 1),
        ("low-2", 9),
        ("urgent-2", 1),
        ("top", 0),
    ] {
        queue.enqueue(value, priority).await.unwrap();
    }
    let mut order = Vec::new();
    while let Some(value) = queue.try_dequeue().await.unwrap() {
        order.push(text(value));
    }
    assert_eq!(order, ["top", "urgent-1", "urgent-2", "low-1", "low-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_priority_producers_lose_nothing() {
    let name = "pq-concurrent";
    let mut producers = Vec::new();
    for p in 0..4 {
        let queue = PriorityQueue::new(client().await, name).unwrap();
        producers.push(tokio::spawn(async move {
            for i in 0..20 {
                queue.enqueue(format!("{p}-{i}"), 5).await.unwrap();
            }
        }));
    }
    for producer in producers {
        producer.await.unwrap();
    }
    let queue = PriorityQueue::new(client().await, name).unwrap();
    let mut got = Vec::new();
    while let Some(value) = queue.try_dequeue().await.unwrap() {
        got.push(text(value));
    }
    assert_eq!(got.len(), 80, "a colliding sequence number lost an item");
    // Within each producer, its items keep their order.
    for p in 0..4 {
        let mine: Vec<&String> = got
            .iter()
            .filter(|v| v.starts_with(&format!("{p}-")))
            .collect();
        let expected: Vec<String> = (0..20).map(|i| format!("{p}-{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_waiting_priority_consumer_wakes_for_a_new_item() {
    let queue = PriorityQueue::new(client().await, "pq-wake").unwrap();
    let consumer = tokio::spawn({
        let queue = queue.clone();
        async move { queue.dequeue().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!consumer.is_finished());
    queue.enqueue("now", 3).await.unwrap();
    let value = tokio::time::timeout(Duration::from_secs(5), consumer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(text(value), "now");
}

#[tokio::test]
async fn a_dropped_queue_leaves_the_idle_line_at_once() {
    // A consumer gives up waiting and its queue object is dropped: its
    // place in the idle line must go now, not when its lease expires (it
    // would hold up other processes' wake-ups meanwhile).
    let mut client = client().await;
    let queue = Queue::new(client.clone(), "q-drop-idle").unwrap();
    let line = GetOptions::new().with_prefix().with_count_only();
    let count_in_line = || {
        let (mut client, line) = (client.clone(), line.clone());
        async move {
            let held = client.get("cpr-idle/q/q-drop-idle/", Some(line)).await;
            held.unwrap().count()
        }
    };
    let (gave_up, held_while_waiting) = tokio::join!(
        tokio::time::timeout(Duration::from_millis(800), queue.dequeue()),
        async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            count_in_line().await
        }
    );
    assert!(gave_up.is_err());
    assert_eq!(held_while_waiting, 1, "the waiting process was not in line");
    drop(queue);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let held = client
            .get("cpr-idle/q/q-drop-idle/", Some(line.clone()))
            .await
            .unwrap()
            .count();
        if held == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle line still holds {held} key(s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A queue of either kind, so that one scenario runs against both.
#[derive(Clone)]
enum AnyQueue {
    Fifo(Queue),
    Priority(PriorityQueue),
}

impl AnyQueue {
    async fn new(kind: &str, name: &str) -> AnyQueue {
        match kind {
            "fifo" => AnyQueue::Fifo(Queue::new(client().await, name).unwrap()),
            _ => AnyQueue::Priority(PriorityQueue::new(client().await, name).unwrap()),
        }
    }

    /// Enqueues; a priority queue spreads items over two levels, as etcd's
    /// `flatPriorityQueue` test helper does, so that levels empty and fill.
    async fn enqueue(&self, value: String) {
        match self {
            AnyQueue::Fifo(queue) => drop(queue.enqueue(value).await.unwrap()),
            AnyQueue::Priority(queue) => {
                let priority = rand::random_range(0..2);
                drop(queue.enqueue(value, priority).await.unwrap());
            }
        }
    }

    async fn dequeue(&self) -> String {
        match self {
            AnyQueue::Fifo(queue) => text(queue.dequeue().await.unwrap()),
            AnyQueue::Priority(queue) => text(queue.dequeue().await.unwrap()),
        }
    }
}

/// Writers and readers on clients of their own, as in etcd's
/// `testReadersWriters`: the readers together take exactly what the writers
/// wrote. A reader that waits for a new enqueue while items sit in the
/// queue hangs the round.
async fn readers_beside_writers(kind: &str, rounds: usize, per_writer: usize) {
    const CLIENTS: usize = 3;
    for round in 0..rounds {
        let name = format!("{kind}-readers-writers-{round}");
        let total = CLIENTS * per_writer;
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..CLIENTS {
            let queue = AnyQueue::new(kind, &name).await;
            tasks.spawn(async move {
                for i in 0..per_writer {
                    queue.enqueue(format!("{writer}-{i}")).await;
                }
                Vec::new()
            });
        }
        for _ in 0..CLIENTS {
            let (queue, taken) = (AnyQueue::new(kind, &name).await, taken.clone());
            tasks.spawn(async move {
                let mut got = Vec::new();
                while taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < total {
                    got.push(queue.dequeue().await);
                }
                got
            });
        }
        let all = tokio::time::timeout(Duration::from_secs(20), tasks.join_all())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: a reader waited in dequeue while items were queued"
                )
            });
        let all: Vec<String> = all.into_iter().flatten().collect();
        let unique: HashSet<&String> = all.iter().collect();
        assert_eq!(
            unique.len(),
            total,
            "round {round}: an item was lost or duplicated"
        );
    }
}

/// Follows etcd's `TestPrQueueManyReaderManyWriter` (3 writer and 3 reader
/// clients, 2 items per writer), over many rounds and with more items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_readers_never_wait_beside_queued_items() {
    readers_beside_writers("pq", 10, 2).await;
    readers_beside_writers("pq-more", 10, 20).await;
}

/// Follows etcd's `TestQueueManyReaderManyWriter`, with enough items that a
/// reader's whole batch is taken by faster readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_readers_never_wait_beside_queued_items() {
    readers_beside_writers("fifo", 10, 2).await;
    readers_beside_writers("fifo", 6, 60).await;
}

/// A hung or dead process first in the idle line keeps its place until its
/// lease ends (never, while it hangs). Consumers of other processes must
/// still take a new item within about one `LOOK_ANYWAY_EVERY` (1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_is_taken_while_a_hung_process_is_first_in_the_idle_line() {
    let mut etcd = client().await;
    // The hung process: a place in each queue's line, on a live lease.
    let hung =
        cpr_distributed::etcd::Session::new(etcd.clone(), Duration::from_secs(30))
            .await
            .unwrap();
    for kind in ["fifo", "pq"] {
        let name = format!("q-hung-first-{kind}");
        let on_hung_lease = cpr_distributed::etcd::etcd_client::PutOptions::new()
            .with_lease(hung.lease_id());
        let place = format!("cpr-idle/q/{name}/1");
        etcd.put(place, "", Some(on_hung_lease)).await.unwrap();
        let consumer = AnyQueue::new(kind, &name).await;
        let producer = AnyQueue::new(kind, &name).await;
        let waiting = tokio::spawn(async move { consumer.dequeue().await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        producer.enqueue("hello".into()).await;
        let enqueued = tokio::time::Instant::now();
        let value = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap_or_else(|_| {
                panic!("{kind}: the item waited beside an idle consumer")
            })
            .unwrap();
        assert_eq!(value, "hello");
        let waited = enqueued.elapsed();
        assert!(
            waited < Duration::from_secs(3),
            "{kind}: taken after {waited:?}"
        );
    }
    hung.close().await.unwrap();
}

/// Cancelled priority dequeues on levels that empty and fill again (so item
/// keys are reused): 3,000 cancellations over several rounds, with
/// producers running; every item is delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_priority_dequeues_on_reused_levels_lose_nothing() {
    const ITEMS: usize = 200;
    let mut cancelled = 0;
    let mut round = 0;
    while cancelled < 3_000 {
        assert!(
            round < 40,
            "too few cancellations: {cancelled} in {round} rounds"
        );
        let name = format!("pq-cancel-reuse-{round}");
        let producer = {
            let queue = PriorityQueue::new(client().await, &name).unwrap();
            tokio::spawn(async move {
                for i in 0..ITEMS {
                    queue.enqueue(format!("{i}"), (i % 2) as u16).await.unwrap();
                }
            })
        };
        let mut consumers = tokio::task::JoinSet::new();
        for _ in 0..2 {
            let queue = PriorityQueue::new(client().await, &name).unwrap();
            consumers.spawn(async move {
                let (mut got, mut cut) = (Vec::new(), 0);
                for _ in 0..ITEMS {
                    let limit = Duration::from_micros(rand::random_range(100..3_000));
                    match tokio::time::timeout(limit, queue.dequeue()).await {
                        Ok(value) => got.push(text(value.unwrap())),
                        Err(_) => cut += 1,
                    }
                }
                (got, cut)
            });
        }
        producer.await.unwrap();
        let mut got = Vec::new();
        for (taken, cut) in consumers.join_all().await {
            got.extend(taken);
            cancelled += cut;
        }
        // Put-backs land in the background: collect until every item is
        // seen or a deadline passes.
        let queue = PriorityQueue::new(client().await, &name).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while got.len() < ITEMS && tokio::time::Instant::now() < deadline {
            match queue.try_dequeue().await.unwrap() {
                Some(value) => got.push(text(value)),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "round {round}: an item was delivered twice"
        );
        assert_eq!(
            got.len(),
            ITEMS,
            "round {round}: a cancelled dequeue lost an item"
        );
        round += 1;
    }
}

/// Items close to etcd's request limit (1.5 MiB): four of 1.4 MiB are more
/// than one reply may carry (4 MiB), and used to make every dequeue fail
/// ("decoded message length too large"). They are all delivered, in order.
#[tokio::test]
async fn items_near_etcds_request_limit_never_wedge_a_queue() {
    let producer = Queue::new(client().await, "q-large-items").unwrap();
    let big = |i: u8| vec![b'a' + i; 1_400 * 1024];
    for i in 0..4 {
        producer.enqueue(big(i)).await.unwrap();
    }
    producer.enqueue("small").await.unwrap();
    let consumer = Queue::new(client().await, "q-large-items").unwrap();
    assert_eq!(consumer.try_dequeue().await.unwrap().unwrap(), big(0));
    for i in 1..4 {
        let value = tokio::time::timeout(Duration::from_secs(10), consumer.dequeue())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value, big(i));
    }
    assert_eq!(consumer.dequeue().await.unwrap(), b"small");
}

/// Four consumers on clients of their own drain a backlog; the busiest is
/// aborted mid-way. The others carry on at once: while items remain, no
/// `dequeue` of theirs waits longer than the idle line's look-anyway
/// period (1 s) plus slack, and every item is delivered exactly once.
/// (In one process, so the aborted consumer's process stays in the idle
/// line; `tests/queue_processes.rs` kills a whole consumer process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_carry_on_when_the_busiest_is_killed_mid_backlog() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    const ITEMS: usize = 400;
    const LONGEST_WAIT: Duration = Duration::from_millis(2_500);
    let name = "q-busiest-killed";
    let producer = Queue::new(client().await, name).unwrap();
    for i in 0..ITEMS {
        producer.enqueue(format!("{i}")).await.unwrap();
    }
    let taken = std::sync::Arc::new(AtomicUsize::new(0));
    let (sender, mut received) =
        tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    let mut consumers = Vec::new();
    for id in 0..4 {
        let (queue, taken, sender) = (
            Queue::new(client().await, name).unwrap(),
            taken.clone(),
            sender.clone(),
        );
        consumers.push(tokio::spawn(async move {
            while taken.load(SeqCst) < ITEMS {
                let asked = tokio::time::Instant::now();
                match tokio::time::timeout(LONGEST_WAIT, queue.dequeue()).await {
                    Ok(value) => {
                        taken.fetch_add(1, SeqCst);
                        sender.send((id, text(value.unwrap()))).unwrap();
                    }
                    // Only allowed once nothing is left to take.
                    Err(_) => assert!(
                        taken.load(SeqCst) >= ITEMS,
                        "consumer {id} waited {:?} beside {} queued items",
                        asked.elapsed(),
                        ITEMS - taken.load(SeqCst)
                    ),
                }
            }
        }));
    }
    drop(sender);
    let mut per_consumer = [0usize; 4];
    let mut all = Vec::new();
    let mut killed = false;
    while let Some((id, value)) =
        tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .expect("the survivors stopped taking items")
    {
        per_consumer[id] += 1;
        all.push(value);
        if !killed && all.len() >= 100 {
            let busiest = (0..4).max_by_key(|&i| per_consumer[i]).unwrap();
            consumers[busiest].abort();
            killed = true;
        }
        if all.len() >= ITEMS {
            break;
        }
    }
    for consumer in consumers {
        match consumer.await {
            Ok(()) => {}
            Err(error) if error.is_cancelled() => {}
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    // A dequeue cut by the abort puts its item back: collect it too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while all.len() < ITEMS && tokio::time::Instant::now() < deadline {
        match producer.try_dequeue().await.unwrap() {
            Some(value) => all.push(text(value)),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "an item was delivered twice");
    assert_eq!(all.len(), ITEMS, "an item was lost");
}

/// Dequeues until the queue is empty (a short wait for stragglers).
async fn drain(queue: &Queue) -> Vec<String> {
    let mut taken = Vec::new();
    while let Ok(Ok(value)) =
        tokio::time::timeout(Duration::from_secs(2), queue.dequeue()).await
    {
        taken.push(text(value));
    }
    taken
}

/// `enqueue_many`: 300 items take three transactions (127, 127, 46); a
/// second producer enqueues one by one meanwhile. A consumer takes every
/// item once, each producer's items in its order, and a transaction's items
/// together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_its_order_and_nothing_falls_inside_it() {
    let queue = Queue::new(client().await, "q-many").unwrap();
    let batch: Vec<String> = (0..300).map(|i| format!("b{i:03}")).collect();
    let one_by_one = tokio::spawn({
        let queue = Queue::new(client().await, "q-many").unwrap();
        async move {
            for i in 0..30 {
                queue.enqueue(format!("s{i:03}")).await.unwrap();
            }
        }
    });
    let keys = queue.enqueue_many(batch.clone()).await.unwrap();
    one_by_one.await.unwrap();
    assert_eq!(keys.len(), 300);
    assert!(
        keys.windows(2).all(|pair| pair[0] < pair[1]),
        "keys rise in order"
    );

    let taken = drain(&Queue::new(client().await, "q-many").unwrap()).await;
    assert_eq!(taken.len(), 330, "every item once");
    assert_eq!(
        taken.iter().collect::<HashSet<_>>().len(),
        330,
        "no duplicate"
    );
    let of = |p: &str| -> Vec<String> {
        taken.iter().filter(|v| v.starts_with(p)).cloned().collect()
    };
    assert_eq!(of("b"), batch, "the batch's items out of order");
    let single: Vec<String> = (0..30).map(|i| format!("s{i:03}")).collect();
    assert_eq!(of("s"), single);
    // A transaction's 127 items follow each other in the take order.
    for transaction in batch.chunks(127) {
        let first = taken.iter().position(|v| v == &transaction[0]).unwrap();
        assert_eq!(
            &taken[first..first + transaction.len()],
            transaction,
            "another item fell inside a transaction's items"
        );
    }
    assert!(
        queue
            .enqueue_many(Vec::<String>::new())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Values of 600 KB: two do not fit in a transaction under etcd's request
/// limit, so each goes in its own, and all arrive in order.
#[tokio::test]
async fn a_batch_of_large_values_is_split_under_the_request_limit() {
    let queue = Queue::new(client().await, "q-many-large").unwrap();
    let values: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; 600_000]).collect();
    queue.enqueue_many(values.clone()).await.unwrap();
    for value in values {
        assert_eq!(queue.dequeue().await.unwrap(), value);
    }
}

/// The producer: 1,000 enqueues in flight at once go in a few
/// transactions, and come out in the order they were made, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_keeps_many_in_flight_in_order() {
    let queue = Queue::new(client().await, "q-producer").unwrap();
    let producer = queue.producer();
    let sent: Vec<_> = (0..1_000)
        .map(|i| producer.enqueue(format!("p{i:04}")))
        .collect();
    let keys: Vec<String> = futures::future::join_all(sent)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
    let taken = drain(&queue).await;
    let expected: Vec<String> = (0..1_000).map(|i| format!("p{i:04}")).collect();
    assert_eq!(taken, expected);
}

/// Items whose keys run against their revisions (a Go producer whose clock
/// stepped back, say) make etcd really sort a page by revision, and its
/// sort leaves equal revisions — a batch's items — in arbitrary order:
/// without the reads that order a revision by key, this test took b063
/// first. A batch's items still come out in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_its_order_behind_keys_that_run_backwards() {
    let mut c = client().await;
    // Go layout, far-future nanos, written in falling key order.
    for i in 0..60u64 {
        let key = format!("q-many-back/{}", 9_000_000_000_000_000_000u64 - i);
        c.put(key, format!("g{i:03}"), None).await.unwrap();
    }
    let queue = Queue::new(client().await, "q-many-back").unwrap();
    let batch: Vec<String> = (0..127).map(|i| format!("b{i:03}")).collect();
    queue.enqueue_many(batch.clone()).await.unwrap();
    let taken = drain(&queue).await;
    let go: Vec<String> = (0..60).map(|i| format!("g{i:03}")).collect();
    assert_eq!(
        taken[..60],
        go[..],
        "the older items first, in revision order"
    );
    assert_eq!(taken[60..], batch[..], "the batch's items out of order");
}
