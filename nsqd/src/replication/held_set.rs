//! The messages a shadow channel (or a holding topic) keeps in memory, by
//! id: runs of the Append batches they came in (`runs.rs`), and one slot
//! per message for the rest (`slots.rs`).
//!
//! A holder stores every message its origin accepts, so this is on the hot
//! path of a replicated publish. A record's batch becomes one run: no
//! message is decoded, copied or given a slot of its own, so an append
//! costs about the same for 1 message as for 200. A batch's stretch whose
//! ids meet a run already held, or messages handed over one at a time (a
//! spill read back, what a topic held going to its channels), take slots.
//! An id is held by a run or by a slot, never both.

mod runs;
mod slots;

use std::ops::Range;

use super::batch::Batch;
use super::spill::Held;
use runs::Runs;
use slots::Slots;

/// Held messages by id, ascending. The subset of a `BTreeMap<u64, Held>`'s
/// interface the shadow uses, and [`HeldSet::append`] for a batch.
#[derive(Debug, Default, Clone)]
pub struct HeldSet {
    runs: Runs,
    slots: Slots,
}

impl HeldSet {
    pub fn len(&self) -> usize {
        self.runs.len() + self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains_key(&self, id: &u64) -> bool {
        self.runs.contains(*id) || self.slots.contains_key(id)
    }

    /// Hold `h` under `id` (its message's id); the message it replaces, if
    /// one was held under that id.
    pub fn insert(&mut self, id: u64, h: Held) -> Option<Held> {
        match self.runs.remove(id) {
            Some(old) => {
                self.slots.insert(id, h);
                Some(old)
            }
            None => self.slots.insert(id, h),
        }
    }

    /// Hold messages `range` of `batch`, due at `due`, except those held
    /// already and those `skip` names; how many were added and their body
    /// bytes.
    pub fn append(
        &mut self,
        batch: &Batch,
        range: Range<usize>,
        due: i64,
        skip: impl Fn(u64) -> bool,
    ) -> (u64, u64) {
        let (mut added, mut bytes) = (0, 0);
        let mut from = range.start;
        while from < range.end {
            // The longest stretch from here whose ids ascend.
            let mut to = from + 1;
            while to < range.end && batch.id(to) > batch.id(to - 1) {
                to += 1;
            }
            let (first, last) = (batch.id(from), batch.id(to - 1));
            let at = self
                .runs
                .place_for(first, last)
                .filter(|_| !self.slots.any_in(first, last));
            match at {
                Some(at) => {
                    let (n, b) = self.runs.insert(at, batch, from..to, due, &skip);
                    added += n;
                    bytes += b;
                }
                // Message by message: some may be held already.
                None => {
                    for i in from..to {
                        let id = batch.id(i);
                        if !skip(id) && !self.contains_key(&id) {
                            let msg = batch.message(i);
                            added += 1;
                            bytes += msg.body.len() as u64;
                            self.slots.insert(id, Held { msg, due });
                        }
                    }
                }
            }
            from = to;
        }
        (added, bytes)
    }

    pub fn remove(&mut self, id: &u64) -> Option<Held> {
        self.runs.remove(*id).or_else(|| self.slots.remove(id))
    }

    /// Held ids, ascending.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        let slots = self.slots.keys().map(|&id| (id, ()));
        merged(self.runs.ids().map(|id| (id, ())), slots).map(|(id, ())| id)
    }

    /// Held messages, ascending by id.
    pub fn values(&self) -> impl Iterator<Item = Held> + '_ {
        let runs = self.runs.values().map(|h| (h.msg.id, h));
        let slots = self.slots.values().map(|h| (h.msg.id, h.clone()));
        merged(runs, slots).map(|(_, h)| h)
    }

    pub fn into_values(self) -> impl Iterator<Item = Held> {
        // The runs' messages are built from shared batches either way.
        let runs: Vec<Held> = self.runs.values().collect();
        let runs = runs.into_iter().map(|h| (h.msg.id, h));
        let slots = self.slots.into_values().map(|h| (h.msg.id, h));
        merged(runs, slots).map(|(_, h)| h)
    }
}

