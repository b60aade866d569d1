//! The key building blocks every recipe uses (Go's `key.go` and
//! `watch.go`): names and the keys under them, creating a key once or a
//! unique one, waiting for a key to go or for the predecessors in a line,
//! and deletes guarded by the key's create revision.

pub(crate) mod guarded_delete;
pub(crate) mod held_key;
pub(crate) mod name;
pub(crate) mod unique;
pub(crate) mod wait;
