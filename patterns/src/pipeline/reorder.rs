//! The order-preserving half of the merge, shared by both flavours.

use std::collections::BTreeMap;

/// Holds results that finished before their turn and releases them in
/// sequence order. The pipeline bounds how far the source may run ahead, so
/// this never holds more than the pipeline's capacity.
#[derive(Debug)]
pub(crate) struct Reorder<T> {
    next: u64,
    early: BTreeMap<u64, T>,
}

impl<T> Reorder<T> {
    pub(crate) fn new() -> Self {
        Reorder {
            next: 0,
            early: BTreeMap::new(),
        }
    }

    /// Accepts result number `seq`.
    pub(crate) fn push(&mut self, seq: u64, item: T) {
        self.early.insert(seq, item);
    }

    /// The next result in sequence, if it has arrived.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let item = self.early.remove(&self.next)?;
        self.next += 1;
        Some(item)
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.early.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_sequence_whatever_the_arrival_order() {
        let mut reorder = Reorder::new();
        let mut out = Vec::new();
        for seq in [2, 0, 3, 1, 5, 4] {
            reorder.push(seq, seq * 10);
            while let Some(item) = reorder.pop() {
                out.push(item);
            }
        }
        assert_eq!(out, vec![0, 10, 20, 30, 40, 50]);
        assert_eq!(reorder.held(), 0);
    }
}
