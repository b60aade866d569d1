//! The live view (`examples/watch`): its model, built from what the recipes
//! really wrote in a real etcd, its drawing in ratatui's test backend, and
//! a lease's end shown within a second.

#[path = "../examples/watch/model.rs"]
mod model;
#[path = "../examples/watch/redis_model.rs"]
mod redis_model;
#[path = "../examples/watch/ui.rs"]
mod ui;

use std::time::{Duration, Instant};

use concurrency_patterns::distributed::etcd::etcd_client::{GetOptions, PutOptions};
use concurrency_patterns::distributed::etcd::{
    Client, Election, EtcdConfig, Mutex, Session, WorkQueue,
};
use model::{Live, Recipe, Role, snapshot};

async fn client() -> Client {
    let etcd = testkit::shared_etcd().unwrap();
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

async fn session() -> Session {
    Session::new(client().await, Duration::from_secs(10))
        .await
        .unwrap()
}

/// Waits until `name` holds `count` keys (besides fences).
/// The values of a snapshot's queue items, in the order they will be taken.
fn item_values(seen: &model::Snapshot) -> Vec<&str> {
    seen.keys
        .iter()
        .filter(|k| k.role == Role::Item)
        .map(|k| k.value.as_str())
        .collect()
}

async fn until_keys(client: &Client, name: &str, count: usize) -> model::Snapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = snapshot(client, name, None).await.unwrap();
        if seen.keys.iter().filter(|k| k.role != Role::Fence).count() == count {
            return seen;
        }
        assert!(Instant::now() < deadline, "never {count} keys: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A holder and two waiters: the model is the recipe's line, in the order
/// of the keys' create revisions as etcd has them, each waiter pointing at
/// the key just before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutex_shows_its_holder_and_the_line_of_waiters() {
    let name = "watch-mutex";
    let sessions = [session().await, session().await, session().await];
    let held = Mutex::new(&sessions[0], name)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let mut waiting = Vec::new();
    for waiter in &sessions[1..] {
        let mutex = Mutex::new(waiter, name).unwrap();
        waiting.push(tokio::spawn(async move { mutex.lock().await }));
        // One after the other, so the line's order is known.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = client().await;
    let seen = until_keys(&c, name, 3).await;
    assert_eq!(seen.recipe, Recipe::Mutex);

    // What the recipe wrote, read directly.
    let written = c
        .clone()
        .get(
            format!("{name}/"),
            Some(GetOptions::new().with_prefix().with_sort(
                concurrency_patterns::distributed::etcd::etcd_client::SortTarget::Create,
                concurrency_patterns::distributed::etcd::etcd_client::SortOrder::Ascend,
            )),
        )
        .await
        .unwrap();
    let keys: Vec<String> = written
        .kvs()
        .iter()
        .map(|kv| {
            kv.key_str()
                .unwrap()
                .trim_start_matches(&format!("{name}/"))
                .to_string()
        })
        .collect();
    assert_eq!(
        seen.keys.iter().map(|k| k.key.clone()).collect::<Vec<_>>(),
        keys
    );
    assert_eq!(format!("{name}/{}", seen.keys[0].key), held.key());
    let roles: Vec<Role> = seen.keys.iter().map(|k| k.role).collect();
    assert_eq!(roles, [Role::Holder, Role::Waiter, Role::Waiter]);
    assert_eq!(seen.keys[0].watches, None);
    assert_eq!(seen.keys[1].watches.as_deref(), Some(keys[0].as_str()));
    assert_eq!(seen.keys[2].watches.as_deref(), Some(keys[1].as_str()));
    for (key, kv) in seen.keys.iter().zip(written.kvs()) {
        assert_eq!(key.create_revision, kv.create_revision());
        assert_eq!(key.lease, kv.lease());
        assert!(key.ttl.is_some_and(|t| t > 0 && t <= 10), "{key:?}");
    }

    // Drawn: the holder's row first, then each waiter with its arrow.
    let backend = ratatui::backend::TestBackend::new(150, 20);
    let mut terminal = ratatui::Terminal::new(backend).unwrap();
    let live = Live::new(seen.clone());
    terminal
        .draw(|frame| ui::draw(frame, &live, Instant::now()))
        .unwrap();
    let screen: Vec<String> = {
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect()
            })
            .collect()
    };
    let row_of = |start: &str, needle: &str| {
        screen
            .iter()
            .position(|line| line.starts_with(start) && line.contains(needle))
            .unwrap_or_else(|| {
                panic!("{start} {needle:?} not on screen:\n{}", screen.join("\n"))
            })
    };
    assert!(screen[0].contains("Mutex"), "{}", screen[0]);
    let holder = row_of("holder", &keys[0]);
    let first = row_of("waiter", &format!("→ {}", keys[0]));
    let second = row_of("waiter", &format!("→ {}", keys[1]));
    assert!(holder < first && first < second, "{}", screen.join("\n"));

    held.unlock().await.unwrap();
    for waiter in waiting {
        waiter.await.unwrap().unwrap().unlock().await.unwrap();
    }
}

