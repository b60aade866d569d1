//! Benchmarks on etcd.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use concurrency_patterns::distributed::etcd::etcd_client::{DeleteOptions, GetOptions};
use concurrency_patterns::distributed::etcd::{
    Client, EtcdError, Mutex, Queue, Semaphore, Session, StmOptions, run_stm,
};

use crate::Servers;
use crate::report::Samples;

/// Operations per etcd benchmark: about a second at the commit limit.
const N: usize = 2000;

/// gRPC calls started on all members, for `rpcs_per_op`.
fn grpc_calls(addrs: &[SocketAddr]) -> u64 {
    addrs
        .iter()
        .filter_map(|a| testkit::etcd_grpc_calls(*a))
        .sum()
}

/// Items (or cycles, or transactions) in the untimed pass that counts
/// requests per operation.
const COUNTED: usize = 100;

/// Requests per operation, counted by the servers over `ops` operations
/// run by `pass`, apart from any timed pass: reading etcd's metrics makes
/// it allocate, and the garbage collection that follows would slow a timed
/// pass that started right after (4–6 % on `etcd.queue.enqueue`), which
/// the Go peer, counting nothing, does not pay.
async fn rpcs_per_op<T, F: Future<Output = anyhow::Result<T>>>(
    addrs: &[SocketAddr],
    ops: usize,
    pass: F,
) -> anyhow::Result<f64> {
    let before = grpc_calls(addrs);
    pass.await?;
    Ok((grpc_calls(addrs) - before) as f64 / ops as f64)
}

/// Runs `op(0)`, `op(1)`, … `op(count - 1)` one after another: each
/// call's latency and the time of the whole pass.
async fn timed<T, E, F, Fut>(count: usize, mut op: F) -> anyhow::Result<Samples>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        op(i).await?;
        latencies.push(t.elapsed());
    }
    Ok(Samples::new(latencies, started.elapsed()))
}

