//! Rate limiters: the interface every one in this project implements
//! (local ones here, the distributed ones on Redis), and three local
//! algorithms — GCRA, an exact sliding log, an approximate sliding window.

pub(crate) mod gcra;
pub(crate) mod sliding_log;
pub(crate) mod sliding_window;

use std::future::Future;
use std::time::Duration;

/// What a limiter said to a request for permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The permits were granted.
    Allowed,
    /// Refused; asking again after `retry_after` may succeed (it will, if
    /// nobody else takes the permits first). `Duration::MAX` means never:
    /// more permits were asked for than the limiter can grant at once.
    Denied {
        /// When the requested permits free up, from now.
        retry_after: Duration,
    },
}

impl Decision {
    /// True for [`Decision::Allowed`].
    pub fn is_allowed(self) -> bool {
        matches!(self, Decision::Allowed)
    }
}

// ANCHOR: trait
/// A rate limiter: grants permits at a configured rate.
///
/// The methods are async so that a limiter shared through a server (Redis)
/// fits the same interface as an in-process one, whose futures complete at
/// once. `Error` is `Infallible` for in-process limiters.
pub trait RateLimiter: Send + Sync {
    /// Why a decision could not be made (a network error, for a distributed
    /// limiter).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Asks for `n` permits at once, without waiting.
    ///
    /// A request for more permits than the limiter can ever grant at once
    /// (its burst, or its limit per window) never succeeds, and every
    /// implementation says so the same way: `Denied` with `retry_after` of
    /// `Duration::MAX`. Any other `retry_after` is a real time to wait.
    fn try_acquire_n(
        &self,
        n: u32,
    ) -> impl Future<Output = Result<Decision, Self::Error>> + Send;

    /// Asks for one permit, without waiting.
    fn try_acquire(
        &self,
    ) -> impl Future<Output = Result<Decision, Self::Error>> + Send {
        self.try_acquire_n(1)
    }

    /// Waits until one permit is granted, sleeping for the `retry_after`
    /// the limiter gives (plus up to `jitter`, chosen by `spread`, so that
    /// many waiters do not all retry at the same instant).
    ///
    /// Cancel safety: safe; a dropped wait has taken no permit.
    fn acquire_with_jitter(
        &self,
        jitter: Duration,
        mut spread: impl FnMut(Duration) -> Duration + Send,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async move {
            loop {
                match self.try_acquire().await? {
                    Decision::Allowed => return Ok(()),
                    Decision::Denied { retry_after } => {
                        tokio::time::sleep(retry_after + spread(jitter)).await;
                    }
                }
            }
        }
    }

    /// Waits until one permit is granted.
    ///
    /// Cancel safety: safe; a dropped wait has taken no permit.
    fn acquire(&self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.acquire_with_jitter(Duration::ZERO, |_| Duration::ZERO)
    }
}
// ANCHOR_END: trait

/// A limiter configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimiterConfigError {
    /// A limit of zero would refuse everything.
    #[error("a rate limit must allow at least one permit")]
    ZeroLimit,
    /// A window of zero length has no rate.
    #[error("the window must be longer than zero (at least 1 µs)")]
    ZeroWindow,
    /// The limit does not fit the limiter's counters.
    #[error("this limiter counts at most {0} permits per window")]
    LimitTooLarge(u32),
    /// A window longer than [`MAX_LIMITER_WINDOW`] (a year).
    #[error("the window can be at most a year, not {0:?}")]
    WindowTooLong(std::time::Duration),
}

/// The longest window a rate limiter takes: a year. Longer windows are not
/// rates any more, and overflow the clocks' arithmetic (governor's counts
/// nanoseconds in 64 bits: 584 years).
pub const MAX_LIMITER_WINDOW: std::time::Duration =
    std::time::Duration::from_secs(365 * 24 * 3600);