/// Three items, one of them claimed: the items in the order they will be
/// taken, and the claim on the consumer's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_queue_shows_its_items_and_the_claim() {
    let name = "watch-work";
    let producer = session().await;
    let consumer = session().await;
    let queue = WorkQueue::new(&producer, name).unwrap();
    for job in ["one", "two", "three"] {
        queue.enqueue(job).await.unwrap();
    }
    let taken = WorkQueue::new(&consumer, name)
        .unwrap()
        .dequeue()
        .await
        .unwrap();
    let c = client().await;
    let seen = snapshot(&c, name, None).await.unwrap();
    assert_eq!(seen.recipe, Recipe::WorkQueue);
    let items = item_values(&seen);
    assert_eq!(items, ["one", "two", "three"]);
    let claims: Vec<&model::KeyView> =
        seen.keys.iter().filter(|k| k.role == Role::Claim).collect();
    assert_eq!(claims.len(), 1);
    assert!(claims[0].key.ends_with(&taken.id), "{:?}", claims[0]);
    assert_eq!(claims[0].lease, consumer.lease_id());
}

/// A leader (and an observer, which writes nothing): one key, the leader,
/// holding the value it proclaimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_shows_its_leader() {
    let name = "watch-election";
    let leader_session = session().await;
    let observer_session = session().await;
    let leadership = Election::new(&leader_session, name)
        .unwrap()
        .campaign("alice")
        .await
        .unwrap();
    let _observer = Election::new(&observer_session, name).unwrap().observe();
    let c = client().await;
    let seen = snapshot(&c, name, None).await.unwrap();
    assert_eq!(seen.recipe, Recipe::Election);
    assert_eq!(seen.keys.len(), 1);
    assert_eq!(seen.keys[0].role, Role::Leader);
    assert_eq!(seen.keys[0].value, "alice");
    assert_eq!(seen.keys[0].lease, leader_session.lease_id());
    leadership.resign().await.unwrap();
}

/// A key whose lease runs out is shown as gone within a second of etcd
/// deleting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_ends_shows_its_key_gone_within_a_second() {
    let name = "watch-gone";
    let mut c = client().await;
    let lease = c.lease_grant(2, None).await.unwrap().id();
    c.put(
        format!("{name}/{lease:x}"),
        "",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let first = snapshot(&c, name, None).await.unwrap();
    assert_eq!(first.recipe, Recipe::Mutex);
    let (view, mut looking) = tokio::sync::watch::channel(Live::new(first));
    let following =
        tokio::spawn(model::follow(c.clone(), name.to_string(), None, view));

    // When etcd deletes the key, as a client polling it sees.
    let deadline = Instant::now() + Duration::from_secs(10);
    let deleted_at = loop {
        let there = c.get(format!("{name}/{lease:x}"), None).await.unwrap();
        if there.count() == 0 {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "the lease never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let shown_gone = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if looking
                .borrow_and_update()
                .rows()
                .iter()
                .any(|k| k.gone && k.key == format!("{lease:x}"))
            {
                return Instant::now();
            }
            looking.changed().await.unwrap();
        }
    })
    .await
    .expect("the key was never shown gone");
    assert!(
        shown_gone.saturating_duration_since(deleted_at) < Duration::from_secs(1),
        "shown gone {:?} after etcd deleted it",
        shown_gone.saturating_duration_since(deleted_at)
    );
    following.abort();
}

/// A Redis lock: the holder's token, its time left and the fencing
/// counter as the lock wrote them; a release is seen on the channel and
/// the lock shown free within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_lock_shows_its_holder_counter_and_release() {
    use concurrency_patterns::distributed::redis::{RedisConfig, RedisLock};
    let redis = testkit::shared_redis().unwrap();
    let config = RedisConfig::new(redis.url());
    let lock = RedisLock::connect(&config, "watch-redis")
        .await
        .unwrap()
        .ttl(Duration::from_secs(5))
        .unwrap();
    let held = lock.lock().await.unwrap();
    let conn = config.connect().await.unwrap();
    let seen = redis_model::redis_snapshot(&conn, "watch-redis")
        .await
        .unwrap();
    assert_eq!(seen.holder.as_deref(), Some(held.token()));
    assert!(
        seen.left_ms.is_some_and(|left| left > 0 && left <= 5_000),
        "{seen:?}"
    );
    assert_eq!(seen.fencing_counter, Some(held.fencing_token()));

    let (view, mut looking) =
        tokio::sync::watch::channel(redis_model::RedisLive::new(seen));
    let following = tokio::spawn(redis_model::follow_redis(
        conn,
        "watch-redis".to_string(),
        view,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await; // subscribed
    let released_at = Instant::now();
    assert!(held.unlock().await.unwrap());
    tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            {
                let live = looking.borrow_and_update();
                if live.now.holder.is_none()
                    && live.log.iter().any(|l| l.contains("watch-redis:released"))
                {
                    return;
                }
            }
            looking.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("no release shown {:?} after it", released_at.elapsed())
    });
    following.abort();
}

