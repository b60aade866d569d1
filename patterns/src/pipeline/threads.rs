//! The pipeline on OS threads and bounded crossbeam channels.
//!
//! ```
//! use cpr_patterns::pipeline::{Options, Order, threads};
//!
//! // Go's example: emit 1..=10, square in three workers, merge.
//! let squares = threads::run(
//!     Options::default().workers(3).order(Order::Preserved),
//!     1..=10u64,
//!     |n| Ok::<_, std::convert::Infallible>(n * n),
//! )?;
//! let squares: Vec<u64> = squares.map(Result::unwrap).collect();
//! assert_eq!(squares, [1, 4, 9, 16, 25, 36, 49, 64, 81, 100]);
//! # Ok::<(), cpr_patterns::pipeline::ConfigError>(())
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;

use crossbeam::channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::reorder::Reorder;
use super::{ConfigError, Options, Order, PipelineError};

type Tagged<T> = (u64, T);

/// Starts a pipeline: `options.workers` threads take items from `source` and
/// run `stage` on them, and the returned [`Output`] merges the results.
///
/// The fan-out needs no channel of its own: the workers take turns pulling
/// from the source, one item at a time, under a lock. That saves a thread
/// and a channel hop per item (Go's version sends every item through a
/// channel first). Items are only pulled when a worker is free, so an endless
/// source is fine; a source that blocks holds up one worker, and
/// cancellation waits for it to return an item.
pub fn run<In, Out, E, Source, Stage>(
    options: Options,
    source: Source,
    stage: Stage,
) -> Result<Output<Out, E>, ConfigError>
where
    Source: IntoIterator<Item = In>,
    Source::IntoIter: Send + 'static,
    In: Send + 'static,
    Out: Send + 'static,
    E: Send + 'static,
    Stage: Fn(In) -> Result<Out, E> + Send + Sync + 'static,
{
    options.validate()?;
    let stop = Arc::new(Stop::new(options.cancel.child_token()));
    let (results_tx, results_rx) = bounded::<Tagged<Result<Out, E>>>(options.capacity);

    // Ordered mode: a worker needs a credit for each item it pulls, and the
    // merge returns one as each result leaves in order. `capacity` credits
    // in all bound how far ahead of the oldest unfinished item the workers
    // may run, and so the reorder buffer.
    let credits = match options.order {
        Order::Preserved => {
            let (give, take) = bounded::<()>(options.capacity);
            for _ in 0..options.capacity {
                let _ = give.send(());
            }
            Some((give, take))
        }
        Order::Unordered => None,
    };

    let source = Arc::new(Mutex::new((0u64..).zip(source)));
    let stage = Arc::new(stage);
    let mut threads: Vec<JoinHandle<()>> = (0..options.workers)
        .map(|_| {
            let worker = Worker {
                source: Arc::clone(&source),
                credits: credits.as_ref().map(|(_, take)| take.clone()),
                results: results_tx.clone(),
                stage: Arc::clone(&stage),
                stop: Arc::clone(&stop),
            };
            std::thread::spawn(move || worker.run())
        })
        .collect();
    threads.push(stop.watch_caller());
    // Only the workers hold senders now: the results channel closes exactly
    // when the last worker is done (the fan-in).
    drop(results_tx);

    Ok(Output {
        results: Some(results_rx),
        credits: credits.map(|(give, _)| give),
        reorder: (options.order == Order::Preserved).then(Reorder::new),
        threads,
        stop,
        done: false,
    })
}

/// The pipeline's stop flag.
///
/// Checked once per item by every worker, so it must be cheap: a
/// `CancellationToken` check takes a mutex, an atomic load does not. One
/// parked thread turns the caller's token into the flag.
struct Stop {
    flag: AtomicBool,
    /// A child of the caller's token: cancelled by the caller, or by us.
    token: CancellationToken,
}

impl Stop {
    fn new(token: CancellationToken) -> Self {
        Stop {
            flag: AtomicBool::new(false),
            token,
        }
    }

