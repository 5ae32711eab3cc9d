//! Held messages a run at a time: the messages of one Append batch (or a
//! stretch of it whose ids ascend), kept as the batch came off the link,
//! with a bit per message once one is finished. A replicated publish adds
//! one run per record instead of a slot per message; a message is built
//! only when one is asked for (a finish hands its copy back, a takeover or
//! a snapshot reads them all).
//!
//! Runs are kept by their first id, their id ranges never overlapping, so
//! one binary search finds the run an id may be in, and a second one finds
//! it there. A run whose messages are all gone leaves once it reaches
//! either end, or when such runs outnumber the others.

use std::collections::VecDeque;
use std::ops::Range;

use crate::replication::batch::Batch;
use crate::replication::spill::Held;

/// Fewer runs emptied in the middle than this are never worth compacting.
const COMPACT_MIN: usize = 64;

#[derive(Debug, Clone)]
struct Run {
    batch: Batch,
    due: i64,
    /// The batch's messages this run holds (ids ascending).
    range: Range<usize>,
    first: u64,
    last: u64,
    /// A bit per message of `range`, set once it is gone; empty while
    /// none is.
    gone: Vec<u64>,
    live: usize,
}

impl Run {
    /// Message `k` (of `range`) is gone.
    fn is_gone(&self, k: usize) -> bool {
        self.gone
            .get(k / 64)
            .is_some_and(|w| w & (1 << (k % 64)) != 0)
    }

    fn set_gone(&mut self, k: usize) {
        if self.gone.is_empty() {
            self.gone = vec![0; self.range.len().div_ceil(64)];
        }
        self.gone[k / 64] |= 1 << (k % 64);
        self.live -= 1;
    }

    /// Where `id` is in `range`, held or gone.
    fn position(&self, id: u64) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.range.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.batch.id(self.range.start + mid).cmp(&id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    fn held(&self, k: usize) -> Held {
        Held {
            msg: self.batch.message(self.range.start + k),
            due: self.due,
        }
    }

    /// Positions of the messages still held.
    fn live_positions(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.range.len()).filter(|k| !self.is_gone(*k))
    }
}

/// Runs by first id; see the module's notes.
#[derive(Debug, Default, Clone)]
pub struct Runs {
    runs: VecDeque<Run>,
    /// Messages held over all runs.
    live: usize,
    /// Runs with nothing held still in `runs`.
    empty: usize,
}

impl Runs {
    pub fn len(&self) -> usize {
        self.live
    }

