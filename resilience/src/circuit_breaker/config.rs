//! The breaker's settings, with resilience4j's defaults, checked when built.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Which recent calls the breaker judges the failure rate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last `size` calls.
    CountBased {
        /// How many calls (at least 1).
        size: u32,
    },
    /// The calls of the last `seconds` seconds.
    TimeBased {
        /// How many seconds (at least 1).
        seconds: u32,
    },
}

/// How long the breaker stays open before it lets trial calls through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaitInOpen {
    /// The same wait every time.
    Fixed(Duration),
    /// `initial`, then `multiplier` times longer after each opening that
    /// follows a failed trial, up to `max`; back to `initial` once closed.
    Exponential {
        /// The first wait.
        initial: Duration,
        /// Growth per consecutive opening (at least 1).
        multiplier: f64,
        /// The longest wait.
        max: Duration,
    },
}

impl WaitInOpen {
    /// The wait for the `opening`-th consecutive opening (1 for the first).
    pub(crate) fn wait(&self, opening: u32) -> Duration {
        match *self {
            WaitInOpen::Fixed(wait) => wait,
            WaitInOpen::Exponential {
                initial,
                multiplier,
                max,
            } => {
                let factor =
                    multiplier.powi(opening.saturating_sub(1).min(1_000) as i32);
                let secs = (initial.as_secs_f64() * factor).min(max.as_secs_f64());
                Duration::try_from_secs_f64(secs).unwrap_or(max)
            }
        }
    }
}

/// The most trial calls half-open can permit (they are counted in 21 bits).
pub const MAX_PERMITTED_CALLS_IN_HALF_OPEN: u32 = (1 << 21) - 1;

/// How a call's error counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Failure,
    Success,
    Ignored,
}

/// Decides whether an error counts as a failure.
pub type FailurePredicate = Arc<dyn Fn(&(dyn Error + 'static)) -> bool + Send + Sync>;

/// A circuit breaker's settings. Build one with
/// [`CircuitBreakerConfig::builder`]; [`Default`] gives resilience4j's
/// defaults.
#[derive(Clone)]
pub struct CircuitBreakerConfig {
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) slow_call_duration_threshold: Duration,
    pub(crate) slow_call_detection: bool,
    pub(crate) sliding_window: SlidingWindow,
    pub(crate) minimum_number_of_calls: u32,
    pub(crate) wait_in_open: WaitInOpen,
    pub(crate) permitted_calls_in_half_open: u32,
    pub(crate) max_wait_in_half_open: Option<Duration>,
    pub(crate) is_failure: Option<FailurePredicate>,
    pub(crate) is_ignored: Option<FailurePredicate>,
}

impl fmt::Debug for CircuitBreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerConfig")
            .field("failure_rate_threshold", &self.failure_rate_threshold)
            .field("slow_call_rate_threshold", &self.slow_call_rate_threshold)
            .field(
                "slow_call_duration_threshold",
                &self.slow_call_duration_threshold,
            )
            .field("slow_call_detection", &self.slow_call_detection)
            .field("sliding_window", &self.sliding_window)
            .field("minimum_number_of_calls", &self.minimum_number_of_calls)
            .field("wait_in_open", &self.wait_in_open)
            .field(
                "permitted_calls_in_half_open",
                &self.permitted_calls_in_half_open,
            )
            .field("max_wait_in_half_open", &self.max_wait_in_half_open)
            .field("is_failure", &self.is_failure.as_ref().map(|_| "custom"))
            .field("is_ignored", &self.is_ignored.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Default for CircuitBreakerConfig {
    /// resilience4j's defaults: open at 50 % failures (or 100 % calls slower
    /// than 60 s) over the last 100 calls, once 100 calls are recorded;
    /// stay open 60 s; then 10 trial calls.
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration_threshold: Duration::from_secs(60),
            slow_call_detection: true,
            sliding_window: SlidingWindow::CountBased { size: 100 },
            minimum_number_of_calls: 100,
            wait_in_open: WaitInOpen::Fixed(Duration::from_secs(60)),
            permitted_calls_in_half_open: 10,
            max_wait_in_half_open: None,
            is_failure: None,
            is_ignored: None,
        }
    }
}