    fn is_stopped(&self) -> bool {
        // Relaxed: the flag carries no data, only "stop at the next item".
        self.flag.load(Relaxed)
    }

    fn stop(&self) {
        self.flag.store(true, Relaxed);
        self.token.cancel(); // also ends the watcher
    }

    /// A thread that sets the flag when the token is cancelled, by the
    /// caller or by [`stop`](Self::stop).
    fn watch_caller(self: &Arc<Self>) -> JoinHandle<()> {
        let stop = Arc::clone(self);
        std::thread::spawn(move || {
            futures::executor::block_on(stop.token.cancelled());
            stop.flag.store(true, Relaxed);
        })
    }
}

/// Stops the pipeline if the worker holding it unwinds from a panic, so one
/// panicking stage stops the others instead of letting them run on.
struct StopOnPanic<'a>(&'a Stop);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

/// What one worker thread owns.
struct Worker<Items, Out, E, Stage> {
    source: Arc<Mutex<Items>>,
    credits: Option<Receiver<()>>,
    results: Sender<Tagged<Result<Out, E>>>,
    stage: Arc<Stage>,
    stop: Arc<Stop>,
}

impl<In, Out, E, Items, Stage> Worker<Items, Out, E, Stage>
where
    Items: Iterator<Item = Tagged<In>>,
    Stage: Fn(In) -> Result<Out, E>,
{
    // ANCHOR: worker
    fn run(self) {
        // A panicking stage unwinds through this guard, which stops the others.
        let _stop_all_on_panic = StopOnPanic(&self.stop);
        loop {
            if self.stop.is_stopped() {
                return;
            }
            // Ordered mode: wait until the merge has released an earlier result.
            if let Some(credits) = &self.credits
                && credits.recv().is_err()
            {
                return; // the output was dropped
            }
            // The lock is held only to pull one item, never during the stage.
            let next = self.source.lock().next();
            let Some((seq, item)) = next else {
                return; // the source is exhausted
            };
            let result = (self.stage)(item);
            let failed = result.is_err();
            if self.results.send((seq, result)).is_err() {
                return; // the output was dropped
            }
            if failed {
                self.stop.stop(); // the first error stops everyone
                return;
            }
        }
    }
    // ANCHOR_END: worker
}

/// The merged results: an iterator of `Ok(result)`, ending either normally
/// or after one `Err` that says why the pipeline stopped early.
///
/// Dropping it cancels the pipeline and joins every thread.
pub struct Output<Out, E> {
    results: Option<Receiver<Tagged<Result<Out, E>>>>,
    credits: Option<Sender<()>>,
    reorder: Option<Reorder<Result<Out, E>>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<Stop>,
    done: bool,
}

impl<Out, E> Output<Out, E> {
    /// Cancels the pipeline: the source and workers stop at their next item.
    /// The iterator then ends with [`PipelineError::Cancelled`].
    pub fn cancel(&self) {
        self.stop.stop();
    }

    /// True once the workers have been told to stop. A cancelled token
    /// reaches them through a watcher thread, so there can be a short delay
    /// between `token.cancel()` and this turning true; after it, at most the
    /// results already in flight (channel capacity plus one per worker) are
    /// still delivered.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    /// Hands one result to the caller: returns a credit to the source in
    /// ordered mode, and stops everything if the result is an error.
    fn deliver(
        &mut self,
        result: Result<Out, E>,
    ) -> Option<Result<Out, PipelineError<E>>> {
        if let Some(credits) = &self.credits {
            let _ = credits.send(());
        }
        match result {
            Ok(out) => Some(Ok(out)),
            Err(error) => {
                self.finish();
                Some(Err(PipelineError::Stage(error)))
            }
        }
    }

