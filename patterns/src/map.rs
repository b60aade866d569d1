//! A concurrent map with Go's `sync.Map` API, over `dashmap`.
//!
//! `dashmap` splits the map into shards, each behind its own read-write
//! lock, so threads touching different keys rarely meet. This wrapper keeps
//! that speed and removes the one way to hurt yourself with it:
//!
//! **The deadlock rule.** A `dashmap` reference (`Ref`, `RefMut`, an entry,
//! an iterator item) holds its shard's lock for as long as it lives. Touching
//! the same map again while holding one — even a read, if the other access
//! needs the write lock of the same shard — blocks forever, on one thread.
//! So never hold a reference into a shard while touching the same map again:
//! copy what you need out, let the reference go, then write.
//!
//! `ConcurrentMap` never hands out such references: loads return clones, and
//! the callbacks of [`load_with`](ConcurrentMap::load_with),
//! [`update`](ConcurrentMap::update), [`compute`](ConcurrentMap::compute) and
//! [`range`](ConcurrentMap::range) are the only places a lock is held —
//! **do not touch the map from inside them**.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::ops::ControlFlow;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

/// A map safe to share between threads, with `sync.Map`'s operations.
///
/// Every operation is atomic for its key: for example two threads racing
/// [`load_or_store`](Self::load_or_store) on one key both get the same value,
/// and exactly one of them is told it stored it.
///
/// ```
/// use cpr_patterns::map::ConcurrentMap;
///
/// let map = ConcurrentMap::new();
/// map.store("a", 1);
/// assert_eq!(map.load("a"), Some(1));
/// assert_eq!(map.load_or_store("a", 5), (1, true)); // loaded, not stored
/// map.update("a", |v| *v += 10);
/// assert_eq!(map.load_and_delete("a"), Some(11));
/// assert!(map.is_empty());
/// ```
pub struct ConcurrentMap<K, V, S = RandomState> {
    inner: DashMap<K, V, S>,
}

impl<K, V, S> std::fmt::Debug for ConcurrentMap<K, V, S>
where
    K: Eq + Hash + std::fmt::Debug,
    V: std::fmt::Debug,
    S: BuildHasher + Clone,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<K: Eq + Hash, V> Default for ConcurrentMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash, V> ConcurrentMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        ConcurrentMap {
            inner: DashMap::new(),
        }
    }

    /// An empty map with room for `capacity` entries before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        ConcurrentMap {
            inner: DashMap::with_capacity(capacity),
        }
    }
}

