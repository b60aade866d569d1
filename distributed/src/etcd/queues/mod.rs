//! Queues: items are keys under the queue's name, taken by deletes guarded
//! by the item's create revision, so one item goes to one consumer.
//!
//! A recipe file here reads as Go's does. Two helpers sit beside them:
//! `take` (read the oldest items, take one) and `wakeups` (wake one waiting
//! consumer per new item, in one process at a time); `batch` keeps a read
//! of several large items within the client's reply limit. `producer`
//! gathers the enqueues made while one batch is in flight into the next.

pub(crate) mod batch;
pub(crate) mod priority_queue;
pub(crate) mod producer;
pub(crate) mod queue;
pub(crate) mod take;
pub(crate) mod wakeups;
pub(crate) mod work_queue;
