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
}

/// The real monotonic clock. It reads the CPU's time-stamp counter where
/// that is reliable (through `quanta`, as governor does), which costs a few
/// nanoseconds instead of a system call's twenty.
#[derive(Debug, Clone)]
pub struct SystemClock {
    clock: quanta::Clock,
    origin: u64,
}

impl Default for SystemClock {
    fn default() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        SystemClock { clock, origin }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }

    fn now_nanos(&self) -> u64 {
        self.clock.delta_as_nanos(self.origin, self.clock.raw())
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
