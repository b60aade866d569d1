//! Locks under faults, on a 3-member etcd cluster: a holder process killed
//! without closing its session, the etcd leader killed during contention,
//! and a holder paused past its lease whose late write must be refused.

mod support;

use std::time::{Duration, Instant};

use concurrency_patterns::distributed::etcd::etcd_client::{
    Compare, CompareOp, GetOptions, Txn, TxnOp,
};
use concurrency_patterns::distributed::etcd::{
    Client, EtcdConfig, EtcdError, Mutex, Session,
};
use support::{Proc, example_binary};
use testkit::EtcdCluster;
use testkit::history::{Call, FencedLock, LockOp};

const HOLDER_TTL: u64 = 2;

async fn client(etcd: &EtcdCluster) -> Client {
    EtcdConfig::new(etcd.endpoints())
        .request_timeout(Duration::from_secs(3))
        .connect()
        .await
        .unwrap()
}

async fn session(etcd: &EtcdCluster, ttl: u64) -> Session {
    Session::new(client(etcd).await, Duration::from_secs(ttl))
        .await
        .unwrap()
}

/// An example run as a separate holder process (lease `HOLDER_TTL`), sent
/// `command` and waited on until it says `done`.
fn holder_process(
    etcd: &EtcdCluster,
    example: &str,
    name: &str,
    extra: &[&str],
    command: &str,
    done: &str,
) -> Proc {
    let mut holder = Proc::spawn(
        std::process::Command::new(example_binary(example))
            .args(["--addr", &etcd.endpoints_env(), "--name", name])
            .args(["--ttl", &HOLDER_TTL.to_string()])
            .args(extra)
            .env_remove("ETCD_USER")
            .env_remove("ETCD_PASSWORD"),
    );
    holder.expect_line("ready", Duration::from_secs(10));
    holder.send(command);
    holder.expect_line(done, Duration::from_secs(10));
    holder
}