impl<K: Eq + Hash, V, S: BuildHasher + Clone> ConcurrentMap<K, V, S> {
    /// An empty map using `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        ConcurrentMap {
            inner: DashMap::with_hasher(hasher),
        }
    }

    /// Sets `key` to `value`; returns the previous value. (Go: `Store`, `Swap`.)
    #[inline]
    pub fn store(&self, key: K, value: V) -> Option<V> {
        self.inner.insert(key, value)
    }

    /// A copy of the value for `key`. (Go: `Load`.)
    #[inline]
    pub fn load<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        self.inner.get(key).map(|value| value.clone())
    }

    /// Calls `f` with a reference to the value for `key`, without copying it.
    /// The shard is read-locked during `f`: do not touch the map inside it.
    #[inline]
    pub fn load_with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.view(key, |_, value| f(value))
    }

    /// Removes `key`; true if it was there. (Go: `Delete`.)
    #[inline]
    pub fn delete<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.remove(key).is_some()
    }

    /// Returns the existing value and `true` if `key` is present; otherwise
    /// stores `value` and returns it with `false`. Atomic: of several racing
    /// callers, exactly one stores. (Go: `LoadOrStore`.)
    #[inline]
    pub fn load_or_store(&self, key: K, value: V) -> (V, bool)
    where
        V: Clone,
    {
        match self.inner.entry(key) {
            Entry::Occupied(existing) => (existing.get().clone(), true),
            Entry::Vacant(vacant) => (vacant.insert(value).clone(), false),
        }
    }

    /// Removes `key` and returns its value, atomically. (Go: `LoadAndDelete`.)
    #[inline]
    pub fn load_and_delete<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.remove(key).map(|(_, value)| value)
    }

    /// Changes the value for `key` in place if it is present; true if it was.
    /// The shard is write-locked during `f`: do not touch the map inside it.
    #[inline]
    pub fn update<Q>(&self, key: &Q, f: impl FnOnce(&mut V)) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.inner.get_mut(key) {
            Some(mut value) => {
                f(&mut value);
                true
            }
            None => false,
        }
    }

    /// Atomically replaces the entry for `key` with what `f` returns, given
    /// the current value: `Some(v)` stores `v`, `None` removes the key.
    /// Returns a copy of the new value. The shard is write-locked during `f`:
    /// do not touch the map inside it.
    pub fn compute(&self, key: K, f: impl FnOnce(Option<&V>) -> Option<V>) -> Option<V>
    where
        V: Clone,
    {
        match self.inner.entry(key) {
            Entry::Occupied(mut occupied) => match f(Some(occupied.get())) {
                Some(new) => {
                    occupied.insert(new.clone());
                    Some(new)
                }
                None => {
                    occupied.remove();
                    None
                }
            },
            Entry::Vacant(vacant) => {
                let new = f(None)?;
                vacant.insert(new.clone());
                Some(new)
            }
        }
    }

    /// Calls `f` for each entry until it returns `Break`. (Go: `Range`.)
    ///
    /// Like Go's `Range`, this is not a snapshot: entries changed by other
    /// threads during the walk may or may not be seen. One shard at a time
    /// is read-locked: do not touch the map inside `f` (collect first, then
    /// write, or use [`snapshot`](Self::snapshot)).
    pub fn range(&self, mut f: impl FnMut(&K, &V) -> ControlFlow<()>) {
        for entry in self.inner.iter() {
            if f(entry.key(), entry.value()).is_break() {
                return;
            }
        }
    }

    /// Copies of all entries, in no particular order, taken shard by shard.
    pub fn snapshot(&self) -> Vec<(K, V)>
    where
        K: Clone,
        V: Clone,
    {
        self.inner
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// The number of entries (exact only while nobody writes).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.inner.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    #[test]
    fn racing_load_or_store_stores_exactly_once_per_key() {
        let map = Arc::new(ConcurrentMap::new());
        let stored = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (map, stored) = (Arc::clone(&map), Arc::clone(&stored));
                std::thread::spawn(move || {
                    for key in 0..1_000 {
                        let (value, loaded) = map.load_or_store(key, t);
                        if !loaded {
                            stored.fetch_add(1, Relaxed);
                        }
                        // Everyone sees the winner's value.
                        assert_eq!(map.load(&key), Some(value));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(stored.load(Relaxed), 1_000);
        assert_eq!(map.len(), 1_000);
    }

    #[test]
    fn concurrent_updates_lose_no_increment() {
        let map = Arc::new(ConcurrentMap::new());
        map.store("counter", 0u64);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let map = Arc::clone(&map);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        assert!(map.update("counter", |v| *v += 1));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(map.load("counter"), Some(40_000));
    }

    #[test]
    fn load_and_delete_hands_each_value_to_exactly_one_thread() {
        let map = Arc::new(ConcurrentMap::new());
        for key in 0..10_000 {
            map.store(key, key);
        }
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let map = Arc::clone(&map);
                std::thread::spawn(move || {
                    (0..10_000)
                        .filter_map(|k| map.load_and_delete(&k))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut taken: Vec<i32> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        taken.sort_unstable();
        assert_eq!(
            taken,
            (0..10_000).collect::<Vec<_>>(),
            "a value was lost or taken twice"
        );
        assert!(map.is_empty());
    }

    #[test]
    fn compute_inserts_changes_and_removes() {
        let map = ConcurrentMap::new();
        assert_eq!(
            map.compute("k", |old| Some(old.copied().unwrap_or(0) + 1)),
            Some(1)
        );
        assert_eq!(
            map.compute("k", |old| Some(old.copied().unwrap_or(0) + 1)),
            Some(2)
        );
        assert_eq!(map.compute("k", |_| None), None);
        assert!(!map.delete("k"));
        assert_eq!(map.compute("absent", |_| None::<i32>), None);
        assert!(map.is_empty());
    }

    #[test]
    fn range_stops_on_break_and_snapshot_sees_everything() {
        let map = ConcurrentMap::new();
        for key in 0..100 {
            map.store(key, key * 2);
        }
        let mut visited = 0;
        map.range(|_, _| {
            visited += 1;
            if visited == 10 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(visited, 10);
        let mut all = map.snapshot();
        all.sort_unstable();
        assert_eq!(all, (0..100).map(|k| (k, k * 2)).collect::<Vec<_>>());
    }

    // ANCHOR: deadlock_rule
    /// Why the rule exists, shown on raw dashmap without hanging the test:
    /// while a read reference into a shard lives, a write to that shard
    /// cannot proceed. A plain `get_mut` here would block this thread forever.
    #[test]
    fn holding_a_reference_blocks_writes_to_its_shard() {
        let map: DashMap<&str, u64> = DashMap::new();
        map.insert("a", 1);

        let reference = map.get("a").unwrap(); // read-locks the shard of "a"
        assert!(
            map.try_get_mut("a").is_locked(),
            "a write would wait for the reference"
        );
        drop(reference); // the lock is released with the reference

        // The safe way: copy what you need, let the reference go, then write.
        let current = *map.get("a").unwrap();
        map.insert("a", current + 1);
        assert_eq!(*map.get("a").unwrap(), 2);
    }
    // ANCHOR_END: deadlock_rule
}