/// Two readers hold an RW lock, a writer waits for the second reader, and a
/// reader that came after the writer waits for the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rw_lock_shows_readers_holding_and_the_writer_waiting() {
    use concurrency_patterns::distributed::etcd::RwMutex;
    let name = "watch-rw";
    let sessions = [
        session().await,
        session().await,
        session().await,
        session().await,
    ];
    let r1 = RwMutex::new(&sessions[0], name)
        .unwrap()
        .read_lock()
        .await
        .unwrap();
    let r2 = RwMutex::new(&sessions[1], name)
        .unwrap()
        .read_lock()
        .await
        .unwrap();
    let writer = RwMutex::new(&sessions[2], name).unwrap();
    let writing = tokio::spawn(async move { writer.write_lock().await });
    let c = client().await;
    until_keys(&c, name, 3).await;
    let late = RwMutex::new(&sessions[3], name).unwrap();
    let late_reading = tokio::spawn(async move { late.read_lock().await });
    let seen = until_keys(&c, name, 4).await;
    assert_eq!(seen.recipe, Recipe::RwMutex);
    let roles: Vec<Role> = seen.keys.iter().map(|k| k.role).collect();
    assert_eq!(
        roles,
        [Role::Holder, Role::Holder, Role::Waiter, Role::Waiter]
    );
    assert!(seen.keys[2].key.starts_with("write/"));
    assert_eq!(
        seen.keys[2].watches.as_deref(),
        Some(seen.keys[1].key.as_str())
    );
    assert_eq!(
        seen.keys[3].watches.as_deref(),
        Some(seen.keys[2].key.as_str())
    );
    r1.unlock().await.unwrap();
    r2.unlock().await.unwrap();
    writing.await.unwrap().unwrap().unlock().await.unwrap();
    late_reading.await.unwrap().unwrap().unlock().await.unwrap();
}

/// A semaphore of two: two permits held, a third in line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_shows_its_permits_and_the_line() {
    use concurrency_patterns::distributed::etcd::Semaphore;
    let name = "watch-sem";
    let sessions = [session().await, session().await, session().await];
    let a = Semaphore::new(&sessions[0], name, 2)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let b = Semaphore::new(&sessions[1], name, 2)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let third = Semaphore::new(&sessions[2], name, 2).unwrap();
    let waiting = tokio::spawn(async move { third.acquire().await });
    let c = client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = snapshot(&c, name, None).await.unwrap();
        if seen.keys.iter().any(|k| k.role == Role::Waiter) {
            break seen;
        }
        assert!(Instant::now() < deadline, "no one in line: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seen.recipe, Recipe::Semaphore);
    let permits = seen.keys.iter().filter(|k| k.role == Role::Permit).count();
    let waiters = seen.keys.iter().filter(|k| k.role == Role::Waiter).count();
    assert_eq!((permits, waiters), (2, 1), "{seen:?}");
    a.release().await.unwrap();
    waiting.await.unwrap().unwrap().release().await.unwrap();
    b.release().await.unwrap();
}

/// A queue after one take: the items left, in the order they will be
/// taken, and the receipt lane the take wrote on its process's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_shows_its_items_in_taking_order_and_the_receipts() {
    use concurrency_patterns::distributed::etcd::Queue;
    let name = "watch-queue";
    let queue = Queue::new(client().await, name).unwrap();
    queue.enqueue_many(["a", "b", "c"]).await.unwrap();
    queue.enqueue("d").await.unwrap();
    assert_eq!(queue.dequeue().await.unwrap(), b"a");
    let seen = snapshot(&client().await, name, None).await.unwrap();
    assert_eq!(seen.recipe, Recipe::Queue);
    let items = item_values(&seen);
    assert_eq!(items, ["b", "c", "d"]);
    assert!(
        seen.keys
            .iter()
            .any(|k| k.role == Role::Receipt && k.lease != 0),
        "{seen:?}"
    );
}
