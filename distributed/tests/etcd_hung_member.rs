//! Against a hung etcd member (stopped with SIGSTOP: connections stay open,
//! nothing answers), every recipe call fails within a bound instead of
//! retrying for over a minute: the client's operation bound for calls that
//! make requests, plus the idle line's lease for a consumer that was
//! waiting. The bound here is set shorter than the default and than the
//! request timeout (10 s), so the test also shows that it is the setting
//! that bounds a call.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use cpr_distributed::etcd::{
    Barrier, Client, DoubleBarrier, Election, EtcdConfig, EtcdError, Mutex,
    PriorityQueue, Queue, RwMutex, Session, StmOptions, WorkQueue, run_stm, transfer,
};
use testkit::EtcdCluster;

/// The operation bound set for this test.
const BOUND: Duration = Duration::from_secs(6);

type Call = Pin<Box<dyn Future<Output = Result<(), EtcdError>> + Send>>;

fn call<T>(
    future: impl Future<Output = Result<T, EtcdError>> + Send + 'static,
) -> Call {
    Box::pin(async move { future.await.map(drop) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_fails_in_bounded_time_against_a_hung_member() {
    let etcd = EtcdCluster::start(1).unwrap();
    let client: Client = EtcdConfig::new(etcd.endpoints())
        .operation_bound(BOUND)
        .connect()
        .await
        .unwrap();
    assert_eq!(client.operation_bound(), BOUND);
    let session = Session::new(client.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let queue = Queue::new(client.clone(), "hung-q").unwrap();
    queue.enqueue("item").await.unwrap();
    let empty = Queue::new(client.clone(), "hung-empty").unwrap();
    let priority = PriorityQueue::new(client.clone(), "hung-pq").unwrap();
    priority.enqueue("item", 1).await.unwrap();
    let work = WorkQueue::new(&session, "hung-wq").unwrap();
    client.clone().put("hung-bank/a", "10", None).await.unwrap();
    let mutex = Mutex::new(&session, "hung-lock").unwrap();
    let election = Election::new(&session, "hung-election").unwrap();
    let barrier = Barrier::new(client.clone(), "hung-barrier").unwrap();
    let raised = Barrier::new(client.clone(), "hung-raised").unwrap();
    raised.hold().await.unwrap();
    let rw = RwMutex::new(&session, "hung-rw").unwrap();
    let double = DoubleBarrier::new(&session, "hung-double", 2).unwrap();
    // A lock held by another session, and a waiter behind it: the waiter's
    // own session can no longer be renewed, so it fails when that lease
    // would have run out.
    let holder = Session::new(client.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let _held = Mutex::new(&holder, "hung-held")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiter = Mutex::new(&session, "hung-held").unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await.map(drop) });
    tokio::time::sleep(Duration::from_millis(300)).await;

    etcd.pause(0).unwrap();
    let calls: Vec<(&str, Duration, Call)> = vec![
        (
            "Queue::enqueue",
            BOUND,
            call({
                let q = queue.clone();
                async move { q.enqueue("x").await }
            }),
        ),
        (
            "Queue::try_dequeue",
            BOUND,
            call({
                let q = queue.clone();
                async move { q.try_dequeue().await }
            }),
        ),
        (
            "Queue::dequeue",
            BOUND,
            call({
                let q = queue.clone();
                async move { q.dequeue().await }
            }),
        ),
        // Waiting on an empty queue: its idle line's lease (10 s) runs out,
        // then the consumer looks for itself and its read fails.
        (
            "Queue::dequeue (waiting)",
            BOUND + Duration::from_secs(12),
            call({
                let q = empty.clone();
                async move { q.dequeue().await }
            }),
        ),
        (
            "PriorityQueue::enqueue",
            BOUND,
            call({
                let q = priority.clone();
                async move { q.enqueue("x", 1).await }
            }),
        ),
        (
            "PriorityQueue::try_dequeue",
            BOUND,
            call({
                let q = priority.clone();
                async move { q.try_dequeue().await }
            }),
        ),
        (
            "WorkQueue::enqueue",
            BOUND,
            call({
                let w = work.clone();
                async move { w.enqueue("x").await }
            }),
        ),
        (
            "transfer",
            BOUND,
            call({
                let c = client.clone();
                async move { transfer(&c, "hung-bank/a", "hung-bank/b", 1, 8).await }
            }),
        ),
        (
            "run_stm",
            BOUND,
            call({
                let c = client.clone();
                async move {
                    run_stm(&c, StmOptions::default(), |stm| async move {
                        stm.get("hung-bank/a").await?;
                        stm.put("hung-bank/a", "11");
                        Ok::<_, EtcdError>(())
                    })
                    .await
                    .map_err(|error| match error {
                        cpr_distributed::etcd::StmError::Etcd(error) => error,
                        cpr_distributed::etcd::StmError::Aborted(error) => error,
                    })
                }
            }),
        ),
        (
            "Mutex::try_lock",
            BOUND,
            call({
                let m = mutex.clone();
                async move { m.try_lock().await }
            }),
        ),
        (
            "Election::leader",
            BOUND,
            call({
                let e = election.clone();
                async move { e.leader().await }
            }),
        ),
        (
            "Barrier::hold",
            BOUND,
            call({
                let b = barrier.clone();
                async move { b.hold().await }
            }),
        ),
        (
            "Mutex::lock",
            BOUND,
            call({
                let m = mutex.clone();
                async move { m.lock().await }
            }),
        ),
        (
            "Mutex::lock (waiting behind a holder)",
            BOUND,
            Box::pin(async move { waiting.await.unwrap() }),
        ),
        (
            "RwMutex::write_lock",
            BOUND,
            call(async move { rw.write_lock().await }),
        ),
        (
            "Election::campaign",
            BOUND,
            call({
                let e = election.clone();
                async move { e.campaign("me").await }
            }),
        ),
        (
            "Barrier::wait",
            BOUND,
            call(async move { raised.wait().await }),
        ),
        (
            "DoubleBarrier::enter",
            BOUND,
            call({
                let mut double = double;
                async move { double.enter().await }
            }),
        ),
        (
            "WorkQueue::dequeue",
            BOUND,
            call({
                let w = work.clone();
                async move { w.dequeue().await }
            }),
        ),
        (
            "Session::new",
            BOUND,
            call({
                let c = client.clone();
                async move { Session::new(c, Duration::from_secs(5)).await }
            }),
        ),
    ];
    let slack = Duration::from_secs(3);
    let outcomes = futures::future::join_all(calls.into_iter().map(
        |(name, bound, call)| async move {
            let started = Instant::now();
            let outcome =
                tokio::time::timeout(bound + Duration::from_secs(20), call).await;
            (name, bound, started.elapsed(), outcome)
        },
    ))
    .await;
    etcd.resume(0).unwrap();
    for (name, bound, took, outcome) in outcomes {
        let outcome =
            outcome.unwrap_or_else(|_| panic!("{name} was still going after {took:?}"));
        assert!(outcome.is_err(), "{name} succeeded against a hung member");
        assert!(
            took <= bound + slack,
            "{name} failed after {took:?} (bound {bound:?})"
        );
    }
}
