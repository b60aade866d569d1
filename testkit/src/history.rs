//! Histories of operations, checked for linearizability: whether some
//! order of the operations, each placed between its invocation and its
//! response, is a legal run of a sequential model (Wing and Gong's search,
//! with Lowe's memo of states already tried).
//!
//! A counter can pass while a history is wrong: two holders that overlap
//! for a moment, an item delivered out of order, a holder that learns too
//! late. A fault test records what each process did and when (one
//! monotonic clock), and the checker either finds an order that explains
//! it or names the history as an anomaly.
//!
//! An operation without a response (its process was cut off or killed)
//! may have taken effect at any time after its invocation, or never: the
//! checker tries both.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::time::Instant;

/// A sequential specification: the state, and what one operation with
/// its observed output does to it.
pub trait Model {
    /// The model's state; hashed to remember states already tried.
    type State: Clone + Eq + Hash;
    /// An operation with what it returned.
    type Op: Clone + std::fmt::Debug;
    /// The state before any operation.
    fn init(&self) -> Self::State;
    /// The state after `op`, or `None` if `op` (with its output) cannot
    /// happen in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// One operation as a process saw it.
#[derive(Debug, Clone)]
pub struct Call<O> {
    /// Who called (for messages only).
    pub process: usize,
    /// When it was invoked.
    pub invoked: Instant,
    /// When it returned; `None` if it never did.
    pub returned: Option<Instant>,
    /// What it was and what it returned.
    pub op: O,
}

/// A history with no legal order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// The longest prefix of operations (indices into the history, in the
    /// order found) that could be explained.
    pub explained: Vec<usize>,
    /// The search stopped at its bound ([`MAX_STEPS`]) without an answer:
    /// not a proof of an anomaly, but a history too hard to check this way.
    pub gave_up: bool,
}

/// How many choices the search tries before it gives up: a bound on a
/// test's time, far above what the project's histories need.
pub const MAX_STEPS: u64 = 20_000_000;

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.gave_up {
            return write!(
                f,
                "the search gave up after {MAX_STEPS} steps ({} operations ordered)",
                self.explained.len()
            );
        }
        write!(
            f,
            "not linearizable: at most {} operations can be ordered ({:?})",
            self.explained.len(),
            self.explained
        )
    }
}

/// Checks `history` against `model`. Completed operations must all be
/// placed; operations with no response may be placed or left out.
///
/// The search is depth-first with an explicit stack (histories of
/// thousands of calls fit in a test thread's stack), and it remembers
/// each (set of placed calls, state) it has already failed from, so a
/// history of mostly sequential calls is checked in about linear time.
pub fn check<M: Model>(model: &M, history: &[Call<M::Op>]) -> Result<(), Anomaly> {
    let mut by_invocation: Vec<usize> = (0..history.len()).collect();
    by_invocation.sort_by_key(|&i| history[i].invoked);
    // Responses of the completed calls not yet placed: the earliest bounds
    // which calls may go next.
    let mut returns: BTreeMap<(Instant, usize), ()> = history
        .iter()
        .enumerate()
        .filter_map(|(i, call)| call.returned.map(|r| ((r, i), ())))
        .collect();
    let mut placed = Placed::new(history.len());
    let mut tried: HashSet<(Placed, M::State)> = HashSet::new();
    let mut best: Vec<usize> = Vec::new();
    // Each frame: the state before its choice, the calls it may choose
    // from, and which of them it is trying.
    let mut stack: Vec<Frame<M::State>> = vec![Frame {
        state: model.init(),
        choices: candidates(history, &by_invocation, &placed, &returns),
        next: 0,
        chose: None,
    }];
    let mut steps = 0u64;
    while let Some(frame) = stack.last_mut() {
        steps += 1;
        if steps > MAX_STEPS {
            return Err(Anomaly {
                explained: best,
                gave_up: true,
            });
        }
        if let Some(undo) = frame.chose.take() {
            // Back from a failed choice: unplace it.
            placed.unset(undo);
            if let Some(at) = history[undo].returned {
                returns.insert((at, undo), ());
            }
        }
        let Some(&call) = frame.choices.get(frame.next) else {
            // Every choice failed from here.
            tried.insert((placed.clone(), frame.state.clone()));
            stack.pop();
            continue;
        };
        frame.next += 1;
        let Some(state) = model.step(&frame.state, &history[call].op) else {
            continue;
        };
        frame.chose = Some(call);
        placed.set(call);
        if let Some(at) = history[call].returned {
            returns.remove(&(at, call));
        }
        let depth = stack.len();
        if depth > best.len() {
            best = stack.iter().filter_map(|f| f.chose).collect();
        }
        if returns.is_empty() {
            return Ok(()); // every completed call is placed
        }
        if tried.contains(&(placed.clone(), state.clone())) {
            continue; // the next loop turn undoes this choice
        }
        let choices = candidates(history, &by_invocation, &placed, &returns);
        stack.push(Frame {
            state,
            choices,
            next: 0,
            chose: None,
        });
    }
    Err(Anomaly {
        explained: best,
        gave_up: false,
    })
}