/// Two id-ascending sequences as one.
fn merged<T>(
    a: impl Iterator<Item = (u64, T)>,
    b: impl Iterator<Item = (u64, T)>,
) -> impl Iterator<Item = (u64, T)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some((x, _)), Some((y, _))) if y < x => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::replication::wire::WireMessage;

    fn m(id: u64) -> WireMessage {
        WireMessage {
            id,
            timestamp: id as i64,
            attempts: 0,
            body: Bytes::from(id.to_string()),
        }
    }

    /// The next of a deterministic pseudo-random sequence.
    pub(super) fn xorshift(x: &mut u64) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
    }

    #[test]
    fn batches_and_single_messages_behave_like_a_map() {
        // A deterministic mix of batches (mostly ascending ids, some
        // crossing or repeating held ones, some out of order inside),
        // single inserts and removals, checked against a map.
        let mut s = HeldSet::default();
        let mut want: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = 0u64;
        for round in 0..20_000 {
            xorshift(&mut x);
            match x % 8 {
                0..=3 => {
                    let n = 1 + x % 9;
                    let mut ids: Vec<u64> = (0..n).map(|i| next + i * (1 + x % 2)).collect();
                    next += n * 2;
                    if x % 16 == 1 {
                        // Back over what is held, maybe some finished.
                        ids.iter_mut().for_each(|id| *id = id.saturating_sub(25));
                    }
                    if x % 32 == 3 {
                        ids.swap(0, (n - 1) as usize);
                    }
                    let skip = |id: u64| id.is_multiple_of(11);
                    let b: Batch = ids.iter().map(|&id| m(id)).collect();
                    let mut added = (0, 0);
                    for &id in ids.iter().filter(|&&id| !skip(id)) {
                        if let std::collections::btree_map::Entry::Vacant(e) = want.entry(id) {
                            e.insert(m(id).body.to_vec());
                            added.0 += 1;
                            added.1 += m(id).body.len() as u64;
                        }
                    }
                    assert_eq!(s.append(&b, 0..b.len(), 0, skip), added, "round {round}");
                }
                4 => {
                    let id = next.saturating_sub(x % 40);
                    let old = s.insert(id, Held { msg: m(id), due: 0 });
                    assert_eq!(
                        old.is_some(),
                        want.insert(id, m(id).body.to_vec()).is_some()
                    );
                }
                5 | 6 => {
                    if let Some(&id) = want.keys().next() {
                        let h = s.remove(&id).unwrap();
                        assert_eq!(h.msg.body.to_vec(), want.remove(&id).unwrap());
                    }
                }
                _ => {
                    let id = next.saturating_sub(x % 60);
                    assert_eq!(s.remove(&id).is_some(), want.remove(&id).is_some());
                }
            }
            assert_eq!(s.len(), want.len(), "round {round}");
        }
        assert!(s.keys().eq(want.keys().copied()));
        let bodies: Vec<_> = s.values().map(|h| h.msg.body.to_vec()).collect();
        assert!(bodies.iter().eq(want.values()));
        assert!(s.into_values().map(|h| h.msg.id).eq(want.into_keys()));
    }

    #[test]
    fn a_batch_in_order_takes_one_run() {
        let mut s = HeldSet::default();
        let b: Batch = (1..=200).map(m).collect();
        assert_eq!(s.append(&b, 0..200, 7, |_| false).0, 200);
        assert_eq!((s.slots.len(), s.runs.len()), (0, 200));
        assert!(s.values().all(|h| h.due == 7));
        // A second copy of the same ids adds nothing.
        assert_eq!(s.append(&b, 0..200, 7, |_| false), (0, 0));
        assert_eq!(s.len(), 200);
    }
}
