//! GCRA (the generic cell rate algorithm) through the `governor` crate,
//! behind this crate's [`RateLimiter`] trait, and a keyed variant whose
//! memory is bounded by pruning.

use std::convert::Infallible;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use governor::Quota;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};

use crate::clock::{Clock, SystemClock};
use crate::{Decision, LimiterConfigError, MAX_LIMITER_WINDOW, RateLimiter};

/// Lets governor read time from one of this crate's clocks, so that GCRA is
/// tested with the same [`ManualClock`](crate::ManualClock) as the others.
#[derive(Debug, Clone)]
struct GovernorClock<C>(C);

impl<C: Clock> governor::clock::Clock for GovernorClock<C> {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.now()
    }
}

type DirectLimiter<C> = governor::RateLimiter<
    NotKeyed,
    InMemoryState,
    GovernorClock<C>,
    NoOpMiddleware<Duration>,
>;
type KeyedLimiter<K, C> = governor::RateLimiter<
    K,
    DefaultKeyedStateStore<K>,
    GovernorClock<C>,
    NoOpMiddleware<Duration>,
>;

/// `limit` permits per `window` as a GCRA quota: a burst of `limit`, one
/// permit coming back every `window / limit`.
fn quota(limit: u32, window: Duration) -> Result<Quota, LimiterConfigError> {
    let burst = NonZeroU32::new(limit).ok_or(LimiterConfigError::ZeroLimit)?;
    if window < Duration::from_micros(1) {
        return Err(LimiterConfigError::ZeroWindow);
    }
    if window > MAX_LIMITER_WINDOW {
        return Err(LimiterConfigError::WindowTooLong(window));
    }
    Quota::with_period(window / limit)
        .map(|quota| quota.allow_burst(burst))
        .ok_or(LimiterConfigError::ZeroWindow)
}

/// What governor's answer means as a [`Decision`].
/// `now` is read only for a denial: an allowed check reads the clock once,
/// inside governor.
fn decide<E>(
    outcome: Result<Result<(), governor::NotUntil<Duration>>, E>,
    now: impl FnOnce() -> Duration,
) -> Decision {
    match outcome {
        Ok(Ok(())) => Decision::Allowed,
        Ok(Err(not_until)) => Decision::Denied {
            retry_after: not_until.wait_time_from(now()),
        },
        // More than the burst: it can never be granted at once.
        Err(_) => NEVER,
    }
}

/// The answer to a request that can never be granted at once.
const NEVER: Decision = Decision::Denied {
    retry_after: Duration::MAX,
};

/// `limit` permits per `window` as a token bucket with one timestamp of
/// state: GCRA, as implemented by `governor`.
///
/// GCRA keeps the "theoretical arrival time" (TAT) of the next permit. A
/// request is allowed if the TAT is at most one window ahead of now, and
/// pushes it further by the period `window / limit`. That is a token bucket
/// of `limit` tokens refilled one per period: a full burst of `limit` at
/// once, then one permit per period. Its guarantee is over every span, not
/// per window: in any span of length `d`, at most `limit + d / period`
/// grants. It is exact (no estimate, unlike the sliding-window counter) and
/// its memory does not grow with the limit (unlike the sliding log).
pub struct Gcra<C: Clock = SystemClock> {
    limiter: DirectLimiter<C>,
    clock: C,
    /// The most permits one request can get (the limit).
    burst: u32,
}

impl Gcra<SystemClock> {
    /// `limit` (at least 1) permits per `window` (at least 1 µs), on the real
    /// clock.
    pub fn new(limit: u32, window: Duration) -> Result<Self, LimiterConfigError> {
        Self::with_clock(limit, window, SystemClock::default())
    }
}

impl<C: Clock + Clone> Gcra<C> {
    /// The same, on `clock`.
    pub fn with_clock(
        limit: u32,
        window: Duration,
        clock: C,
    ) -> Result<Self, LimiterConfigError> {
        let quota = quota(limit, window)?;
        Ok(Gcra {
            limiter: governor::RateLimiter::direct_with_clock(
                quota,
                GovernorClock(clock.clone()),
            ),
            clock,
            burst: limit,
        })
    }

    /// The decision for `n` permits now, taking them if allowed.
    pub fn check_n(&self, n: u32) -> Decision {
        let Some(n) = NonZeroU32::new(n) else {
            return Decision::Allowed;
        };
        if n.get() > self.burst {
            // Never at once. Checked here: governor multiplies the period
            // by `n` first, which overflows for a large `n`.
            return NEVER;
        }
        let outcome = self.limiter.check_n(n);
        decide(outcome, || self.clock.now())
    }
}

