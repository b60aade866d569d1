//! The tokio idioms for "at most K at once", side by side.
//!
//! Both stream results as they finish and never have more than `k` jobs in
//! flight. Which to use:
//! - [`map_with_semaphore`] spawns a task per job, so jobs run in parallel on
//!   a multi-threaded runtime; the permit is taken before the spawn, so there
//!   are never more than `k` tasks (a permit taken inside the task would
//!   still let a million tasks pile up, waiting).
//! - [`map_buffer_unordered`] spawns nothing: one task polls up to `k`
//!   futures. Cheaper, and enough when the jobs are I/O-bound.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc};

/// Runs `job` on every input in its own task, at most `k` tasks at a time;
/// results arrive on the returned channel as they finish. `k` of 0 is
/// treated as 1.
///
/// Must be called inside a tokio runtime. Dropping the receiver stops the
/// spawning of new jobs; jobs already running finish on their own.
pub fn map_with_semaphore<In, Out, Job, Fut>(
    inputs: impl IntoIterator<Item = In, IntoIter: Send + 'static>,
    k: usize,
    job: Job,
) -> mpsc::Receiver<Out>
where
    In: Send + 'static,
    Out: Send + 'static,
    Job: Fn(In) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Out> + Send + 'static,
{
    let k = k.max(1);
    let (results_tx, results_rx) = mpsc::channel(k);
    let permits = Arc::new(Semaphore::new(k));
    let job = Arc::new(job);
    let inputs = inputs.into_iter();
    // ANCHOR: semaphore_spawn
    tokio::spawn(async move {
        for input in inputs {
            // Taken here, before spawning: this loop waits while k jobs run.
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            if results_tx.is_closed() {
                return;
            }
            let (job, results) = (Arc::clone(&job), results_tx.clone());
            tokio::spawn(async move {
                let out = job(input).await;
                drop(permit); // the next job may start
                let _ = results.send(out).await;
            });
        }
    });
    results_rx
    // ANCHOR_END: semaphore_spawn
}

/// Runs `job` on every input with at most `k` futures in flight, polled by
/// the caller's task; results stream out as they finish. `k` of 0 is treated
/// as 1.
pub fn map_buffer_unordered<In, Out, Job, Fut>(
    inputs: impl IntoIterator<Item = In>,
    k: usize,
    job: Job,
) -> impl Stream<Item = Out>
where
    Job: FnMut(In) -> Fut,
    Fut: Future<Output = Out>,
{
    futures::stream::iter(inputs)
        .map(job)
        .buffer_unordered(k.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    #[derive(Default)]
    struct InFlight {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    async fn square(in_flight: Arc<InFlight>, n: u64) -> u64 {
        let now = in_flight.now.fetch_add(1, SeqCst) + 1;
        in_flight.max.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(1)).await;
        in_flight.now.fetch_sub(1, SeqCst);
        n * n
    }

    fn expected() -> Vec<u64> {
        (1..=100u64).map(|n| n * n).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn semaphore_keeps_at_most_k_in_flight() {
        let in_flight = Arc::new(InFlight::default());
        let job = {
            let in_flight = Arc::clone(&in_flight);
            move |n| square(Arc::clone(&in_flight), n)
        };
        let mut results = map_with_semaphore(1..=100u64, 5, job);
        let mut got = Vec::new();
        while let Some(square) = results.recv().await {
            got.push(square);
        }
        got.sort_unstable();
        assert_eq!(got, expected());
        let max = in_flight.max.load(SeqCst);
        assert!((2..=5).contains(&max), "{max} in flight, limit 5");
    }

    #[tokio::test]
    async fn buffer_unordered_keeps_at_most_k_in_flight() {
        let in_flight = Arc::new(InFlight::default());
        let mut got: Vec<u64> =
            map_buffer_unordered(1..=100u64, 5, |n| square(Arc::clone(&in_flight), n))
                .collect()
                .await;
        got.sort_unstable();
        assert_eq!(got, expected());
        let max = in_flight.max.load(SeqCst);
        assert!((2..=5).contains(&max), "{max} in flight, limit 5");
    }
}
