//! A bounded memory keyed by sender id: what the broker keeps about sessions that are not
//! connected (the master's vouches that came before `Hello`, sessions dropped as too slow).
//!
//! Pure bookkeeping, no I/O. It must never grow past its limit: the oldest entry goes first,
//! and an entry inserted again counts from its newest insertion.

use std::collections::{HashMap, VecDeque};

/// At most `limit` entries by sender id; the oldest goes first.
pub(super) struct Remembered<V> {
    entries: HashMap<u64, (u64, V)>,
    /// Insertion order as (key, stamp); a stamp that no longer matches its entry is stale.
    order: VecDeque<(u64, u64)>,
    next: u64,
    limit: usize,
}

impl<V> Remembered<V> {
    pub(super) fn new(limit: usize) -> Self {
        Remembered { entries: HashMap::new(), order: VecDeque::new(), next: 0, limit }
    }

    pub(super) fn insert(&mut self, key: u64, value: V) {
        self.next += 1;
        self.entries.insert(key, (self.next, value));
        self.order.push_back((key, self.next));
        while self.order.len() > self.limit {
            let Some((old, stamp)) = self.order.pop_front() else { break };
            if self.entries.get(&old).is_some_and(|(at, _)| *at == stamp) {
                self.entries.remove(&old);
            }
        }
    }

    pub(super) fn take(&mut self, key: u64) -> Option<V> {
        self.entries.remove(&key).map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_taken_once() {
        let mut memory = Remembered::new(4);
        memory.insert(7, "vouch");
        assert_eq!(memory.take(7), Some("vouch"));
        assert_eq!(memory.take(7), None);
    }

    #[test]
    fn the_oldest_entry_goes_first() {
        let mut memory = Remembered::new(2);
        memory.insert(1, 'a');
        memory.insert(2, 'b');
        memory.insert(3, 'c');
        assert_eq!(memory.take(1), None);
        assert_eq!(memory.take(2), Some('b'));
        assert_eq!(memory.take(3), Some('c'));
    }

    #[test]
    fn an_entry_inserted_again_counts_from_its_newest_insertion() {
        let mut memory = Remembered::new(2);
        memory.insert(1, 'a');
        memory.insert(2, 'b');
        memory.insert(1, 'A');
        // The first insertion of 1 is pushed out: it is stale and must not take the new one.
        memory.insert(3, 'c');
        assert_eq!(memory.take(1), Some('A'));
        assert_eq!(memory.take(2), None);
        assert_eq!(memory.take(3), Some('c'));
    }

    #[test]
    fn the_newest_value_for_a_key_wins() {
        let mut memory = Remembered::new(8);
        memory.insert(5, 1);
        memory.insert(5, 2);
        assert_eq!(memory.take(5), Some(2));
    }
}
