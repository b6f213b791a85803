//! A cache that keeps the most recently used values within a budget of
//! weight (tree entries, chunk bytes), evicting the least recently used
//! first. Owns nothing but what was put in it; never reads the repository.
//!
//! The value used last is always kept, even when it alone weighs more than
//! the budget: a directory of a million files is one tree, and every
//! `stat` of its files needs it again.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

pub(super) struct BoundedCache<K, V> {
    budget: usize,
    used: usize,
    /// Bumped on every use; the smallest tick is the least recently used.
    tick: u64,
    values: HashMap<K, (V, usize, u64)>,
    by_age: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    pub(super) fn new(budget: usize) -> Self {
        BoundedCache {
            budget,
            used: 0,
            tick: 0,
            values: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// The value for `key`, now the most recently used.
    pub(super) fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (value, _, last_used) = self.values.get_mut(key)?;
        self.by_age.remove(last_used);
        *last_used = tick;
        self.by_age.insert(tick, key.clone());
        Some(value.clone())
    }

    /// Keeps `value` as the most recently used, evicting the least
    /// recently used until the budget holds it (or it is alone).
    pub(super) fn insert(&mut self, key: K, value: V, weight: usize) {
        if let Some((_, old_weight, last_used)) = self.values.remove(&key) {
            self.by_age.remove(&last_used);
            self.used -= old_weight;
        }
        while self.used.saturating_add(weight) > self.budget {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((_, old_weight, _)) = self.values.remove(&oldest) {
                self.used -= old_weight;
            }
        }
        self.tick += 1;
        self.by_age.insert(self.tick, key.clone());
        self.values.insert(key, (value, weight, self.tick));
        self.used += weight;
    }

    /// The weight held now.
    pub(super) fn used(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_to_stay_within_its_budget() {
        let mut cache = BoundedCache::new(10);
        cache.insert("a", 1, 4);
        cache.insert("b", 2, 4);
        assert_eq!(cache.get(&"a"), Some(1));
        cache.insert("c", 3, 4);
        assert_eq!(cache.get(&"b"), None, "b was used least recently");
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"c"), Some(3));
        assert_eq!(cache.used(), 8);
    }

    #[test]
    fn keeps_a_value_heavier_than_the_budget_alone() {
        let mut cache = BoundedCache::new(10);
        cache.insert("small", 1, 2);
        cache.insert("huge", 2, 50);
        assert_eq!(cache.get(&"small"), None);
        assert_eq!(cache.get(&"huge"), Some(2));
        assert_eq!(cache.used(), 50);
        cache.insert("small", 1, 2);
        assert_eq!(cache.get(&"huge"), None);
        assert_eq!(cache.used(), 2);
    }
}
