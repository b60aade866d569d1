//! The lesson's versions, beside ours: each written here in Rust as the
//! lesson wrote it in Go, with a test that shows what goes wrong. The
//! chapters include them from here, so what the book shows compiles and
//! fails as it says.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use cpr_patterns::map::ConcurrentMap;
use cpr_patterns::pipeline::{Options, PipelineError, threads};
use cpr_patterns::pool::tasks::map_with_semaphore;
use crossbeam::channel::{Receiver, unbounded};
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

/// The lesson's pipeline: `gen` sends the numbers on a channel, three
/// `square` stages read that one channel, and `merge` copies their outputs
/// into one channel, which closes when every copier is done (Go's
/// `WaitGroup`; here, the last sender dropped).
// ANCHOR: lesson_pipeline
fn lesson_gen(numbers: Vec<u64>) -> Receiver<u64> {
    let (out, rx) = unbounded();
    std::thread::spawn(move || {
        for n in numbers {
            let _ = out.send(n);
        }
    });
    rx
}

fn lesson_square(numbers: Receiver<u64>, square: fn(u64) -> u64) -> Receiver<u64> {
    let (out, rx) = unbounded();
    std::thread::spawn(move || {
        for n in numbers {
            let _ = out.send(square(n));
        }
    });
    rx
}

fn lesson_merge(stages: Vec<Receiver<u64>>) -> Receiver<u64> {
    let (out, rx) = unbounded();
    for stage in stages {
        let out = out.clone();
        std::thread::spawn(move || {
            for n in stage {
                let _ = out.send(n);
            }
        });
    }
    rx
}
// ANCHOR_END: lesson_pipeline

/// Squares, but panics on 7 (a bug in the stage).
fn square_but_not_seven(n: u64) -> u64 {
    assert_ne!(n, 7, "the stage has a bug");
    n * n
}

/// A stage panics on one item. In Go the panic ends the whole program;
/// in the lesson's shape in Rust, the stage's thread dies, the merge ends
/// as if all were well, and a result is missing without a word. Ours ends
/// the output with `Err(Panicked)`.
#[test]
fn the_lessons_pipeline_drops_a_result_silently_when_a_stage_panics() {
    let numbers = lesson_gen((1..=10).collect());
    let stages = (0..3)
        .map(|_| lesson_square(numbers.clone(), square_but_not_seven))
        .collect();
    let lesson: Vec<u64> = lesson_merge(stages).iter().collect();
    assert!(
        lesson.len() < 10 && !lesson.contains(&49),
        "the lesson's pipeline: {lesson:?}"
    );

    let ours: Vec<Result<u64, PipelineError<()>>> =
        threads::run(Options::default().workers(3), 1..=10u64, |n| {
            Ok(square_but_not_seven(n))
        })
        .unwrap()
        .collect();
    assert_eq!(ours.last(), Some(&Err(PipelineError::Panicked)), "{ours:?}");
}

/// Two threads count one visit each. Each operation of the lesson's
/// counter is atomic, but the pair is not: when both load before either
/// stores (the barrier makes sure they do), one visit is lost. `update`
/// does the load and the store under the key's lock.
#[test]
fn the_lessons_counter_loses_a_count_when_two_threads_race() {
    let lesson = ConcurrentMap::new();
    lesson.store("visits", 0);
    let both_loaded = Barrier::new(2);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                // ANCHOR: lesson_counter
                let seen = lesson.load("visits").unwrap_or(0);
                both_loaded.wait(); // the unlucky timing, made certain
                lesson.store("visits", seen + 1);
                // ANCHOR_END: lesson_counter
            });
        }
    });
    assert_eq!(lesson.load("visits"), Some(1), "one of two visits lost");

    let ours = ConcurrentMap::new();
    ours.store("visits", 0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    ours.update("visits", |n| *n += 1);
                }
            });
        }
    });
    assert_eq!(ours.load("visits"), Some(20_000));
}
