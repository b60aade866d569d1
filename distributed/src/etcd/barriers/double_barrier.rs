//! A double barrier on etcd: `count` participants enter together and leave
//! together (the ZooKeeper recipe, with the key layout of etcd's Go
//! `DoubleBarrier`).

use crate::etcd::Client;
use etcd_client::{GetOptions, SortOrder, SortTarget};
use tracing::{debug, instrument, warn};

use crate::etcd::keys::guarded_delete::delete_if_created_at;
use crate::etcd::keys::name::{RecipeName, is_direct_child_of};
use crate::etcd::keys::unique::{create_if_absent, create_unique_or_undo};
use crate::etcd::keys::wait::{wait_for_delete, wait_for_put};
use crate::etcd::{EtcdError, Session};

/// A barrier for a fixed number of participants, each on its own session.
///
/// - [`enter`](Self::enter) blocks until `count` participants have entered.
/// - [`leave`](Self::leave) blocks until all of them have left.
///
/// Keys: `<name>/waiters/<nanos>` (one per participant, on its session's
/// lease) and `<name>/ready` (also on a lease, so that it cannot outlive
/// everyone).
///
/// A participant that crashes inside the barrier holds the others' `leave`
/// until its session's lease expires, then the others go on.
///
/// ```no_run
/// # async fn demo() -> Result<(), cpr_distributed::etcd::EtcdError> {
/// use cpr_distributed::etcd::{DoubleBarrier, EtcdConfig, Session, DEFAULT_TTL};
///
/// let client = EtcdConfig::from_env()?.connect().await?;
/// let session = Session::new(client, DEFAULT_TTL).await?;
/// let mut round = DoubleBarrier::new(&session, "round-1", 3)?;
/// round.enter().await?; // all three are in
/// // ... compute together ...
/// round.leave().await?; // all three are out
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`EtcdError::TooManyParticipants`] at once for a participant beyond
/// `count`; [`EtcdError::SessionLost`] when the session's lease ends;
/// [`EtcdError::InvalidConfig`] for an empty name or a count of zero.
#[derive(Debug)]
pub struct DoubleBarrier {
    session: Session,
    name: RecipeName,
    count: usize,
    /// Between `enter` and `leave`: our waiter key, its create revision, and
    /// the revision of the `ready` key that let this round in. Waiter keys
    /// created after `ready` belong to the next round.
    entered: Option<Entered>,
}

#[derive(Debug, Clone)]
struct Entered {
    key: String,
    revision: i64,
    ready_revision: i64,
}

impl DoubleBarrier {
    /// A double barrier called `name` for `count` (at least 1) participants.
    pub fn new(session: &Session, name: &str, count: usize) -> Result<Self, EtcdError> {
        if count == 0 {
            return Err(EtcdError::InvalidConfig(
                "a double barrier needs at least one participant".into(),
            ));
        }
        Ok(DoubleBarrier {
            session: session.clone(),
            name: RecipeName::new(name)?,
            count,
            entered: None,
        })
    }

    fn client(&self) -> Client {
        self.session.client()
    }

    fn ready_key(&self) -> String {
        format!("{}ready", self.name.prefix())
    }

