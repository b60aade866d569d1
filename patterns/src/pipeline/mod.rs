//! Fan-out / fan-in pipelines: a source, N workers running one stage
//! function, and a merge, in two flavours with the same guarantees.
//!
//! - [`threads`]: OS threads and bounded crossbeam channels; the stage is a
//!   plain function.
//! - [`tasks`]: tokio tasks and bounded mpsc channels; the stage is an async
//!   function.
//!
//! What both guarantee, beyond the Go original:
//! - **Backpressure**: every channel is bounded (`capacity`), so a slow
//!   consumer slows the workers, which slow the source.
//! - **Order**, if asked: [`Order::Preserved`] yields results in input order,
//!   holding at most `capacity` finished-but-early results (the source is
//!   not allowed to run further ahead than that).
//! - **First error wins**: the first stage error cancels the pipeline; it is
//!   the last item yielded.
//! - **Cancellation**: cancelling the [`CancellationToken`] given to the
//!   pipeline, or dropping its output, stops the source and the workers at
//!   their next item.
//! - **Nothing leaks**: every thread or task is joined before the output is
//!   gone.
//!
//! The fan-in needs no merge goroutines as in Go: every worker holds a clone
//! of one sender, and the channel closes when the last worker is done.

mod reorder;
pub mod tasks;
pub mod threads;

pub use tokio_util::sync::CancellationToken;

/// Whether results come out in input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// As they finish: the fastest, and what Go's `merge` does.
    #[default]
    Unordered,
    /// In input order, with a reorder buffer of at most `capacity` results.
    Preserved,
}

/// Why a pipeline stopped early. Yielded once, as its last item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError<E> {
    /// The stage function returned this error for some item.
    #[error("a stage failed: {0}")]
    Stage(E),
    /// A stage panicked; the other workers were stopped.
    #[error("a stage panicked; the pipeline was stopped")]
    Panicked,
    /// The pipeline's cancellation token was cancelled.
    #[error("the pipeline was cancelled")]
    Cancelled,
}

/// A pipeline configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Zero workers would never process anything.
    #[error("a pipeline needs at least one worker")]
    NoWorkers,
    /// A zero-capacity channel cannot buffer results for reordering.
    #[error("channel capacity must be at least 1")]
    ZeroCapacity,
    /// The tokio flavour was started outside a tokio runtime.
    #[error("the task pipeline must be started inside a tokio runtime")]
    NoRuntime,
}

/// Options shared by both flavours. Defaults: as many workers as the machine
/// has cores, capacity 64, unordered, a fresh cancellation token.
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) workers: usize,
    pub(crate) capacity: usize,
    pub(crate) order: Order,
    pub(crate) cancel: CancellationToken,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2),
            capacity: 64,
            order: Order::Unordered,
            cancel: CancellationToken::new(),
        }
    }
}

impl Options {
    /// The number of workers running the stage (at least 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The bound of each channel, and of the reorder buffer (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Results in input order or as they finish.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// A token that stops the pipeline when cancelled. The pipeline cancels
    /// only a child of it, so a stage error does not cancel the caller's token.
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 {
            return Err(ConfigError::NoWorkers);
        }
        if self.capacity == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        Ok(())
    }
}
