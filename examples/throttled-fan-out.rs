//! Throttled fan-out: 5 workers square 100 numbers, never more than 5 at once.
//!
//! The same job three ways: a thread pool, a tokio `Semaphore`, and
//! `buffer_unordered`. Each run counts the jobs in flight and prints the most
//! it saw, which never exceeds 5.
//!
//!     cargo run --example throttled-fan-out
//!
//! Needs no server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use concurrency_patterns::patterns::pool::{WorkerPool, tasks};
use futures::StreamExt;

const K: usize = 5;

/// Counts jobs in flight and remembers the most seen at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl InFlight {
    fn enter(&self) {
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(now, SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, SeqCst);
    }
}

fn main() -> anyhow::Result<()> {
    let expected: u64 = (1..=100u64).map(|n| n * n).sum();

    // ANCHOR: pool
    let pool = WorkerPool::new(K)?;
    let in_flight = Arc::new(InFlight::default());
    let sum: u64 = std::thread::scope(|s| {
        s.spawn(|| {
            for n in 1..=100u64 {
                let in_flight = Arc::clone(&in_flight);
                // Blocks while K jobs wait in the queue: the producer is throttled too.
                let submitted = pool.submit(move || {
                    in_flight.enter();
                    std::thread::sleep(Duration::from_millis(1));
                    in_flight.leave();
                    n * n
                });
                if submitted.is_err() {
                    return;
                }
            }
        });
        pool.results().take(100).sum()
    });
    // ANCHOR_END: pool
    report("thread pool", sum, expected, &in_flight)?;

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // ANCHOR: semaphore
        let in_flight = Arc::new(InFlight::default());
        let job = {
            let in_flight = Arc::clone(&in_flight);
            move |n: u64| slow_square(Arc::clone(&in_flight), n)
        };
        let mut results = tasks::map_with_semaphore(1..=100u64, K, job);
        let mut sum = 0;
        while let Some(square) = results.recv().await {
            sum += square;
        }
        // ANCHOR_END: semaphore
        report("tokio Semaphore", sum, expected, &in_flight)?;

        // ANCHOR: buffer_unordered
        let in_flight_buffered = Arc::new(InFlight::default());
        let job = |n: u64| slow_square(Arc::clone(&in_flight_buffered), n);
        let sum: u64 = tasks::map_buffer_unordered(1..=100u64, K, job)
            .fold(0, |a, b| async move { a + b })
            .await;
        // ANCHOR_END: buffer_unordered
        report("buffer_unordered", sum, expected, &in_flight_buffered)
    })
}

/// The job: 1 ms of "work", counted while it is in flight.
async fn slow_square(in_flight: Arc<InFlight>, n: u64) -> u64 {
    in_flight.enter();
    tokio::time::sleep(Duration::from_millis(1)).await;
    in_flight.leave();
    n * n
}

fn report(
    how: &str,
    sum: u64,
    expected: u64,
    in_flight: &InFlight,
) -> anyhow::Result<()> {
    let max = in_flight.max.load(SeqCst);
    println!(
        "{how:>16}: sum of squares {sum}, at most {max} jobs in flight (limit {K})"
    );
    anyhow::ensure!(sum == expected, "{how}: wrong sum {sum}");
    anyhow::ensure!(max <= K, "{how}: {max} jobs in flight, limit {K}");
    Ok(())
}
