//! The lesson's versions, beside ours: each written here in Rust as the
//! lesson wrote it in Go, with a test that shows what goes wrong. The
//! chapters include them from here, so what the book shows compiles and
//! fails as it says.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cpr_resilience::circuit_breaker::State;
use cpr_resilience::{CircuitBreaker, CircuitBreakerConfig, ManualClock};

// ---------------------------------------------------------------------
// Rate limits: the log trimmed on every call.

/// The lesson's limiter: the times of the granted requests in a list,
/// every entry looked at on every call to drop the old ones.
// ANCHOR: lesson_limiter
struct LessonLimiter {
    limit: usize,
    window: Duration,
    granted: Mutex<Vec<Instant>>,
    /// For the test: entries looked at, over all calls.
    looked_at: AtomicUsize,
}

impl LessonLimiter {
    fn allow(&self, now: Instant) -> bool {
        let mut granted = self.granted.lock().unwrap();
        self.looked_at.fetch_add(granted.len(), SeqCst);
        granted.retain(|at| now.duration_since(*at) < self.window);
        if granted.len() < self.limit {
            granted.push(now);
            true
        } else {
            false
        }
    }
}
// ANCHOR_END: lesson_limiter

/// Under a load above the limit the list stays full, so every call looks
/// at `limit` entries: a limit 200 times higher costs 200 times more per
/// call, under the lock every caller shares.
#[test]
fn the_lessons_limiter_costs_grow_with_its_limit() {
    let per_call = |limit: usize| {
        let limiter = LessonLimiter {
            limit,
            window: Duration::from_secs(1),
            granted: Mutex::new(Vec::new()),
            looked_at: AtomicUsize::new(0),
        };
        let start = Instant::now();
        // Twice the limit per second, for 3 s of virtual time.
        let calls = 6 * limit;
        for i in 0..calls {
            let now = start + Duration::from_secs_f64(i as f64 / (2 * limit) as f64);
            limiter.allow(now);
        }
        limiter.looked_at.load(SeqCst) as f64 / calls as f64
    };
    let (small, large) = (per_call(10), per_call(2_000));
    assert!((5.0..=10.0).contains(&small), "{small}");
    assert!(large >= 1_000.0, "{large} entries looked at per call");
    assert!(large / small > 100.0, "{small} → {large}");
}

// ---------------------------------------------------------------------
// Circuit breaker: half-open lets everyone through.

/// The lesson's breaker: open after `threshold` consecutive failures; after
/// the timeout, half-open — where every caller is let through until one
/// of them reports back.
// ANCHOR: lesson_breaker
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LessonState {
    Closed,
    Open,
    HalfOpen,
}

struct LessonBreaker {
    threshold: u32,
    timeout: Duration,
    // The state, the consecutive failures, and when it opened.
    inner: Mutex<(LessonState, u32, Instant)>,
}

impl LessonBreaker {
    fn allow(&self, now: Instant) -> bool {
        let mut inner = self.inner.lock().unwrap();
        match inner.0 {
            LessonState::Closed | LessonState::HalfOpen => true,
            LessonState::Open if now.duration_since(inner.2) >= self.timeout => {
                inner.0 = LessonState::HalfOpen;
                true
            }
            LessonState::Open => false,
        }
    }

    fn record(&self, ok: bool, now: Instant) {
        let mut inner = self.inner.lock().unwrap();
        if ok {
            *inner = (LessonState::Closed, 0, inner.2);
            return;
        }
        inner.1 += 1;
        if inner.0 == LessonState::HalfOpen || inner.1 >= self.threshold {
            *inner = (LessonState::Open, inner.1, now);
        }
    }
}
// ANCHOR_END: lesson_breaker

