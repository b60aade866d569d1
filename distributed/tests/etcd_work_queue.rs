//! The at-least-once WorkQueue against a real etcd: ack removes, a dead
//! consumer's item is delivered again, poison items go to the dead letters.

use std::collections::HashSet;
use std::time::Duration;

use cpr_distributed::etcd::etcd_client::GetOptions;
use cpr_distributed::etcd::{Client, EtcdConfig, EtcdError, Session, WorkQueue};

async fn client() -> Client {
    let etcd = testkit::shared_etcd().unwrap();
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

async fn session() -> Session {
    Session::new(client().await, Duration::from_secs(10))
        .await
        .unwrap()
}

/// A consumer crash, as seen by etcd: its lease ends.
async fn crash(session: &Session) {
    client()
        .await
        .lease_revoke(session.lease_id())
        .await
        .unwrap();
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
async fn acked_items_are_gone_and_nothing_is_left_behind() {
    let s = session().await;
    let queue = WorkQueue::new(&s, "wq-ack").unwrap();
    for i in 0..3 {
        queue.enqueue(format!("job {i}")).await.unwrap();
    }
    for i in 0..3 {
        let item = queue.dequeue().await.unwrap();
        assert_eq!(item.value, format!("job {i}").into_bytes());
        assert_eq!(item.deliveries, 1);
        queue.ack(&item).await.unwrap();
    }
    assert_eq!(keys_under("wq-ack/").await, 0);
}

#[tokio::test]
async fn a_dead_consumers_item_is_delivered_again() {
    let (a, b) = (session().await, session().await);
    let (qa, qb) = (
        WorkQueue::new(&a, "wq-redeliver").unwrap(),
        WorkQueue::new(&b, "wq-redeliver").unwrap(),
    );
    qa.enqueue("important").await.unwrap();
    let taken = qa.dequeue().await.unwrap();
    // B finds nothing to do while A holds the claim ...
    assert!(
        tokio::time::timeout(Duration::from_millis(300), qb.dequeue())
            .await
            .is_err()
    );
    crash(&a).await; // ... then A dies mid-item
    let again = tokio::time::timeout(Duration::from_secs(5), qb.dequeue())
        .await
        .expect("not redelivered")
        .unwrap();
    assert_eq!(again.id, taken.id);
    assert_eq!(again.deliveries, 2);
    let late = qa.ack(&taken).await.unwrap_err();
    assert!(
        matches!(late, EtcdError::SessionLost { .. }),
        "a lost claim was acked: {late}"
    );
    qb.ack(&again).await.unwrap();
    assert_eq!(keys_under("wq-redeliver/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_is_processed_at_least_once_while_consumers_crash() {
    let name = "wq-crashes";
    let producer = session().await;
    let queue = WorkQueue::new(&producer, name).unwrap();
    let mut ids = HashSet::new();
    for i in 0..30 {
        ids.insert(queue.enqueue(format!("{i}")).await.unwrap());
    }
    let mut done = HashSet::new();
    let mut crashes = 0;
    while done.len() < ids.len() {
        let s = session().await;
        let consumer = WorkQueue::new(&s, name).unwrap();
        // Each consumer does a few items, then dies holding one.
        for _ in 0..4 {
            let Ok(Ok(item)) =
                tokio::time::timeout(Duration::from_secs(5), consumer.dequeue()).await
            else {
                break;
            };
            consumer.ack(&item).await.unwrap();
            done.insert(item.id);
        }
        if let Ok(Ok(_abandoned)) =
            tokio::time::timeout(Duration::from_secs(1), consumer.dequeue()).await
        {
            crash(&s).await;
            crashes += 1;
        }
    }
    assert_eq!(done, ids, "an item was lost");
    assert!(crashes > 0);
    assert_eq!(keys_under(&format!("{name}/")).await, 0);
}

#[tokio::test]
async fn a_poison_item_goes_to_the_dead_letters() {
    let name = "wq-poison";
    let producer = session().await;
    WorkQueue::new(&producer, name)
        .unwrap()
        .enqueue("poison")
        .await
        .unwrap();
    for _ in 0..2 {
        let s = session().await;
        let consumer = WorkQueue::new(&s, name).unwrap().dead_letter_after(2);
        consumer.dequeue().await.unwrap();
        crash(&s).await; // the item crashes whoever takes it
    }
    let s = session().await;
    let consumer = WorkQueue::new(&s, name).unwrap().dead_letter_after(2);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), consumer.dequeue())
            .await
            .is_err(),
        "the poison item was delivered a third time"
    );
    assert_eq!(
        consumer.dead_letters().await.unwrap(),
        vec![b"poison".to_vec()]
    );
}

#[tokio::test]
async fn items_arriving_after_a_consumer_went_busy_are_all_delivered() {
    let session = session().await;
    let work = WorkQueue::new(&session, "wq-handover").unwrap();
    let consumer = {
        let work = work.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..21 {
                let item = work.dequeue().await.unwrap();
                work.ack(&item).await.unwrap();
                got.push(String::from_utf8(item.value).unwrap());
                // Busy for a while: nobody waits in this process meanwhile.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            got
        })
    };
    work.enqueue("first").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 0..20 {
        work.enqueue(format!("more-{i}")).await.unwrap();
    }
    let got = tokio::time::timeout(Duration::from_secs(20), consumer)
        .await
        .expect("items were left in the queue")
        .unwrap();
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), 21);
}

