//! The pipeline on tokio tasks and bounded mpsc channels, with an async stage.
//!
//! ```
//! use cpr_patterns::pipeline::{Options, Order, tasks};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cpr_patterns::pipeline::ConfigError> {
//! let mut squares = tasks::run(
//!     Options::default().workers(3).order(Order::Preserved),
//!     1..=10u64,
//!     |n| async move { Ok::<_, std::convert::Infallible>(n * n) },
//! )?;
//! let mut all = Vec::new();
//! while let Some(square) = squares.next().await {
//!     all.push(square.unwrap());
//! }
//! assert_eq!(all, [1, 4, 9, 16, 25, 36, 49, 64, 81, 100]);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use tokio::sync::mpsc::{Receiver, Sender, channel};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::reorder::Reorder;
use super::{ConfigError, Options, Order, PipelineError};

type Tagged<T> = (u64, T);

/// Starts a pipeline of tokio tasks: one drains `source`, `options.workers`
/// run `stage`, and the returned [`TaskOutput`] merges the results.
///
/// Must be called inside a tokio runtime. Cancellation is prompt: a stage
/// future in progress is dropped at its next `.await`.
pub fn run<In, Out, E, Source, Stage, Fut>(
    options: Options,
    source: Source,
    stage: Stage,
) -> Result<TaskOutput<Out, E>, ConfigError>
where
    Source: IntoIterator<Item = In>,
    Source::IntoIter: Send + 'static,
    In: Send + 'static,
    Out: Send + 'static,
    E: Send + 'static,
    Stage: Fn(In) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, E>> + Send + 'static,
{
    options.validate()?;
    let runtime =
        tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
    let cancel = options.cancel.child_token();
    let (jobs_tx, jobs_rx) = channel::<Tagged<In>>(options.capacity);
    let (results_tx, results_rx) = channel::<Tagged<Result<Out, E>>>(options.capacity);
    // Ordered mode: the semaphore's permits are the credits that bound how
    // far the source may run ahead of the merge.
    let credits = (options.order == Order::Preserved)
        .then(|| Arc::new(Semaphore::new(options.capacity)));

    let mut tasks = JoinSet::new();
    tasks.spawn_on(
        feed(source.into_iter(), jobs_tx, credits.clone(), cancel.clone()),
        &runtime,
    );
    // tokio's mpsc has one receiver; the workers take turns at it.
    let jobs = Arc::new(Mutex::new(jobs_rx));
    let stage = Arc::new(stage);
    for _ in 0..options.workers {
        let work = work(
            Arc::clone(&jobs),
            results_tx.clone(),
            Arc::clone(&stage),
            cancel.clone(),
        );
        tasks.spawn_on(work, &runtime);
    }
    drop(results_tx); // the channel closes when the last worker is done

    Ok(TaskOutput {
        results: results_rx,
        credits,
        reorder: (options.order == Order::Preserved).then(Reorder::new),
        tasks,
        cancel,
        done: false,
    })
}

async fn feed<In>(
    source: impl Iterator<Item = In>,
    jobs: Sender<Tagged<In>>,
    credits: Option<Arc<Semaphore>>,
    cancel: CancellationToken,
) {
    for (seq, item) in (0u64..).zip(source) {
        if let Some(credits) = &credits {
            tokio::select! {
                _ = cancel.cancelled() => return,
                permit = credits.acquire() => match permit {
                    // The merge adds the permit back when this result leaves.
                    Ok(permit) => permit.forget(),
                    Err(_closed) => return,
                },
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            sent = jobs.send((seq, item)) => if sent.is_err() { return },
        }
    }
}

async fn work<In, Out, E, Stage, Fut>(
    jobs: Arc<Mutex<Receiver<Tagged<In>>>>,
    results: Sender<Tagged<Result<Out, E>>>,
    stage: Arc<Stage>,
    cancel: CancellationToken,
) where
    Stage: Fn(In) -> Fut,
    Fut: Future<Output = Result<Out, E>>,
{
    let _stop_all_on_panic = CancelOnPanic(&cancel);
    loop {
        let job = tokio::select! {
            _ = cancel.cancelled() => return,
            job = async { jobs.lock().await.recv().await } => job,
        };
        let Some((seq, item)) = job else { return };
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            result = stage(item) => result,
        };
        let failed = result.is_err();
        tokio::select! {
            _ = cancel.cancelled() => return,
            sent = results.send((seq, result)) => if sent.is_err() { return },
        }
        if failed {
            cancel.cancel();
            return;
        }
    }
}

