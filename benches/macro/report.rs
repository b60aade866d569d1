//! Latency samples and the JSON line each benchmark prints.

use std::fmt::Write;
use std::time::Duration;

/// Per-operation latencies of one run, and its wall-clock time.
pub struct Samples {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Samples {
    pub fn new(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        Samples { latencies, elapsed }
    }

    fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[rank].as_secs_f64() * 1e6
    }

    /// The JSON line: throughput, p50/p99 latency, operation count, plus
    /// `extra` fields (name, value) such as `rpcs_per_op`.
    pub fn line(&self, bench: &str, extra: &[(&str, f64)]) -> String {
        let n = self.latencies.len();
        let mut line = format!(
            "{{\"bench\":\"{bench}\",\"ops_per_s\":{:.1},\"p50_us\":{:.0},\"p99_us\":{:.0}",
            n as f64 / self.elapsed.as_secs_f64(),
            self.percentile_us(0.50),
            self.percentile_us(0.99),
        );
        for (name, value) in extra {
            let _ = write!(line, ",\"{name}\":{value:.2}");
        }
        let _ = write!(line, ",\"n\":{n}}}");
        line
    }
}
