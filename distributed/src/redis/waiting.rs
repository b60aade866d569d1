//! How the Redis lock and semaphore wait their turn: one acquire attempt
//! that cannot be cut in half, woken by a release message between attempts.
//! Machinery shared by both recipes; a reader of a recipe may skip it.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;
use tracing::debug;

use super::{RedisConnection, RedisError};

/// The longest a waiter sleeps between checks when no release message
/// arrives: covers a lost message, and a holder whose lease simply expired
/// (expiry publishes nothing).
pub(crate) const MAX_QUIET_WAIT: Duration = Duration::from_millis(500);

/// The outcome of one acquire attempt.
pub(crate) enum Attempt<T> {
    /// Taken; `T` is what the attempt returned (a fencing token).
    Acquired(T),
    /// Not free. `Some(left)`: the first holder's lease runs out in `left`.
    Busy(Option<Duration>),
}

/// Makes attempts until one acquires. After the first failure it listens
/// on `channel` *before* trying again, so that a release between the
/// failed attempt and the subscription is not missed; then it sleeps until
/// a release message arrives, a lease runs out, or [`MAX_QUIET_WAIT`]
/// passes, and tries again.
// ANCHOR: wait
pub(crate) async fn until_acquired<T, F, Fut>(
    conn: &RedisConnection,
    channel: &str,
    mut attempt: F,
) -> Result<T, RedisError>
where
    // A closure that makes an owned future, not an async closure that
    // borrows: callers' futures must stay `Send` for `tokio::spawn`.
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>, RedisError>>,
{
    if let Attempt::Acquired(taken) = attempt().await? {
        return Ok(taken);
    }
    let mut pubsub = conn.pubsub().await?;
    pubsub.subscribe(channel).await?;
    let mut releases = pubsub.on_message();
    let mut listening = true;
    loop {
        let left = match attempt().await? {
            Attempt::Acquired(taken) => return Ok(taken),
            Attempt::Busy(left) => left,
        };
        let quiet = left.map_or(MAX_QUIET_WAIT, |left| left.min(MAX_QUIET_WAIT));
        if !listening {
            // The pub/sub connection broke (a server restart): the
            // periodic check alone still gets us in.
            tokio::time::sleep(quiet).await;
            continue;
        }
        tokio::select! {
            message = releases.next() => match message {
                Some(_) => debug!(channel, "release published"),
                None => listening = false,
            },
            _ = tokio::time::sleep(quiet) => {}
        }
    }
}
// ANCHOR_END: wait

/// Runs one acquire `attempt` in a task of its own, so that it cannot be
/// cut in half: a script sent for a caller that is then dropped may still
/// succeed on Redis, and nobody would hold what it took. The task hands
/// the outcome over and waits for the caller to take it, which the caller
/// does in the same step in which it receives it; if the caller is gone
/// instead, the task runs `undo`.
// ANCHOR: attempt
pub(crate) async fn in_own_task<T, U>(
    name: &str,
    attempt: impl Future<Output = Result<Attempt<T>, RedisError>> + Send + 'static,
    undo: U,
) -> Result<Attempt<T>, RedisError>
where
    T: Send + 'static,
    U: FnOnce() + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let (taken, was_taken) = oneshot::channel::<()>();
    let owner = name.to_string();
    tokio::spawn(async move {
        let outcome = attempt.await;
        let acquired = matches!(outcome, Ok(Attempt::Acquired(_)));
        let _ = reply.send(outcome);
        if acquired && was_taken.await.is_err() {
            debug!(name = %owner, "acquire cancelled after it succeeded; undoing it");
            undo();
        }
    });
    let outcome = answer.await.map_err(|_| RedisError::AttemptAborted {
        name: name.to_string(),
    })??;
    if matches!(outcome, Attempt::Acquired(_)) {
        // No `.await` from here to the caller's guard: once taken, it is held.
        let _ = taken.send(());
    }
    Ok(outcome)
}
// ANCHOR_END: attempt

/// Repeats `undo` in the background, with a doubling pause, until it
/// reports done or `for_as_long` has passed: for an acquisition whose reply
/// was lost, whose script may still land late on the server. Does nothing
/// outside a tokio runtime (the lease frees what was taken).
pub(crate) fn undo_in_background<F, Fut>(
    name: String,
    for_as_long: Duration,
    mut undo: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<bool, RedisError>> + Send,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let give_up = tokio::time::Instant::now() + for_as_long;
        let mut pause = Duration::from_millis(50);
        while tokio::time::Instant::now() < give_up {
            if let Ok(true) = undo().await {
                debug!(%name, "undid an acquisition whose caller or reply was lost");
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    });
}
