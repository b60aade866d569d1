//! Adaptive concurrency limits: how many requests may be in flight at once,
//! learned from the latencies and drops the requests themselves see (after
//! Netflix's concurrency-limits, with its known pitfalls avoided).

mod aimd;
pub mod simulation;
mod vegas;

use std::sync::Arc;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{AcqRel, Acquire},
};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

pub use aimd::Aimd;
pub use vegas::Vegas;

use crate::clock::{Clock, SystemClock};

/// What one finished request tells the algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// How long it took.
    pub latency: Duration,
    /// Requests in flight when it started, itself included.
    pub inflight: u32,
    /// It was dropped, timed out or refused by an overloaded server: a
    /// sign of overload whatever its latency.
    pub dropped: bool,
}

/// A way to turn samples into a limit.
pub trait LimitAlgorithm: Send {
    /// The limit before any sample.
    fn initial_limit(&self) -> u32;

    /// Learns from one sample; returns the new limit, within the
    /// algorithm's bounds.
    fn update(&mut self, sample: Sample) -> u32;
}

/// Bounds shared by the algorithms: the limit never leaves `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitBounds {
    /// The lowest limit (at least 1: a limit of 0 could never learn again).
    pub min: u32,
    /// The highest limit.
    pub max: u32,
}

impl LimitBounds {
    /// `[min, max]`, with `min` raised to 1 and `max` to `min` if needed.
    pub fn new(min: u32, max: u32) -> Self {
        let min = min.max(1);
        LimitBounds {
            min,
            max: max.max(min),
        }
    }

    fn clamp(self, limit: f64) -> f64 {
        limit.clamp(f64::from(self.min), f64::from(self.max))
    }
}

/// Samples gathered since a latency-based algorithm last updated. Updating
/// once per round of `limit` samples (at least ten), from their mean, is
/// what keeps these algorithms stable: per-sample updates chase noise and,
/// as the latency a request sees lags the limit that caused it by one round
/// trip, oscillate.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Round {
    samples: u32,
    latency_sum: f64,
    timed: u32,
    max_inflight: u32,
    dropped: bool,
}

impl Round {
    /// Adds `sample`; once the round is complete, returns it and starts a new one.
    fn add(&mut self, sample: Sample, limit: f64) -> Option<Round> {
        self.samples += 1;
        self.max_inflight = self.max_inflight.max(sample.inflight);
        if sample.dropped {
            self.dropped = true;
        } else {
            self.latency_sum += sample.latency.as_secs_f64();
            self.timed += 1;
        }
        (f64::from(self.samples) >= limit.max(10.0)).then(|| std::mem::take(self))
    }

    /// Mean latency of the round's timed samples, in seconds.
    fn mean_latency(&self) -> f64 {
        (self.latency_sum / f64::from(self.timed.max(1))).max(1e-9)
    }
}

// limit in the high half, inflight in the low half: acquiring compares
// and increments in one step, so no check-then-act race can overshoot.
fn pack(limit: u32, inflight: u32) -> u64 {
    (u64::from(limit) << 32) | u64::from(inflight)
}

fn unpack(state: u64) -> (u32, u32) {
    ((state >> 32) as u32, state as u32)
}

struct Shared<C> {
    state: AtomicU64,
    algorithm: Mutex<Box<dyn LimitAlgorithm>>,
    clock: C,
    released: Notify,
}

/// A concurrency limit that adapts: requests take a permit, report how
/// they went, and the [`LimitAlgorithm`] moves the limit.
///
/// Clones share one limit. Taking a permit is a single compare-and-swap on
/// a word holding both the limit and the count in flight, so the limit is
/// never exceeded, however many threads race.
pub struct AdaptiveLimiter<C: Clock = SystemClock> {
    shared: Arc<Shared<C>>,
}

impl<C: Clock> std::fmt::Debug for AdaptiveLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLimiter")
            .field("limit", &self.limit())
            .field("inflight", &self.inflight())
            .finish()
    }
}

impl<C: Clock> Clone for AdaptiveLimiter<C> {
    fn clone(&self) -> Self {
        AdaptiveLimiter {
            shared: self.shared.clone(),
        }
    }
}

impl AdaptiveLimiter<SystemClock> {
    /// A limiter driven by `algorithm`, timing requests on the real clock.
    pub fn new(algorithm: impl LimitAlgorithm + 'static) -> Self {
        Self::with_clock(algorithm, SystemClock::default())
    }
}

