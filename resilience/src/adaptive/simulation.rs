//! A deterministic simulation, in virtual time, of an adaptive limiter in
//! front of a server that slows down past a concurrency knee. The book's
//! plots come from it, and the tests check what the plots show.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::{AdaptiveLimiter, AdaptivePermit, LimitAlgorithm, Sample};
use crate::clock::{Clock, ManualClock};

/// A server that takes `base_latency` per request up to `knee` requests at
/// once, and `slowdown` × `base_latency` more for each request beyond: the
/// shape of a server whose threads, cores or disks are all busy, so that
/// extra requests queue. Clients give up after `timeout` (a drop).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulatedServer {
    /// Latency at or below the knee.
    pub base_latency: Duration,
    /// Concurrency the server handles without queueing.
    pub knee: u32,
    /// Extra latency per request over the knee, as a fraction of the base.
    pub slowdown: f64,
    /// Clients stop waiting after this long; the request counts as dropped.
    pub timeout: Duration,
}

impl SimulatedServer {
    /// The latency of a request that starts with `concurrency` in flight
    /// (itself included).
    pub fn latency(&self, concurrency: u32) -> Duration {
        let over = f64::from(concurrency.saturating_sub(self.knee));
        self.base_latency.mul_f64(1.0 + self.slowdown * over)
    }
}

/// Offered load: `per_second` arrivals, evenly spaced, until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    /// When this phase ends (from the start of the run).
    pub until: Duration,
    /// Arrivals per second during it (at least 1).
    pub per_second: u32,
}

/// What the run looked like over one sampling interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The end of the interval.
    pub at: Duration,
    /// The limit at `at`.
    pub limit: u32,
    /// Requests in flight at `at`.
    pub inflight: u32,
    /// Mean latency of the requests that finished in the interval (zero if none).
    pub mean_latency: Duration,
    /// Requests that finished in time.
    pub completed: u32,
    /// Requests that timed out.
    pub dropped: u32,
    /// Requests the limiter shed.
    pub rejected: u32,
}

/// No limit at all (a million), to compare the algorithms with.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLimit;

impl LimitAlgorithm for NoLimit {
    fn initial_limit(&self) -> u32 {
        1_000_000
    }

    fn update(&mut self, _: Sample) -> u32 {
        1_000_000
    }
}

/// The book's scenario: 20 ms per request up to 40 at once, 5 % slower for
/// each request beyond, clients giving up after 200 ms; offered 1,000
/// requests/s for 10 s, then 4,000/s (twice what the knee serves) for 30 s,
/// then 1,000/s for 20 s.
pub fn book_scenario() -> (SimulatedServer, Vec<Phase>) {
    let server = SimulatedServer {
        base_latency: Duration::from_millis(20),
        knee: 40,
        slowdown: 0.05,
        timeout: Duration::from_millis(200),
    };
    let phase = |until, per_second| Phase {
        until: Duration::from_secs(until),
        per_second,
    };
    (
        server,
        vec![phase(10, 1_000), phase(40, 4_000), phase(60, 1_000)],
    )
}