/// Cancels the pipeline if the task holding it unwinds from a panic, so one
/// panicking stage stops the others instead of letting them run on.
struct CancelOnPanic<'a>(&'a CancellationToken);

impl Drop for CancelOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.cancel();
        }
    }
}

/// The merged results of a task pipeline. [`next`](Self::next) yields
/// `Ok(result)`s, then either `None` or one `Err` saying why it stopped.
///
/// Dropping it cancels the pipeline and aborts its tasks; to wait until
/// every task has finished, call [`shutdown`](Self::shutdown).
pub struct TaskOutput<Out, E> {
    results: Receiver<Tagged<Result<Out, E>>>,
    credits: Option<Arc<Semaphore>>,
    reorder: Option<Reorder<Result<Out, E>>>,
    tasks: JoinSet<()>,
    cancel: CancellationToken,
    done: bool,
}

impl<Out, E> TaskOutput<Out, E> {
    /// The next result.
    ///
    /// Cancel safety: safe. Dropping this future loses no result: one that
    /// arrived is either returned or kept in the reorder buffer.
    pub async fn next(&mut self) -> Option<Result<Out, PipelineError<E>>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(result) = self.reorder.as_mut().and_then(Reorder::pop) {
                return self.deliver(result).await;
            }
            // Cancellation first: once cancelled, results still in the
            // channel are not delivered.
            let received = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => None,
                received = self.results.recv() => received,
            };
            match received {
                Some((seq, result)) => match &mut self.reorder {
                    Some(reorder) if result.is_ok() => reorder.push(seq, result),
                    _ => return self.deliver(result).await,
                },
                None => {
                    let cancelled = self.cancel.is_cancelled();
                    // A failing stage sends its error, then cancels: the
                    // error is in the channel and is what ended the run.
                    if cancelled && let Some(error) = self.buffered_error() {
                        self.finish().await;
                        return Some(Err(PipelineError::Stage(error)));
                    }
                    let panicked = self.finish().await;
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
    }

    /// The first stage error among the results not yet delivered.
    fn buffered_error(&mut self) -> Option<E> {
        while let Ok((_, result)) = self.results.try_recv() {
            if let Err(error) = result {
                return Some(error);
            }
        }
        None
    }

    /// Cancels the pipeline; [`next`](Self::next) then ends with
    /// [`PipelineError::Cancelled`].
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Cancels the pipeline and waits until every task has finished.
    pub async fn shutdown(mut self) {
        self.finish().await;
    }

    async fn deliver(
        &mut self,
        result: Result<Out, E>,
    ) -> Option<Result<Out, PipelineError<E>>> {
        if let Some(credits) = &self.credits {
            credits.add_permits(1);
        }
        match result {
            Ok(out) => Some(Ok(out)),
            Err(error) => {
                self.finish().await;
                Some(Err(PipelineError::Stage(error)))
            }
        }
    }

    /// Stops every task and waits for them; true if one panicked.
    async fn finish(&mut self) -> bool {
        self.done = true;
        self.cancel.cancel();
        self.results.close();
        if let Some(credits) = &self.credits {
            credits.close();
        }
        let mut panicked = false;
        while let Some(joined) = self.tasks.join_next().await {
            panicked |= joined.is_err_and(|e| e.is_panic());
        }
        panicked
    }
}

