//! A session: one lease, kept alive in the background, whose loss is visible.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::etcd::Client;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, instrument, warn};

use crate::etcd::EtcdError;

/// A lease that lives as long as this process keeps it alive.
///
/// Keys written with the session's lease (lock keys, election keys, waiter
/// keys) disappear when the lease expires: when the process dies, is paused
/// too long, or loses its connection for longer than the TTL. That is what
/// makes a crashed holder release its lock.
///
/// Guarantees:
/// - The lease is renewed every TTL/3. A failed renewal is retried until the
///   lease would have expired; then the session is *lost* for good.
/// - Loss is visible: [`is_lost`](Self::is_lost) and [`lost`](Self::lost).
///   Locks and leadership built on a lost session are no longer held.
/// - [`close`](Self::close) revokes the lease, releasing everything at once.
///   Dropping the last clone only stops the renewals; the lease then
///   expires after its TTL.
///
/// Clones share one lease.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use std::time::Duration;
/// use cpr_distributed::etcd::{EtcdConfig, Session};
///
/// let client = EtcdConfig::from_env()?.connect().await?;
/// let session = Session::new(client, Duration::from_secs(10)).await?;
/// // ... build locks, elections and work queues on &session ...
/// session.close().await?; // releases everything held through it
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    lease: i64,
    ttl: i64,
    lost: watch::Receiver<bool>,
    /// Sets `lost`: the keep-alive task when the lease runs out, and
    /// [`Session::close`].
    lose: Arc<watch::Sender<bool>>,
    /// Set by [`Session::close`], so that errors say "closed", not "lost".
    closed: std::sync::atomic::AtomicBool,
    keep_alive: JoinHandle<()>,
    /// Keys that a recipe object of this process holds or waits for under
    /// this lease (see [`Session::claim`]).
    claims: std::sync::Mutex<HashMap<String, ClaimState>>,
}

/// Whether a claimed key is in use, or on its way out (its delete is in
/// flight in the background).
enum ClaimState {
    InUse,
    Releasing(Arc<Notify>),
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.keep_alive.abort();
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("lease", &format_args!("{:x}", self.inner.lease))
            .field("ttl", &self.inner.ttl)
            .field("lost", &self.is_lost())
            .finish()
    }
}

/// The TTL etcd's Go `concurrency.Session` uses by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

