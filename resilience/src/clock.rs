//! Time as the limiters see it: a monotonic clock that tests can drive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A monotonic clock: the time elapsed since some fixed origin.
///
/// Limiters take one so that tests can use [`ManualClock`] and check
/// behaviour over hours of virtual time without sleeping.
pub trait Clock: Send + Sync {
    /// Time since this clock's origin.
    fn now(&self) -> Duration;

    /// The same in nanoseconds, for hot paths that compare times and
    /// need no `Duration` (building one costs a division).
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.now().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A cheaper reading with a grain of a few milliseconds, for measures
    /// that need no finer one: whether a call took longer than a second,
    /// which second a call ended in. Its own timeline: compare it only with
    /// other `coarse_now_nanos` readings of the same clock. By default the
    /// same as [`now_nanos`](Self::now_nanos).
    fn coarse_now_nanos(&self) -> u64 {
        self.now_nanos()
    }
}

/// The real monotonic clock. It reads the CPU's time-stamp counter where
/// that is reliable (through `quanta`, as governor does), which costs a few
/// nanoseconds instead of a system call's twenty.
///
/// Its coarse reading (on Linux) is `CLOCK_MONOTONIC_COARSE`: the time of
/// the kernel's last tick, a memory read with no counter behind it, a
/// few times cheaper than even the time-stamp counter, and at most a tick
/// (1–10 ms) behind.
#[derive(Debug, Clone)]
pub struct SystemClock {
    clock: quanta::Clock,
    origin: u64,
    coarse_origin: u64,
}

impl Default for SystemClock {
    fn default() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        SystemClock {
            clock,
            origin,
            coarse_origin: coarse_monotonic_nanos(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }

    fn now_nanos(&self) -> u64 {
        self.clock.delta_as_nanos(self.origin, self.clock.raw())
    }

    fn coarse_now_nanos(&self) -> u64 {
        if cfg!(target_os = "linux") {
            coarse_monotonic_nanos().saturating_sub(self.coarse_origin)
        } else {
            self.now_nanos()
        }
    }
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds (0 where there is none).
fn coarse_monotonic_nanos() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
        u64::try_from(now.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos
            .fetch_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Relaxed))
    }

    fn now_nanos(&self) -> u64 {
        self.nanos.load(Relaxed)
    }
}
