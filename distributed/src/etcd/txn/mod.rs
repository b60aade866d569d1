//! Transactions over user keys: the lesson's compare-and-swap transfer, and
//! software transactional memory with four isolation levels.

pub(crate) mod stm;
pub(crate) mod transfer;
