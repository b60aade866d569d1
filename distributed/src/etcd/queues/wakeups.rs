//! No thundering herd across processes: of all the processes with idle
//! consumers on one queue, only the first in a line reacts to new items.
//!
//! Within a process, consumers of one queue share one watch that wakes one
//! of them per item. Across processes that is not enough: eight processes
//! with an idle consumer each would all wake for one item, all read the
//! queue and all race to take it — seventeen requests where three do.
//!
//! So a process with idle consumers joins a line of keys,
//! `cpr-idle/<q or w>/<queue prefix><nanos>`, on a lease of its own. Only the process
//! whose key is first watches the queue; the others wait for the key ahead
//! of theirs to go (as waiters of a lock do). When the first process has no
//! idle consumer left, it leaves the line, and the next one takes over: it
//! reads the queue once, then watches it. If a process dies, its key goes
//! with its lease (after [`IDLE_TTL`]), and the next takes over then.
//! Meanwhile, and whenever the process ahead is slow to serve, each process
//! further back reads the queue once every [`LOOK_ANYWAY_EVERY`]: no item
//! waits longer than that beside an idle consumer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use crate::etcd::Client;
use etcd_client::{Event, WatchOptions};
use tokio::sync::Notify;
use tracing::debug;

use crate::etcd::keys::guarded_delete::delete_if_created_at;
use crate::etcd::keys::name::is_direct_child_of;
use crate::etcd::keys::unique::create_unique;
use crate::etcd::keys::wait::wait_for_predecessors;
use crate::etcd::{EtcdError, Session};

/// The prefix of every idle line.
pub(crate) const IDLE_PREFIX: &str = "cpr-idle/";
/// The lease of a process's place in line. A process that dies leaves its
/// place this long after.
pub(crate) const IDLE_TTL: Duration = Duration::from_secs(10);
/// How often a process that is not first in line lets one of its idle
/// consumers look at the queue anyway. The process ahead may be hung or
/// dead (its place stays until its lease ends), or its consumers busy
/// elsewhere: this bounds how long an item can wait beside an idle
/// consumer to about one period, at the cost of one read per period per
/// waiting process.
pub(crate) const LOOK_ANYWAY_EVERY: Duration = Duration::from_secs(1);

/// Which watch events are worth waking a consumer for.
pub(crate) type WakesOn = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

/// The wake-ups of one queue object (shared by its clones): consumers
/// register as waiting and wait for an arrival; a coordinator task, started
/// on demand, queues the process up in the idle line and, once first,
/// turns each relevant event under `watch_prefix` into one wake-up.
pub(crate) struct Wakeups {
    client: Client,
    line_prefix: String,
    watch_prefix: String,
    wakes_on: WakesOn,
    signals: Arc<Signals>,
}

impl Wakeups {
    /// Wake-ups for the consumers of the `kind` of queue (`"q"` for the
    /// queues, `"w"` for work queues, so that the two never share a line)
    /// whose keys are under `watch_prefix`.
    pub(crate) fn new(
        client: Client,
        kind: &str,
        watch_prefix: String,
        wakes_on: WakesOn,
    ) -> Self {
        Wakeups {
            client,
            line_prefix: format!("{IDLE_PREFIX}{kind}/{watch_prefix}"),
            watch_prefix,
            wakes_on,
            signals: Arc::new(Signals::default()),
        }
    }

    /// Runs `look` until it finds something, waiting for a wake-up between
    /// looks: the wait loop of every consumer.
    ///
    /// # Cancel safety
    ///
    /// As `look`'s; the wait itself holds nothing.
    pub(crate) async fn wait_for<T, F, Fut>(&self, mut look: F) -> Result<T, EtcdError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, EtcdError>>,
    {
        let mut waiting = None;
        loop {
            // Register interest before looking, so that an item arriving
            // between the look and the wait still wakes us.
            let arrival = self.signals.arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            if let Some(found) = look().await? {
                return Ok(found);
            }
            // Counted as waiting (until we return or are dropped), so that
            // this process keeps its place in the queue's idle line.
            waiting.get_or_insert_with(|| self.signals.waiting());
            self.start();
            arrival.await;
        }
    }

    /// Passes a wake-up on to another waiting consumer: one wake-up may
    /// stand for several items.
    pub(crate) fn pass_on(&self) {
        self.signals.arrivals.notify_one();
    }

    /// Starts the coordinator if it is not running.
    ///
    /// The task is not aborted when the queue object is dropped: it ends by
    /// itself once no consumer waits (and by then none can: waiting
    /// consumers borrow the queue), after leaving the line — aborting it
    /// could leave its key behind, holding up other processes until the
    /// lease expired.
    pub(crate) fn start(&self) {
        if !self.signals.claim_coordinator() {
            return;
        }
        tokio::spawn(coordinate(
            self.client.clone(),
            self.line_prefix.clone(),
            self.watch_prefix.clone(),
            self.wakes_on.clone(),
            self.signals.clone(),
        ));
    }
}