/// Runs `algorithm` against `server` under `load`, recording a [`Point`]
/// every `sample_every`. Deterministic: the same inputs give the same points.
pub fn run(
    server: SimulatedServer,
    load: &[Phase],
    algorithm: impl LimitAlgorithm + 'static,
    sample_every: Duration,
) -> Vec<Point> {
    let clock = ManualClock::new();
    let limiter = AdaptiveLimiter::with_clock(algorithm, clock.clone());
    let end = load.last().map_or(Duration::ZERO, |phase| phase.until);
    let sample_every = sample_every.max(Duration::from_millis(1));

    // Requests in flight, and when each finishes (earliest first).
    let mut requests: Vec<Option<(AdaptivePermit<ManualClock>, bool)>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut finishing: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();

    let mut points = Vec::new();
    let mut interval = Point {
        at: Duration::ZERO,
        limit: 0,
        inflight: 0,
        mean_latency: Duration::ZERO,
        completed: 0,
        dropped: 0,
        rejected: 0,
    };
    let mut latency_sum = Duration::ZERO;
    let mut next_arrival = Duration::ZERO;
    let mut next_sample = sample_every;
    // A small deterministic jitter, so requests do not move in lockstep.
    let mut jitter_state: u64 = 0x9E37_79B9_7F4A_7C15;

    while next_sample <= end {
        let next_finish = finishing.peek().map(|Reverse((at, _))| *at);
        let now = [Some(next_arrival), next_finish, Some(next_sample)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        clock.advance(now.saturating_sub(clock.now()));

        if next_finish == Some(now) {
            if let Some(Reverse((_, slot))) = finishing.pop()
                && let Some((permit, timed_out)) = requests[slot].take()
            {
                free.push(slot);
                if timed_out {
                    interval.dropped += 1;
                    permit.dropped();
                } else {
                    interval.completed += 1;
                    latency_sum += permit.elapsed();
                    permit.success();
                }
            }
        } else if next_arrival == now {
            let per_second = load
                .iter()
                .find(|phase| now < phase.until)
                .map_or(1, |phase| phase.per_second.max(1));
            next_arrival = now + Duration::from_secs(1) / per_second;
            match limiter.try_acquire() {
                None => interval.rejected += 1,
                Some(permit) => {
                    jitter_state = jitter_state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let jitter =
                        0.9 + 0.2 * ((jitter_state >> 11) as f64 / (1u64 << 53) as f64);
                    let latency = server.latency(limiter.inflight()).mul_f64(jitter);
                    let timed_out = latency > server.timeout;
                    let finishes = now + latency.min(server.timeout);
                    let slot = free.pop().unwrap_or_else(|| {
                        requests.push(None);
                        requests.len() - 1
                    });
                    requests[slot] = Some((permit, timed_out));
                    finishing.push(Reverse((finishes, slot)));
                }
            }
        } else {
            interval.at = now;
            interval.limit = limiter.limit();
            interval.inflight = limiter.inflight();
            interval.mean_latency = if interval.completed == 0 {
                Duration::ZERO
            } else {
                latency_sum / interval.completed
            };
            points.push(interval);
            interval.completed = 0;
            interval.dropped = 0;
            interval.rejected = 0;
            latency_sum = Duration::ZERO;
            next_sample = now + sample_every;
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::{Aimd, LimitBounds, Vegas};

    fn server() -> SimulatedServer {
        book_scenario().0
    }

    fn load() -> Vec<Phase> {
        book_scenario().1
    }

    fn between(points: &[Point], from: u64, to: u64) -> Vec<Point> {
        points
            .iter()
            .filter(|p| {
                p.at > Duration::from_secs(from) && p.at <= Duration::from_secs(to)
            })
            .copied()
            .collect()
    }

    fn mean_latency(points: &[Point]) -> Duration {
        let completed: u32 = points.iter().map(|p| p.completed).sum();
        let total: Duration = points.iter().map(|p| p.mean_latency * p.completed).sum();
        total / completed.max(1)
    }

    #[test]
    fn without_a_limit_the_overload_collapses_into_timeouts() {
        let points = run(server(), &load(), NoLimit, Duration::from_millis(100));
        let overload = between(&points, 20, 40);
        let dropped: u32 = overload.iter().map(|p| p.dropped).sum();
        let completed: u32 = overload.iter().map(|p| p.completed).sum();
        assert!(
            dropped > completed,
            "{dropped} dropped, {completed} completed"
        );
    }

    #[test]
    fn vegas_holds_latency_near_the_knee_under_overload() {
        let algorithm = Vegas::new(LimitBounds::new(1, 1_000), 20);
        let points = run(server(), &load(), algorithm, Duration::from_millis(100));
        let overload = between(&points, 20, 40);
        let latency = mean_latency(&overload);
        assert!(
            latency < Duration::from_millis(40),
            "mean latency {latency:?}"
        );
        assert_eq!(overload.iter().map(|p| p.dropped).sum::<u32>(), 0);
        // Near the knee of 40; probes halve it for two rounds now and then.
        let limits: Vec<u32> = overload.iter().map(|p| p.limit).collect();
        assert!(
            limits.iter().all(|&l| (15..=80).contains(&l)),
            "limits {limits:?}"
        );
        let mean = limits.iter().sum::<u32>() / limits.len() as u32;
        assert!((35..=60).contains(&mean), "mean limit {mean}");
        // Served: at least 80 % of what the knee can (40 / 20 ms = 2,000/s).
        let completed: u32 = overload.iter().map(|p| p.completed).sum();
        assert!(completed >= 32_000, "{completed} completed in 20 s");
    }

    #[test]
    fn aimd_with_a_timeout_keeps_requests_under_it() {
        // Loss-based: it finds the timeout, not the knee. Past the knee this
        // server serves less, so AIMD serves less than Vegas, but nothing
        // times out and latency stays under the 60 ms it was given.
        let algorithm = Aimd::new(LimitBounds::new(1, 1_000), 20)
            .timeout(Duration::from_millis(60));
        let points = run(server(), &load(), algorithm, Duration::from_millis(100));
        let overload = between(&points, 20, 40);
        let latency = mean_latency(&overload);
        assert!(
            latency < Duration::from_millis(60),
            "mean latency {latency:?}"
        );
        assert_eq!(overload.iter().map(|p| p.dropped).sum::<u32>(), 0);
        let completed: u32 = overload.iter().map(|p| p.completed).sum();
        assert!(completed >= 28_000, "{completed} completed in 20 s");
    }

    #[test]
    fn light_load_does_not_inflate_the_limit() {
        for points in [
            run(
                server(),
                &load(),
                Vegas::new(LimitBounds::new(1, 1_000), 20),
                Duration::from_millis(100),
            ),
            run(
                server(),
                &load(),
                Aimd::new(LimitBounds::new(1, 1_000), 20)
                    .timeout(Duration::from_millis(60)),
                Duration::from_millis(100),
            ),
        ] {
            // 1,000/s × 20 ms: about 20 in flight. Growing only while half
            // the limit is used caps the limit near twice that.
            let light = between(&points, 0, 10);
            let most = light.iter().map(|p| p.limit).max().unwrap_or(0);
            assert!(most <= 50, "limit rose to {most} at 20 in flight");
        }
    }

    #[test]
    fn the_run_is_deterministic() {
        let a = run(
            server(),
            &load(),
            Vegas::new(LimitBounds::new(1, 1_000), 20),
            Duration::from_millis(250),
        );
        let b = run(
            server(),
            &load(),
            Vegas::new(LimitBounds::new(1, 1_000), 20),
            Duration::from_millis(250),
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 240);
    }
}
