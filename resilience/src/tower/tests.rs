use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::adaptive::{AdaptiveLimiter, Aimd, LimitBounds};
use crate::circuit_breaker::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, State,
};
use crate::clock::ManualClock;
use crate::{SlidingWindow, Vegas};

#[derive(Debug, thiserror::Error)]
#[error("the backend failed")]
struct BackendDown;

#[tokio::test]
async fn clones_of_a_rate_limited_service_share_one_budget() {
    let limiter = Arc::new(
        SlidingWindow::with_clock(5, Duration::from_secs(1), ManualClock::new())
            .unwrap(),
    );
    let made = Arc::new(AtomicU32::new(0));
    let backend = {
        let made = made.clone();
        service_fn(move |request: u32| {
            made.fetch_add(1, SeqCst);
            async move { Ok::<_, Infallible>(request) }
        })
    };
    let service = RateLimitLayer::new(limiter).layer(backend);
    // Four clones (say, four connections), five requests each.
    let mut allowed = 0;
    let mut limited = 0;
    for clone in 0..4 {
        let mut service = service.clone();
        for i in 0..5 {
            match service.ready().await.unwrap().call(clone * 10 + i).await {
                Ok(_) => allowed += 1,
                Err(RateLimitError::Limited { retry_after }) => {
                    assert!(retry_after > Duration::ZERO);
                    limited += 1;
                }
                Err(other) => panic!("{other}"),
            }
        }
    }
    // One budget of 5 for all of them, not 5 each.
    assert_eq!((allowed, limited), (5, 15));
    assert_eq!(
        made.load(SeqCst),
        5,
        "refused requests never reached the backend"
    );
}

/// tokio's clock as a limiter clock: with tokio's time paused, the
/// limiter and the sleeps it causes share one virtual time.
#[derive(Debug, Clone)]
struct TokioClock(tokio::time::Instant);

impl crate::Clock for TokioClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiting_rate_limit_paces_instead_of_refusing() {
    // A burst of 1, then one per 10 ms: three requests all succeed, the
    // third 20 ms (of virtual time) after the first.
    let clock = TokioClock(tokio::time::Instant::now());
    let limiter = Arc::new(
        crate::Gcra::with_clock(1, Duration::from_millis(10), clock.clone()).unwrap(),
    );
    let service = RateLimitLayer::waiting(limiter)
        .layer(service_fn(|r: u32| async move { Ok::<_, Infallible>(r) }));
    let mut done_at = Vec::new();
    for i in 0..3 {
        assert_eq!(service.clone().oneshot(i).await.unwrap(), i);
        done_at.push(crate::Clock::now(&clock).as_millis());
    }
    assert_eq!(done_at, [0, 10, 20]);
}

#[tokio::test]
async fn clones_behind_a_breaker_share_it() {
    let breaker = Arc::new(CircuitBreaker::with_clock(
        CircuitBreakerConfig::builder()
            .count_based_window(4)
            .minimum_number_of_calls(4)
            .build()
            .unwrap(),
        ManualClock::new(),
    ));
    let made = Arc::new(AtomicU32::new(0));
    let backend = {
        let made = made.clone();
        service_fn(move |_: ()| {
            made.fetch_add(1, SeqCst);
            async { Err::<(), _>(BackendDown) }
        })
    };
    let service = CircuitBreakerLayer::new(breaker.clone()).layer(backend);
    // Four clones fail once each: together they open the one breaker.
    for _ in 0..4 {
        let err = service.clone().oneshot(()).await.unwrap_err();
        assert!(matches!(err, BreakerError::Inner(BackendDown)));
    }
    assert_eq!(breaker.state(), State::Open);
    for _ in 0..4 {
        let err = service.clone().oneshot(()).await.unwrap_err();
        assert!(matches!(err, BreakerError::NotPermitted(_)));
    }
    assert_eq!(made.load(SeqCst), 4);
}

#[tokio::test]
async fn clones_behind_an_adaptive_limit_share_it() {
    let limiter = AdaptiveLimiter::with_clock(
        Aimd::new(LimitBounds::new(2, 2), 2),
        ManualClock::new(),
    );
    let (release, released) = tokio::sync::watch::channel(false);
    let backend = service_fn(move |_: ()| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Ok::<_, Infallible>(())
        }
    });
    let service = AdaptiveLimitLayer::new(limiter.clone()).layer(backend);
    // Two requests in flight through two different clones...
    let first = tokio::spawn(service.clone().oneshot(()));
    let second = tokio::spawn(service.clone().oneshot(()));
    while limiter.inflight() < 2 {
        tokio::task::yield_now().await;
    }
    // ...and a third clone is shed.
    let err = service.clone().oneshot(()).await.unwrap_err();
    assert!(matches!(
        err,
        OverloadedOr::Overloaded(Overloaded { limit: 2 })
    ));
    release.send(true).unwrap();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(limiter.inflight(), 0);
    // Vegas works behind the layer too.
    let _ = AdaptiveLimitLayer::new(AdaptiveLimiter::new(Vegas::new(
        LimitBounds::new(1, 10),
        5,
    )));
}
