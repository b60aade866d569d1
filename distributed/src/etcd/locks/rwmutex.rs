//! A distributed readers-writer lock on etcd, with the key layout of etcd's
//! Go `recipes.RWMutex`.

use etcd_client::Compare;
use tracing::{debug, instrument};

use crate::etcd::keys::guarded_delete::DeleteOnDrop;
use crate::etcd::keys::held_key::{HeldKey, OnDrop};
use crate::etcd::keys::name::{RecipeName, is_direct_child_of};
use crate::etcd::keys::unique::create_unique_or_undo;
use crate::etcd::keys::wait::wait_turn;
use crate::etcd::{EtcdError, Session};

/// Many readers or one writer, granted in arrival order.
///
/// A reader writes `<name>/read/<nanos>` and waits only for writers that
/// arrived before it; a writer writes `<name>/write/<nanos>` and waits for
/// everyone that arrived before it. Each waits on its closest predecessor
/// only, and re-checks its own key after waiting: a waiter whose session
/// expired meanwhile gets [`EtcdError::SessionLost`], never the lock.
///
/// Arrival order means a waiting writer blocks readers that come after it,
/// so writers do not starve.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use cpr_distributed::etcd::{EtcdConfig, RwMutex, Session, DEFAULT_TTL};
///
/// let client = EtcdConfig::from_env()?.connect().await?;
/// let session = Session::new(client, DEFAULT_TTL).await?;
/// let config = RwMutex::new(&session, "settings")?;
/// let reading = config.read_lock().await?; // shared with other readers
/// reading.unlock().await?;
/// let writing = config.write_lock().await?; // alone
/// writing.unlock().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`EtcdError::SessionLost`] (or `SessionClosed`) when the session ends
/// while waiting; [`EtcdError::TimedOut`] when etcd does not answer within
/// the client's operation bound.
#[derive(Debug, Clone)]
pub struct RwMutex {
    session: Session,
    name: RecipeName,
}

/// Which side of a [`RwMutex`] a guard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Read,
    Write,
}

impl RwMutex {
    /// A readers-writer lock called `name` (not empty; its keys are `<name>/…`).
    pub fn new(session: &Session, name: &str) -> Result<Self, EtcdError> {
        Ok(RwMutex {
            session: session.clone(),
            name: RecipeName::new(name)?,
        })
    }

    /// Waits until no writer that arrived earlier holds or waits, then holds
    /// a read lock (shared with other readers).
    ///
    /// # Cancel safety
    ///
    /// Safe; a dropped waiter's key is deleted in the background.
    #[instrument(level = "debug", skip(self), fields(name = self.name.as_str()))]
    pub async fn read_lock(&self) -> Result<RwMutexGuard, EtcdError> {
        // Readers only mind writers.
        self.acquire(Side::Read, &self.name.sub_prefix("write"))
            .await
    }

    /// Waits until everyone who arrived earlier has left, then holds the
    /// write lock (exclusive).
    ///
    /// # Cancel safety
    ///
    /// Safe; a dropped waiter's key is deleted in the background.
    #[instrument(level = "debug", skip(self), fields(name = self.name.as_str()))]
    pub async fn write_lock(&self) -> Result<RwMutexGuard, EtcdError> {
        // Writers mind both readers and writers: the whole prefix.
        self.acquire(Side::Write, &self.name.prefix()).await
    }

    async fn acquire(
        &self,
        side: Side,
        blockers: &str,
    ) -> Result<RwMutexGuard, EtcdError> {
        self.session.ensure_alive()?;
        let client = self.session.client();
        let own_prefix = self.name.sub_prefix(match side {
            Side::Read => "read",
            Side::Write => "write",
        });
        let (key, revision) =
            create_unique_or_undo(&client, &own_prefix, self.session.lease_id())
                .await?;
        let mut cleanup = DeleteOnDrop::new(&client, &key);
        cleanup.arm(revision, None);
        // Only this lock's own waiter keys count, not a nested name's.
        let (read, write) =
            (self.name.sub_prefix("read"), self.name.sub_prefix("write"));
        let in_line = |key: &[u8]| {
            is_direct_child_of(&write, key)
                || (side == Side::Write && is_direct_child_of(&read, key))
        };
        wait_turn(&self.session, blockers, &in_line, &key, revision).await?;
        cleanup.disarm();
        debug!(%key, ?side, "acquired");
        Ok(RwMutexGuard {
            held: HeldKey::new(&self.session, key, revision, OnDrop::Release, None),
            side,
        })
    }
}

/// Proof of holding a [`RwMutex`] for reading or writing. Dropping it
/// without [`unlock`](Self::unlock) releases it in the background when a
/// runtime is running; otherwise the lease frees it.
#[derive(Debug)]
pub struct RwMutexGuard {
    held: HeldKey,
    side: Side,
}

impl RwMutexGuard {
    /// True for a write lock, false for a read lock.
    pub fn is_writer(&self) -> bool {
        self.side == Side::Write
    }

    /// The create revision of our key: a fencing token, as for [`crate::etcd::Mutex`].
    pub fn fencing_token(&self) -> i64 {
        self.held.revision()
    }

    /// A compare that is true only while this guard's lock is held.
    pub fn is_held(&self) -> Compare {
        self.held.is_held()
    }

    /// True if the session was lost: the lock is then no longer held.
    pub fn is_lost(&self) -> bool {
        self.held.session().is_lost()
    }

    /// Releases the lock (revision-guarded delete of our key).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before the delete completes,
    /// the guard's drop finishes it in the background.
    pub async fn unlock(self) -> Result<(), EtcdError> {
        self.held.release().await
    }
}
