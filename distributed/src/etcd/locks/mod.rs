//! Locks and leadership: one key per contender on its session's lease, the
//! oldest key holds, each waiter watches only the key just ahead of its own.

pub(crate) mod election;
pub(crate) mod mutex;
pub(crate) mod rwmutex;
pub(crate) mod semaphore;