/// `etcd.raw.put`: sequential puts to one key. Every put is one Raft commit
/// and one fsync, so this is the ceiling for anything that writes.
pub async fn raw_put(servers: &mut Servers) -> anyhow::Result<String> {
    let (mut client, addrs) = servers.etcd().await?;
    let key = "bench/raw/put";
    for _ in 0..50 {
        client.put(key, "warm-up", None).await?;
    }
    let mut latencies = Vec::with_capacity(N);
    let started = Instant::now();
    for i in 0..N {
        let t = Instant::now();
        client.put(key, i.to_string(), None).await?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    let rpcs = rpcs_per_op(&addrs, COUNTED, async {
        for i in 0..COUNTED {
            client.put(key, i.to_string(), None).await?;
        }
        Ok(())
    })
    .await?;
    client.delete(key, None).await?;
    Ok(Samples::new(latencies, elapsed).line("etcd.raw.put", &[("rpcs_per_op", rpcs)]))
}

/// Lock+unlock cycles per etcd benchmark.
const MUTEX_CYCLES: usize = 500;
/// Hand-overs measured in `etcd.mutex.handoff`.
const HANDOFFS: usize = 200;

/// `etcd.mutex.cycle`: uncontended lock+unlock on one session.
pub async fn mutex_cycle(servers: &mut Servers) -> anyhow::Result<String> {
    let (client, addrs) = servers.etcd().await?;
    let session = Session::new(client, Duration::from_secs(10)).await?;
    let mutex = Mutex::new(&session, "bench/mutex-cycle")?;
    let line = cycles(&addrs, "etcd.mutex.cycle", async || {
        mutex.lock().await?.unlock().await
    })
    .await?;
    session.close().await?;
    Ok(line)
}

/// `etcd.semaphore.cycle`: uncontended acquire+release of one of three
/// permits on one session (a turn in the line, the permit, the turn back).
pub async fn semaphore_cycle(servers: &mut Servers) -> anyhow::Result<String> {
    let (client, addrs) = servers.etcd().await?;
    let session = Session::new(client, Duration::from_secs(10)).await?;
    let semaphore = Semaphore::new(&session, "bench/semaphore-cycle", 3)?;
    let line = cycles(&addrs, "etcd.semaphore.cycle", async || {
        semaphore.acquire().await?.release().await
    })
    .await?;
    session.close().await?;
    Ok(line)
}

/// An uncontended acquire-and-release `cycle`: 20 to warm up,
/// [`MUTEX_CYCLES`] timed, [`COUNTED`] counted by the server.
async fn cycles(
    addrs: &[SocketAddr],
    name: &str,
    mut cycle: impl AsyncFnMut() -> Result<(), EtcdError>,
) -> anyhow::Result<String> {
    for _ in 0..20 {
        cycle().await?;
    }
    let mut latencies = Vec::with_capacity(MUTEX_CYCLES);
    let started = Instant::now();
    for _ in 0..MUTEX_CYCLES {
        let t = Instant::now();
        cycle().await?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    let rpcs = rpcs_per_op(addrs, COUNTED, async {
        for _ in 0..COUNTED {
            cycle().await?;
        }
        Ok(())
    })
    .await?;
    Ok(Samples::new(latencies, elapsed).line(name, &[("rpcs_per_op", rpcs)]))
}

/// `etcd.mutex.handoff`: two contenders on two sessions pass the lock back
/// and forth; the latency is from the holder's `unlock` call to the waiter's
/// `lock` returning.
pub async fn mutex_handoff(servers: &mut Servers) -> anyhow::Result<String> {
    let (client, _) = servers.etcd().await?;
    let sessions = [
        Session::new(client.clone(), Duration::from_secs(10)).await?,
        Session::new(client, Duration::from_secs(10)).await?,
    ];
    let mutexes = [
        Mutex::new(&sessions[0], "bench/mutex-handoff")?,
        Mutex::new(&sessions[1], "bench/mutex-handoff")?,
    ];
    let mut latencies = Vec::with_capacity(HANDOFFS);
    let mut held = mutexes[0].lock().await?;
    let started = Instant::now();
    for i in 0..HANDOFFS {
        let next = mutexes[(i + 1) % 2].clone();
        let waiter = tokio::spawn(async move {
            let guard = next.lock().await;
            (guard, Instant::now())
        });
        // Let the waiter get in line before the release.
        wait_until_waiting(&sessions[0], "bench/mutex-handoff/", 2).await?;
        let released_at = Instant::now();
        held.unlock().await?;
        let (guard, acquired_at) = waiter.await?;
        held = guard?;
        latencies.push(acquired_at - released_at);
    }
    let elapsed = started.elapsed();
    held.unlock().await?;
    for session in sessions {
        session.close().await?;
    }
    Ok(Samples::new(latencies, elapsed).line("etcd.mutex.handoff", &[]))
}

/// Polls until `count` contenders are in line under `prefix`.
async fn wait_until_waiting(
    session: &Session,
    prefix: &str,
    count: i64,
) -> anyhow::Result<()> {
    let options = GetOptions::new().with_prefix().with_count_only();
    let deadline = Instant::now() + Duration::from_secs(10);
    while session
        .client()
        .get(prefix, Some(options.clone()))
        .await?
        .count()
        < count
    {
        anyhow::ensure!(Instant::now() < deadline, "the waiter never got in line");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

/// Items per queue benchmark, as the Go peer's default.
const QUEUE_ITEMS: usize = 500;

/// `etcd.queue.enqueue` and `etcd.queue.dequeue`: one client, sequential.
pub async fn queue_sequential(servers: &mut Servers) -> anyhow::Result<Vec<String>> {
    let (client, addrs) = servers.etcd().await?;
    let queue = Queue::new(client, &format!("bench/queue-{}", std::process::id()))?;
    let enqueue = |i: usize| queue.enqueue(i.to_string());
    let dequeue = |_| queue.dequeue();
    let enqueues = timed(QUEUE_ITEMS, enqueue).await?;
    let dequeues = timed(QUEUE_ITEMS, dequeue).await?;
    let enqueue_rpcs = rpcs_per_op(&addrs, COUNTED, timed(COUNTED, enqueue)).await?;
    let dequeue_rpcs = rpcs_per_op(&addrs, COUNTED, timed(COUNTED, dequeue)).await?;
    Ok(vec![
        enqueues.line("etcd.queue.enqueue", &[("rpcs_per_op", enqueue_rpcs)]),
        dequeues.line("etcd.queue.dequeue", &[("rpcs_per_op", dequeue_rpcs)]),
    ])
}

/// Items per bulk-enqueue benchmark, and the batch size of `enqueue_many`.
const BULK_ITEMS: usize = 4096;
const BULK_BATCH: usize = 64;

/// `etcd.queue.enqueue_many` and `etcd.queue.enqueue_pipelined`: items/s
/// from one client with many items per round trip — `enqueue_many` in
/// batches of 64, then a `QueueProducer` with all 4,096 enqueues in flight
/// at once (grouped into transactions as each one's answer comes). The
/// peer is Go's `Queue.Enqueue` from one goroutine (`etcd.queue.enqueue`)
/// and from eight (`etcd.queue.enqueue_x8`).
pub async fn queue_bulk(servers: &mut Servers) -> anyhow::Result<Vec<String>> {
    let (client, _) = servers.etcd().await?;
    let name = format!("bench/queue-bulk-{}", std::process::id());
    let queue = Queue::new(client.clone(), &name)?;
    let items: Vec<String> = (0..BULK_ITEMS).map(|i| i.to_string()).collect();

    let mut latencies = Vec::new();
    let started = Instant::now();
    for batch in items.chunks(BULK_BATCH) {
        let t = Instant::now();
        queue.enqueue_many(batch.iter().cloned()).await?;
        // Each of a batch's items waited as long as its batch.
        latencies.extend(std::iter::repeat_n(t.elapsed(), batch.len()));
    }
    let many = Samples::new(latencies, started.elapsed());

    let producer = queue.producer();
    let started = Instant::now();
    let sent: Vec<_> = items
        .iter()
        .map(|item| {
            let answer = producer.enqueue(item.clone());
            async move {
                let t = Instant::now();
                answer.await.map(|_| t.elapsed())
            }
        })
        .collect();
    let latencies = futures::future::try_join_all(sent).await?;
    let pipelined = Samples::new(latencies, started.elapsed());

    client
        .clone()
        .delete(name, Some(DeleteOptions::new().with_prefix()))
        .await?;
    Ok(vec![
        many.line("etcd.queue.enqueue_many", &[("batch", BULK_BATCH as f64)]),
        pipelined.line("etcd.queue.enqueue_pipelined", &[]),
    ])
}

/// `etcd.queue.mc8`: one producer, 8 consumers blocked in `dequeue` (one
/// process, sharing the queue as the Go peer's goroutines do); items/s from
/// the first enqueue to the last delivery, and requests per item.
pub async fn queue_mc8(servers: &mut Servers) -> anyhow::Result<String> {
    let (client, addrs) = servers.etcd().await?;
    let queue = Queue::new(client, &format!("bench/queue-mc8-{}", std::process::id()))?;
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let consumers: Vec<_> = (0..8)
        .map(|_| {
            let (queue, delivered) = (queue.clone(), std::sync::Arc::clone(&delivered));
            tokio::spawn(async move {
                loop {
                    if queue.dequeue().await.is_ok() {
                        delivered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    // One producer enqueues `items` while the consumers deliver them all.
    let produce = |items: usize| {
        let (queue, delivered) = (queue.clone(), std::sync::Arc::clone(&delivered));
        async move {
            // All consumers idle first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let started = Instant::now();
            let target = delivered.load(std::sync::atomic::Ordering::SeqCst) + items;
            for i in 0..items {
                queue.enqueue(i.to_string()).await?;
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while delivered.load(std::sync::atomic::Ordering::SeqCst) < target {
                anyhow::ensure!(Instant::now() < deadline, "items were not delivered");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(started.elapsed())
        }
    };
    let elapsed = produce(QUEUE_ITEMS).await?;
    let rpcs = rpcs_per_op(&addrs, COUNTED, async { produce(COUNTED).await.map(drop) })
        .await?;
    for consumer in consumers {
        consumer.abort();
    }
    Ok(format!(
        "{{\"bench\":\"etcd.queue.mc8\",\"ops_per_s\":{:.1},\"rpcs_per_op\":{rpcs:.2},\"consumers\":8,\"n\":{QUEUE_ITEMS}}}",
        QUEUE_ITEMS as f64 / elapsed.as_secs_f64()
    ))
}

/// `etcd.stm.bank`: the lesson's bank — 5 accounts of 100, 10 tasks x 100
/// transfers of half a random balance — under SerializableSnapshot.
/// Reports committed transactions per second and attempts per transaction.
pub async fn stm_bank(servers: &mut Servers) -> anyhow::Result<String> {
    const ACCOUNTS: usize = 5;
    const TASKS: usize = 10;
    const PER_TASK: usize = 100;
    let (client, addrs) = servers.etcd().await?;
    let bank = format!("bench/bank-{}", std::process::id());
    for i in 0..ACCOUNTS {
        client
            .clone()
            .put(format!("{bank}/{i}"), "100", None)
            .await?;
    }
    let started = Instant::now();
    let attempts = bank_transfers(&client, &bank, ACCOUNTS, TASKS, PER_TASK).await?;
    let elapsed = started.elapsed();
    let txns = (TASKS * PER_TASK) as f64;
    let rpcs = rpcs_per_op(&addrs, TASKS * COUNTED / 10, async {
        bank_transfers(&client, &bank, ACCOUNTS, TASKS, COUNTED / 10)
            .await
            .map(drop)
    })
    .await?;
    let mut sum = 0u64;
    for i in 0..ACCOUNTS {
        let got = client.clone().get(format!("{bank}/{i}"), None).await?;
        sum += got
            .kvs()
            .first()
            .map(|kv| kv.value_str().unwrap_or("0").parse().unwrap_or(0))
            .unwrap_or(0);
    }
    anyhow::ensure!(sum == 500, "the bank's sum changed to {sum}");
    Ok(format!(
        "{{\"bench\":\"etcd.stm.bank\",\"ops_per_s\":{:.1},\"attempts_per_txn\":{:.2},\"rpcs_per_op\":{rpcs:.2},\"n\":{}}}",
        txns / elapsed.as_secs_f64(),
        attempts as f64 / txns,
        TASKS * PER_TASK
    ))
}

/// `tasks` tasks each make `per_task` of the lesson's transfers between
/// `accounts` accounts under `bank/`; returns the attempts they took.
async fn bank_transfers(
    client: &Client,
    bank: &str,
    accounts: usize,
    tasks: usize,
    per_task: usize,
) -> anyhow::Result<usize> {
    let mut running = Vec::new();
    for _ in 0..tasks {
        let (client, bank) = (client.clone(), bank.to_string());
        running.push(tokio::spawn(async move {
            let mut attempts = 0;
            for _ in 0..per_task {
                // The lesson's exchange, as the Go peer runs it: each attempt
                // draws two random accounts (the same one twice does nothing)
                // and moves half of one balance to the other.
                let outcome =
                    run_stm(&client, StmOptions::default().max_attempts(1000), |stm| {
                        let bank = bank.clone();
                        async move {
                            let (a, b) = (
                                rand::random_range(0..accounts),
                                rand::random_range(0..accounts),
                            );
                            if a == b {
                                return Ok(());
                            }
                            let (from, to) =
                                (format!("{bank}/{a}"), format!("{bank}/{b}"));
                            // Both accounts in one read (Go's exchange makes two).
                            let balances = stm.get_many(&[&from, &to]).await?;
                            let balance = |i: usize| -> u64 {
                                balances[i]
                                    .as_deref()
                                    .and_then(|b| std::str::from_utf8(b).ok())
                                    .and_then(|t| t.parse().ok())
                                    .unwrap_or(0)
                            };
                            let (from_balance, to_balance) = (balance(0), balance(1));
                            stm.put(
                                &from,
                                (from_balance - from_balance / 2).to_string(),
                            );
                            stm.put(&to, (to_balance + from_balance / 2).to_string());
                            Ok::<_, EtcdError>(())
                        }
                    })
                    .await?;
                attempts += outcome.attempts;
            }
            Ok::<_, anyhow::Error>(attempts)
        }));
    }
    let mut attempts = 0;
    for task in running {
        attempts += task.await??;
    }
    Ok(attempts)
}
