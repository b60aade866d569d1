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

use std::collections::HashSet;
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
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
pub fn check<M: Model>(model: &M, history: &[Call<M::Op>]) -> Result<(), Anomaly> {
    let mut search = Search {
        model,
        history,
        placed: vec![false; history.len()],
        order: Vec::new(),
        best: Vec::new(),
        tried: HashSet::new(),
    };
    if search.run(model.init()) {
        Ok(())
    } else {
        Err(Anomaly {
            explained: search.best,
        })
    }
}

struct Search<'a, M: Model> {
    model: &'a M,
    history: &'a [Call<M::Op>],
    placed: Vec<bool>,
    order: Vec<usize>,
    best: Vec<usize>,
    /// (placed set, state) pairs already explored without success.
    tried: HashSet<(Vec<bool>, M::State)>,
}

impl<M: Model> Search<'_, M> {
    fn run(&mut self, state: M::State) -> bool {
        if self.order.len() > self.best.len() {
            self.best = self.order.clone();
        }
        // Done when every completed operation is placed.
        let open: Vec<usize> = (0..self.history.len())
            .filter(|&i| !self.placed[i])
            .collect();
        if open.iter().all(|&i| self.history[i].returned.is_none()) {
            return true;
        }
        if !self.tried.insert((self.placed.clone(), state.clone())) {
            return false;
        }
        // An operation can go next only if it was invoked before every
        // other open operation returned.
        let first_return = open.iter().filter_map(|&i| self.history[i].returned).min();
        for &i in &open {
            let call = &self.history[i];
            if first_return.is_some_and(|r| call.invoked > r) {
                continue;
            }
            if let Some(next) = self.model.step(&state, &call.op) {
                self.placed[i] = true;
                self.order.push(i);
                if self.run(next) {
                    return true;
                }
                self.order.pop();
                self.placed[i] = false;
            }
        }
        false
    }
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

/// A FIFO queue that delivers each item once.
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

    #[test]
    fn fifo_with_overlapping_calls_is_accepted() {
        let t0 = Instant::now();
        let e = |s: &str| QueueOp::Enqueued(s.to_string());
        let d = |s: &str| QueueOp::Dequeued(s.to_string());
        let history = [
            call(t0, 1, 0, Some(10), e("a")),
            // b's and c's enqueues overlap: either order is fine...
            call(t0, 1, 20, Some(40), e("b")),
            call(t0, 2, 25, Some(35), e("c")),
            // ...and the dequeues pick c first.
            call(t0, 3, 50, Some(60), d("a")),
            call(t0, 3, 70, Some(80), d("c")),
            call(t0, 3, 90, Some(100), d("b")),
        ];
        assert_eq!(check(&FifoQueue, &history), Ok(()));
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