    /// Enters, and waits until `count` participants have.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe while waiting: a dropped `enter`
    /// leaves our waiter key, which counts as a participant until the
    /// session ends. Call [`leave`](Self::leave) or close the session.
    #[instrument(level = "debug", skip(self), fields(name = self.name.as_str(), count = self.count))]
    pub async fn enter(&mut self) -> Result<(), EtcdError> {
        self.session.ensure_alive()?;
        let client = self.client();
        let waiters = self.name.sub_prefix("waiters");
        let (key, revision) =
            create_unique_or_undo(&client, &waiters, self.session.lease_id()).await?;
        // Only this barrier's waiter keys count: not a nested name's, not a
        // key we could not compare.
        let present = client
            .retried_get(
                waiters.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?
            .kvs()
            .iter()
            .filter(|kv| is_waiter(&waiters, kv))
            .count();
        if present > self.count {
            delete_if_created_at(&client, &key, revision).await?;
            return Err(EtcdError::TooManyParticipants {
                name: self.name.as_str().to_string(),
                count: self.count,
            });
        }
        let ready_revision = if present == self.count {
            // The last one in opens the way for everyone. Several may see
            // the count complete at once: only the first creates the key,
            // and all agree on its create revision.
            let ready_key = self.ready_key();
            match create_if_absent(&client, &ready_key, "", self.session.lease_id())
                .await?
            {
                Some(created) => created,
                None => {
                    let existing = client.retried_get(ready_key.as_str(), None).await?;
                    existing
                        .kvs()
                        .first()
                        .map(|kv| kv.create_revision())
                        .unwrap_or(revision)
                }
            }
        } else {
            let ready_key = self.ready_key();
            tokio::select! {
                lost = self.session.lost() => return Err(lost),
                ready = wait_for_put(&client, &ready_key, revision) => ready?,
            }
        };
        self.entered = Some(Entered {
            key,
            revision,
            ready_revision,
        });
        Ok(())
    }

    /// Leaves, and waits until every participant has left. The last one out
    /// removes the barrier's keys.
    ///
    /// The ZooKeeper algorithm: the participant with the lowest key leaves
    /// last; it waits for the highest to go, again and again; every other
    /// participant deletes its key and waits for the lowest to go.
    #[instrument(level = "debug", skip(self), fields(name = self.name.as_str()))]
    pub async fn leave(&mut self) -> Result<(), EtcdError> {
        let Some(entered) = self.entered.clone() else {
            return Ok(()); // never entered, or already left
        };
        let client = self.client();
        let waiters = self.name.sub_prefix("waiters");
        let ready_key = self.ready_key();
        loop {
            // This round's participants only: keys created before `ready`.
            let options = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(entered.ready_revision - 1)
                .with_sort(SortTarget::Create, SortOrder::Ascend);
            let response = client.retried_get(waiters.as_str(), Some(options)).await?;
            let read_at = response.header().map(|h| h.revision()).unwrap_or(0);
            let kvs: Vec<_> = response
                .kvs()
                .iter()
                .filter(|kv| is_waiter(&waiters, kv))
                .collect();
            let (Some(lowest), Some(highest)) = (kvs.first(), kvs.last()) else {
                // Everyone is out (some may have crashed): whoever sees it
                // first removes this round's ready key, so it cannot leak.
                delete_if_created_at(&client, &ready_key, entered.ready_revision)
                    .await?;
                break;
            };
            let we_are_lowest = lowest.key_str()? == entered.key;
            if kvs.len() == 1 && we_are_lowest {
                delete_if_created_at(&client, &entered.key, entered.revision).await?;
                continue; // and remove the ready key above
            }
            let (target, target_revision) = if we_are_lowest {
                (highest.key_str()?.to_string(), highest.create_revision())
            } else {
                delete_if_created_at(&client, &entered.key, entered.revision).await?;
                (lowest.key_str()?.to_string(), lowest.create_revision())
            };
            tokio::select! {
                lost = self.session.lost() => return Err(lost),
                gone = wait_for_delete(&client, &target, target_revision, read_at + 1) => gone?,
            }
        }
        self.entered = None;
        debug!("left");
        Ok(())
    }
}

/// Whether `kv` is a waiter of this barrier: `<name>/waiters/<number>`, the
/// unique keys Go's recipe writes too. Not a nested barrier's keys (such as
/// the `ready` key of a barrier named `<name>/waiters`); a key of another
/// shape is reported and passed over.
fn is_waiter(waiters: &str, kv: &etcd_client::KeyValue) -> bool {
    if !is_direct_child_of(waiters, kv.key()) {
        return false;
    }
    let number = kv.key()[waiters.len()..].iter().all(u8::is_ascii_digit);
    if !number && kv.key() != format!("{waiters}ready").as_bytes() {
        warn!(
            key = %String::from_utf8_lossy(kv.key()),
            "skipping a key among a double barrier's waiters that is not a waiter"
        );
    }
    number
}
