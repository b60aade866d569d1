//! A circuit breaker with resilience4j's semantics: it stops calling a
//! dependency that keeps failing (or keeps being slow), then lets an exact
//! number of trial calls through to see whether it has recovered.
//!
#![doc = include_str!("differences_from_resilience4j.md")]

mod config;
mod fast_lane;
mod window;

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use config::ErrorKind;
pub use config::{
    BreakerConfigError, CircuitBreakerConfig, CircuitBreakerConfigBuilder,
    FailurePredicate, MAX_BREAKER_WAIT, MAX_COUNT_WINDOW,
    MAX_PERMITTED_CALLS_IN_HALF_OPEN, MAX_TIME_WINDOW_SECONDS, SlidingWindow,
    WaitInOpen,
};
use fast_lane::FastLane;
use window::{CountWindow, Outcome, TimeWindow, Totals};

use crate::clock::{Clock, SystemClock};

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls go through; their outcomes are recorded.
    Closed,
    /// Calls are refused until the wait in open is over.
    Open,
    /// A fixed number of trial calls go through; the rest are refused.
    HalfOpen,
    /// Calls go through and nothing is recorded; only [`CircuitBreaker::reset`] leaves it.
    Disabled,
    /// Calls are refused until [`CircuitBreaker::reset`].
    ForcedOpen,
}

impl State {
    fn from_bits(bits: u64) -> State {
        match bits {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::Disabled,
            _ => State::ForcedOpen,
        }
    }

    fn bits(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::Disabled => 3,
            State::ForcedOpen => 4,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::Disabled => "disabled",
            State::ForcedOpen => "forced open",
        })
    }
}

/// A change of state, as sent to [`CircuitBreaker::subscribe`]rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTransition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
}

/// The breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "call not permitted: the circuit breaker is {state}; fail fast or fall back, and try again later"
)]
pub struct CallNotPermitted {
    /// The breaker's state when it refused.
    pub state: State,
}

/// What a call through the breaker can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker refused the call; the operation did not run.
    #[error(transparent)]
    NotPermitted(#[from] CallNotPermitted),
    /// The operation ran and failed.
    #[error(transparent)]
    Inner(E),
}

/// A snapshot of the breaker's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// The state.
    pub state: State,
    /// Calls in the sliding window (in half-open: trial calls finished).
    pub calls: u64,
    /// Of those, failed.
    pub failed_calls: u64,
    /// Of those, slow.
    pub slow_calls: u64,
    /// Calls refused since the breaker was made.
    pub not_permitted_calls: u64,
}

// The phase word: what the fast path needs, in one atomic. The generation
// grows with every transition, so a permit knows whether the phase it was
// granted in is still the current one.
const STATE_BITS: u32 = 3;
const PERMIT_BITS: u32 = 21;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
const PERMIT_MASK: u64 = (1 << PERMIT_BITS) - 1;

fn pack(generation: u64, state: State, permits: u64) -> u64 {
    (generation << (STATE_BITS + PERMIT_BITS)) | (permits << STATE_BITS) | state.bits()
}

fn unpack(phase: u64) -> (u64, State, u64) {
    (
        phase >> (STATE_BITS + PERMIT_BITS),
        State::from_bits(phase & STATE_MASK),
        (phase >> STATE_BITS) & PERMIT_MASK,
    )
}

enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

/// What changes only under the lock.
struct Core {
    state: State,
    generation: u64,
    window: Window,
    /// The trial calls' outcomes, in half-open.
    trials: Totals,
    /// In open after half-open: the trials that opened it again, which the
    /// metrics show (as resilience4j's do) instead of the closed window.
    reopened_by: Option<Totals>,
    /// Openings since the breaker was last closed, for the exponential wait.
    consecutive_openings: u32,
    /// The last epoch the fast lane was opened with.
    lane_epoch: u32,
    /// The second (on the call clock) of the lane's opening.
    lane_second: u64,
}

