//! Vegas: estimates the queue from how much slower requests are than when
//! nothing waits (after TCP Vegas, and Netflix's concurrency-limits).

use super::{LimitAlgorithm, LimitBounds, Round, Sample};

/// Latency-based, with a queue estimate.
///
/// The lowest latency seen is the latency with no queue, `no_load`. A
/// round (`limit` samples, at least ten) with mean latency `rtt` means
/// about `queue = limit × (1 - no_load / rtt)` requests were waiting rather
/// than being served. With `l = log10(limit)`:
/// a queue of at most `l` grows the limit by `6 l` (far from the knee:
/// move fast); below `3 l`, by `l`; above `6 l`, it shrinks by `l`; in
/// between it holds. A drop shrinks it by `l` too (Netflix's Vegas does
/// that; its Gradient2 does not).
///
/// The no-load latency must be re-measured now and then (a server that
/// became slower for good is not queueing), but measuring it under load
/// only finds the loaded latency: Netflix's Vegas resets it to the current
/// latency, which under sustained overload reads the queue as "no load"
/// and lets the limit creep up round after round. This one probes as BBR
/// does: every `probe_every` rounds (default 30) it halves the limit for
/// two rounds, the first to drain the queue, the second to measure, then
/// restores it.
///
/// As in AIMD, no growth while under half the limit is used; such a round
/// is also a probe for free (nothing queues).
#[derive(Debug, Clone)]
pub struct Vegas {
    limit: f64,
    bounds: LimitBounds,
    /// Lowest round latency seen since the last probe, in seconds.
    no_load: f64,
    rounds_since_probe: u32,
    probe_every: u32,
    probe: Probe,
    round: Round,
}

/// Where a no-load probe is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Probe {
    Idle,
    /// The limit is halved; this round lets the queue drain.
    Draining {
        saved: f64,
    },
    /// The queue has drained; this round's latency is the no-load latency.
    Measuring {
        saved: f64,
    },
}

impl Vegas {
    /// Starting at `initial`, within `bounds`.
    pub fn new(bounds: LimitBounds, initial: u32) -> Self {
        Vegas {
            limit: bounds.clamp(f64::from(initial)),
            bounds,
            no_load: f64::INFINITY,
            rounds_since_probe: 0,
            probe_every: 30,
            probe: Probe::Idle,
            round: Round::default(),
        }
    }

    /// Re-measure the no-load latency every `rounds` rounds (at least 1).
    pub fn probe_every(mut self, rounds: u32) -> Self {
        self.probe_every = rounds.max(1);
        self
    }
}

impl LimitAlgorithm for Vegas {
    fn initial_limit(&self) -> u32 {
        self.limit as u32
    }

    fn update(&mut self, sample: Sample) -> u32 {
        let Some(round) = self.round.add(sample, self.limit) else {
            return self.limit as u32;
        };
        let step = self.limit.log10().max(1.0);
        if round.dropped || round.timed == 0 {
            self.limit = self.bounds.clamp(self.limit - step);
            return self.limit as u32;
        }
        let rtt = round.mean_latency();
        match self.probe {
            Probe::Draining { saved } => {
                self.probe = Probe::Measuring { saved };
                return self.limit as u32;
            }
            Probe::Measuring { saved } => {
                self.no_load = rtt;
                self.limit = saved;
                self.probe = Probe::Idle;
                return self.limit as u32;
            }
            Probe::Idle => {}
        }
        if f64::from(round.max_inflight) * 2.0 < self.limit {
            // Mostly idle: nothing queues, so this round's latency is a
            // fresh no-load measurement, free. Nothing learned about the top.
            self.no_load = rtt;
            self.rounds_since_probe = 0;
            return self.limit as u32;
        }
        self.no_load = self.no_load.min(rtt);
        self.rounds_since_probe += 1;
        if self.rounds_since_probe >= self.probe_every {
            self.rounds_since_probe = 0;
            self.probe = Probe::Draining { saved: self.limit };
            self.limit = self.bounds.clamp(self.limit / 2.0);
            return self.limit as u32;
        }
        // ANCHOR: vegas
        let queue = (self.limit * (1.0 - self.no_load / rtt)).ceil();
        let change = if queue <= step {
            6.0 * step
        } else if queue < 3.0 * step {
            step
        } else if queue > 6.0 * step {
            -step
        } else {
            0.0
        };
        self.limit = self.bounds.clamp(self.limit + change);
        // ANCHOR_END: vegas
        self.limit as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn round(vegas: &mut Vegas, millis: u64, inflight: u32, dropped: bool) -> u32 {
        let mut limit = 0;
        for _ in 0..vegas.limit.max(10.0).ceil() as u32 {
            limit = vegas.update(Sample {
                latency: Duration::from_millis(millis),
                inflight,
                dropped,
            });
        }
        limit
    }

    #[test]
    fn no_queue_grows_fast_and_a_long_queue_shrinks() {
        let mut vegas = Vegas::new(LimitBounds::new(1, 1_000), 100);
        assert_eq!(
            round(&mut vegas, 10, 100, false),
            112,
            "no queue: + 6 log10(100)"
        );
        // Twice as slow as with no load: half of 112 are queued.
        assert_eq!(round(&mut vegas, 20, 112, false), 109);
        assert_eq!(
            round(&mut vegas, 10, 109, true),
            107,
            "a drop: - log10(109.9)"
        );
    }

    #[test]
    fn idle_rounds_and_bounds() {
        let mut vegas = Vegas::new(LimitBounds::new(5, 50), 40);
        for _ in 0..100 {
            assert_eq!(round(&mut vegas, 10, 10, false), 40);
        }
        for _ in 0..100 {
            assert!(round(&mut vegas, 10, 50, false) <= 50);
        }
        for _ in 0..100 {
            assert!(round(&mut vegas, 10, 50, true) >= 5);
        }
    }
}