/// Items claimed and still being worked on stay in the queue; a consumer
/// must look past them. Here 20 are claimed (more than one read's page of
/// 16), and a second consumer must still find the 21st at once.
#[tokio::test]
async fn a_consumer_finds_work_behind_items_others_are_working_on() {
    let name = "wq-behind-claims";
    let (busy, idle) = (session().await, session().await);
    let busy_queue = WorkQueue::new(&busy, name).unwrap();
    for i in 0..25 {
        busy_queue.enqueue(format!("{i}")).await.unwrap();
    }
    let mut held = Vec::new();
    for _ in 0..20 {
        let item = tokio::time::timeout(Duration::from_secs(5), busy_queue.dequeue())
            .await
            .expect("a consumer waited while unclaimed items were queued")
            .unwrap();
        held.push(item);
    }
    let idle_queue = WorkQueue::new(&idle, name).unwrap();
    let mut seen = HashSet::new();
    for _ in 0..5 {
        let item = tokio::time::timeout(Duration::from_secs(5), idle_queue.dequeue())
            .await
            .expect("a consumer waited while unclaimed items were queued")
            .unwrap();
        idle_queue.ack(&item).await.unwrap();
        seen.insert(String::from_utf8(item.value).unwrap());
    }
    let held_values: HashSet<String> = held
        .iter()
        .map(|item| String::from_utf8(item.value.clone()).unwrap())
        .collect();
    assert_eq!(seen.len(), 5);
    assert!(
        seen.is_disjoint(&held_values),
        "an item was delivered while claimed"
    );
    for item in &held {
        busy_queue.ack(item).await.unwrap();
    }
    assert_eq!(keys_under(&format!("{name}/items/")).await, 0);
}

/// The work queue with items near etcd's request limit: four of 1.4 MiB
/// exceed one reply (4 MiB) and used to make every dequeue fail.
#[tokio::test]
async fn items_near_etcds_request_limit_never_wedge_a_work_queue() {
    let session = session().await;
    let queue = WorkQueue::new(&session, "wq-large-items").unwrap();
    let big = |i: u8| vec![b'a' + i; 1_400 * 1024];
    for i in 0..4 {
        queue.enqueue(big(i)).await.unwrap();
    }
    for i in 0..4 {
        let item = tokio::time::timeout(Duration::from_secs(10), queue.dequeue())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(item.value, big(i));
        queue.ack(&item).await.unwrap();
    }
    assert_eq!(keys_under("wq-large-items/items/").await, 0);
}
