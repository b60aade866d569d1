//! The lesson's versions, beside ours: each written here in Rust as the
//! lesson wrote it in Go, with a test that shows what goes wrong. The
//! chapters include them from here, so what the book shows compiles and
//! fails as it says.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cpr_patterns::pool::tasks::map_with_semaphore;
use tokio::sync::Semaphore;

/// Counts tasks alive at once (spawned and not yet finished).
#[derive(Default)]
struct Alive {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Alive {
    fn enter(&self) {
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, SeqCst);
    }
}

/// The lesson's throttle: a task per job, each taking a permit *inside*.
/// At most `k` jobs run at once — but every job's task is spawned at once,
/// and waits with its input and its future in memory.
// ANCHOR: lesson_throttle
async fn lesson_throttle(jobs: usize, k: usize, alive: Arc<Alive>) {
    let permits = Arc::new(Semaphore::new(k));
    let mut tasks = Vec::new();
    for _ in 0..jobs {
        let (permits, alive) = (permits.clone(), alive.clone());
        tasks.push(tokio::spawn(async move {
            alive.enter();
            let _permit = permits.acquire().await; // the wait is inside the task
            tokio::time::sleep(Duration::from_millis(1)).await; // the job
            alive.leave();
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}
// ANCHOR_END: lesson_throttle

/// 2,000 jobs, 4 at a time: the lesson has (nearly) all 2,000 tasks alive
/// at once; `map_with_semaphore` takes the permit before it spawns, so at
/// most 4 tasks exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lessons_throttle_spawns_every_job_at_once() {
    const JOBS: usize = 2_000;
    const K: usize = 4;
    let lesson = Arc::new(Alive::default());
    lesson_throttle(JOBS, K, lesson.clone()).await;
    // Nearly all of them (the first ones may finish while the last are
    // spawned): far more than K.
    assert!(
        lesson.most.load(SeqCst) >= JOBS / 2,
        "only {} of the lesson's tasks alive at once",
        lesson.most.load(SeqCst)
    );

    let ours = Arc::new(Alive::default());
    let counted = ours.clone();
    let mut results = map_with_semaphore(0..JOBS, K, move |_| {
        let alive = counted.clone();
        async move {
            alive.enter();
            tokio::time::sleep(Duration::from_millis(1)).await;
            alive.leave();
        }
    });
    let mut done = 0;
    while results.recv().await.is_some() {
        done += 1;
    }
    assert_eq!(done, JOBS);
    assert!(
        ours.most.load(SeqCst) <= K,
        "{} alive",
        ours.most.load(SeqCst)
    );
}
