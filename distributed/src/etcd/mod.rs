//! Coordination recipes on etcd.
//!
//! Start with [`EtcdConfig`]: it reads the standard environment variables and
//! connects with a bounded timeout, so a missing server is a clear error
//! rather than a hang. Then open a [`Session`] (a lease kept alive in the
//! background) and build the recipes on it:
//!
//! | recipe | what it gives | keys |
//! |---|---|---|
//! | [`Mutex`] | one holder at a time, FIFO, fencing token | `<name>/<lease hex>` (as Go and `etcdctl lock`) |
//! | [`RwMutex`] | many readers or one writer, FIFO | `<name>/read/<nanos>`, `<name>/write/<nanos>` |
//! | [`Semaphore`] | at most N holders, FIFO, a crashed holder's permit returns | `<name>/permits/<lease hex>-<nanos>`, `<name>/line/<lease hex>`, `<name>/permits-count` |
//! | [`Election`] | one leader at a time, observable | `<name>/<lease hex>` (as Go and `etcdctl elect`) |
//! | [`Queue`] | FIFO, at most once, no herd within a process | `<name>/<unix nanos>` (as Go's `Queue`) |
//! | [`WorkQueue`] | at least once: claims on a lease, ack, redelivery, dead letters | `<name>/items/…`, `<name>/claims/…` |
//! | [`Barrier`] | hold, release, wait; optionally on a lease | `<name>` |
//! | [`DoubleBarrier`] | `count` enter together and leave together | `<name>/waiters/<nanos>`, `<name>/ready` |
//! | [`transfer`] | the lesson's CAS transfer between two accounts | user keys |
//! | [`run_stm`] | transactions over etcd keys, four isolation levels | user keys |
//! | [`PriorityQueue`] | lowest number first, FIFO within a priority | `<name>/<%05d>/<%016d>` (as Go's `PriorityQueue`) |
//!
//! The recipes share a few building blocks (the `keys` folder, as Go's
//! `key.go` and `watch.go`): unique keys, waiting for the closest
//! predecessor only, deletes guarded by the key's create revision. Two
//! folders hold machinery a reader of a recipe may skip: `exactly_once`
//! (writes that stay exactly once when a reply is lost) and `client`
//! (connecting, retrying within [`Client::operation_bound`], failing over).
//!
//! Every comparison with etcd's Go recipes is in the list below.
//!
#![doc = include_str!("differences_from_go.md")]

mod barriers;
mod client;
mod error;
mod exactly_once;
mod keys;
mod locks;
mod queues;
mod session;
mod txn;

pub use barriers::barrier::Barrier;
pub use barriers::double_barrier::DoubleBarrier;
pub use client::config::{DEFAULT_ENDPOINT, EtcdConfig};
pub use client::{Client, MAX_OPERATION_BOUND, OPERATION_BOUND};
pub use error::EtcdError;
pub use locks::election::{Election, LeaderChanges, LeaderInfo, Leadership};
pub use locks::mutex::{Mutex, MutexGuard};
pub use locks::rwmutex::{RwMutex, RwMutexGuard};
pub use locks::semaphore::{MAX_PERMITS, Semaphore, SemaphorePermit};
pub use queues::priority_queue::PriorityQueue;
pub use queues::producer::QueueProducer;
pub use queues::queue::Queue;
pub use queues::work_queue::{WorkItem, WorkQueue};
pub use session::{DEFAULT_TTL, Session};
pub use txn::stm::{Isolation, Stm, StmError, StmOptions, StmOutcome, run_stm};
pub use txn::transfer::{DEFAULT_TRANSFER_ATTEMPTS, parse_balance, transfer};

/// The etcd client these recipes use, re-exported so that callers need not
/// pin a matching `etcd-client` version themselves.
pub use etcd_client;