    /// The run whose range covers `id`, if any.
    fn covering(&self, id: u64) -> Option<usize> {
        let p = self.runs.partition_point(|r| r.first <= id);
        p.checked_sub(1).filter(|&i| self.runs[i].last >= id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.covering(id).is_some_and(|i| {
            let r = &self.runs[i];
            r.position(id).is_some_and(|k| !r.is_gone(k))
        })
    }

    /// Where a run of ids `first..=last` goes: `None` when the range meets
    /// a run's.
    pub fn place_for(&self, first: u64, last: u64) -> Option<usize> {
        // Ids grow with time: a new batch goes at the back.
        if self.runs.back().is_none_or(|r| r.last < first) {
            return Some(self.runs.len());
        }
        let p = self.runs.partition_point(|r| r.first <= last);
        let clear_before = p == 0 || self.runs[p - 1].last < first;
        clear_before.then_some(p)
    }

    /// Hold messages `range` of `batch` (ids ascending, a range
    /// [`Runs::place_for`] found a place `at` for) except those `skip`
    /// names; how many were added and their body bytes.
    pub fn insert(
        &mut self,
        at: usize,
        batch: &Batch,
        range: Range<usize>,
        due: i64,
        skip: impl Fn(u64) -> bool,
    ) -> (u64, u64) {
        let mut bytes = batch.body_bytes(range.clone());
        let mut run = Run {
            batch: batch.clone(),
            due,
            first: batch.id(range.start),
            last: batch.id(range.end - 1),
            live: range.len(),
            range: range.clone(),
            gone: Vec::new(),
        };
        for (k, i) in range.enumerate() {
            if skip(batch.id(i)) {
                run.set_gone(k);
                bytes -= batch.body_bytes(i..i + 1);
            }
        }
        let added = run.live as u64;
        if added > 0 {
            self.live += run.live;
            self.runs.insert(at, run);
        }
        (added, bytes)
    }

    pub fn remove(&mut self, id: u64) -> Option<Held> {
        let i = self.covering(id)?;
        let r = &mut self.runs[i];
        let k = r.position(id).filter(|&k| !r.is_gone(k))?;
        let h = r.held(k);
        r.set_gone(k);
        self.live -= 1;
        if r.live == 0 {
            self.empty += 1;
            self.trim();
        }
        Some(h)
    }

    /// Drop emptied runs at the ends, and all of them once they outnumber
    /// the others.
    fn trim(&mut self) {
        while self.runs.front().is_some_and(|r| r.live == 0) {
            self.runs.pop_front();
            self.empty -= 1;
        }
        while self.runs.back().is_some_and(|r| r.live == 0) {
            self.runs.pop_back();
            self.empty -= 1;
        }
        if self.empty >= COMPACT_MIN && self.empty * 2 > self.runs.len() {
            self.runs.retain(|r| r.live > 0);
            self.empty = 0;
        }
        if self.runs.is_empty() {
            self.runs = VecDeque::new();
        }
    }

    /// Held ids, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs
            .iter()
            .flat_map(|r| r.live_positions().map(|k| r.batch.id(r.range.start + k)))
    }

    /// Held messages, ascending by id.
    pub fn values(&self) -> impl Iterator<Item = Held> + '_ {
        self.runs
            .iter()
            .flat_map(|r| r.live_positions().map(|k| r.held(k)))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::replication::wire::WireMessage;

    fn batch(ids: &[u64]) -> Batch {
        ids.iter()
            .map(|&id| WireMessage {
                id,
                timestamp: 0,
                attempts: 0,
                body: Bytes::from(vec![b'x'; id as usize % 7]),
            })
            .collect()
    }

    #[test]
    fn runs_keep_their_ranges_apart_and_finish_message_by_message() {
        let mut r = Runs::default();
        let b = batch(&[10, 11, 13, 20]);
        let at = r.place_for(10, 20).unwrap();
        assert_eq!(r.insert(at, &b, 0..4, 5, |id| id == 13), (3, 3 + 4 + 6));
        assert!(r.contains(11) && !r.contains(13) && !r.contains(12));
        assert!(r.place_for(15, 30).is_none() && r.place_for(5, 10).is_none());
        let before = batch(&[1, 2]);
        let at = r.place_for(1, 2).unwrap();
        assert_eq!(at, 0);
        r.insert(at, &before, 0..2, 0, |_| false);
        assert_eq!(r.ids().collect::<Vec<_>>(), [1, 2, 10, 11, 20]);
        let h = r.remove(11).unwrap();
        assert_eq!((h.msg.id, h.due, h.msg.body.len()), (11, 5, 4));
        assert!(r.remove(11).is_none() && r.remove(13).is_none());
        assert_eq!(r.len(), 4);
        for id in [1, 2, 10, 20] {
            assert!(r.remove(id).is_some());
        }
        assert!(r.runs.is_empty() && r.len() == 0);
    }

    #[test]
    fn runs_emptied_in_the_middle_are_compacted() {
        let mut r = Runs::default();
        for i in 0..1000u64 {
            let b = batch(&[2 * i, 2 * i + 1]);
            let at = r.place_for(2 * i, 2 * i + 1).unwrap();
            r.insert(at, &b, 0..2, 0, |_| false);
        }
        // The first run keeps one message; every other run empties.
        for id in 1..2000 {
            assert!(r.remove(id).is_some());
        }
        assert_eq!(r.ids().collect::<Vec<_>>(), [0]);
        assert_eq!(r.runs.len(), 1);
        assert!(r.empty == 0);
    }
}
