use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;

#[derive(Debug, thiserror::Error)]
#[error("the dependency failed")]
struct Boom;

#[derive(Debug, thiserror::Error)]
#[error("bad request")]
struct BadRequest;

fn breaker(config: CircuitBreakerConfig) -> (CircuitBreaker<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    (CircuitBreaker::with_clock(config, clock.clone()), clock)
}

/// Opens at 50 % over the last 10 calls, once 10 are in; 1 s open; 3 trials.
fn small() -> CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder()
        .count_based_window(10)
        .minimum_number_of_calls(10)
        .wait_in_open(Duration::from_secs(1))
        .permitted_calls_in_half_open(3)
}

fn succeed<C: Clock>(b: &CircuitBreaker<C>) -> Result<(), BreakerError<Boom>> {
    b.call(|| Ok(()))
}

fn fail<C: Clock>(b: &CircuitBreaker<C>) -> Result<(), BreakerError<Boom>> {
    b.call(|| Err(Boom))
}

fn open_it(b: &CircuitBreaker<ManualClock>) {
    for _ in 0..10 {
        let _ = fail(b);
    }
    assert_eq!(b.state(), State::Open);
}

#[test]
fn opens_at_the_failure_rate_only_once_the_minimum_is_in() {
    let (b, _) = breaker(small().build().unwrap());
    for _ in 0..4 {
        succeed(&b).unwrap();
    }
    for _ in 0..5 {
        assert!(matches!(fail(&b), Err(BreakerError::Inner(Boom))));
    }
    // 5 of 9 failed, but 9 < the minimum of 10.
    assert_eq!(b.state(), State::Closed);
    succeed(&b).unwrap();
    // 5 of 10: 50 %, the threshold.
    assert_eq!(b.state(), State::Open);
    let refused = succeed(&b).unwrap_err();
    assert!(matches!(
        refused,
        BreakerError::NotPermitted(CallNotPermitted { state: State::Open })
    ));
    assert_eq!(b.metrics().not_permitted_calls, 1);
}

#[test]
fn a_rate_below_the_threshold_keeps_it_closed() {
    let (b, _) = breaker(small().build().unwrap());
    // 4 failures in every 10, for 1,000 calls.
    for i in 0..1_000 {
        let _ = if i % 10 < 4 { fail(&b) } else { succeed(&b) };
        assert_eq!(b.state(), State::Closed);
    }
    let metrics = b.metrics();
    assert_eq!((metrics.calls, metrics.failed_calls), (10, 4));
}

#[test]
fn slow_calls_open_it_too() {
    let (b, clock) = breaker(
        small()
            .slow_call_duration_threshold(Duration::from_millis(500))
            .slow_call_rate_threshold(60.0)
            .build()
            .unwrap(),
    );
    for i in 0..10 {
        b.call(|| {
            if i < 6 {
                clock.advance(Duration::from_millis(501)); // longer than 500 ms
            }
            Ok::<_, Boom>(())
        })
        .unwrap();
    }
    // No failure at all, but 6 of 10 slow.
    assert_eq!(b.metrics().failed_calls, 0);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn after_the_wait_trials_decide_closed() {
    let (b, clock) = breaker(small().build().unwrap());
    open_it(&b);
    clock.advance(Duration::from_millis(999));
    assert!(succeed(&b).is_err());
    clock.advance(Duration::from_millis(1));
    // The first call after the wait moves it to half-open and is a trial.
    succeed(&b).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    succeed(&b).unwrap();
    fail(&b).unwrap_err();
    // 1 of 3 trials failed: 33 % < 50 %, so closed, with an empty window.
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.metrics().calls, 0);
}

#[test]
fn failed_trials_reopen_for_exponentially_longer() {
    let (b, clock) = breaker(
        small()
            .exponential_wait_in_open(
                Duration::from_secs(1),
                2.0,
                Duration::from_secs(3),
            )
            .build()
            .unwrap(),
    );
    open_it(&b);
    for wait in [1, 2, 3, 3] {
        clock.advance(Duration::from_secs(wait) - Duration::from_millis(1));
        assert!(succeed(&b).is_err(), "still open just before {wait} s");
        clock.advance(Duration::from_millis(1));
        for _ in 0..3 {
            let _ = fail(&b);
        }
        assert_eq!(b.state(), State::Open);
    }
    // Recovery closes it and resets the wait.
    clock.advance(Duration::from_secs(3));
    for _ in 0..3 {
        succeed(&b).unwrap();
    }
    assert_eq!(b.state(), State::Closed);
    open_it(&b);
    clock.advance(Duration::from_secs(1));
    assert!(succeed(&b).is_ok(), "the wait is back to 1 s");
}

