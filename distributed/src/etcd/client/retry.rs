//! Retrying requests that certainly did not reach a server, or that are safe
//! to repeat.
//!
//! A request that finds its member dead fails with "tcp connect error" (and
//! moves the client on to the next endpoint, see `failover`). Such a
//! request never left this process, so sending it again is always safe. Reads (and revision-guarded deletes) are safe to repeat
//! whatever went wrong.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::etcd::EtcdError;

/// How a request may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Repeat only if the request was never sent (a write that is not
    /// idempotent: repeating a lost success could apply it twice).
    IfUnsent,
    /// Repeat on any unavailability (reads, revision-guarded deletes).
    Idempotent,
}

/// Runs `op` until it succeeds, fails in a way that must not be repeated,
/// or `deadline` passes — an attempt still in flight then is cut, and the
/// call fails with [`EtcdError::TimedOut`]. Operations made of several
/// requests (an exactly-once write) share one deadline.
pub(crate) async fn retrying_until<T, F, Fut>(
    repeat: Repeat,
    deadline: Instant,
    mut op: F,
) -> Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let timed_out = || EtcdError::TimedOut {
            waited: started.elapsed(),
        };
        match tokio::time::timeout_at(deadline, op()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if may_repeat(&error, repeat) && Instant::now() < deadline => {
                tracing::debug!(%error, "retrying an etcd request");
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Ok(Err(error)) if may_repeat(&error, repeat) => {
                tracing::debug!(%error, "an etcd request failed until the operation's deadline");
                return Err(timed_out());
            }
            Ok(Err(error)) => return Err(EtcdError::Client(error)),
            Err(_elapsed) => return Err(timed_out()),
        }
    }
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
        // An attempt cut at the deadline may have reached etcd.
        EtcdError::TimedOut { .. } => true,
        _ => false,
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