/// What the consumers of one queue object and its coordinator share.
#[derive(Default)]
struct Signals {
    /// Consumers waiting for an item.
    waiting: AtomicUsize,
    /// One permit per item worth looking for.
    arrivals: Notify,
    /// Signalled when `waiting` drops to zero.
    no_waiters: Notify,
    /// Whether a coordinator task is running.
    running: std::sync::Mutex<bool>,
}

impl Signals {
    /// Counts a consumer as waiting until the guard is dropped.
    fn waiting(self: &Arc<Self>) -> WaitingGuard {
        self.waiting.fetch_add(1, SeqCst);
        WaitingGuard(self.clone())
    }

    /// Marks a coordinator as running; false if one already is.
    fn claim_coordinator(&self) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        !std::mem::replace(&mut *running, true)
    }

    /// The coordinator's exit: stops (true) only if nobody waits. Decided
    /// under the same lock as [`claim_coordinator`](Self::claim_coordinator),
    /// so a consumer that starts waiting meanwhile either sees it running or
    /// starts a new one.
    fn stop_if_idle(&self) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if self.waiting.load(SeqCst) == 0 {
            *running = false;
            true
        } else {
            false
        }
    }

    /// Completes once no consumer waits.
    async fn until_no_waiters(&self) {
        loop {
            let changed = self.no_waiters.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.waiting.load(SeqCst) == 0 {
                return;
            }
            changed.await;
        }
    }
}

/// A waiting consumer, counted while this lives.
pub(crate) struct WaitingGuard(Arc<Signals>);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        if self.0.waiting.fetch_sub(1, SeqCst) == 1 {
            self.0.no_waiters.notify_waiters();
        }
    }
}

/// Runs while this process has waiting consumers: queues up in the idle
/// line, and once first, turns each new item into one wake-up.
///
/// If etcd fails on the way, every local consumer is woken to look for
/// itself (nothing waits forever on a broken watch), and the coordinator
/// queues up again.
async fn coordinate(
    client: Client,
    line_prefix: String,
    watch_prefix: String,
    wakes_on: WakesOn,
    signals: Arc<Signals>,
) {
    let mut session: Option<Session> = None;
    loop {
        if signals.stop_if_idle() {
            return;
        }
        let turn = take_turn(
            &client,
            &line_prefix,
            &watch_prefix,
            &wakes_on,
            &signals,
            &mut session,
        )
        .await;
        if let Err(error) = turn {
            debug!(%error, "idle line failed; waking local consumers to look for themselves");
            signals.arrivals.notify_waiters();
            // Revoking the lease removes our key even if we lost track of
            // it, so that it does not hold up the line; if etcd is down, the
            // lease expires by itself.
            if let Some(lost) = session.take() {
                let _ = lost.close().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One turn: join the line, wait to be first, serve wake-ups while anyone
/// waits, leave.
async fn take_turn(
    client: &Client,
    line_prefix: &str,
    watch_prefix: &str,
    wakes_on: &WakesOn,
    signals: &Signals,
    session: &mut Option<Session>,
) -> Result<(), EtcdError> {
    let session = match session {
        Some(s) if !s.is_lost() => s.clone(),
        _ => {
            let fresh = Session::new(client.clone(), IDLE_TTL).await?;
            *session = Some(fresh.clone());
            fresh
        }
    };
    let (key, revision) =
        create_unique(client, line_prefix, "", session.lease_id()).await?;
    // The line of queue `a` is not that of queue `a/b`.
    let in_line = |key: &[u8]| is_direct_child_of(line_prefix, key);
    let served = tokio::select! {
        lost = session.lost() => Err(lost),
        () = signals.until_no_waiters() => Ok(()),
        served = async {
            tokio::select! {
                first = wait_for_predecessors(client, line_prefix, revision, &in_line) => first?,
                never = look_now_and_then(signals) => match never {},
            }
            serve_arrivals(client, watch_prefix, wakes_on, signals).await
        } => served,
    };
    // Leave the line (also after an error: the next process takes over).
    let left = delete_if_created_at(client, &key, revision).await;
    served.and(left.map(drop))
}

/// While waiting for our turn: wakes one local consumer every
/// [`LOOK_ANYWAY_EVERY`] to read the queue itself.
async fn look_now_and_then(signals: &Signals) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(LOOK_ANYWAY_EVERY).await;
        signals.arrivals.notify_one();
    }
}

/// First in line: watches the queue and wakes one consumer per relevant
/// event, after one wake-up for what arrived before the watch.
async fn serve_arrivals(
    client: &Client,
    watch_prefix: &str,
    wakes_on: &WakesOn,
    signals: &Signals,
) -> Result<(), EtcdError> {
    let options = WatchOptions::new().with_prefix();
    let mut watch = client.retried_watch(watch_prefix, Some(options)).await?;
    // The watch is in place: a consumer that reads now misses nothing.
    signals.arrivals.notify_one();
    while let Some(response) = watch.message().await? {
        if response.canceled() {
            return Err(EtcdError::WatchEnded {
                key: watch_prefix.to_string(),
                reason: response.cancel_reason().to_string(),
            });
        }
        for event in response.events() {
            if wakes_on(event) {
                signals.arrivals.notify_one();
            }
        }
    }
    Err(EtcdError::WatchEnded {
        key: watch_prefix.to_string(),
        reason: "the server closed the stream".into(),
    })
}
