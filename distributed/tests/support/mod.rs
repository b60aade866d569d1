//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::time::{Duration, Instant};

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

/// Repeats `op` until it succeeds, for at most 20 s: the first requests
/// after a failover fail (they went to the dead primary) and make the
/// connection find the new one.
pub async fn until_ok<T>(
    what: &str,
    mut op: impl AsyncFnMut() -> Result<T, cpr_distributed::redis::RedisError>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match op().await {
            Ok(value) => return value,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "{what} never worked again: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