impl<C: Clock> AdaptiveLimiter<C> {
    /// The same, timing requests on `clock`.
    pub fn with_clock(algorithm: impl LimitAlgorithm + 'static, clock: C) -> Self {
        let limit = algorithm.initial_limit().max(1);
        AdaptiveLimiter {
            shared: Arc::new(Shared {
                state: AtomicU64::new(pack(limit, 0)),
                algorithm: Mutex::new(Box::new(algorithm)),
                clock,
                released: Notify::new(),
            }),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        unpack(self.shared.state.load(Acquire)).0
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> u32 {
        unpack(self.shared.state.load(Acquire)).1
    }

    /// A permit if fewer than the limit are in flight; `None` means
    /// "overloaded, shed this request".
    pub fn try_acquire(&self) -> Option<AdaptivePermit<C>> {
        // ANCHOR: acquire
        let mut state = self.shared.state.load(Acquire);
        loop {
            let (limit, inflight) = unpack(state);
            if inflight >= limit {
                return None;
            }
            match self.shared.state.compare_exchange_weak(
                state,
                pack(limit, inflight + 1),
                AcqRel,
                Acquire,
            ) {
                Ok(_) => {
                    return Some(AdaptivePermit {
                        shared: self.shared.clone(),
                        started: self.shared.clock.now(),
                        inflight: inflight + 1,
                        finished: false,
                    });
                }
                Err(changed) => state = changed,
            }
        }
        // ANCHOR_END: acquire
    }

    /// Waits for a permit.
    ///
    /// Cancel safety: safe; a dropped wait holds no permit, and a wake-up
    /// it received passes to another waiter.
    pub async fn acquire(&self) -> AdaptivePermit<C> {
        loop {
            let released = self.shared.released.notified();
            tokio::pin!(released);
            // Register before looking, so a release in between is not missed.
            released.as_mut().enable();
            if let Some(permit) = self.try_acquire() {
                return permit;
            }
            released.await;
        }
    }
}

/// One request's place under the limit. Report how it went with
/// [`success`](Self::success) or [`dropped`](Self::dropped); dropped
/// without a report (cancelled, or [`ignore`](Self::ignore)d) it frees its
/// place and teaches the algorithm nothing.
#[must_use = "a permit frees its place when dropped; hold it for the request"]
pub struct AdaptivePermit<C: Clock = SystemClock> {
    shared: Arc<Shared<C>>,
    started: Duration,
    inflight: u32,
    finished: bool,
}

impl<C: Clock> AdaptivePermit<C> {
    /// Time since the permit was taken.
    pub fn elapsed(&self) -> Duration {
        self.shared.clock.now().saturating_sub(self.started)
    }

    /// The request succeeded; its latency is the time since the permit was taken.
    pub fn success(mut self) {
        self.finish(Some(false));
    }

    /// The request was dropped, timed out or refused for overload.
    pub fn dropped(mut self) {
        self.finish(Some(true));
    }

    /// The request says nothing about load (it failed for its own reasons).
    pub fn ignore(mut self) {
        self.finish(None);
    }

    fn finish(&mut self, dropped: Option<bool>) {
        self.finished = true;
        let latency = self.elapsed();
        let shared = &self.shared;
        let new_limit = dropped.map(|dropped| {
            let sample = Sample {
                latency,
                inflight: self.inflight,
                dropped,
            };
            shared.algorithm.lock().update(sample).max(1)
        });
        release(shared, new_limit);
    }
}

impl<C: Clock> Drop for AdaptivePermit<C> {
    fn drop(&mut self) {
        if !self.finished {
            release(&self.shared, None);
        }
    }
}

/// Frees one place and, if given, sets the new limit, in one step.
fn release<C>(shared: &Shared<C>, new_limit: Option<u32>) {
    let mut grew = false;
    let _ = shared.state.fetch_update(AcqRel, Acquire, |state| {
        let (old_limit, inflight) = unpack(state);
        let limit = new_limit.unwrap_or(old_limit);
        grew = limit > old_limit;
        Some(pack(limit, inflight.saturating_sub(1)))
    });
    // More room: wake every waiter to look; otherwise one place freed, one waiter.
    if grew {
        shared.released.notify_waiters();
    }
    shared.released.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

    /// A fixed limit, to test the limiter apart from any algorithm.
    struct Fixed(u32);

    impl LimitAlgorithm for Fixed {
        fn initial_limit(&self) -> u32 {
            self.0
        }
        fn update(&mut self, _: Sample) -> u32 {
            self.0
        }
    }

    #[test]
    fn racing_threads_never_exceed_the_limit() {
        let limiter = AdaptiveLimiter::with_clock(Fixed(7), ManualClock::new());
        let held = Arc::new(AtomicU32::new(0));
        let most = Arc::new(AtomicU32::new(0));
        let granted = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (limiter, held, most, granted) =
                    (limiter.clone(), held.clone(), most.clone(), granted.clone());
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        if let Some(permit) = limiter.try_acquire() {
                            let now = held.fetch_add(1, SeqCst) + 1;
                            most.fetch_max(now, SeqCst);
                            granted.fetch_add(1, SeqCst);
                            held.fetch_sub(1, SeqCst);
                            if i % 2 == 0 {
                                permit.success();
                            } // else dropped without a report
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(most.load(SeqCst) <= 7, "{} at once", most.load(SeqCst));
        assert!(granted.load(SeqCst) > 0);
        assert_eq!(limiter.inflight(), 0, "every place freed");
    }

    #[test]
    fn the_outcome_is_reported_on_the_permit() {
        let clock = ManualClock::new();
        let limiter = AdaptiveLimiter::with_clock(
            Aimd::new(LimitBounds::new(1, 100), 10),
            clock.clone(),
        );
        // Ten in flight (the limit), then one is dropped: ×0.9.
        let mut permits: Vec<_> =
            (0..10).map(|_| limiter.try_acquire().unwrap()).collect();
        assert!(limiter.try_acquire().is_none());
        permits.pop().unwrap().dropped();
        assert_eq!(limiter.limit(), 9);
        // Ignored and unreported permits change nothing but the count.
        permits.pop().unwrap().ignore();
        drop(permits.pop());
        assert_eq!((limiter.limit(), limiter.inflight()), (9, 7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_place_a_request_frees() {
        let limiter = AdaptiveLimiter::with_clock(Fixed(1), ManualClock::new());
        let first = limiter.try_acquire().unwrap();
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire().await.success() })
        };
        // A cancelled waiter must not take the wake-up with it.
        let gave_up =
            tokio::time::timeout(Duration::from_millis(10), limiter.acquire()).await;
        assert!(gave_up.is_err());
        first.success();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the waiter was woken")
            .unwrap();
        assert_eq!(limiter.inflight(), 0);
    }
}