/// One level of the search.
struct Frame<S> {
    state: S,
    choices: Vec<usize>,
    next: usize,
    /// The choice being explored below this frame, to undo on return.
    chose: Option<usize>,
}

/// Which calls are placed: a bit set.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Placed(Vec<u64>);

impl Placed {
    fn new(len: usize) -> Self {
        Placed(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn unset(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// The calls that may go next: not placed, and invoked before the earliest
/// response among the completed calls not placed (a call that returned
/// before another was invoked must come first).
fn candidates<O>(
    history: &[Call<O>],
    by_invocation: &[usize],
    placed: &Placed,
    returns: &BTreeMap<(Instant, usize), ()>,
) -> Vec<usize> {
    let first_return = returns.keys().next().map(|(at, _)| *at);
    by_invocation
        .iter()
        .copied()
        .filter(|&i| !placed.get(i))
        .take_while(|&i| first_return.is_none_or(|r| history[i].invoked <= r))
        .collect()
}

/// A lock with fencing tokens: one holder at a time, and each grant's
/// token higher than every earlier grant's.
#[derive(Debug, Clone, Copy, Default)]
pub struct FencedLock;

/// An operation on a [`FencedLock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOp {
    /// Granted with this token.
    Acquired(u64),
    /// The holder of this token gave it up (or learned it lost it).
    Released(u64),
}

impl Model for FencedLock {
    /// The holder's token, and the highest token granted so far.
    type State = (Option<u64>, u64);
    type Op = LockOp;

    fn init(&self) -> Self::State {
        (None, 0)
    }

    fn step(
        &self,
        &(holder, highest): &Self::State,
        op: &LockOp,
    ) -> Option<Self::State> {
        match *op {
            LockOp::Acquired(token) if holder.is_none() && token > highest => {
                Some((Some(token), token))
            }
            LockOp::Released(token) if holder == Some(token) => Some((None, highest)),
            _ => None,
        }
    }
}

/// A semaphore with fencing tokens: at most `permits` holders at once,
/// each with a token no other grant had. (Tokens need not rise from one
/// grant to the next: a semaphore's waiters may be served out of the order
/// their tokens were made in.) Its operations are [`LockOp`]s.
#[derive(Debug, Clone, Copy)]
pub struct Semaphore {
    /// How many may hold at once.
    pub permits: usize,
}

impl Model for Semaphore {
    /// The tokens held now, and every token granted so far.
    type State = (
        std::collections::BTreeSet<u64>,
        std::collections::BTreeSet<u64>,
    );
    type Op = LockOp;

    fn init(&self) -> Self::State {
        Default::default()
    }

    fn step(&self, (held, granted): &Self::State, op: &LockOp) -> Option<Self::State> {
        let (mut held, mut granted) = (held.clone(), granted.clone());
        match *op {
            LockOp::Acquired(token) => {
                if held.len() >= self.permits || !granted.insert(token) {
                    return None;
                }
                held.insert(token);
            }
            LockOp::Released(token) => {
                if !held.remove(&token) {
                    return None;
                }
            }
        }
        Some((held, granted))
    }
}

/// Checks a FIFO queue's history directly, for items that are all
/// different and dequeues that never come back empty (they wait): the
/// general search is exponential when many enqueues overlap, but for such
/// queues a history is linearizable exactly when none of these shows
/// (Henzinger et al., "Aspect-oriented linearizability proofs"):
///
/// - an item dequeued twice;
/// - an item dequeued that was never enqueued, or dequeued before its
///   enqueue began;
/// - items `a` and `b` where `a`'s enqueue returned before `b`'s began,
///   but `b`'s dequeue returned before `a`'s began, or `b` was dequeued
///   and `a` never was (only for completed histories: pass `complete`).
///
/// O(n²) in the number of items.
pub fn check_fifo(history: &[Call<QueueOp>], complete: bool) -> Result<(), String> {
    use std::collections::HashMap;
    let mut enqueued: HashMap<&str, &Call<QueueOp>> = HashMap::new();
    let mut dequeued: HashMap<&str, &Call<QueueOp>> = HashMap::new();
    for call in history {
        match &call.op {
            QueueOp::Enqueued(item) => {
                if enqueued.insert(item, call).is_some() {
                    return Err(format!("{item} enqueued twice: items must differ"));
                }
            }
            QueueOp::Dequeued(item) => {
                if dequeued.insert(item, call).is_some() {
                    return Err(format!("{item} dequeued twice"));
                }
            }
        }
    }
    for (item, deq) in &dequeued {
        let Some(enq) = enqueued.get(item) else {
            return Err(format!("{item} dequeued, never enqueued"));
        };
        if deq.returned.is_some_and(|r| r < enq.invoked) {
            return Err(format!("{item} dequeued before it was enqueued"));
        }
    }
    let before = |x: &Call<QueueOp>, y: &Call<QueueOp>| {
        x.returned.is_some_and(|r| r < y.invoked)
    };
    for (a, enq_a) in &enqueued {
        for (b, enq_b) in &enqueued {
            if a == b || !before(enq_a, enq_b) {
                continue;
            }
            let Some(deq_b) = dequeued.get(b) else {
                continue;
            };
            match dequeued.get(a) {
                Some(deq_a) if before(deq_b, deq_a) => {
                    return Err(format!(
                        "{a} was enqueued before {b}, but dequeued after it"
                    ));
                }
                None if complete && enq_a.returned.is_some() => {
                    return Err(format!(
                        "{a} was enqueued before {b}, which was dequeued; {a} never was"
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Completes a lock or semaphore history for the checker: a holder whose
/// release was never recorded (its task was stopped, its call cut short)
/// stopped holding at some unknown moment after its grant — a release
/// with no response, invoked when the grant returned.
pub fn close_open_holds(calls: &mut Vec<Call<LockOp>>) {
    let released: HashSet<u64> = calls
        .iter()
        .filter_map(|c| match c.op {
            LockOp::Released(token) => Some(token),
            LockOp::Acquired(_) => None,
        })
        .collect();
    let open: Vec<Call<LockOp>> = calls
        .iter()
        .filter_map(|c| match c.op {
            LockOp::Acquired(token) if !released.contains(&token) => Some(Call {
                process: c.process,
                invoked: c.returned.unwrap_or(c.invoked),
                returned: None,
                op: LockOp::Released(token),
            }),
            _ => None,
        })
        .collect();
    calls.extend(open);
}

/// A FIFO queue that delivers each item once. The general search on it
/// grows fast with overlapping enqueues; for long histories of distinct
/// items use [`check_fifo`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FifoQueue;

/// An operation on a [`FifoQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOp {
    /// This item was added.
    Enqueued(String),
    /// This item was taken.
    Dequeued(String),
}

impl Model for FifoQueue {
    type State = std::collections::VecDeque<String>;
    type Op = QueueOp;

    fn init(&self) -> Self::State {
        Default::default()
    }

    fn step(&self, state: &Self::State, op: &QueueOp) -> Option<Self::State> {
        let mut next = state.clone();
        match op {
            QueueOp::Enqueued(item) => next.push_back(item.clone()),
            QueueOp::Dequeued(item) => {
                if next.pop_front().as_ref() != Some(item) {
                    return None;
                }
            }
        }
        Some(next)
    }
}

/// The lesson's bank: accounts whose balances only transfers change. A
/// transfer moves half of what it read in one account to another, and is
/// legal only where the balances it read are the balances then — so a
/// history of committed transfers is explained only by a serial order:
/// two transfers that read the same balance and both committed (a lost
/// update) have none.
#[derive(Debug, Clone, Copy)]
pub struct Bank {
    /// How many accounts, each starting with `opening`.
    pub accounts: usize,
    /// The opening balance of every account.
    pub opening: u64,
}

/// An operation on a [`Bank`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankOp {
    /// Read `seen_from` in `from` and `seen_to` in `to`, then moved
    /// `seen_from / 2` from `from` to `to`.
    Transfer {
        /// The account paid from.
        from: usize,
        /// The account paid to.
        to: usize,
        /// The balances read.
        seen_from: u64,
        /// The balances read.
        seen_to: u64,
    },
    /// Read every balance at once.
    Audit(Vec<u64>),
}

impl Model for Bank {
    type State = Vec<u64>;
    type Op = BankOp;

    fn init(&self) -> Self::State {
        vec![self.opening; self.accounts]
    }

    fn step(&self, state: &Self::State, op: &BankOp) -> Option<Self::State> {
        match *op {
            BankOp::Transfer {
                from,
                to,
                seen_from,
                seen_to,
            } => {
                if from == to
                    || state.get(from) != Some(&seen_from)
                    || state.get(to) != Some(&seen_to)
                {
                    return None;
                }
                let mut next = state.clone();
                next[from] -= seen_from / 2;
                next[to] += seen_from / 2;
                Some(next)
            }
            BankOp::Audit(ref balances) => (balances == state).then(|| state.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A call by `process` from `from` to `to` milliseconds after `t0`.
    fn call<O>(
        t0: Instant,
        process: usize,
        from: u64,
        to: Option<u64>,
        op: O,
    ) -> Call<O> {
        Call {
            process,
            invoked: t0 + Duration::from_millis(from),
            returned: to.map(|to| t0 + Duration::from_millis(to)),
            op,
        }
    }

    #[test]
    fn one_holder_after_another_is_accepted() {
        let t0 = Instant::now();
        let history = [
            call(t0, 1, 0, Some(10), LockOp::Acquired(1)),
            call(t0, 1, 20, Some(30), LockOp::Released(1)),
            // Invoked while 1 held it, granted after the release.
            call(t0, 2, 5, Some(40), LockOp::Acquired(2)),
            call(t0, 2, 50, Some(60), LockOp::Released(2)),
        ];
        assert_eq!(check(&FencedLock, &history), Ok(()));
    }

    #[test]
    fn two_overlapping_holders_are_rejected() {
        let t0 = Instant::now();
        let history = [
            call(t0, 1, 0, Some(10), LockOp::Acquired(1)),
            call(t0, 2, 15, Some(20), LockOp::Acquired(2)),
            call(t0, 1, 25, Some(30), LockOp::Released(1)),
        ];
        let anomaly = check(&FencedLock, &history).unwrap_err();
        assert!(anomaly.explained.len() < 3, "{anomaly}");
    }

    #[test]
    fn a_token_lower_than_an_earlier_grants_is_rejected() {
        let t0 = Instant::now();
        let history = [
            call(t0, 1, 0, Some(10), LockOp::Acquired(7)),
            call(t0, 1, 20, Some(30), LockOp::Released(7)),
            call(t0, 2, 40, Some(50), LockOp::Acquired(5)),
        ];
        assert!(check(&FencedLock, &history).is_err());
    }

    #[test]
    fn a_holder_cut_off_may_have_released_at_any_time() {
        let t0 = Instant::now();
        let history = [
            call(t0, 1, 0, Some(10), LockOp::Acquired(1)),
            // Its release never answered (cut off): it may have applied.
            call(t0, 1, 20, None, LockOp::Released(1)),
            call(t0, 2, 30, Some(40), LockOp::Acquired(2)),
        ];
        assert_eq!(check(&FencedLock, &history), Ok(()));
    }

    /// A soak's worth of calls: three processes taking turns 2,000 times,
    /// each grant overlapping the previous release. Accepted, without
    /// running out of stack; and one late overlap at the very end is found.
    #[test]
    fn long_histories_are_checked_and_a_late_overlap_found() {
        let t0 = Instant::now();
        let mut history = Vec::new();
        for turn in 0..2_000u64 {
            let at = turn * 10;
            let token = turn + 1;
            let process = (turn % 3) as usize;
            history.push(call(t0, process, at, Some(at + 4), LockOp::Acquired(token)));
            history.push(call(
                t0,
                process,
                at + 6,
                Some(at + 12),
                LockOp::Released(token),
            ));
        }
        assert_eq!(check(&FencedLock, &history), Ok(()));
        // A holder granted before the last one's release began.
        let end = 2_000 * 10;
        history.push(call(t0, 1, end - 9, Some(end - 8), LockOp::Acquired(5_000)));
        assert!(check(&FencedLock, &history).is_err());
    }

    #[test]
    fn concurrent_transfers_in_some_serial_order_are_accepted_a_lost_update_is_not() {
        let t0 = Instant::now();
        let bank = Bank {
            accounts: 3,
            opening: 100,
        };
        let transfer = |from, to, seen_from, seen_to| BankOp::Transfer {
            from,
            to,
            seen_from,
            seen_to,
        };
        // Overlapping in time; they only fit one way round: 0→1 first.
        let serial = [
            call(t0, 1, 0, Some(20), transfer(1, 2, 150, 100)),
            call(t0, 2, 5, Some(15), transfer(0, 1, 100, 100)),
            call(t0, 3, 30, Some(31), BankOp::Audit(vec![50, 75, 175])),
        ];
        assert_eq!(check(&bank, &serial), Ok(()));
        // Both read account 0 at 100 and both committed.
        let lost_update = [
            call(t0, 1, 0, Some(20), transfer(0, 1, 100, 100)),
            call(t0, 2, 5, Some(15), transfer(0, 2, 100, 100)),
        ];
        assert!(check(&bank, &lost_update).is_err());
    }

    #[test]
    fn a_semaphore_takes_as_many_holders_as_permits_and_no_more() {
        let t0 = Instant::now();
        let two = Semaphore { permits: 2 };
        let history = [
            call(t0, 1, 0, Some(10), LockOp::Acquired(5)),
            call(t0, 2, 0, Some(10), LockOp::Acquired(3)), // out of order: fine
            call(t0, 1, 20, Some(30), LockOp::Released(5)),
            call(t0, 3, 25, Some(40), LockOp::Acquired(9)),
        ];
        assert_eq!(check(&two, &history), Ok(()));
        let third_at_once = [
            call(t0, 1, 0, Some(10), LockOp::Acquired(1)),
            call(t0, 2, 0, Some(10), LockOp::Acquired(2)),
            call(t0, 3, 0, Some(10), LockOp::Acquired(3)),
        ];
        assert!(check(&two, &third_at_once).is_err());
        let token_twice = [
            call(t0, 1, 0, Some(10), LockOp::Acquired(1)),
            call(t0, 1, 20, Some(30), LockOp::Released(1)),
            call(t0, 2, 40, Some(50), LockOp::Acquired(1)),
        ];
        assert!(check(&two, &token_twice).is_err());
    }

    /// b's and c's enqueues overlap, so either order is fine, and the
    /// dequeues pick c first.
    fn overlapping_fifo(t0: Instant) -> [Call<QueueOp>; 6] {
        let e = |s: &str| QueueOp::Enqueued(s.to_string());
        let d = |s: &str| QueueOp::Dequeued(s.to_string());
        [
            call(t0, 1, 0, Some(10), e("a")),
            call(t0, 1, 20, Some(40), e("b")),
            call(t0, 2, 25, Some(35), e("c")),
            call(t0, 3, 50, Some(60), d("a")),
            call(t0, 3, 70, Some(80), d("c")),
            call(t0, 3, 90, Some(100), d("b")),
        ]
    }

    #[test]
    fn fifo_with_overlapping_calls_is_accepted() {
        assert_eq!(check(&FifoQueue, &overlapping_fifo(Instant::now())), Ok(()));
    }

    #[test]
    fn the_direct_fifo_check_agrees_with_the_search() {
        let t0 = Instant::now();
        let e = |s: &str| QueueOp::Enqueued(s.to_string());
        let d = |s: &str| QueueOp::Dequeued(s.to_string());
        assert_eq!(check_fifo(&overlapping_fifo(t0), true), Ok(()));
        let reordered = [
            call(t0, 1, 0, Some(10), e("a")),
            call(t0, 1, 20, Some(30), e("b")),
            call(t0, 2, 40, Some(50), d("b")),
            call(t0, 2, 60, Some(70), d("a")),
        ];
        assert!(check_fifo(&reordered, true).is_err());
        assert!(check(&FifoQueue, &reordered).is_err());
        let skipped = [
            call(t0, 1, 0, Some(10), e("a")),
            call(t0, 1, 20, Some(30), e("b")),
            call(t0, 2, 40, Some(50), d("b")),
        ];
        assert!(check_fifo(&skipped, true).is_err());
        assert!(check(&FifoQueue, &skipped).is_err());
        assert_eq!(check_fifo(&skipped, false), Ok(()), "a may still be taken");
        let twice = [
            call(t0, 1, 0, Some(10), e("a")),
            call(t0, 2, 20, Some(30), d("a")),
            call(t0, 3, 25, Some(35), d("a")),
        ];
        assert!(check_fifo(&twice, true).is_err());
        assert!(check(&FifoQueue, &twice).is_err());
        let invented = [call(t0, 2, 20, Some(30), d("x"))];
        assert!(check_fifo(&invented, true).is_err());
        assert!(check(&FifoQueue, &invented).is_err());
    }

    #[test]
    fn a_reordered_pair_and_a_duplicate_are_rejected() {
        let t0 = Instant::now();
        let e = |s: &str| QueueOp::Enqueued(s.to_string());
        let d = |s: &str| QueueOp::Dequeued(s.to_string());
        let reordered = [
            call(t0, 1, 0, Some(10), e("a")),
            call(t0, 1, 20, Some(30), e("b")),
            call(t0, 2, 40, Some(50), d("b")),
            call(t0, 2, 60, Some(70), d("a")),
        ];
        assert!(check(&FifoQueue, &reordered).is_err());
        let duplicated = [
            call(t0, 1, 0, Some(10), e("a")),
            call(t0, 2, 20, Some(30), d("a")),
            call(t0, 3, 25, Some(35), d("a")),
        ];
        assert!(check(&FifoQueue, &duplicated).is_err());
        let lost_then_found = [
            call(t0, 1, 0, Some(10), e("a")),
            call(t0, 2, 20, Some(30), d("x")),
        ];
        assert!(check(&FifoQueue, &lost_then_found).is_err());
    }
}