impl<Out, E> Drop for TaskOutput<Out, E> {
    fn drop(&mut self) {
        // The JoinSet aborts whatever is still running when it drops.
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    async fn square(n: u64) -> Result<u64, String> {
        Ok(n * n)
    }

    async fn collect<Out, E>(
        mut out: TaskOutput<Out, E>,
    ) -> Vec<Result<Out, PipelineError<E>>> {
        let mut all = Vec::new();
        while let Some(item) = out.next().await {
            all.push(item);
        }
        all
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unordered_delivers_every_result_exactly_once() {
        let out = run(
            Options::default().workers(4).capacity(8),
            0..1_000u64,
            square,
        )
        .unwrap();
        let mut got: Vec<u64> =
            collect(out).await.into_iter().map(Result::unwrap).collect();
        got.sort_unstable();
        assert_eq!(got, (0..1_000u64).map(|n| n * n).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn preserved_order_holds_when_early_items_are_slow() {
        let stage = |n: u64| async move {
            if n.is_multiple_of(10) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            square(n).await
        };
        let options = Options::default()
            .workers(4)
            .capacity(4)
            .order(Order::Preserved);
        let got: Vec<u64> = collect(run(options, 0..200u64, stage).unwrap())
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, (0..200u64).map(|n| n * n).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_first_error_is_the_last_item() {
        let stage = |n: u64| async move {
            if n == 50 {
                Err(format!("bad item {n}"))
            } else {
                square(n).await
            }
        };
        for order in [Order::Unordered, Order::Preserved] {
            let items = collect(
                run(
                    Options::default().workers(3).capacity(4).order(order),
                    0..u64::MAX,
                    stage,
                )
                .unwrap(),
            )
            .await;
            assert_eq!(
                items.last(),
                Some(&Err(PipelineError::Stage("bad item 50".into())))
            );
            assert_eq!(items.iter().filter(|r| r.is_err()).count(), 1);
        }
    }

    #[tokio::test]
    async fn a_panicking_stage_is_reported() {
        let stage = |n: u64| async move {
            assert!(n != 10, "boom");
            square(n).await
        };
        let items = collect(
            run(
                Options::default().workers(2).capacity(2),
                0..u64::MAX,
                stage,
            )
            .unwrap(),
        )
        .await;
        assert_eq!(items.last(), Some(&Err(PipelineError::Panicked)));
    }

    /// Counts live stage futures: a future dropped by cancellation decrements
    /// too, so zero at the end means no stage outlived the pipeline.
    struct Alive(Arc<AtomicUsize>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancellation_under_load_is_prompt_and_shutdown_joins_every_task() {
        let token = CancellationToken::new();
        let alive = Arc::new(AtomicUsize::new(0));
        let stage =
            {
                let alive = Arc::clone(&alive);
                move |n: u64| {
                    alive.fetch_add(1, SeqCst);
                    let guard = Alive(Arc::clone(&alive));
                    async move {
                        let _guard = guard;
                        // Slow items: cancellation must not wait for them.
                        tokio::time::sleep(Duration::from_millis(
                            if n.is_multiple_of(7) { 10_000 } else { 1 },
                        ))
                        .await;
                        square(n).await
                    }
                }
            };
        let options = Options::default()
            .workers(4)
            .capacity(16)
            .cancel_token(token.clone());
        let mut out = run(options, 0..u64::MAX, stage).unwrap();
        // Items 0, 7 and 14 hold three of the four workers for 10 s; the
        // fourth delivers the rest.
        for _ in 0..10 {
            assert!(out.next().await.unwrap().is_ok());
        }
        token.cancel();
        let started = std::time::Instant::now();
        assert_eq!(out.next().await, Some(Err(PipelineError::Cancelled)));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "cancellation took {:?}",
            started.elapsed()
        );
        out.shutdown().await;
        assert_eq!(
            alive.load(SeqCst),
            0,
            "a stage future outlived the pipeline"
        );
    }

    #[test]
    fn outside_a_runtime_it_is_an_error_not_a_panic() {
        assert_eq!(
            run(Options::default(), 0..1u64, square).err(),
            Some(ConfigError::NoRuntime)
        );
    }
}