#[test]
fn half_open_lets_exactly_the_permitted_calls_through() {
    let (b, clock) = breaker(small().build().unwrap());
    open_it(&b);
    clock.advance(Duration::from_secs(1));
    let trials: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    // While the trials run, everyone else is refused.
    for _ in 0..100 {
        assert_eq!(
            b.try_acquire().err(),
            Some(CallNotPermitted {
                state: State::HalfOpen
            })
        );
    }
    for trial in trials {
        trial.success();
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn hammering_half_open_from_many_threads_lets_exactly_n_through() {
    const TRIALS: u32 = 5;
    const THREADS: usize = 16;
    let clock = ManualClock::new();
    let b = Arc::new(CircuitBreaker::with_clock(
        small()
            .permitted_calls_in_half_open(TRIALS)
            .build()
            .unwrap(),
        clock.clone(),
    ));
    for round in 0..200 {
        // Open it, then let the wait pass: the next callers race for half-open.
        b.force_open();
        b.reset();
        open_it(&b);
        clock.advance(Duration::from_secs(1));
        let granted = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(std::sync::Barrier::new(THREADS));
        let all_tried = Arc::new(std::sync::Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (b, granted, start, all_tried) =
                    (b.clone(), granted.clone(), start.clone(), all_tried.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let mut held = Vec::new();
                    for _ in 0..10 {
                        if let Ok(permit) = b.try_acquire() {
                            granted.fetch_add(1, SeqCst);
                            held.push(permit);
                        }
                    }
                    // Hold the permits until everyone has tried, so that no
                    // trial ends (and no state changes) during the race.
                    all_tried.wait();
                    for permit in held {
                        permit.success();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(granted.load(SeqCst), TRIALS as usize, "round {round}");
        assert_eq!(b.state(), State::Closed, "round {round}");
    }
}

#[test]
fn trials_that_take_too_long_reopen_it() {
    let (b, clock) = breaker(
        small()
            .max_wait_in_half_open(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    open_it(&b);
    clock.advance(Duration::from_secs(1));
    let stuck = b.try_acquire().unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        b.try_acquire().err(),
        Some(CallNotPermitted { state: State::Open })
    );
    // The late trial's outcome belongs to a phase that is over.
    stuck.success();
    assert_eq!(b.state(), State::Open);
}

#[test]
fn errors_the_ignore_predicate_accepts_are_ignored() {
    let (b, clock) = breaker(
        small()
            .ignore_error_if(|e| e.is::<BadRequest>())
            .build()
            .unwrap(),
    );
    for _ in 0..50 {
        let r: Result<(), _> = b.call(|| Err(BadRequest));
        assert!(matches!(r, Err(BreakerError::Inner(BadRequest))));
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.metrics().calls, 0);
    // In half-open, an ignored trial gives its permit back.
    open_it(&b);
    clock.advance(Duration::from_secs(1));
    for _ in 0..10 {
        let _ = b.call(|| Err::<(), _>(BadRequest));
    }
    assert_eq!(b.state(), State::HalfOpen);
    for _ in 0..3 {
        succeed(&b).unwrap();
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn outcomes_from_an_earlier_phase_do_not_count() {
    let (b, clock) = breaker(small().build().unwrap());
    // A slow call starts while closed...
    let early = b.try_acquire().unwrap();
    open_it(&b);
    clock.advance(Duration::from_secs(1));
    succeed(&b).unwrap(); // first trial, half-open now
    // ...and fails during half-open: not a trial, it must not count.
    early.failure();
    assert_eq!(b.metrics().calls, 1);
    succeed(&b).unwrap();
    succeed(&b).unwrap();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn a_time_based_window_forgets_old_failures() {
    let (b, clock) = breaker(
        CircuitBreakerConfig::builder()
            .time_based_window(10)
            .minimum_number_of_calls(5)
            .build()
            .unwrap(),
    );
    for _ in 0..4 {
        let _ = fail(&b);
    }
    // Ten seconds later those four are out of the window.
    clock.advance(Duration::from_secs(10));
    for _ in 0..6 {
        succeed(&b).unwrap();
    }
    let _ = fail(&b);
    assert_eq!(b.state(), State::Closed, "1 failure of 7 in the window");
    for _ in 0..6 {
        let _ = fail(&b);
    }
    assert_eq!(b.state(), State::Open, "7 of 13");
}

#[test]
fn forced_open_and_disabled_are_left_only_by_reset() {
    let (b, clock) = breaker(small().build().unwrap());
    b.force_open();
    clock.advance(Duration::from_secs(3_600));
    assert_eq!(
        succeed(&b).err().map(|e| e.to_string()),
        Some(
            CallNotPermitted {
                state: State::ForcedOpen
            }
            .to_string()
        )
    );
    b.disable();
    for _ in 0..100 {
        let _ = fail(&b);
    }
    assert_eq!(b.state(), State::Disabled);
    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.metrics().calls, 0);
}

#[test]
fn subscribers_see_every_transition_in_order() {
    let (b, clock) = breaker(small().build().unwrap());
    let mut events = b.subscribe();
    open_it(&b);
    clock.advance(Duration::from_secs(1));
    for _ in 0..3 {
        succeed(&b).unwrap();
    }
    b.force_open();
    let mut seen = Vec::new();
    while let Ok(StateTransition { from, to }) = events.try_recv() {
        seen.push((from, to));
    }
    assert_eq!(
        seen,
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed),
            (State::Closed, State::ForcedOpen),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_async_trial_gives_its_permit_back() {
    let (b, clock) = breaker(small().permitted_calls_in_half_open(1).build().unwrap());
    open_it(&b);
    clock.advance(Duration::from_secs(1));
    let hung = b.call_async(|| async {
        std::future::pending::<()>().await;
        Ok::<_, Boom>(())
    });
    // The trial hangs and its caller gives up.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), hung)
            .await
            .is_err()
    );
    // Its permit came back: the next trial runs and closes the breaker.
    b.call_async(|| async { Ok::<_, Boom>(()) }).await.unwrap();
    assert_eq!(b.state(), State::Closed);
}

// ---- Scenarios from resilience4j's own tests ----

/// resilience4j's `CircuitBreakerExceptionHandlingTest`
/// (`shouldRecordRuntimeExceptionAsFailureAndBusinessExceptionAsSuccess`,
/// `shouldIgnoreNumberFormatException`): an error the record predicate
/// rejects counts as a success; one the ignore predicate accepts is not
/// counted at all.
#[test]
fn record_error_if_counts_the_rest_as_successes_and_ignore_error_if_ignores() {
    let (b, _) = breaker(
        small()
            .record_error_if(|e| !e.is::<BadRequest>())
            .build()
            .unwrap(),
    );
    let _ = fail(&b);
    let _: Result<(), _> = b.call(|| Err(BadRequest));
    let m = b.metrics();
    assert_eq!(
        (m.calls, m.failed_calls),
        (2, 1),
        "a rejected error is a success"
    );

    let (b, _) = breaker(
        small()
            .ignore_error_if(|e| e.is::<BadRequest>())
            .build()
            .unwrap(),
    );
    let _ = fail(&b);
    let _: Result<(), _> = b.call(|| Err(BadRequest));
    let m = b.metrics();
    assert_eq!(
        (m.calls, m.failed_calls),
        (1, 1),
        "an ignored error is not counted"
    );
}

/// resilience4j counts a call as slow only when it takes *longer* than
/// `slowCallDurationThreshold` (`shouldOpenAfterSlowCallRateThresholdExceeded`
/// uses 5 s calls against 4 s): a call of exactly the threshold is not slow.
#[test]
fn a_call_exactly_as_long_as_the_slow_threshold_is_not_slow() {
    let (b, clock) = breaker(
        small()
            .slow_call_duration_threshold(Duration::from_secs(4))
            .build()
            .unwrap(),
    );
    for took in [4_000, 4_001] {
        b.call(|| {
            clock.advance(Duration::from_millis(took));
            Ok::<_, Boom>(())
        })
        .unwrap();
    }
    assert_eq!(b.metrics().slow_calls, 1, "only the 4.001 s call is slow");
}

/// resilience4j's half-open state uses `min(minimumNumberOfCalls,
/// permittedNumberOfCallsInHalfOpenState)` as its minimum: with 10 trials
/// permitted and a minimum of 2, two failed trials reopen it at once, and
/// two good ones close it, without waiting for the other eight.
#[test]
fn half_open_decides_once_the_minimum_number_of_trials_is_in() {
    let config = || {
        CircuitBreakerConfig::builder()
            .count_based_window(10)
            .minimum_number_of_calls(2)
            .wait_in_open(Duration::from_secs(1))
            .permitted_calls_in_half_open(10)
    };
    for (outcome, expected) in [(true, State::Open), (false, State::Closed)] {
        let (b, clock) = breaker(config().build().unwrap());
        let _ = fail(&b);
        let _ = fail(&b);
        assert_eq!(b.state(), State::Open);
        clock.advance(Duration::from_secs(1));
        for _ in 0..2 {
            let _ = if outcome { fail(&b) } else { succeed(&b) };
        }
        assert_eq!(b.state(), expected, "failing trials: {outcome}");
    }
}

/// resilience4j's `shouldTransitionBackToOpenStateWhenFailureRateIsAboveThreshold`:
/// after half-open reopens it, the metrics are the trials' (4 calls, 3
/// failed); `shouldForceOpenCircuitBreaker` and `shouldDisableCircuitBreaker`:
/// forced open and disabled start from an empty window.
#[test]
fn metrics_show_the_trials_after_reopening_and_nothing_when_forced_or_disabled() {
    let (b, clock) = breaker(small().permitted_calls_in_half_open(4).build().unwrap());
    open_it(&b);
    assert_eq!(b.metrics().calls, 10);
    clock.advance(Duration::from_secs(1));
    let _ = fail(&b);
    let _ = fail(&b);
    succeed(&b).unwrap();
    let _ = fail(&b);
    assert_eq!(b.state(), State::Open);
    let m = b.metrics();
    assert_eq!(
        (m.calls, m.failed_calls),
        (4, 3),
        "not the window from before"
    );

    for by_hand in [CircuitBreaker::force_open, CircuitBreaker::disable] {
        let (b, _) = breaker(small().build().unwrap());
        for _ in 0..5 {
            let _ = fail(&b);
        }
        by_hand(&b);
        let m = b.metrics();
        assert_eq!((m.calls, m.failed_calls), (0, 0), "{:?}", m.state);
    }
}

/// resilience4j schedules the move from half-open to open when
/// `maxWaitDurationInHalfOpenState` passes: the state is open on time, and
/// the wait in open counts from then, whether or not a call came.
#[test]
fn the_max_wait_in_half_open_reopens_on_time_without_a_call() {
    let (b, clock) = breaker(
        small()
            .max_wait_in_half_open(Duration::from_secs(2))
            .build()
            .unwrap(),
    );
    let mut events = b.subscribe();
    open_it(&b);
    clock.advance(Duration::from_secs(1));
    let _stuck = b.try_acquire().unwrap(); // half-open, one trial never ends
    clock.advance(Duration::from_secs(2));
    // No call since: the state is open all the same...
    assert_eq!(b.state(), State::Open);
    // ...and its wait of 1 s started when the max wait ran out, 2 s ago
    // on this clock's time: it is over, so a call gets a trial at once.
    clock.advance(Duration::from_millis(1_000));
    assert!(b.try_acquire().is_ok(), "the wait in open started late");
    let seen: Vec<State> =
        std::iter::from_fn(|| events.try_recv().ok().map(|t| t.to)).collect();
    assert_eq!(
        seen,
        [State::Open, State::HalfOpen, State::Open, State::HalfOpen]
    );
}

/// With the timer, subscribers hear of the max wait running out when it
/// does, with no call and no look at the state. On the real clock (the
/// timer is for `SystemClock`), with short waits.
#[tokio::test]
async fn the_half_open_timer_tells_subscribers_on_time() {
    let config = small()
        .wait_in_open(Duration::from_millis(50))
        .max_wait_in_half_open(Duration::from_millis(200))
        .build()
        .unwrap();
    let b = Arc::new(CircuitBreaker::new(config));
    let _timer = b.spawn_half_open_timer();
    let mut events = b.subscribe();
    for _ in 0..10 {
        let _ = fail(&b);
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    let _stuck = b.try_acquire().unwrap();
    let entered = std::time::Instant::now();
    assert_eq!(events.recv().await.unwrap().to, State::Open);
    assert_eq!(events.recv().await.unwrap().to, State::HalfOpen);
    let reopened = tokio::time::timeout(Duration::from_secs(2), events.recv()).await;
    assert_eq!(reopened.expect("not told").unwrap().to, State::Open);
    assert!(
        entered.elapsed() >= Duration::from_millis(190),
        "{:?}",
        entered.elapsed()
    );
}

/// Found by the configuration property test: no wait in open and a max
/// wait in half-open shorter than a step made `try_acquire` go round
/// open -> half-open -> open for ever. A call is now refused instead.
#[test]
fn no_wait_in_open_and_a_tiny_half_open_wait_cannot_spin_a_call_for_ever() {
    let config = small()
        .wait_in_open(Duration::ZERO)
        .max_wait_in_half_open(Duration::from_nanos(1))
        .build()
        .unwrap();
    let (b, clock) = breaker(config);
    open_it(&b);
    for _ in 0..100 {
        clock.advance(Duration::from_nanos(2));
        // Returns, one way or the other (it used to spin).
        let _ = b.try_acquire();
    }
    let b = CircuitBreaker::new(
        small()
            .wait_in_open(Duration::ZERO)
            .max_wait_in_half_open(Duration::from_nanos(1))
            .build()
            .unwrap(),
    );
    for _ in 0..10 {
        let _ = fail(&b);
    }
    for _ in 0..100 {
        let _ = b.try_acquire();
    }
}

/// The fast lane counts clean successes outside the lock; failures close
/// it until they leave the window. Four threads call at once, failing now
/// and then in even seconds; after each second the window's totals are
/// exactly what was called in the last two seconds: no success counted in
/// the lane is lost or counted twice, or lands in the wrong second.
#[test]
fn successes_counted_outside_the_lock_are_all_in_the_window() {
    const THREADS: u64 = 4;
    const CALLS: u64 = 5_000;
    const FAILURES: u64 = 5; // per thread, in even seconds
    let config = CircuitBreakerConfig::builder()
        .time_based_window(2)
        .minimum_number_of_calls(1)
        .build()
        .unwrap();
    let (b, clock) = breaker(config);
    let mut per_second = Vec::new();
    for second in 0..8u64 {
        let failing = second % 2 == 0;
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for i in 0..CALLS {
                        if failing && i % (CALLS / FAILURES) == 7 {
                            let _ = fail(&b);
                        } else {
                            succeed(&b).unwrap();
                        }
                    }
                });
            }
        });
        per_second.push(if failing { THREADS * FAILURES } else { 0 });
        let metrics = b.metrics();
        let last_two: u64 = per_second.iter().rev().take(2).sum();
        let seconds_in = per_second.len().min(2) as u64;
        assert_eq!(metrics.state, State::Closed);
        assert_eq!(
            metrics.calls,
            seconds_in * THREADS * CALLS,
            "second {second}"
        );
        assert_eq!(metrics.failed_calls, last_two, "second {second}");
        clock.advance(Duration::from_secs(1));
    }
}

/// With the lane open, a failure that brings the rate to the threshold
/// still opens the breaker: the successes counted in the lane are in the
/// window by then, and count toward the minimum number of calls.
#[test]
fn lane_successes_count_toward_the_minimum() {
    let (b, _) = breaker(small().build().unwrap());
    for _ in 0..5 {
        succeed(&b).unwrap(); // all in the lane: the window is clean
    }
    for _ in 0..4 {
        let _ = fail(&b);
    }
    assert_eq!(b.state(), State::Closed, "9 calls, under the minimum of 10");
    let _ = fail(&b);
    assert_eq!(b.state(), State::Open, "5 of 10 failed");
    let metrics = b.metrics();
    assert_eq!((metrics.calls, metrics.failed_calls), (10, 5));
}

#[test]
fn without_slow_call_detection_no_call_is_slow() {
    let config = small()
        .slow_call_duration_threshold(Duration::from_millis(10))
        .without_slow_call_detection()
        .build()
        .unwrap();
    let (b, clock) = breaker(config);
    for _ in 0..20 {
        b.call(|| {
            clock.advance(Duration::from_secs(1)); // far over the threshold
            Ok::<_, Boom>(())
        })
        .unwrap();
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.metrics().slow_calls, 0);
}