/// A circuit breaker. Share it between tasks with an `Arc`.
///
/// Closed, it lets calls through and records how they went in a sliding
/// window. Once the window holds the minimum number of calls and the
/// failure rate or the slow-call rate reaches its threshold, it opens:
/// calls are refused at once, sparing the failing dependency and the
/// callers' time. After the wait in open, the next call moves it to
/// half-open, where exactly `permitted_calls_in_half_open` trial calls get
/// through — an atomic countdown, however many callers race for them. When
/// all the trials have finished, their rates decide: closed again, or open
/// for (possibly exponentially) longer.
///
/// Two more states are set by hand: disabled (everything passes, nothing
/// is recorded) and forced open (everything is refused).
///
/// The closed path costs one atomic load and, when the call ends, one
/// compare-and-swap while the window holds no failure and no slow call (see
/// `fast_lane.rs`), a short lock otherwise. With a slow-call threshold of a
/// second or more, calls are timed on the clock's coarse reading, so the
/// closed path reads no precise clock at all. `cargo xtask bench --against
/// resilience.breaker` measures it beside a published breaker.
pub struct CircuitBreaker<C: Clock = SystemClock> {
    config: CircuitBreakerConfig,
    clock: C,
    /// State, trial permits left and generation; see [`pack`].
    phase: AtomicU64,
    /// In open: when the wait ends. In half-open: when the max wait ends.
    /// Nanoseconds on `clock`.
    deadline: AtomicU64,
    not_permitted: AtomicU64,
    /// The slow-call threshold in nanoseconds, for the hot path.
    slow_call_nanos: u64,
    /// Which clock reading times calls, if any.
    timing: CallTiming,
    /// Clean successes counted without the lock.
    lane: FastLane,
    core: Mutex<Core>,
    events: broadcast::Sender<StateTransition>,
}

impl CircuitBreaker<SystemClock> {
    /// A closed breaker with these settings, on the real clock.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self::with_clock(config, SystemClock::default())
    }
}

impl<C: Clock> CircuitBreaker<C> {
    /// The same, on `clock`.
    pub fn with_clock(config: CircuitBreakerConfig, clock: C) -> Self {
        let window = new_window(config.sliding_window);
        let (events, _) = broadcast::channel(64);
        let breaker = CircuitBreaker {
            clock,
            phase: AtomicU64::new(pack(0, State::Closed, 0)),
            deadline: AtomicU64::new(u64::MAX),
            not_permitted: AtomicU64::new(0),
            slow_call_nanos: nanos(config.slow_call_duration_threshold),
            timing: if !config.slow_call_detection {
                CallTiming::Untimed
            } else if config.slow_call_duration_threshold >= COARSE_TIMING_FROM {
                CallTiming::Coarse
            } else {
                CallTiming::Precise
            },
            lane: FastLane::default(),
            core: Mutex::new(Core {
                state: State::Closed,
                generation: 0,
                window,
                trials: Totals::default(),
                reopened_by: None,
                consecutive_openings: 0,
                lane_epoch: 0,
                lane_second: 0,
            }),
            events,
            config,
        };
        {
            let mut core = breaker.core.lock();
            let now = breaker.call_now();
            breaker.open_lane_if_clean(&mut core, now);
        }
        breaker
    }

    /// The current state.
    ///
    /// A half-open breaker whose max wait (see
    /// [`max_wait_in_half_open`](CircuitBreakerConfigBuilder::max_wait_in_half_open))
    /// has passed is moved to open here, dated at the deadline, so the
    /// state is right and the wait in open starts on time even when no call
    /// came. Subscribers hear of that move when it is made: here, in
    /// [`metrics`](Self::metrics), or at the next call — or on time with
    /// [`spawn_half_open_timer`](CircuitBreaker::spawn_half_open_timer).
    pub fn state(&self) -> State {
        let (generation, state, _) = unpack(self.phase.load(Acquire));
        if state == State::HalfOpen && self.half_open_expired(generation) {
            return unpack(self.phase.load(Acquire)).1;
        }
        state
    }

    /// If half-open under `generation` has outlived its max wait, moves to
    /// open as of the deadline; true if it did (or someone else moved on).
    fn half_open_expired(&self, generation: u64) -> bool {
        let deadline = self.deadline.load(Relaxed);
        if self.now_nanos() < deadline {
            return false;
        }
        let mut core = self.core.lock();
        if core.generation == generation {
            self.transition_at(&mut core, State::Open, deadline);
        }
        true
    }

