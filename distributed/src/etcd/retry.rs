//! Retrying requests that certainly did not reach a server, or that are safe
//! to repeat.
//!
//! A request that finds its member dead fails with "tcp connect error" (and
//! moves the client on to the next endpoint, see `endpoints`). Such a
//! request never left this process, so sending it again is always safe. Reads (and revision-guarded deletes) are safe to repeat
//! whatever went wrong.

use std::future::Future;
use std::time::Duration;

use super::EtcdError;

/// How a request may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Repeat only if the request was never sent (a write that is not
    /// idempotent: repeating a lost success could apply it twice).
    IfUnsent,
    /// Repeat on any unavailability (reads, revision-guarded deletes).
    Idempotent,
}

const ATTEMPTS: usize = 8;

/// How long a request whose outcome must be learned keeps being repeated
/// while etcd is unavailable (see [`retrying_for`]).
pub(crate) const OUTCOME_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `op` until it succeeds, fails in a way that must not be repeated,
/// or has failed [`ATTEMPTS`] times.
pub(crate) async fn retrying<T, F, Fut>(repeat: Repeat, op: F) -> Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    repeat_while(repeat, |attempt| attempt < ATTEMPTS, op).await
}

/// Like [`retrying`], but keeps trying for as long as `patience` rather
/// than a number of times: for requests whose outcome must be learned
/// (exactly-once writes), where giving up early would leave the caller not
/// knowing whether its write applied.
pub(crate) async fn retrying_for<T, F, Fut>(
    repeat: Repeat,
    patience: Duration,
    op: F,
) -> Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let started = tokio::time::Instant::now();
    repeat_while(repeat, |_| started.elapsed() < patience, op).await
}

/// Whether a failed request may have been applied all the same: it left
/// this process, and no reply said what became of it (the member died, the
/// connection broke, the deadline passed). A write that failed like this
/// must not simply be sent again.
pub(crate) fn outcome_unknown(error: &EtcdError) -> bool {
    match error {
        EtcdError::Client(error) => {
            may_repeat(error, Repeat::Idempotent) && !may_repeat(error, Repeat::IfUnsent)
        }
        _ => false,
    }
}

/// The loop of both: repeats `op` with a doubling pause (20 ms to 500 ms)
/// while its error may be repeated and `more(attempts so far)` says so.
async fn repeat_while<T, F, Fut>(
    repeat: Repeat,
    mut more: impl FnMut(usize) -> bool,
    mut op: F,
) -> Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut pause = Duration::from_millis(20);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) if more(attempt) && may_repeat(&error, repeat) => {
                tracing::debug!(%error, attempt, "retrying an etcd request");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
                attempt += 1;
            }
            Err(error) => return Err(EtcdError::Client(error)),
        }
    }
}

fn may_repeat(error: &etcd_client::Error, repeat: Repeat) -> bool {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return matches!(error, etcd_client::Error::TransportError(_));
    };
    let unsent =
        status.code() == tonic::Code::Unavailable && status.message().contains("connect error");
    let unavailable = matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
    );
    match repeat {
        Repeat::IfUnsent => unsent,
        Repeat::Idempotent => unavailable,
    }
}
