//! Retrying requests that certainly did not reach a server, or that are safe
//! to repeat.
//!
//! A request that finds its member dead fails with [`NeverSent`] (and
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
            Ok(Err(error))
                if may_repeat(&error, repeat) && Instant::now() < deadline =>
            {
                tracing::debug!(%error, "retrying an etcd request");
                tokio::time::sleep(
                    pause.min(deadline.saturating_duration_since(Instant::now())),
                )
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
            may_repeat(error, Repeat::Idempotent)
                && !may_repeat(error, Repeat::IfUnsent)
        }
        // An attempt cut at the deadline may have reached etcd.
        EtcdError::TimedOut { .. } => true,
        _ => false,
    }
}

/// The mark this crate's channel puts on a request whose connection could
/// not be made (see `failover`): it never left this process.
#[derive(Debug, thiserror::Error)]
#[error("tcp connect error: {0}")]
pub(crate) struct NeverSent(#[source] pub(crate) std::io::Error);

/// The first error of type `T` in the chain of causes of `error`: how a
/// typed mark made deep in the connection (a [`NeverSent`], a TLS error)
/// is found again above hyper and tonic.
pub(crate) fn find_cause<T: std::error::Error + 'static>(
    error: &etcd_client::Error,
) -> Option<&T> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(match error {
        etcd_client::Error::GRpcStatus(status) => status,
        etcd_client::Error::TransportError(transport) => transport,
        other => other,
    });
    while let Some(error) = cause {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        // An io::Error's `source` skips the error it wraps: go into it.
        cause = match error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => error.source(),
        };
    }
    None
}

/// Whether `error` says etcd could not be reached or the connection broke:
/// what a read may simply repeat.
pub(crate) fn is_unavailable(error: &etcd_client::Error) -> bool {
    may_repeat(error, Repeat::Idempotent)
}

fn may_repeat(error: &etcd_client::Error, repeat: Repeat) -> bool {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return matches!(error, etcd_client::Error::TransportError(_));
    };
    let unsent = status.code() == tonic::Code::Unavailable
        && find_cause::<NeverSent>(error).is_some();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::etcd::client::failover;

    /// The mark must survive the layers between the TCP connect and the
    /// gRPC status (hyper, tonic): without it, a write to a dead member
    /// would not be sent again to a live one.
    #[tokio::test]
    async fn a_request_to_a_dead_endpoint_is_known_never_sent() {
        let dead = format!("127.0.0.1:{}", testkit::free_port().unwrap());
        let second = Duration::from_secs(1);
        let channel =
            failover::channel(&[dead], second, second, &Default::default()).unwrap();
        let mut client = etcd_client::Client::from_channel(channel, None)
            .await
            .unwrap();
        let error = client.get("k", None).await.unwrap_err();
        assert!(may_repeat(&error, Repeat::IfUnsent), "{error}");
        assert!(!outcome_unknown(&EtcdError::Client(error)));
    }

    /// A request that did reach a server is not marked, whatever it says.
    #[tokio::test]
    async fn a_request_answered_by_a_server_is_not_marked() {
        let redis = testkit::shared_redis().unwrap();
        let second = Duration::from_secs(1);
        let channel = failover::channel(
            &[redis.addr().to_string()],
            second,
            second,
            &Default::default(),
        )
        .unwrap();
        let mut client = etcd_client::Client::from_channel(channel, None)
            .await
            .unwrap();
        let error = client.get("k", None).await.unwrap_err();
        assert!(!may_repeat(&error, Repeat::IfUnsent), "{error}");
    }
}