    /// State transitions from now on. A receiver that falls more than 64
    /// transitions behind loses the oldest (it is told how many).
    pub fn subscribe(&self) -> broadcast::Receiver<StateTransition> {
        self.events.subscribe()
    }

    // ANCHOR: try_acquire
    /// Asks to make a call. The [`Permit`] must be told how the call went;
    /// dropped untold (a cancelled future, a panic), the call is ignored
    /// and a half-open trial permit is given back.
    pub fn try_acquire(&self) -> Result<Permit<'_, C>, CallNotPermitted> {
        // Whether this call moved the breaker from open to half-open: if that
        // phase has already run out when it looks (a max wait in half-open
        // shorter than a step), it is refused rather than going round the
        // cycle again — with no wait in open, it could go round for ever.
        let mut moved_to_half_open = false;
        loop {
            let phase = self.phase.load(Acquire);
            let (generation, state, permits) = unpack(phase);
            match state {
                State::Closed | State::Disabled => return Ok(self.permit(generation)),
                State::ForcedOpen => return Err(self.refuse(state)),
                State::Open => {
                    if self.now_nanos() < self.deadline.load(Relaxed) {
                        return Err(self.refuse(state));
                    }
                    // The wait is over: this call moves the breaker to half-open.
                    self.transition_if_current(generation, State::HalfOpen);
                    moved_to_half_open = true;
                }
                State::HalfOpen => {
                    if self.half_open_expired(generation) {
                        // The trials took longer than the max wait.
                        if moved_to_half_open {
                            return Err(self.refuse(State::Open));
                        }
                        continue;
                    }
                    if permits == 0 {
                        return Err(self.refuse(state));
                    }
                    let taken = pack(generation, state, permits - 1);
                    if self
                        .phase
                        .compare_exchange_weak(phase, taken, AcqRel, Acquire)
                        .is_ok()
                    {
                        return Ok(self.permit(generation));
                    }
                    // Someone else took a permit (or the phase changed): look again.
                }
            }
        }
    }
    // ANCHOR_END: try_acquire

    /// Runs `operation` through the breaker. Its error counts as a failure
    /// unless the config says otherwise (see [`Permit::record`]).
    pub fn call<T, E>(
        &self,
        operation: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, BreakerError<E>>
    where
        E: Error + 'static,
    {
        let permit = self.try_acquire()?;
        let result = operation();
        permit.record(&result);
        result.map_err(BreakerError::Inner)
    }

    /// Runs the future made by `operation` through the breaker.
    ///
    /// Cancel safety: dropping the returned future drops the permit, so a
    /// cancelled call counts as ignored (neither success nor failure) and
    /// gives its half-open trial permit back.
    pub async fn call_async<T, E, F>(
        &self,
        operation: impl FnOnce() -> F,
    ) -> Result<T, BreakerError<E>>
    where
        E: Error + 'static,
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire()?;
        let result = operation().await;
        permit.record(&result);
        result.map_err(BreakerError::Inner)
    }

    /// The counters now: in half-open the trial calls; in open after
    /// half-open, the trials that opened it again; otherwise the sliding
    /// window (empty after a reset, a forced opening or disabling), as
    /// resilience4j reports them.
    pub fn metrics(&self) -> Metrics {
        let _ = self.state(); // applies a half-open max wait that has passed
        let now = self.call_now();
        let mut core = self.core.lock();
        self.drain_lane(&mut core);
        let totals = match (core.state, core.reopened_by) {
            (State::HalfOpen, _) => core.trials,
            (State::Open, Some(trials)) => trials,
            _ => match &mut core.window {
                Window::Count(window) => window.totals(),
                Window::Time(window) => window.totals(Duration::from_nanos(now)),
            },
        };
        self.open_lane_if_clean(&mut core, now);
        Metrics {
            state: core.state,
            calls: totals.calls,
            failed_calls: totals.failures,
            slow_calls: totals.slow,
            not_permitted_calls: self.not_permitted.load(Relaxed),
        }
    }

    /// Refuses every call until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.transition_by_hand(State::ForcedOpen);
    }

    /// Lets every call through, recording nothing, until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.transition_by_hand(State::Disabled);
    }

    /// Back to closed with an empty window, from any state.
    pub fn reset(&self) {
        self.transition_by_hand(State::Closed);
    }

    fn permit(&self, generation: u64) -> Permit<'_, C> {
        Permit {
            breaker: self,
            generation,
            started: self.call_started(),
            finished: false,
        }
    }

    fn refuse(&self, state: State) -> CallNotPermitted {
        self.not_permitted.fetch_add(1, Relaxed);
        CallNotPermitted { state }
    }

    fn now_nanos(&self) -> u64 {
        self.clock.now_nanos()
    }

    /// The clock calls are timed on (and a time window's seconds counted
    /// on): the coarse reading unless a slow-call threshold under a second
    /// needs the precise one.
    fn call_now(&self) -> u64 {
        match self.timing {
            CallTiming::Precise => self.clock.now_nanos(),
            CallTiming::Coarse | CallTiming::Untimed => self.clock.coarse_now_nanos(),
        }
    }

    /// When a call starts, if it is timed.
    fn call_started(&self) -> u64 {
        match self.timing {
            CallTiming::Untimed => 0,
            CallTiming::Precise | CallTiming::Coarse => self.call_now(),
        }
    }

    /// When a call ended, if it is timed or a time window needs its second.
    fn call_ended(&self) -> u64 {
        match (self.timing, self.config.sliding_window) {
            (CallTiming::Untimed, SlidingWindow::CountBased { .. }) => 0,
            _ => self.call_now(),
        }
    }

    /// The second a call ending at `now` (call clock) is counted in, as the
    /// fast lane keys it: 0 for a count window, where time plays no part.
    fn lane_second_of(&self, now: u64) -> u64 {
        match self.config.sliding_window {
            SlidingWindow::CountBased { .. } => 0,
            SlidingWindow::TimeBased { .. } => now / 1_000_000_000,
        }
    }

    /// Moves the fast lane's count into the window (closing the lane).
    /// Under the lock.
    fn drain_lane(&self, core: &mut Core) {
        let counted = self.lane.close();
        if counted == 0 || core.state != State::Closed {
            return;
        }
        let second = core.lane_second;
        match &mut core.window {
            Window::Count(window) => {
                window.record_successes(counted);
            }
            Window::Time(window) => {
                window.record_successes(Duration::from_secs(second), counted);
            }
        }
    }

    /// Opens the fast lane for calls ending in `now`'s second, if the
    /// breaker is closed and its window holds no failure and no slow call.
    /// Under the lock, with the lane drained.
    fn open_lane_if_clean(&self, core: &mut Core, now: u64) {
        if core.state != State::Closed {
            return;
        }
        let totals = match &mut core.window {
            Window::Count(window) => window.totals(),
            Window::Time(window) => window.totals(Duration::from_nanos(now)),
        };
        if totals.failures != 0 || totals.slow != 0 {
            return;
        }
        core.lane_epoch = core.lane_epoch.wrapping_add(1).max(1);
        core.lane_second = self.lane_second_of(now);
        self.lane
            .open(core.lane_epoch, core.generation, core.lane_second);
    }

    /// Records a call made under `generation`'s permit, started at
    /// `started` and finished `now` (nanoseconds on the clock).
    fn record(&self, generation: u64, failed: bool, started: u64, now: u64) {
        let outcome = Outcome {
            failed,
            // Slow only if longer than the threshold, as in resilience4j.
            slow: self.timing != CallTiming::Untimed
                && now.saturating_sub(started) > self.slow_call_nanos,
        };
        if !outcome.failed
            && !outcome.slow
            && self.lane.try_count(generation, self.lane_second_of(now))
        {
            return;
        }
        let mut core = self.core.lock();
        self.drain_lane(&mut core);
        if core.generation != generation {
            // The call began in an earlier phase (say, closed before the
            // breaker opened); it says nothing about this one.
            return;
        }
        match core.state {
            State::Closed => {
                let totals = match &mut core.window {
                    Window::Count(window) => window.record(outcome),
                    Window::Time(window) => {
                        window.record(Duration::from_nanos(now), outcome)
                    }
                };
                if totals.calls >= u64::from(self.config.minimum_number_of_calls)
                    && self.over_threshold(totals)
                {
                    self.transition(&mut core, State::Open);
                } else {
                    self.open_lane_if_clean(&mut core, now);
                }
            }
            State::HalfOpen => {
                core.trials.calls += 1;
                core.trials.failures += u64::from(outcome.failed);
                core.trials.slow += u64::from(outcome.slow);
                // As resilience4j: decided once the minimum number of calls
                // (at most the trials permitted) is in, not only after all.
                let needed = self
                    .config
                    .minimum_number_of_calls
                    .min(self.config.permitted_calls_in_half_open);
                if core.trials.calls >= u64::from(needed) {
                    let to = if self.over_threshold(core.trials) {
                        State::Open
                    } else {
                        State::Closed
                    };
                    self.transition(&mut core, to);
                }
            }
            State::Open | State::Disabled | State::ForcedOpen => {}
        }
    }

    /// A call under `generation`'s permit ended without an outcome: in
    /// half-open, its trial permit goes back.
    fn release(&self, generation: u64) {
        let _ = self.phase.fetch_update(AcqRel, Acquire, |phase| {
            let (current, state, permits) = unpack(phase);
            (current == generation && state == State::HalfOpen)
                .then(|| pack(generation, state, permits + 1))
        });
    }

    /// Either rate at or above its threshold.
    fn over_threshold(&self, totals: Totals) -> bool {
        let calls = totals.calls as f64;
        totals.failures as f64 * 100.0 >= self.config.failure_rate_threshold * calls
            || totals.slow as f64 * 100.0
                >= self.config.slow_call_rate_threshold * calls
    }

    fn transition_if_current(&self, generation: u64, to: State) {
        let mut core = self.core.lock();
        if core.generation == generation {
            self.transition(&mut core, to);
        }
    }

    fn transition_by_hand(&self, to: State) {
        let mut core = self.core.lock();
        self.transition(&mut core, to);
    }

    /// Moves to `to` now, under the lock.
    fn transition(&self, core: &mut Core, to: State) {
        self.transition_at(core, to, self.now_nanos());
    }

    /// Moves to `to` as of `now` (nanoseconds on the clock; earlier than
    /// the clock's now when a deadline passed unobserved), under the lock.
    /// The deadline is stored before the phase is published (release), so a
    /// caller that sees the new phase sees its deadline.
    fn transition_at(&self, core: &mut Core, to: State, now: u64) {
        // Successes counted in the closed phase belong to its window.
        self.drain_lane(core);
        let from = core.state;
        core.state = to;
        core.generation += 1;
        core.reopened_by =
            (from == State::HalfOpen && to == State::Open).then_some(core.trials);
        core.trials = Totals::default();
        let mut permits = 0;
        let deadline = match to {
            State::Closed => {
                core.window = new_window(self.config.sliding_window);
                core.consecutive_openings = 0;
                u64::MAX
            }
            State::Open => {
                core.consecutive_openings = core.consecutive_openings.saturating_add(1);
                let wait = self.config.wait_in_open.wait(core.consecutive_openings);
                now.saturating_add(nanos(wait))
            }
            State::HalfOpen => {
                permits = u64::from(self.config.permitted_calls_in_half_open);
                self.config
                    .max_wait_in_half_open
                    .map_or(u64::MAX, |max| now.saturating_add(nanos(max)))
            }
            State::Disabled | State::ForcedOpen => {
                // A fresh window, as resilience4j starts one for these.
                core.window = new_window(self.config.sliding_window);
                core.consecutive_openings = 0;
                u64::MAX
            }
        };
        self.deadline.store(deadline, Relaxed);
        self.phase
            .store(pack(core.generation, to, permits), Release);
        let call_now = self.call_now();
        self.open_lane_if_clean(core, call_now);
        tracing::info!(%from, %to, "circuit breaker state change");
        // No subscriber is fine.
        let _ = self.events.send(StateTransition { from, to });
    }
}