impl Session {
    /// Grants a lease of `ttl` (whole seconds, at least 1) and starts
    /// renewing it.
    ///
    /// Fails with [`EtcdError::TimedOut`] if etcd does not answer within
    /// the client's [operation bound](Client::operation_bound).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped after the lease was granted,
    /// the lease is not renewed and expires after `ttl`.
    #[instrument(level = "debug", skip(client))]
    pub async fn new(client: Client, ttl: Duration) -> Result<Self, EtcdError> {
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        if ttl_secs < 1 || ttl.subsec_nanos() != 0 {
            return Err(EtcdError::InvalidConfig(format!(
                "a session TTL is a whole number of seconds, at least 1; got {ttl:?}"
            )));
        }
        let bound = client.operation_bound();
        let mut granting = client.clone();
        let granted = tokio::time::timeout(bound, async {
            let lease = granting.lease_grant(ttl_secs, None).await?.id();
            let (keeper, stream) = granting.lease_keep_alive(lease).await?;
            Ok::<_, etcd_client::Error>((lease, keeper, stream))
        })
        .await;
        let (lease, keeper, stream) =
            granted.map_err(|_| EtcdError::TimedOut { waited: bound })??;
        let (lost_tx, lost_rx) = watch::channel(false);
        let lose = Arc::new(lost_tx);
        let keep_alive = tokio::spawn(keep_alive(
            client.clone(),
            lease,
            ttl_secs,
            keeper,
            stream,
            lose.clone(),
        ));
        debug!(lease = format_args!("{lease:x}"), "session started");
        Ok(Session {
            inner: Arc::new(Inner {
                client,
                lease,
                ttl: ttl_secs,
                lost: lost_rx,
                lose,
                closed: std::sync::atomic::AtomicBool::new(false),
                keep_alive,
                claims: std::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The lease id; keys are written with it.
    pub fn lease_id(&self) -> i64 {
        self.inner.lease
    }

    /// The TTL in seconds.
    pub fn ttl_seconds(&self) -> i64 {
        self.inner.ttl
    }

    /// A handle on the client this session uses.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// True once the lease has expired, could not be renewed in time, or
    /// was revoked by [`close`](Self::close) (on any clone).
    pub fn is_lost(&self) -> bool {
        *self.inner.lost.borrow()
    }

    /// True once [`close`](Self::close) was called on any clone.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `Ok` while the session can be used to hold things; otherwise the
    /// error to give: closed, or lost. Recipes check it before they write
    /// keys on the lease, so that a closed session is named as such rather
    /// than reported by etcd as "requested lease not found".
    pub(crate) fn ensure_alive(&self) -> Result<(), EtcdError> {
        if self.is_lost() {
            return Err(self.lost_error());
        }
        Ok(())
    }

    /// Waits until the session is lost. Never returns while it is alive.
    ///
    /// # Cancel safety
    ///
    /// Safe; dropping the future has no effect.
    pub async fn lost(&self) -> EtcdError {
        let mut lost = self.inner.lost.clone();
        // An error means the renewal task is gone, which also means lost.
        let _ = lost.wait_for(|lost| *lost).await;
        self.lost_error()
    }

    /// Marks `key` as used by one recipe object of this process until the
    /// returned claim is dropped; `None` if another object uses it now. If
    /// the key is only being released (its delete is in flight), waits for
    /// that first.
    ///
    /// Two `Mutex`es on one session and name would share one key (and both
    /// "hold" the lock); the claim makes the second
    /// one fail instead. It also means that a key with our lease that we did
    /// not claim is a leftover of our own failed attempt, safe to adopt.
    pub(crate) async fn claim(&self, key: &str) -> Option<Claim> {
        loop {
            let released = {
                let mut claims = self.claims();
                match claims.get(key) {
                    None => {
                        claims.insert(key.to_string(), ClaimState::InUse);
                        return Some(Claim {
                            session: self.clone(),
                            key: key.to_string(),
                        });
                    }
                    Some(ClaimState::InUse) => return None,
                    Some(ClaimState::Releasing(done)) => Arc::clone(done),
                }
            };
            // The wake-up can come between dropping the lock above and
            // starting to wait; the bounded wait covers that rare miss.
            let _ =
                tokio::time::timeout(Duration::from_millis(200), released.notified())
                    .await;
        }
    }

    /// The keys claimed on this session. A panic while the lock was held
    /// leaves the map as it was between two whole updates: used as is.
    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, ClaimState>> {
        self.inner
            .claims
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn lost_error(&self) -> EtcdError {
        let lease = self.inner.lease;
        if self.is_closed() {
            EtcdError::SessionClosed { lease }
        } else {
            EtcdError::SessionLost { lease }
        }
    }

    /// Revokes the lease: every key written with it is deleted at once, so
    /// locks and leadership held through it are released. From this call
    /// on, the session and every guard on it report themselves lost
    /// (`is_lost`), and recipes used with it fail with
    /// [`EtcdError::SessionClosed`]. If etcd does not answer within the
    /// operation bound, this fails with [`EtcdError::TimedOut`] and the
    /// keys go when the lease's TTL runs out.
    pub async fn close(self) -> Result<(), EtcdError> {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.lose.send_replace(true);
        self.inner.keep_alive.abort();
        // If etcd does not answer, the lease still ends at its TTL, since
        // nothing renews it any more.
        let bound = self.inner.client.operation_bound();
        tokio::time::timeout(
            bound,
            self.inner.client.clone().lease_revoke(self.inner.lease),
        )
        .await
        .map_err(|_| EtcdError::TimedOut { waited: bound })??;
        Ok(())
    }
}

/// A key in use by one recipe object; released on drop.
pub(crate) struct Claim {
    session: Session,
    key: String,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Claim").field(&self.key).finish()
    }
}

impl Claim {
    /// The key's delete has been handed to a background task: a new claim
    /// on it waits for this one instead of failing.
    pub(crate) fn mark_releasing(&self) {
        self.session.mark_claim_releasing(&self.key);
    }
}

impl Session {
    /// The claim on `key` is on its way out (its holder's task will delete
    /// the key, then drop the claim): a new claim waits instead of failing.
    pub(crate) fn mark_claim_releasing(&self, key: &str) {
        let mut claims = self.claims();
        if let Some(state @ ClaimState::InUse) = claims.get_mut(key) {
            *state = ClaimState::Releasing(Arc::new(Notify::new()));
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let removed = self.session.claims().remove(&self.key);
        if let Some(ClaimState::Releasing(done)) = removed {
            done.notify_waiters();
        }
    }
}

/// How long before the lease's end, as this side can know it, the session
/// calls itself lost: a twentieth of the TTL, at least 50 ms — room for a
/// late wake-up of the keep-alive task, so that the holder hears of the
/// loss before another process can be granted what it held.
fn loss_margin(ttl: Duration) -> Duration {
    (ttl / 20).max(Duration::from_millis(50)).min(ttl / 2)
}

/// Renews the lease every TTL/3 until it expires or cannot be renewed before
/// its deadline, then reports the loss.
async fn keep_alive(
    client: Client,
    lease: i64,
    ttl: i64,
    mut keeper: etcd_client::LeaseKeeper,
    mut stream: etcd_client::LeaseKeepAliveStream,
    lost: Arc<watch::Sender<bool>>,
) {
    let ttl_duration = Duration::from_secs(ttl.unsigned_abs());
    let period = ttl_duration / 3;
    // The lease is certainly alive until this instant: the server extends
    // it by the TTL from when it *receives* a renewal, which is after we
    // sent it. Less a margin, so that the loss is reported before the
    // server can revoke the lease even if this task is woken late.
    let margin = loss_margin(ttl_duration);
    let mut deadline = tokio::time::Instant::now() + ttl_duration - margin;
    loop {
        tokio::time::sleep(period).await;
        loop {
            let sent_at = tokio::time::Instant::now();
            if sent_at >= deadline {
                warn!(
                    lease = format_args!("{lease:x}"),
                    "session lease could not be renewed in time"
                );
                let _ = lost.send(true);
                return;
            }
            let renewed = async {
                keeper.keep_alive().await?;
                stream.message().await
            };
            // One renewal may hang (a member that forwards it to a leader
            // being elected, a cut link): give each a third of the TTL, then
            // try again on a fresh stream, so that one slow answer cannot
            // use up the whole lease.
            let attempt_until = (sent_at + period).min(deadline);
            match tokio::time::timeout_at(attempt_until, renewed).await {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {
                    deadline = sent_at
                        + Duration::from_secs(response.ttl().unsigned_abs())
                            .saturating_sub(margin);
                    break;
                }
                Ok(Ok(Some(_expired))) => {
                    warn!(lease = format_args!("{lease:x}"), "session lease expired");
                    let _ = lost.send(true);
                    return;
                }
                Ok(Ok(None) | Err(_)) | Err(_) => {
                    // The stream broke (for example the etcd member we talk
                    // to died) or the renewal is late: open a new stream and
                    // try again, until the deadline above says it is too late.
                    // The pause never runs past the deadline: the loss must
                    // be reported on time, not a pause later.
                    let pause =
                        tokio::time::Instant::now() + Duration::from_millis(100);
                    tokio::time::sleep_until(pause.min(deadline)).await;
                    match tokio::time::timeout_at(
                        deadline,
                        client.clone().lease_keep_alive(lease),
                    )
                    .await
                    {
                        Ok(Ok((new_keeper, new_stream))) => {
                            keeper = new_keeper;
                            stream = new_stream;
                        }
                        Ok(Err(error)) => {
                            debug!(%error, "reopening the keep-alive stream failed")
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }
}
