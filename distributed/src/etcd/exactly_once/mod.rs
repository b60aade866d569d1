//! Writes that stay exactly once when a reply is lost — machinery a reader
//! of the recipes may skip.
//!
//! A write whose reply never came (its member died, the connection broke)
//! may or may not have been applied. Sending it again can apply it twice
//! (an item enqueued twice); giving up can lose it (an item taken from the
//! queue by a dequeue that never learned it had it). Go's recipes leave
//! this to chance; here two mechanisms settle it:
//!
//! - [`unique_creates`]: for keys only this object creates (queue items),
//!   nothing extra is written until a reply is really lost; then a *fence
//!   key* (`cpr-fence/…`) stops the lost create from applying later, and
//!   the watch history says whether it did.
//! - [`receipts`]: for every other write (a take, a priority item, a
//!   claim), the transaction also bumps a *lane* key of this object
//!   (`cpr-receipts/…`), so that reading the lane tells whether it applied.
//!
//! These are the only keys the recipes write outside their own names.

pub(crate) mod receipts;
pub(crate) mod unique_creates;