impl CircuitBreaker<SystemClock> {
    /// Makes the move from half-open to open after
    /// [`max_wait_in_half_open`](CircuitBreakerConfigBuilder::max_wait_in_half_open)
    /// happen on time, as resilience4j's scheduler does, so that
    /// subscribers hear of it when it happens rather than at the next
    /// observation. A tokio task; it ends when the breaker is dropped.
    pub fn spawn_half_open_timer(
        self: &std::sync::Arc<Self>,
    ) -> tokio::task::JoinHandle<()> {
        let breaker = std::sync::Arc::downgrade(self);
        let mut events = self.subscribe();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(StateTransition {
                        to: State::HalfOpen,
                        ..
                    }) => {
                        let Some(strong) = breaker.upgrade() else {
                            return;
                        };
                        let deadline = strong.deadline.load(Relaxed);
                        let left = deadline.saturating_sub(strong.now_nanos());
                        drop(strong);
                        if deadline == u64::MAX {
                            continue; // no max wait
                        }
                        tokio::time::sleep(Duration::from_nanos(left)).await;
                        match breaker.upgrade() {
                            Some(strong) => drop(strong.state()),
                            None => return,
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }
}

impl<C: Clock> fmt::Debug for CircuitBreaker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn new_window(config: SlidingWindow) -> Window {
    match config {
        SlidingWindow::CountBased { size } => Window::Count(CountWindow::new(size)),
        SlidingWindow::TimeBased { seconds } => Window::Time(TimeWindow::new(seconds)),
    }
}

/// Which clock reading times calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallTiming {
    /// The precise reading: a slow-call threshold under a second.
    Precise,
    /// The coarse reading: a threshold of a second or more.
    Coarse,
    /// Not timed: slow-call detection is off.
    Untimed,
}

/// Slow-call thresholds from this one up are timed on the clock's coarse
/// reading: its grain (a few milliseconds) is under 1 % of them.
const COARSE_TIMING_FROM: Duration = Duration::from_secs(1);

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Leave to make one call, from [`CircuitBreaker::try_acquire`]. Say how
/// the call went with [`success`](Self::success), [`failure`](Self::failure)
/// or [`ignore`](Self::ignore); dropping it says "ignore".
#[must_use = "a permit dropped at once records nothing; make the call, then report it"]
pub struct Permit<'a, C: Clock = SystemClock> {
    breaker: &'a CircuitBreaker<C>,
    generation: u64,
    /// Nanoseconds on the breaker's clock.
    started: u64,
    finished: bool,
}