    /// Stops and joins everything; true if some thread panicked.
    fn finish(&mut self) -> bool {
        self.done = true;
        self.stop.stop();
        // Dropping our ends unblocks a source waiting for a credit and
        // workers waiting to send.
        self.results.take();
        self.credits.take();
        let mut panicked = false;
        for thread in self.threads.drain(..) {
            panicked |= thread.join().is_err();
        }
        panicked
    }
}

impl<Out, E> Iterator for Output<Out, E> {
    type Item = Result<Out, PipelineError<E>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // ANCHOR: merge
        loop {
            if let Some(result) = self.reorder.as_mut().and_then(Reorder::pop) {
                return self.deliver(result);
            }
            let received = match &self.results {
                Some(results) if !self.stop.is_stopped() || !results.is_empty() => {
                    results.recv().ok()
                }
                _ => None,
            };
            match received {
                Some((seq, result)) => match &mut self.reorder {
                    // An error is delivered at once, not in its turn.
                    Some(reorder) if result.is_ok() => reorder.push(seq, result),
                    _ => return self.deliver(result),
                },
                None => {
                    // Every worker is done, or we were stopped. Read the
                    // flag before `finish`, which sets it on every path.
                    let cancelled = self.stop.is_stopped();
                    let panicked = self.finish();
                    return if panicked {
                        Some(Err(PipelineError::Panicked))
                    } else if cancelled {
                        Some(Err(PipelineError::Cancelled))
                    } else {
                        None
                    };
                }
            }
        }
        // ANCHOR_END: merge
    }
}

impl<Out, E> Drop for Output<Out, E> {
    fn drop(&mut self) {
        if !self.done {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    fn ok(n: u64) -> Result<u64, String> {
        Ok(n * n)
    }

    #[test]
    fn unordered_delivers_every_result_exactly_once() {
        let out =
            run(Options::default().workers(4).capacity(8), 0..1_000u64, ok).unwrap();
        let mut got: Vec<u64> = out.map(Result::unwrap).collect();
        got.sort_unstable();
        assert_eq!(got, (0..1_000u64).map(|n| n * n).collect::<Vec<_>>());
    }

    #[test]
    fn preserved_order_holds_even_when_early_items_are_slow() {
        let stage = |n: u64| {
            // Early items are the slowest, so later ones finish first.
            if n.is_multiple_of(10) {
                std::thread::sleep(Duration::from_millis(2));
            }
            ok(n)
        };
        let options = Options::default()
            .workers(4)
            .capacity(4)
            .order(Order::Preserved);
        let got: Vec<u64> = run(options, 0..200u64, stage)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, (0..200u64).map(|n| n * n).collect::<Vec<_>>());
    }

    #[test]
    fn the_source_never_runs_more_than_capacity_ahead_in_ordered_mode() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let source = {
            let pulled = Arc::clone(&pulled);
            (0..100u64).inspect(move |_| {
                pulled.fetch_add(1, SeqCst);
            })
        };
        let capacity = 5;
        let options = Options::default()
            .workers(2)
            .capacity(capacity)
            .order(Order::Preserved);
        let mut out = run(options, source, ok).unwrap();
        for delivered in 1..=100usize {
            assert!(out.next().unwrap().is_ok());
            std::thread::sleep(Duration::from_micros(200));
            // Every item pulled took a credit: the first `capacity`, plus one
            // returned per result delivered.
            assert!(
                pulled.load(SeqCst) <= delivered + capacity,
                "source ran ahead: pulled {} after {delivered} delivered",
                pulled.load(SeqCst)
            );
        }
        assert!(out.next().is_none());
    }

