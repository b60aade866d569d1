//! K worker threads, a bounded job queue, and a results channel.

use std::thread::JoinHandle;

use crossbeam::channel::{Receiver, Sender, bounded};

type Job<T> = Box<dyn FnOnce() -> T + Send>;

/// A pool of `workers` threads: at most that many jobs run at once, and
/// results come out, as each job finishes, from [`results`](Self::results).
///
/// The job queue holds `workers` jobs; [`submit`](Self::submit) blocks while
/// it is full, so a fast producer is throttled to the pool's pace.
///
/// ```
/// use cpr_patterns::pool::WorkerPool;
///
/// let pool = WorkerPool::new(5)?;
/// let sum: u64 = std::thread::scope(|s| {
///     // The producer submits while this thread reads results.
///     s.spawn(|| (1..=100u64).try_for_each(|n| pool.submit(move || n * n)));
///     pool.results().take(100).sum()
/// });
/// assert_eq!(sum, (1..=100u64).map(|n| n * n).sum());
/// # Ok::<(), cpr_patterns::pool::PoolError>(())
/// ```
pub struct WorkerPool<T> {
    jobs: Option<Sender<Job<T>>>,
    results: Receiver<T>,
    workers: Vec<JoinHandle<()>>,
}

/// Errors from [`WorkerPool`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// A pool needs at least one worker.
    #[error("a worker pool needs at least one worker")]
    NoWorkers,
    /// The pool was shut down; the job was not run.
    #[error("the pool is shut down; the job was not run")]
    ShutDown,
}

impl<T: Send + 'static> WorkerPool<T> {
    /// Starts `workers` threads.
    pub fn new(workers: usize) -> Result<Self, PoolError> {
        if workers == 0 {
            return Err(PoolError::NoWorkers);
        }
        let (jobs_tx, jobs_rx) = bounded::<Job<T>>(workers);
        // Results are bounded too: if nobody reads them, the workers stop
        // after `workers` more, instead of filling memory.
        let (results_tx, results_rx) = bounded::<T>(workers);
        let workers = (0..workers)
            .map(|_| {
                let (jobs, results) = (jobs_rx.clone(), results_tx.clone());
                std::thread::spawn(move || {
                    for job in jobs {
                        if results.send(job()).is_err() {
                            return; // the pool was dropped
                        }
                    }
                })
            })
            .collect();
        Ok(WorkerPool {
            jobs: Some(jobs_tx),
            results: results_rx,
            workers,
        })
    }

    /// Queues `job`, blocking while the queue is full.
    ///
    /// Results must be read concurrently (another thread, or interleaved):
    /// with nobody reading, the workers block on the bounded results channel
    /// and so does `submit`.
    pub fn submit(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<(), PoolError> {
        let jobs = self.jobs.as_ref().ok_or(PoolError::ShutDown)?;
        jobs.send(Box::new(job)).map_err(|_| PoolError::ShutDown)
    }

    /// Results in completion order. Blocks while jobs are running; ends after
    /// [`finish`](Self::finish) once every job's result was read.
    pub fn results(&self) -> crossbeam::channel::Iter<'_, T> {
        self.results.iter()
    }

    /// Stops accepting jobs, lets queued and running jobs finish, and
    /// returns the results nobody has read yet.
    pub fn finish(mut self) -> Vec<T> {
        self.jobs.take();
        let results: Vec<T> = self.results.iter().collect();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        results
    }
}

impl<T> Drop for WorkerPool<T> {
    fn drop(&mut self) {
        // Closing the queue ends the workers after their current job; results
        // not read are dropped with the channel.
        self.jobs.take();
        let results = std::mem::replace(&mut self.results, bounded(0).1);
        drop(results);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    /// Tracks how many jobs run at once, and the most ever seen.
    #[derive(Default)]
    struct InFlight {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    impl InFlight {
        fn run<T>(&self, job: impl FnOnce() -> T) -> T {
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.max.fetch_max(now, SeqCst);
            let out = job();
            self.now.fetch_sub(1, SeqCst);
            out
        }
    }

    #[test]
    fn never_more_than_k_jobs_in_flight_and_every_result_arrives() {
        let k = 5;
        let pool = WorkerPool::new(k).unwrap();
        let in_flight = Arc::new(InFlight::default());
        let mut squares: Vec<u64> = std::thread::scope(|s| {
            s.spawn(|| {
                for n in 1..=100u64 {
                    let in_flight = Arc::clone(&in_flight);
                    let job = move || {
                        in_flight.run(|| {
                            std::thread::sleep(Duration::from_micros(300));
                            n * n
                        })
                    };
                    pool.submit(job).unwrap();
                }
            });
            pool.results().take(100).collect()
        });
        squares.sort_unstable();
        assert_eq!(squares, (1..=100u64).map(|n| n * n).collect::<Vec<_>>());
        let max = in_flight.max.load(SeqCst);
        assert!(max <= k, "{max} jobs ran at once, limit {k}");
        assert!(max > 1, "the pool never ran jobs in parallel");
    }

    #[test]
    fn finish_returns_what_is_left_and_joins() {
        let pool = WorkerPool::new(2).unwrap();
        pool.submit(|| 1).unwrap();
        pool.submit(|| 2).unwrap();
        let mut rest = pool.finish();
        rest.sort_unstable();
        assert_eq!(rest, vec![1, 2]);
    }

    #[test]
    fn zero_workers_is_an_error() {
        assert!(matches!(
            WorkerPool::<()>::new(0),
            Err(PoolError::NoWorkers)
        ));
    }
}
