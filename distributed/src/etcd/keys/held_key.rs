//! A key held on a session's lease — a lock, a read or write lock, a
//! leadership — and released by a delete guarded by its create revision.

use etcd_client::{Compare, CompareOp};

use crate::etcd::keys::guarded_delete::{delete_if_created_at, spawn_guarded_delete};
use crate::etcd::session::Claim;
use crate::etcd::{EtcdError, Session};

/// What happens to a held key whose holder is dropped without releasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDrop {
    /// Deleted in the background (locks).
    Release,
    /// Kept until the session ends (leadership, as in Go).
    Keep,
}

/// Our key, created at `revision` on `session`'s lease, behind every guard
/// of the locks family.
#[derive(Debug)]
pub(crate) struct HeldKey {
    session: Session,
    key: String,
    revision: i64,
    on_drop: OnDrop,
    released: bool,
    /// Released only once our key is deleted: a new acquire on this session
    /// must not adopt a key that is about to disappear.
    claim: Option<Claim>,
}

impl HeldKey {
    pub(crate) fn new(
        session: &Session,
        key: String,
        revision: i64,
        on_drop: OnDrop,
        claim: Option<Claim>,
    ) -> Self {
        HeldKey {
            session: session.clone(),
            key,
            revision,
            on_drop,
            released: false,
            claim,
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The create revision of the key: a fencing token.
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// A compare that is true only while the key is still ours.
    pub(crate) fn is_held(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.revision)
    }

    /// Deletes the key only if it is still the one we created, so a stale
    /// or repeated release never removes a newer holder's key.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before the delete completes,
    /// the drop finishes it in the background (for [`OnDrop::Release`]).
    pub(crate) async fn release(mut self) -> Result<(), EtcdError> {
        delete_if_created_at(&self.session.client(), &self.key, self.revision).await?;
        self.released = true;
        Ok(())
    }
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        if !self.released && self.on_drop == OnDrop::Release {
            spawn_guarded_delete(
                self.session.client(),
                std::mem::take(&mut self.key),
                self.revision,
                self.claim.take(),
            );
        }
    }
}
