//! Names are isolated and foreign keys do no harm: a recipe counts only its
//! own keys (`<name>/<one segment>`, plus its own sub-layouts), so `a` and
//! `a/b` never see each other, and a key it cannot parse (not UTF-8, written
//! by another tool) is passed over with a warning instead of wedging it.

use std::time::Duration;

use cpr_distributed::etcd::{
    Client, DoubleBarrier, EtcdConfig, Mutex, PriorityQueue, Queue, RwMutex, Session,
    WorkQueue,
};
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(5);

async fn client() -> Client {
    let etcd = testkit::shared_etcd().unwrap();
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

async fn session() -> Session {
    Session::new(client().await, Duration::from_secs(10))
        .await
        .unwrap()
}

/// Writes a key that is not UTF-8 right under `prefix`, as another tool
/// might.
async fn foreign_key(prefix: &str) {
    let key = [prefix.as_bytes(), b"\xff\xfe"].concat();
    client().await.put(key, "?", None).await.unwrap();
}

#[tokio::test]
async fn a_queue_takes_only_its_own_items() {
    let parent = Queue::new(client().await, "names-q").unwrap();
    let child = Queue::new(client().await, "names-q/child").unwrap();
    // More foreign keys than one read's page, created before the item.
    for i in 0..20 {
        child.enqueue(format!("child {i}")).await.unwrap();
    }
    foreign_key("names-q/").await;
    parent.enqueue("parent").await.unwrap();
    let got = timeout(BOUND, parent.dequeue()).await.unwrap().unwrap();
    assert_eq!(got, b"parent");
    assert_eq!(
        parent.try_dequeue().await.unwrap(),
        None,
        "took a foreign key"
    );
    assert_eq!(child.try_dequeue().await.unwrap().unwrap(), b"child 0");
}

#[tokio::test]
async fn a_priority_queue_takes_only_its_own_items() {
    let parent = PriorityQueue::new(client().await, "names-pq").unwrap();
    let child = PriorityQueue::new(client().await, "names-pq/child").unwrap();
    for i in 0..20 {
        child.enqueue(format!("child {i}"), 0).await.unwrap();
    }
    foreign_key("names-pq/").await;
    foreign_key("names-pq/00000/").await;
    parent.enqueue("parent", 7).await.unwrap();
    let got = timeout(BOUND, parent.dequeue()).await.unwrap().unwrap();
    assert_eq!(got, b"parent");
    assert_eq!(
        parent.try_dequeue().await.unwrap(),
        None,
        "took a foreign key"
    );
    // A foreign key that sorts last in a level does not stop an enqueue.
    parent.enqueue("after", 0).await.unwrap();
    assert_eq!(parent.try_dequeue().await.unwrap().unwrap(), b"after");
    assert_eq!(child.try_dequeue().await.unwrap().unwrap(), b"child 0");
}

#[tokio::test]
async fn a_work_queue_claims_only_its_own_items() {
    let (a, b) = (session().await, session().await);
    let child = WorkQueue::new(&a, "names-wq/items").unwrap();
    child.enqueue("child").await.unwrap();
    foreign_key("names-wq/items/").await;
    let parent = WorkQueue::new(&b, "names-wq").unwrap();
    parent.enqueue("parent").await.unwrap();
    let item = timeout(BOUND, parent.dequeue()).await.unwrap().unwrap();
    assert_eq!(item.value, b"parent");
    parent.ack(&item).await.unwrap();
    let more = timeout(Duration::from_millis(500), parent.dequeue()).await;
    assert!(more.is_err(), "claimed a foreign key: {more:?}");
}

#[tokio::test]
async fn a_mutex_ignores_a_nested_lock_and_foreign_keys() {
    let (a, b) = (session().await, session().await);
    let child = Mutex::new(&a, "names-m/child").unwrap();
    let _child_held = child.lock().await.unwrap();
    foreign_key("names-m/").await;
    let parent = Mutex::new(&b, "names-m").unwrap();
    let held = parent.try_lock().await.unwrap();
    assert!(held.is_some(), "try_lock saw the nested lock as a holder");
    held.unwrap().unlock().await.unwrap();
    let held = timeout(BOUND, parent.lock())
        .await
        .expect("lock waited on a nested lock");
    held.unwrap().unlock().await.unwrap();
}

#[tokio::test]
async fn a_rw_mutex_ignores_a_nested_lock() {
    let (a, b) = (session().await, session().await);
    let child = RwMutex::new(&a, "names-rw/read").unwrap();
    let _child_writes = child.write_lock().await.unwrap();
    foreign_key("names-rw/write/").await;
    let parent = RwMutex::new(&b, "names-rw").unwrap();
    let writing = timeout(BOUND, parent.write_lock())
        .await
        .expect("waited on a nested lock");
    writing.unwrap().unlock().await.unwrap();
    let reading = timeout(BOUND, parent.read_lock())
        .await
        .expect("waited on a nested lock");
    reading.unwrap().unlock().await.unwrap();
}

#[tokio::test]
async fn a_double_barrier_counts_only_its_own_participants() {
    let (a, b, c) = (session().await, session().await, session().await);
    // A nested barrier whose keys sit under ours (`names-db/waiters/…`).
    let mut nested = DoubleBarrier::new(&a, "names-db/waiters", 1).unwrap();
    timeout(BOUND, nested.enter()).await.unwrap().unwrap();
    foreign_key("names-db/waiters/").await;
    let mut first = DoubleBarrier::new(&b, "names-db", 2).unwrap();
    let entering = tokio::spawn(async move {
        first.enter().await.unwrap();
        first
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !entering.is_finished(),
        "entered with one of two participants"
    );
    let mut second = DoubleBarrier::new(&c, "names-db", 2).unwrap();
    timeout(BOUND, second.enter()).await.unwrap().unwrap();
    let mut first = timeout(BOUND, entering).await.unwrap().unwrap();
    let (left, other) = tokio::join!(first.leave(), second.leave());
    left.unwrap();
    other.unwrap();
    nested.leave().await.unwrap();
}