impl<C: Clock + Clone> RateLimiter for Gcra<C> {
    type Error = Infallible;

    async fn try_acquire_n(&self, n: u32) -> Result<Decision, Infallible> {
        Ok(self.check_n(n))
    }
}

/// One GCRA limit per key (per client, per IP address, per tenant), with
/// memory that cannot grow without bound.
///
/// A keyed limiter remembers a timestamp for every key it has seen. Left
/// alone, a stream of distinct keys (a scan, spoofed addresses) grows it
/// forever; governor's own keyed limiter leaves pruning to the caller. This
/// one prunes by itself: at most once every `window`, the first check after
/// the window has passed drops every key whose state has gone back to
/// "fresh" (its permits have all come back). Dropping such a key changes no
/// decision, since a new key starts fresh too.
///
/// The bound: a prune keeps the keys used in the last two windows (governor
/// keeps one window of margin), and a window of new keys may arrive before
/// the next prune, so at most the keys of three windows are held. Memory is
/// proportional to the number of distinct keys seen per window, not to the
/// number seen since start. [`KeyedGcra::prune`] prunes
/// at once, for callers that want a timer instead.
pub struct KeyedGcra<K: Hash + Eq + Clone, C: Clock = SystemClock> {
    limiter: KeyedLimiter<K, C>,
    clock: C,
    /// The most permits one request can get (the limit).
    burst: u32,
    prune_every: Duration,
    /// When the last prune ran, in nanoseconds on `clock`.
    last_prune_nanos: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedGcra<K, SystemClock> {
    /// `limit` (at least 1) permits per `window` (at least 1 µs) for each
    /// key, on the real clock.
    pub fn new(limit: u32, window: Duration) -> Result<Self, LimiterConfigError> {
        Self::with_clock(limit, window, SystemClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> KeyedGcra<K, C> {
    /// The same, on `clock`.
    pub fn with_clock(
        limit: u32,
        window: Duration,
        clock: C,
    ) -> Result<Self, LimiterConfigError> {
        let quota = quota(limit, window)?;
        Ok(KeyedGcra {
            limiter: governor::RateLimiter::dashmap_with_clock(
                quota,
                GovernorClock(clock.clone()),
            ),
            burst: limit,
            last_prune_nanos: AtomicU64::new(nanos(clock.now())),
            clock,
            prune_every: window,
        })
    }

    /// The decision for `n` permits for `key` now, taking them if allowed.
    pub fn check_key_n(&self, key: &K, n: u32) -> Decision {
        self.prune_if_due();
        let Some(n) = NonZeroU32::new(n) else {
            return Decision::Allowed;
        };
        if n.get() > self.burst {
            return NEVER;
        }
        let outcome = self.limiter.check_key_n(key, n);
        decide(outcome, || self.clock.now())
    }

    /// The decision for one permit for `key` now.
    pub fn check_key(&self, key: &K) -> Decision {
        self.check_key_n(key, 1)
    }

    /// How many keys are remembered now.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// True if no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }

    /// Drops every key whose permits have all come back, now.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        tracing::trace!(keys = self.limiter.len(), "pruned idle keys");
    }

    /// Prunes if a window has passed since the last prune. Only the thread
    /// that wins the compare-and-swap prunes; the others go on at once.
    fn prune_if_due(&self) {
        let now = nanos(self.clock.now());
        let last = self.last_prune_nanos.load(Relaxed);
        if now.saturating_sub(last) < nanos(self.prune_every) {
            return;
        }
        if self
            .last_prune_nanos
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
        {
            self.prune();
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn bad_quotas_are_refused() {
        assert_eq!(
            Gcra::new(0, Duration::from_secs(1)).err(),
            Some(LimiterConfigError::ZeroLimit)
        );
        assert_eq!(
            Gcra::new(5, Duration::ZERO).err(),
            Some(LimiterConfigError::ZeroWindow)
        );
    }

    #[test]
    fn a_burst_then_one_permit_per_period() {
        let clock = ManualClock::new();
        let gcra = Gcra::with_clock(10, Duration::from_secs(1), clock.clone()).unwrap();
        for _ in 0..10 {
            assert_eq!(gcra.check_n(1), Decision::Allowed);
        }
        // The eleventh waits for one period, 100 ms.
        assert_eq!(
            gcra.check_n(1),
            Decision::Denied {
                retry_after: Duration::from_millis(100)
            }
        );
        clock.advance(Duration::from_millis(99));
        assert!(!gcra.check_n(1).is_allowed());
        clock.advance(Duration::from_millis(1));
        assert!(gcra.check_n(1).is_allowed());
        assert!(!gcra.check_n(1).is_allowed());
    }

    #[test]
    fn every_span_conforms_to_burst_plus_rate() {
        // Requests every 7 ms for 10 s of virtual time. For every pair of
        // grants, the grants between them (both included) are at most the
        // burst plus one per period elapsed: GCRA's definition.
        let clock = ManualClock::new();
        let gcra = Gcra::with_clock(10, Duration::from_secs(1), clock.clone()).unwrap();
        let period = Duration::from_millis(100);
        let mut grants = Vec::new();
        for _ in 0..1_430 {
            if gcra.check_n(1).is_allowed() {
                grants.push(clock.now());
            }
            clock.advance(Duration::from_millis(7));
        }
        for (i, &last) in grants.iter().enumerate() {
            for (j, &first) in grants[..=i].iter().enumerate() {
                let allowed =
                    10 + ((last - first).as_nanos() / period.as_nanos()) as usize;
                assert!(
                    i - j < allowed,
                    "{} grants in {:?}",
                    i - j + 1,
                    last - first
                );
            }
        }
        // And the long-run rate holds: 10 per second over 10 s, plus the burst.
        assert!(
            (100..=111).contains(&grants.len()),
            "{} grants",
            grants.len()
        );
    }

    #[test]
    fn more_than_the_burst_is_never_granted() {
        let gcra =
            Gcra::with_clock(3, Duration::from_secs(1), ManualClock::new()).unwrap();
        assert_eq!(
            gcra.check_n(4),
            Decision::Denied {
                retry_after: Duration::MAX
            }
        );
        assert!(gcra.check_n(3).is_allowed());
    }

    #[test]
    fn keys_are_limited_separately() {
        let keyed =
            KeyedGcra::with_clock(2, Duration::from_secs(1), ManualClock::new())
                .unwrap();
        assert!(keyed.check_key(&"a").is_allowed());
        assert!(keyed.check_key(&"a").is_allowed());
        assert!(!keyed.check_key(&"a").is_allowed());
        assert!(keyed.check_key(&"b").is_allowed());
    }

    #[test]
    fn idle_keys_are_evicted_and_busy_ones_kept() {
        let clock = ManualClock::new();
        let keyed =
            KeyedGcra::with_clock(5, Duration::from_secs(1), clock.clone()).unwrap();
        // A scan: 10,000 distinct keys, once each.
        for key in 0..10_000u32 {
            assert!(keyed.check_key(&key).is_allowed());
        }
        assert_eq!(keyed.len(), 10_000);
        // A busy key uses its whole burst just before the next prune.
        clock.advance(Duration::from_millis(999));
        for _ in 0..5 {
            assert!(keyed.check_key(&u32::MAX).is_allowed());
        }
        // A window later, the next check prunes: the scan's keys have all
        // their permits back and go; the busy key is still limited, so it stays.
        clock.advance(Duration::from_millis(1));
        assert!(!keyed.check_key(&u32::MAX).is_allowed());
        assert_eq!(keyed.len(), 1);
        // Pruning changed no decision: the busy key is denied, until its
        // permits come back.
        assert!(!keyed.check_key(&u32::MAX).is_allowed());
        clock.advance(Duration::from_millis(200));
        assert!(keyed.check_key(&u32::MAX).is_allowed());
    }

    #[test]
    fn memory_is_bounded_by_the_keys_of_recent_windows() {
        // A new key every millisecond for 60 s: without pruning 60,000 keys.
        let clock = ManualClock::new();
        let keyed =
            KeyedGcra::with_clock(1, Duration::from_secs(1), clock.clone()).unwrap();
        let mut most = 0;
        for key in 0..60_000u32 {
            keyed.check_key(&key);
            most = most.max(keyed.len());
            clock.advance(Duration::from_millis(1));
        }
        // Keys of the last three windows at most: 3,000.
        assert!(most <= 3_000, "held {most} keys");
        assert!(keyed.len() <= 3_000);
    }
}
