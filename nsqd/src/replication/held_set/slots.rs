//! Held messages one slot each, in a deque by id: what of a shadow does
//! not come as a run of a batch (a message a spill or a topic's copy gave
//! back, an id out of any run's order, a second copy of a held one).
//!
//! A push at the back is the usual insert; a finish marks a slot gone, and
//! gone slots leave from the front. Ids out of order are placed by a binary
//! search. Slots a stuck message keeps behind it are compacted once they
//! outnumber the live ones.

use std::collections::VecDeque;

use crate::replication::spill::Held;

/// Fewer gone slots than this are never worth a compaction.
const COMPACT_MIN: usize = 1024;
/// Capacity below this is kept when the set empties.
const KEEP_CAPACITY: usize = 4096;

#[derive(Debug, Clone)]
enum Slot {
    Held(Held),
    /// Removed; its id is kept so the deque stays searchable.
    Gone(u64),
}

impl Slot {
    fn id(&self) -> u64 {
        match self {
            Slot::Held(h) => h.msg.id,
            Slot::Gone(id) => *id,
        }
    }

    fn held(&self) -> Option<&Held> {
        match self {
            Slot::Held(h) => Some(h),
            Slot::Gone(_) => None,
        }
    }
}

/// Held messages by id, ascending.
#[derive(Debug, Default, Clone)]
pub struct Slots {
    slots: VecDeque<Slot>,
    live: usize,
}

impl Slots {
    pub fn len(&self) -> usize {
        self.live
    }

    /// Where `id` is, or where it would go.
    fn find(&self, id: u64) -> Result<usize, usize> {
        match self.slots.back() {
            None => Err(0),
            Some(last) if last.id() < id => Err(self.slots.len()),
            _ => self.slots.binary_search_by_key(&id, Slot::id),
        }
    }

    /// Whether a slot (held or gone) lies in `first..=last`.
    pub fn any_in(&self, first: u64, last: u64) -> bool {
        let i = self.find(first).unwrap_or_else(|i| i);
        self.slots.get(i).is_some_and(|s| s.id() <= last)
    }

    pub fn contains_key(&self, id: &u64) -> bool {
        self.get(id).is_some()
    }

    pub fn get(&self, id: &u64) -> Option<&Held> {
        self.find(*id).ok().and_then(|i| self.slots[i].held())
    }

    /// Hold `h` under `id` (its message's id); the message it replaces, if
    /// one was held under that id.
    pub fn insert(&mut self, id: u64, h: Held) -> Option<Held> {
        debug_assert_eq!(id, h.msg.id);
        match self.find(id) {
            Ok(i) => match std::mem::replace(&mut self.slots[i], Slot::Held(h)) {
                Slot::Held(old) => Some(old),
                Slot::Gone(_) => {
                    self.live += 1;
                    None
                }
            },
            Err(i) => {
                if i == self.slots.len() {
                    self.slots.push_back(Slot::Held(h));
                } else {
                    self.slots.insert(i, Slot::Held(h));
                }
                self.live += 1;
                None
            }
        }
    }

    pub fn remove(&mut self, id: &u64) -> Option<Held> {
        let i = self.find(*id).ok()?;
        let Slot::Held(h) = std::mem::replace(&mut self.slots[i], Slot::Gone(*id)) else {
            return None;
        };
        self.live -= 1;
        while matches!(self.slots.front(), Some(Slot::Gone(_))) {
            self.slots.pop_front();
        }
        while matches!(self.slots.back(), Some(Slot::Gone(_))) {
            self.slots.pop_back();
        }
        let gone = self.slots.len() - self.live;
        if gone >= COMPACT_MIN && gone > self.live {
            self.slots.retain(|s| matches!(s, Slot::Held(_)));
        }
        if self.slots.capacity() > KEEP_CAPACITY && self.slots.len() < self.slots.capacity() / 4 {
            self.slots
                .shrink_to((self.slots.len() * 2).max(KEEP_CAPACITY));
        }
        Some(h)
    }

    /// Held ids, ascending.
    pub fn keys(&self) -> impl Iterator<Item = &u64> + '_ {
        self.values().map(|h| &h.msg.id)
    }

    /// Held messages, ascending by id.
    pub fn values(&self) -> impl Iterator<Item = &Held> + '_ {
        self.slots.iter().filter_map(Slot::held)
    }

    pub fn into_values(self) -> impl Iterator<Item = Held> {
        self.slots.into_iter().filter_map(|s| match s {
            Slot::Held(h) => Some(h),
            Slot::Gone(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::replication::wire::WireMessage;

    fn h(id: u64) -> Held {
        Held {
            msg: WireMessage {
                id,
                timestamp: id as i64,
                attempts: 0,
                body: Bytes::from(id.to_string()),
            },
            due: 0,
        }
    }

    fn ids(s: &Slots) -> Vec<u64> {
        s.keys().copied().collect()
    }

    #[test]
    fn in_order_out_of_order_and_replaced() {
        let mut s = Slots::default();
        for id in [1, 2, 5, 4, 3, 9, 0] {
            assert!(s.insert(id, h(id)).is_none());
        }
        assert_eq!(ids(&s), [0, 1, 2, 3, 4, 5, 9]);
        assert!(s.insert(4, h(4)).is_some(), "a second copy replaces");
        assert_eq!(s.len(), 7);
        assert!(s.contains_key(&9) && !s.contains_key(&8) && !s.contains_key(&10));
        assert_eq!(s.remove(&4).map(|h| h.msg.id), Some(4));
        assert!(s.remove(&4).is_none() && !s.contains_key(&4));
        assert_eq!(s.len(), 6);
        // A gone slot takes its message back.
        assert!(s.insert(4, h(4)).is_none());
        assert_eq!(ids(&s), [0, 1, 2, 3, 4, 5, 9]);
        assert_eq!(
            s.into_values().map(|v| v.msg.id).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5, 9]
        );
    }

    #[test]
    fn behaves_like_a_map_under_a_mixed_load() {
        // A deterministic mix of appends (mostly ascending, some crossing)
        // and finishes (mostly oldest first, some from the middle).
        let mut s = Slots::default();
        let mut m = BTreeMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = 0u64;
        for _ in 0..50_000 {
            crate::replication::held_set::tests::xorshift(&mut x);
            match x % 8 {
                0..=3 => {
                    next += 1 + x % 3;
                    let id = if x % 16 == 1 {
                        next.saturating_sub(7)
                    } else {
                        next
                    };
                    assert_eq!(s.insert(id, h(id)).is_some(), m.insert(id, h(id)).is_some());
                }
                4..=6 => {
                    if let Some(&id) = m.keys().next() {
                        assert_eq!(s.remove(&id).is_some(), m.remove(&id).is_some());
                    }
                }
                _ => {
                    let id = next.saturating_sub(x % 500);
                    assert_eq!(s.remove(&id).is_some(), m.remove(&id).is_some());
                }
            }
            assert_eq!(s.len(), m.len());
        }
        assert!(ids(&s).iter().eq(m.keys()));
        assert!(s.slots.len() - s.live < COMPACT_MIN.max(s.live + 1));
    }

    #[test]
    fn a_stuck_message_does_not_keep_the_slots_behind_it() {
        let mut s = Slots::default();
        for i in 0..100_000 {
            s.insert(i, h(i));
        }
        for id in 1..100_000 {
            s.remove(&id);
        }
        assert_eq!(ids(&s), [0]);
        assert!(s.slots.len() <= COMPACT_MIN, "{} slots", s.slots.len());
        assert!(s.slots.capacity() <= 4 * KEEP_CAPACITY);
    }
}
