//! A producer with many enqueues in flight: group commit.
//!
//! An enqueue is one Raft commit, and a commit waits for an fsync; a
//! producer that awaits each enqueue before the next sends one item per
//! commit, however fast its network. Go's answer is more goroutines, each
//! with its own item in flight — and then the items race, and their order
//! is lost. Here the enqueues made while one transaction is in flight wait
//! in a line, and all of them go in the next transaction, as one batch
//! (see [`Queue::enqueue_many`]). One transaction at a time keeps the
//! order; the batch carries the throughput.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::etcd::EtcdError;
use crate::etcd::Queue;
use crate::etcd::exactly_once::unique_creates::MAX_CREATES_PER_TXN;
use crate::etcd::queues::queue::MAX_BYTES_PER_TXN;

/// An item waiting for the next transaction, and where its key goes.
struct Waiting {
    value: Vec<u8>,
    reply: oneshot::Sender<Result<String, EtcdError>>,
}

/// Enqueues onto one [`Queue`] with many items in flight, keeping their
/// order: made by [`Queue::producer`]. Clones share one line; the line's
/// task ends when the last clone is dropped and every item has been sent.
///
/// ```no_run
/// # async fn demo(jobs: cpr_distributed::etcd::Queue) -> Result<(), cpr_distributed::etcd::EtcdError> {
/// let producer = jobs.producer();
/// // Each call joins the line at once, in this order; none waits for
/// // another's round trip.
/// let sent: Vec<_> = (0..1_000).map(|i| producer.enqueue(format!("job {i}"))).collect();
/// for key in futures::future::join_all(sent).await {
///     key?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct QueueProducer {
    line: mpsc::UnboundedSender<Waiting>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").finish_non_exhaustive()
    }
}

impl QueueProducer {
    /// Starts the line's task (on the current tokio runtime).
    pub(crate) fn new(queue: Queue) -> Self {
        let (line, waiting) = mpsc::unbounded_channel();
        tokio::spawn(send_in_batches(queue, waiting));
        QueueProducer { line }
    }

    /// Puts `value` in line now — items are enqueued in the order of these
    /// calls — and returns a future that answers with the item's key once
    /// the transaction it went in has been applied. Exactly once, like
    /// [`Queue::enqueue`].
    ///
    /// # Errors
    ///
    /// [`EtcdError::BatchFailed`] if the transaction failed (none of its
    /// items was added, or, for an unknown outcome, all at most once);
    /// [`EtcdError::ProducerGone`] if the line's task has ended (its
    /// runtime is shutting down).
    ///
    /// # Cancel safety
    ///
    /// The item is in line from this call on: dropping the
    /// future does not take it back, it only forgoes the answer.
    pub fn enqueue(
        &self,
        value: impl Into<Vec<u8>>,
    ) -> impl Future<Output = Result<String, EtcdError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.line.send(Waiting {
            value: value.into(),
            reply,
        });
        async move {
            if queued.is_err() {
                return Err(EtcdError::ProducerGone);
            }
            answer.await.unwrap_or(Err(EtcdError::ProducerGone))
        }
    }
}

/// The line's task: takes everything waiting (up to one transaction's
/// worth), writes it in one transaction, answers each item; again.
async fn send_in_batches(queue: Queue, mut line: mpsc::UnboundedReceiver<Waiting>) {
    // An item that did not fit in the last batch starts the next one.
    let mut held: Option<Waiting> = None;
    loop {
        let first = match held.take() {
            Some(first) => first,
            None => match line.recv().await {
                Some(first) => first,
                None => return, // every producer dropped, the line is empty
            },
        };
        let mut bytes = first.value.len();
        let mut batch = vec![first];
        while batch.len() < MAX_CREATES_PER_TXN {
            let Ok(next) = line.try_recv() else { break };
            if bytes + next.value.len() > MAX_BYTES_PER_TXN {
                held = Some(next);
                break;
            }
            bytes += next.value.len();
            batch.push(next);
        }
        let (values, replies): (Vec<Vec<u8>>, Vec<_>) =
            batch.into_iter().map(|w| (w.value, w.reply)).unzip();
        match queue.enqueue_chunk(&values).await {
            Ok(keys) => {
                for (reply, key) in replies.into_iter().zip(keys) {
                    let _ = reply.send(Ok(key)); // the caller may have gone
                }
            }
            Err(error) => {
                tracing::debug!(%error, items = replies.len(), "a producer's batch failed");
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(EtcdError::BatchFailed(error.clone())));
                }
            }
        }
    }
}