/// The dependency has just recovered, and 50 callers arrive together in
/// half-open: the lesson lets all 50 through; ours lets exactly the
/// trials it was configured for.
#[test]
fn the_lessons_breaker_lets_every_caller_through_in_half_open() {
    let start = Instant::now();
    let lesson = LessonBreaker {
        threshold: 5,
        timeout: Duration::from_secs(1),
        inner: Mutex::new((LessonState::Closed, 0, start)),
    };
    for _ in 0..5 {
        assert!(lesson.allow(start));
        lesson.record(false, start);
    }
    assert!(!lesson.allow(start), "open");
    let later = start + Duration::from_secs(2);
    let through = (0..50).filter(|_| lesson.allow(later)).count();
    assert_eq!(through, 50, "the lesson let {through} through in half-open");

    let clock = ManualClock::new();
    let ours = CircuitBreaker::with_clock(consecutive(5), clock.clone());
    for _ in 0..5 {
        ours.try_acquire().unwrap().failure();
    }
    clock.advance(Duration::from_secs(2));
    let permits: Vec<_> = (0..50).filter_map(|_| ours.try_acquire().ok()).collect();
    assert_eq!(permits.len(), 3, "exactly the trial calls");
    assert_eq!(ours.state(), State::HalfOpen);
}

/// The lesson's "open after N consecutive failures", in the rate-based
/// configuration: a window of the last N calls, all of which must have
/// failed (a failure rate of 100 %), judged from the Nth call on.
// ANCHOR: consecutive
fn consecutive(failures: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .count_based_window(failures)
        .minimum_number_of_calls(failures)
        .failure_rate_threshold(100.0)
        .wait_in_open(Duration::from_secs(1))
        .permitted_calls_in_half_open(3)
        .build()
        .expect("a valid configuration")
}
// ANCHOR_END: consecutive

/// Both breakers, fed the same 5,000 outcomes (a seeded mix with runs of
/// failures), open at the same calls.
#[test]
fn consecutive_failures_map_onto_a_full_window_at_100_percent() {
    let start = Instant::now();
    let lesson = LessonBreaker {
        threshold: 5,
        timeout: Duration::from_secs(3600),
        inner: Mutex::new((LessonState::Closed, 0, start)),
    };
    let ours = CircuitBreaker::with_clock(consecutive(5), ManualClock::new());
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut openings = 0;
    for call in 0..5_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let ok = seed % 10 < 6; // 40 % failures: runs of 5 happen
        lesson.record(ok, start);
        ours.try_acquire()
            .unwrap()
            .record(&if ok { Ok(()) } else { Err(Failed) });
        let lesson_open = lesson.inner.lock().unwrap().0 == LessonState::Open;
        assert_eq!(lesson_open, ours.state() == State::Open, "call {call}");
        if lesson_open {
            openings += 1;
            // Both closed again, to go on comparing from a clean slate.
            *lesson.inner.lock().unwrap() = (LessonState::Closed, 0, start);
            ours.reset();
        }
    }
    assert!(openings > 10, "only {openings} openings: a weak comparison");
}

#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Failed;

// ---------------------------------------------------------------------
// Adaptive limits: check, then add.

/// The lesson's limiter: a count in flight and a maximum, checked and then
/// incremented — two steps.
// ANCHOR: lesson_adaptive
struct LessonAdaptive {
    in_flight: AtomicU32,
    max: AtomicU32,
}

impl LessonAdaptive {
    fn has_room(&self) -> bool {
        self.in_flight.load(SeqCst) < self.max.load(SeqCst)
    }

    fn enter(&self) {
        self.in_flight.fetch_add(1, SeqCst);
    }

    fn try_acquire(&self) -> bool {
        if self.has_room() {
            // Another caller can pass the same check right here.
            self.enter();
            true
        } else {
            false
        }
    }
}
// ANCHOR_END: lesson_adaptive

/// Two callers, one place: both check before either adds, and both get
/// in. (Our limiter checks and adds in one compare-and-swap, so there is
/// no such moment; its own test races 8 threads for 7 places.)
#[test]
fn the_lessons_check_then_add_lets_two_callers_into_one_place() {
    let lesson = LessonAdaptive {
        in_flight: AtomicU32::new(0),
        max: AtomicU32::new(1),
    };
    // The interleaving two threads can take: A checks, B checks, both add.
    let (a, b) = (lesson.has_room(), lesson.has_room());
    assert!(a && b);
    lesson.enter();
    lesson.enter();
    assert_eq!(
        lesson.in_flight.load(SeqCst),
        2,
        "two in flight, the maximum is 1"
    );
    // Sequentially, the same code is right: the bug is only in the gap.
    let sequential = LessonAdaptive {
        in_flight: AtomicU32::new(0),
        max: AtomicU32::new(1),
    };
    assert!(sequential.try_acquire());
    assert!(!sequential.try_acquire());
}
