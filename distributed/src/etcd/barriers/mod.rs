//! Barriers: one key that holds waiters back, and a double barrier that
//! lets a group enter together and leave together.

pub(crate) mod barrier;
pub(crate) mod double_barrier;