impl CircuitBreakerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder {
            config: CircuitBreakerConfig::default(),
        }
    }

    /// How an error counts, as resilience4j decides it: ignored if the
    /// ignore predicate says so (checked first), a failure if the record
    /// predicate says so (all errors, without one), else a success.
    pub(crate) fn classify(&self, error: &(dyn Error + 'static)) -> ErrorKind {
        if self.is_ignored.as_ref().is_some_and(|is| is(error)) {
            ErrorKind::Ignored
        } else if self.is_failure.as_ref().is_none_or(|is| is(error)) {
            ErrorKind::Failure
        } else {
            ErrorKind::Success
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BreakerConfigError {
    /// A rate threshold outside (0, 100].
    #[error("{name} must be a percentage above 0 and at most 100, not {value}")]
    BadPercentage {
        /// The setting.
        name: &'static str,
        /// What was given.
        value: f64,
    },
    /// More trial calls than the breaker can count.
    #[error(
        "permitted_calls_in_half_open can be at most {MAX_PERMITTED_CALLS_IN_HALF_OPEN}, not {0}"
    )]
    TooManyTrials(u32),
    /// A count that must be at least 1 was 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// An exponential wait that shrinks.
    #[error("the exponential wait's multiplier must be at least 1, not {0}")]
    ShrinkingWait(f64),
    /// A window larger than the breaker keeps: a count-based window holds
    /// one entry per call, a time-based one a bucket per second.
    #[error("{name} can be at most {max}, not {value}")]
    WindowTooLarge {
        /// The setting.
        name: &'static str,
        /// The largest allowed.
        max: u32,
        /// What was given.
        value: u32,
    },
    /// A wait longer than [`MAX_BREAKER_WAIT`] (a year).
    #[error("{name} can be at most a year, not {value:?}")]
    WaitTooLong {
        /// The setting.
        name: &'static str,
        /// What was given.
        value: Duration,
    },
}

/// The largest count-based window: a million calls (one entry each).
pub const MAX_COUNT_WINDOW: u32 = 1_000_000;
/// The largest time-based window: a day (one bucket per second).
pub const MAX_TIME_WINDOW_SECONDS: u32 = 24 * 3600;
/// The longest wait in open or half-open: a year. Longer waits are not
/// meant, and overflow the clock's arithmetic.
pub const MAX_BREAKER_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Builds a [`CircuitBreakerConfig`]; [`build`](Self::build) checks it.
#[derive(Debug, Clone)]
pub struct CircuitBreakerConfigBuilder {
    config: CircuitBreakerConfig,
}

impl CircuitBreakerConfigBuilder {
    /// Open when at least this percentage of calls in the window failed
    /// (default 50).
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.config.failure_rate_threshold = percent;
        self
    }

    /// Open when at least this percentage of calls in the window were slow
    /// (default 100).
    pub fn slow_call_rate_threshold(mut self, percent: f64) -> Self {
        self.config.slow_call_rate_threshold = percent;
        self
    }

    /// A call taking longer than this is slow (default 60 s). From a
    /// second up, calls are timed on the clock's coarse reading (a few
    /// milliseconds of grain, a few times cheaper than a precise read).
    pub fn slow_call_duration_threshold(mut self, duration: Duration) -> Self {
        self.config.slow_call_duration_threshold = duration;
        self
    }

    /// Judges on failures alone: calls are not timed and none counts as
    /// slow, so a closed breaker with a count-based window reads no clock
    /// at all. resilience4j has no such switch (its default slow-call
    /// settings stay on); this is for dependencies whose slowness a
    /// timeout already turns into failures.
    pub fn without_slow_call_detection(mut self) -> Self {
        self.config.slow_call_detection = false;
        self
    }

    /// Judge on the last `size` calls (the default, 100).
    pub fn count_based_window(mut self, size: u32) -> Self {
        self.config.sliding_window = SlidingWindow::CountBased { size };
        self
    }

    /// Judge on the calls of the last `seconds` seconds.
    pub fn time_based_window(mut self, seconds: u32) -> Self {
        self.config.sliding_window = SlidingWindow::TimeBased { seconds };
        self
    }

    /// Rates are judged only once the window holds this many calls
    /// (default 100), so one failure out of one call does not open it.
    pub fn minimum_number_of_calls(mut self, calls: u32) -> Self {
        self.config.minimum_number_of_calls = calls;
        self
    }

    /// Stay open this long before trial calls (default 60 s).
    pub fn wait_in_open(mut self, wait: Duration) -> Self {
        self.config.wait_in_open = WaitInOpen::Fixed(wait);
        self
    }

    /// Stay open `initial`, growing by `multiplier` with each consecutive
    /// opening up to `max`.
    pub fn exponential_wait_in_open(
        mut self,
        initial: Duration,
        multiplier: f64,
        max: Duration,
    ) -> Self {
        self.config.wait_in_open = WaitInOpen::Exponential {
            initial,
            multiplier,
            max,
        };
        self
    }

    /// How many trial calls half-open lets through (default 10); their
    /// failure rate decides between closed and open.
    pub fn permitted_calls_in_half_open(mut self, calls: u32) -> Self {
        self.config.permitted_calls_in_half_open = calls;
        self
    }

    /// If the trial calls have not all finished after this long in
    /// half-open, open again (default: wait for them however long).
    pub fn max_wait_in_half_open(mut self, wait: Duration) -> Self {
        self.config.max_wait_in_half_open = Some(wait);
        self
    }

    /// Which errors count as failures (default: all). An error the
    /// predicate rejects counts as a **success**, as with resilience4j's
    /// `recordExceptions`: the dependency answered, and the answer was an
    /// error of the caller's kind. To leave such errors out of the rates
    /// altogether, use [`ignore_error_if`](Self::ignore_error_if).
    pub fn record_error_if(
        mut self,
        predicate: impl Fn(&(dyn Error + 'static)) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.config.is_failure = Some(Arc::new(predicate));
        self
    }

    /// Which errors say nothing about the dependency's health (default:
    /// none): they count as neither success nor failure, and in half-open
    /// their trial permit is given back — resilience4j's
    /// `ignoreExceptions`. Checked before
    /// [`record_error_if`](Self::record_error_if).
    pub fn ignore_error_if(
        mut self,
        predicate: impl Fn(&(dyn Error + 'static)) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.config.is_ignored = Some(Arc::new(predicate));
        self
    }

    /// Checks the settings.
    ///
    /// As in resilience4j, a count-based window smaller than the minimum
    /// number of calls lowers the minimum to the window's size (otherwise
    /// the breaker could never open).
    pub fn build(self) -> Result<CircuitBreakerConfig, BreakerConfigError> {
        let mut config = self.config;
        for (name, value) in [
            ("failure_rate_threshold", config.failure_rate_threshold),
            ("slow_call_rate_threshold", config.slow_call_rate_threshold),
        ] {
            // NaN fails this too.
            if !(value > 0.0 && value <= 100.0) {
                return Err(BreakerConfigError::BadPercentage { name, value });
            }
        }
        let window = match config.sliding_window {
            SlidingWindow::CountBased { size } => size,
            SlidingWindow::TimeBased { seconds } => seconds,
        };
        if window == 0 {
            return Err(BreakerConfigError::Zero("the sliding window size"));
        }
        let (name, max) = match config.sliding_window {
            SlidingWindow::CountBased { .. } => {
                ("count_based_window", MAX_COUNT_WINDOW)
            }
            SlidingWindow::TimeBased { .. } => {
                ("time_based_window", MAX_TIME_WINDOW_SECONDS)
            }
        };
        if window > max {
            return Err(BreakerConfigError::WindowTooLarge {
                name,
                max,
                value: window,
            });
        }
        let waits = match config.wait_in_open {
            WaitInOpen::Fixed(wait) => vec![("wait_in_open", wait)],
            WaitInOpen::Exponential { initial, max, .. } => vec![
                ("exponential_wait_in_open's initial", initial),
                ("exponential_wait_in_open's max", max),
            ],
        };
        let half_open = config
            .max_wait_in_half_open
            .map(|w| ("max_wait_in_half_open", w));
        for (name, value) in waits.into_iter().chain(half_open) {
            if value > MAX_BREAKER_WAIT {
                return Err(BreakerConfigError::WaitTooLong { name, value });
            }
        }
        if config.minimum_number_of_calls == 0 {
            return Err(BreakerConfigError::Zero("minimum_number_of_calls"));
        }
        if let SlidingWindow::CountBased { size } = config.sliding_window {
            config.minimum_number_of_calls = config.minimum_number_of_calls.min(size);
        }
        if config.permitted_calls_in_half_open == 0 {
            return Err(BreakerConfigError::Zero("permitted_calls_in_half_open"));
        }
        if config.permitted_calls_in_half_open > MAX_PERMITTED_CALLS_IN_HALF_OPEN {
            return Err(BreakerConfigError::TooManyTrials(
                config.permitted_calls_in_half_open,
            ));
        }
        if let WaitInOpen::Exponential { multiplier, .. } = config.wait_in_open
            && multiplier
                .partial_cmp(&1.0)
                .is_none_or(|order| order.is_lt())
        {
            return Err(BreakerConfigError::ShrinkingWait(multiplier));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused() {
        let err = CircuitBreakerConfig::builder()
            .failure_rate_threshold(0.0)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("failure_rate_threshold"));
        assert!(
            CircuitBreakerConfig::builder()
                .slow_call_rate_threshold(f64::NAN)
                .build()
                .is_err()
        );
        assert_eq!(
            CircuitBreakerConfig::builder()
                .permitted_calls_in_half_open(0)
                .build()
                .unwrap_err(),
            BreakerConfigError::Zero("permitted_calls_in_half_open")
        );
        assert!(
            CircuitBreakerConfig::builder()
                .exponential_wait_in_open(
                    Duration::from_secs(1),
                    0.5,
                    Duration::from_secs(9)
                )
                .build()
                .is_err()
        );
    }

    #[test]
    fn the_exponential_wait_grows_and_stops_at_max() {
        let wait = WaitInOpen::Exponential {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(5),
        };
        let waits: Vec<_> = (1..=5).map(|n| wait.wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert_eq!(wait.wait(u32::MAX), Duration::from_secs(5));
    }
}
