//! Helpers shared by the integration tests.

/// Polls `future` at most `polls` times, letting the runtime run between
/// polls, and drops it if it has not finished: a cancellation at a point
/// chosen by the caller, finer than a timer can cut.
pub async fn cut_after<T>(
    future: impl std::future::Future<Output = T>,
    polls: usize,
) -> Option<T> {
    let mut future = std::pin::pin!(future);
    for _ in 0..polls {
        if let std::task::Poll::Ready(value) = futures::poll!(future.as_mut()) {
            return Some(value);
        }
        tokio::task::yield_now().await;
    }
    None
}