impl<C: Clock> Permit<'_, C> {
    /// The call succeeded (it still counts as slow if it took long).
    pub fn success(mut self) {
        self.finish(Some(false));
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.finish(Some(true));
    }

    /// The call says nothing about the dependency's health (the caller's
    /// own mistake, say); in half-open its trial permit goes back.
    pub fn ignore(mut self) {
        self.finish(None);
    }

    /// Records `result`: `Ok` is a success; an `Err` is ignored, a failure
    /// or a success as the config's [`ignore_error_if`] and
    /// [`record_error_if`] say (by default, a failure).
    ///
    /// [`ignore_error_if`]: CircuitBreakerConfigBuilder::ignore_error_if
    /// [`record_error_if`]: CircuitBreakerConfigBuilder::record_error_if
    pub fn record<T, E: Error + 'static>(self, result: &Result<T, E>) {
        match result {
            Ok(_) => self.success(),
            Err(error) => match self.breaker.config.classify(error) {
                ErrorKind::Failure => self.failure(),
                ErrorKind::Success => self.success(),
                ErrorKind::Ignored => self.ignore(),
            },
        }
    }

    fn finish(&mut self, failed: Option<bool>) {
        self.finished = true;
        match failed {
            Some(failed) => {
                let now = self.breaker.call_ended();
                self.breaker
                    .record(self.generation, failed, self.started, now);
            }
            None => self.breaker.release(self.generation),
        }
    }
}

impl<C: Clock> Drop for Permit<'_, C> {
    fn drop(&mut self) {
        if !self.finished {
            self.breaker.release(self.generation);
        }
    }
}

#[cfg(test)]
mod tests;