    #[test]
    fn backpressure_a_slow_consumer_slows_the_source() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let source = {
            let pulled = Arc::clone(&pulled);
            (0..u64::MAX).inspect(move |_| {
                pulled.fetch_add(1, SeqCst);
            })
        };
        let mut out =
            run(Options::default().workers(2).capacity(4), source, ok).unwrap();
        out.next();
        std::thread::sleep(Duration::from_millis(50));
        // A results channel of 4, two workers each holding one, and the one
        // delivered: an endless source stopped early.
        assert!(
            pulled.load(SeqCst) <= 4 + 2 + 1,
            "pulled {}",
            pulled.load(SeqCst)
        );
        drop(out); // and dropping the output stops an endless pipeline
    }

    #[test]
    fn the_first_error_is_the_last_item_and_stops_the_source() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let source = {
            let pulled = Arc::clone(&pulled);
            (0..u64::MAX).inspect(move |_| {
                pulled.fetch_add(1, SeqCst);
            })
        };
        let stage = |n: u64| {
            if n == 50 {
                Err(format!("bad item {n}"))
            } else {
                ok(n)
            }
        };
        for order in [Order::Unordered, Order::Preserved] {
            let out = run(
                Options::default().workers(3).capacity(4).order(order),
                source.clone(),
                stage,
            )
            .unwrap();
            let items: Vec<_> = out.collect();
            assert_eq!(
                items.last(),
                Some(&Err(PipelineError::Stage("bad item 50".into())))
            );
            assert_eq!(items.iter().filter(|r| r.is_err()).count(), 1);
        }
        assert!(
            pulled.load(SeqCst) < 1_000,
            "the source kept going: {}",
            pulled.load(SeqCst)
        );
    }

    #[test]
    fn a_panicking_stage_is_reported_and_stops_the_rest() {
        let stage = |n: u64| -> Result<u64, String> {
            assert!(n != 10, "boom");
            ok(n)
        };
        let items: Vec<_> = run(
            Options::default().workers(2).capacity(2),
            0..u64::MAX,
            stage,
        )
        .unwrap()
        .collect();
        assert_eq!(items.last(), Some(&Err(PipelineError::Panicked)));
    }

    #[test]
    fn cancelling_the_token_under_load_stops_promptly_and_joins_everything() {
        let token = CancellationToken::new();
        let alive = Arc::new(AtomicUsize::new(0));
        let stage = {
            let alive = Arc::clone(&alive);
            move |n: u64| {
                alive.fetch_add(1, SeqCst);
                std::thread::sleep(Duration::from_micros(100));
                alive.fetch_sub(1, SeqCst);
                ok(n)
            }
        };
        let options = Options::default()
            .workers(4)
            .capacity(16)
            .cancel_token(token.clone());
        let mut out = run(options, 0..u64::MAX, stage).unwrap();
        for _ in 0..100 {
            assert!(out.next().unwrap().is_ok());
        }
        token.cancel();
        // The token reaches the workers through the watcher thread.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !out.is_stopped() {
            assert!(
                std::time::Instant::now() < deadline,
                "the cancellation never reached the pipeline"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let rest: Vec<_> = out.by_ref().collect();
        assert_eq!(rest.last(), Some(&Err(PipelineError::Cancelled)));
        // At most what was in flight (two channels of 16, four workers)
        // drains after the cancel.
        assert!(
            rest.len() <= 16 + 16 + 4 + 1,
            "{} results after cancel",
            rest.len()
        );
        assert_eq!(
            alive.load(SeqCst),
            0,
            "a stage was still running after the output ended"
        );
    }

    #[test]
    fn a_stage_error_does_not_cancel_the_callers_token() {
        let token = CancellationToken::new();
        let stage = |_: u64| Err::<u64, _>("no");
        let items: Vec<_> = run(
            Options::default().cancel_token(token.clone()),
            0..10u64,
            stage,
        )
        .unwrap()
        .collect();
        assert_eq!(items, vec![Err(PipelineError::Stage("no"))]);
        assert!(!token.is_cancelled());
    }

    #[test]
    fn bad_options_are_errors() {
        assert_eq!(
            run(Options::default().workers(0), 0..1u64, ok).err(),
            Some(ConfigError::NoWorkers)
        );
        assert_eq!(
            run(Options::default().capacity(0), 0..1u64, ok).err(),
            Some(ConfigError::ZeroCapacity)
        );
    }
}