/// The `etcd-lock` example as a separate holder process, locked.
fn locked_holder(etcd: &EtcdCluster, name: &str) -> Proc {
    holder_process(etcd, "etcd-lock", name, &[], "lock", "locked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_releases_the_lock_within_its_ttl() {
    let etcd = EtcdCluster::start(3).unwrap();
    let holder = locked_holder(&etcd, "faults-killed");
    let ours = session(&etcd, 10).await;
    let mutex = Mutex::new(&ours, "faults-killed").unwrap();
    let waiting = tokio::spawn(async move { mutex.lock().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "acquired while the holder process lived"
    );

    let killed_at = Instant::now();
    holder.signal(libc::SIGKILL); // no unlock, no lease revoke: only expiry helps
    let guard = tokio::time::timeout(Duration::from_secs(HOLDER_TTL + 5), waiting)
        .await
        .expect("the lock was not released after the holder died")
        .unwrap()
        .unwrap();
    let waited = killed_at.elapsed();
    assert!(
        waited <= Duration::from_secs(HOLDER_TTL + 3),
        "took {waited:?} for a {HOLDER_TTL} s TTL"
    );
    guard.unlock().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holders_late_write_is_refused_by_its_fencing_check() {
    let etcd = EtcdCluster::start(3).unwrap();
    let name = "faults-paused";
    let resource = format!("{name}-resource");
    let mut holder = locked_holder(&etcd, name);
    holder.send("write early");
    holder.expect_line("write accepted: early", Duration::from_secs(10));

    // A long GC pause, a swapped-out VM: the holder is frozen past its lease.
    holder.signal(libc::SIGSTOP);
    let ours = session(&etcd, 10).await;
    let guard = tokio::time::timeout(
        Duration::from_secs(HOLDER_TTL + 5),
        Mutex::new(&ours, name).unwrap().lock(),
    )
    .await
    .expect("the paused holder's lease did not expire")
    .unwrap();
    let mut c = client(&etcd).await;
    let ours_write = Txn::new().when([guard.is_held()]).and_then([TxnOp::put(
        resource.as_str(),
        "new holder",
        None,
    )]);
    assert!(c.txn(ours_write).await.unwrap().succeeded());

    // The holder wakes up still believing it holds the lock, and writes.
    holder.signal(libc::SIGCONT);
    holder.send("write late");
    holder.expect_line("write rejected", Duration::from_secs(10));
    let value = c.get(resource.as_str(), None).await.unwrap();
    assert_eq!(
        value.kvs()[0].value_str().unwrap(),
        "new holder",
        "the stale holder overwrote the new one"
    );
    guard.unlock().await.unwrap();
}

/// One increment under the lock: read the counter, write counter + 1 and a
/// marker for this (client, step), only if the lock is still ours and the
/// marker is new. The marker makes a retry after an ambiguous failure (the
/// write happened but its reply was lost with the leader) a no-op.
async fn increment(
    mutex: &Mutex,
    client: &mut Client,
    marker: &str,
    history: &History,
) -> Result<(), EtcdError> {
    let invoked = Instant::now();
    let guard = mutex.lock().await?;
    let token = u64::try_from(guard.fencing_token()).unwrap_or(0);
    history.record(invoked, Some(Instant::now()), LockOp::Acquired(token));
    let counter = client.get("faults-counter", None).await?;
    let (value, revision) = match counter.kvs().first() {
        Some(kv) => (
            kv.value_str()?.parse::<u64>().unwrap_or(0),
            kv.mod_revision(),
        ),
        None => (0, 0),
    };
    let txn = Txn::new()
        .when([
            guard.is_held(),
            Compare::mod_revision("faults-counter", CompareOp::Equal, revision),
            Compare::create_revision(marker, CompareOp::Equal, 0),
        ])
        .and_then([
            TxnOp::put("faults-counter", (value + 1).to_string(), None),
            TxnOp::put(marker, "", None),
        ]);
    // The holder stops holding when it starts to unlock; a failed unlock
    // has no response (the key may have gone then, or with the lease).
    let (applied, unlocking) = match client.txn(txn).await {
        Ok(reply) => (reply.succeeded(), Instant::now()),
        Err(error) => {
            history.record(Instant::now(), None, LockOp::Released(token));
            return Err(error.into());
        }
    };
    let unlocked = guard.unlock().await.is_ok().then(Instant::now);
    history.record(unlocking, unlocked, LockOp::Released(token));
    if applied || client.get(marker, None).await?.count() == 1 {
        Ok(())
    } else {
        Err(EtcdError::NotLeader {
            name: "increment not applied; retrying".into(),
        })
    }
}

/// What the workers of one test saw, from one clock, for the checker.
#[derive(Clone, Default)]
struct History(std::sync::Arc<std::sync::Mutex<Vec<Call<LockOp>>>>);

impl History {
    fn record(&self, invoked: Instant, returned: Option<Instant>, op: LockOp) {
        self.0.lock().unwrap().push(Call {
            process: 0,
            invoked,
            returned,
            op,
        });
    }
}

/// Also checks the history of grants and releases: some order of them,
/// each within its call, is one holder at a time with rising tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_etcd_leader_during_contention_loses_no_update() {
    const CLIENTS: usize = 3;
    const STEPS: usize = 20;
    let etcd = std::sync::Arc::new(EtcdCluster::start(3).unwrap());
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let history = History::default();
    let mut workers = Vec::new();
    for id in 0..CLIENTS {
        let (etcd, progress, history) = (
            std::sync::Arc::clone(&etcd),
            std::sync::Arc::clone(&progress),
            history.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut client = client(&etcd).await;
            let mut session = session(&etcd, 5).await;
            for step in 0..STEPS {
                let marker = format!("faults-markers/{id}-{step}");
                loop {
                    if session.is_lost() {
                        session = Session::new(client.clone(), Duration::from_secs(5))
                            .await
                            .unwrap_or(session);
                    }
                    let mutex = Mutex::new(&session, "faults-contended").unwrap();
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        increment(&mutex, &mut client, &marker, &history),
                    )
                    .await
                    {
                        Ok(Ok(())) => break,
                        Ok(Err(error)) => eprintln!("client {id} step {step}: {error}"),
                        Err(_) => eprintln!("client {id} step {step}: timed out"),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    // Kill the leader once the contention is well under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.load(std::sync::atomic::Ordering::SeqCst) < CLIENTS * STEPS / 3 {
        assert!(Instant::now() < deadline, "no progress before the fault");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old_leader = etcd.leader().unwrap();
    etcd.kill(old_leader).unwrap();
    let new_leader = etcd.leader().unwrap();
    assert_ne!(new_leader, old_leader);

    for worker in workers {
        tokio::time::timeout(Duration::from_secs(90), worker)
            .await
            .expect("progress stopped after the fault")
            .unwrap();
    }
    // Bring the member back (it rejoins and catches up), then check.
    etcd.restart(old_leader).unwrap();
    let mut c = client(&etcd).await;
    let counter = c.get("faults-counter", None).await.unwrap();
    assert_eq!(
        counter.kvs()[0].value_str().unwrap(),
        (CLIENTS * STEPS).to_string(),
        "lost or doubled updates"
    );
    let markers = c
        .get(
            "faults-markers/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(markers.count() as usize, CLIENTS * STEPS);
    let mut calls = history.0.lock().unwrap().clone();
    assert!(calls.len() >= 2 * CLIENTS * STEPS);
    // A holder whose call was cut short (an error, a timeout) stopped
    // holding at some unknown moment after its grant.
    testkit::history::close_open_holds(&mut calls);
    if let Err(anomaly) = testkit::history::check(&FencedLock, &calls) {
        panic!("{anomaly}");
    }
}

/// The `etcd-semaphore` example as a holder process with one permit taken.
fn semaphore_holder(etcd: &EtcdCluster, name: &str) -> Proc {
    let permits = ["--permits", "1"];
    holder_process(
        etcd,
        "etcd-semaphore",
        name,
        &permits,
        "acquire",
        "acquired",
    )
}

/// A semaphore holder process killed (no release) or frozen past its lease:
/// its permit comes back when the lease ends, and only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_or_paused_semaphore_holder_gives_its_permit_back_with_its_lease() {
    use concurrency_patterns::distributed::etcd::Semaphore;
    let etcd = EtcdCluster::start(3).unwrap();
    for (name, signal) in [
        ("faults-sem-killed", libc::SIGKILL),
        ("faults-sem-paused", libc::SIGSTOP),
    ] {
        let holder = semaphore_holder(&etcd, name);
        let ours = session(&etcd, 10).await;
        let semaphore = Semaphore::new(&ours, name, 1).unwrap();
        assert!(
            semaphore.try_acquire().await.unwrap().is_none(),
            "{name}: a second permit while the holder lives"
        );
        let stopped_at = Instant::now();
        holder.signal(signal);
        let permit = tokio::time::timeout(
            Duration::from_secs(HOLDER_TTL + 5),
            semaphore.acquire(),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: the permit never came back"))
        .unwrap();
        let waited = stopped_at.elapsed();
        assert!(
            waited <= Duration::from_secs(HOLDER_TTL + 3),
            "{name}: took {waited:?} for a {HOLDER_TTL} s TTL"
        );
        permit.release().await.unwrap();
        holder.signal(libc::SIGKILL);
    }
}
