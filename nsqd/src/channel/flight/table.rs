//! The in-flight table: each delivery in a slot of one vector, found by its
//! message ID through a map of slot numbers. The map's entries stay small
//! (an ID and a slot), a freed slot is reused next (its memory still
//! warm), and the deadline orders name slots, so telling a live entry from
//! a stale one is an index, not a hash lookup.

use super::InFlight;
use crate::id_map::IdMap;

#[derive(Default)]
pub(super) struct Table {
    /// Message ID to its slot.
    index: IdMap<u32>,
    slots: Vec<Option<InFlight>>,
    /// Empty slots, the last freed on top.
    free: Vec<u32>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Put `f` in a slot and return the slot. Its message ID must not be
    /// in flight already (a message is in flight at most once).
    pub fn insert(&mut self, f: InFlight) -> u32 {
        let id = f.msg.id;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(f);
                slot
            }
            None => {
                self.slots.push(Some(f));
                (self.slots.len() - 1) as u32
            }
        };
        if let Some(old) = self.index.insert(id, slot) {
            // Not expected; keep the table consistent all the same.
            self.free_slot(old);
        }
        slot
    }

    /// The delivery in `slot`, if it is still the one of `generation`.
    pub fn live(&self, slot: u32, generation: u64) -> Option<&InFlight> {
        let f = self.slots.get(slot as usize)?.as_ref()?;
        (f.generation == generation).then_some(f)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<(u32, &mut InFlight)> {
        let slot = *self.index.get(&id)?;
        let f = self.slots.get_mut(slot as usize)?.as_mut()?;
        Some((slot, f))
    }

    /// Take the message `id` out of flight if `owner(entry)` allows it;
    /// `Err(false)` when it is not in flight, `Err(true)` when refused.
    /// One hash lookup when allowed.
    pub fn remove_if(
        &mut self,
        id: u64,
        owner: impl FnOnce(&InFlight) -> bool,
    ) -> Result<InFlight, bool> {
        let slot = self.index.remove(&id).ok_or(false)?;
        let Some(f) = self.slots.get(slot as usize).and_then(Option::as_ref) else {
            return Err(false);
        };
        if !owner(f) {
            // Rare (a client naming another's message): it stays.
            self.index.insert(id, slot);
            return Err(true);
        }
        self.free_slot(slot).ok_or(false)
    }

    /// Take out the delivery in `slot` (one found by `live`).
    pub fn remove_slot(&mut self, slot: u32) -> Option<InFlight> {
        let f = self.free_slot(slot)?;
        if self.index.get(&f.msg.id) == Some(&slot) {
            self.index.remove(&f.msg.id);
        }
        Some(f)
    }

    fn free_slot(&mut self, slot: u32) -> Option<InFlight> {
        let f = self.slots.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        Some(f)
    }

    pub fn values(&self) -> impl Iterator<Item = &InFlight> {
        self.slots.iter().flatten()
    }

    pub fn clear(&mut self) {
        *self = Table::default();
    }

    /// Every delivery, taken out.
    pub fn drain(&mut self) -> impl Iterator<Item = InFlight> {
        let slots = std::mem::take(&mut self.slots);
        self.clear();
        slots.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use tokio::time::Instant;

    fn flight(id: u64, client_id: u64, generation: u64) -> InFlight {
        InFlight {
            msg: Message::new(id, 0, bytes::Bytes::from_static(b"m")),
            client_id,
            delivered_at: Instant::now(),
            generation,
        }
    }

    #[test]
    fn slots_are_found_by_id_and_reused_once_freed() {
        let mut t = Table::default();
        let a = t.insert(flight(10, 1, 1));
        let b = t.insert(flight(11, 1, 2));
        assert_ne!(a, b);
        assert_eq!(t.len(), 2);
        assert_eq!(t.live(a, 1).map(|f| f.msg.id), Some(10));
        assert!(t.live(a, 2).is_none(), "another generation is stale");
        // The owner check refuses without taking the message out.
        assert!(matches!(t.remove_if(10, |f| f.client_id == 2), Err(true)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove_if(10, |_| true).map(|f| f.msg.id), Ok(10));
        assert!(matches!(t.remove_if(10, |_| true), Err(false)));
        assert!(t.live(a, 1).is_none(), "a freed slot is not live");
        // The freed slot is the next one used, under a new generation.
        assert_eq!(t.insert(flight(12, 2, 3)), a);
        assert!(t.live(a, 1).is_none());
        assert_eq!(t.get_mut(12).map(|(slot, _)| slot), Some(a));
        assert_eq!(t.remove_slot(b).map(|f| f.msg.id), Some(11));
        assert!(t.get_mut(11).is_none());
        let left: Vec<u64> = t.drain().map(|f| f.msg.id).collect();
        assert_eq!(left, vec![12]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_second_delivery_of_one_id_replaces_the_first() {
        let mut t = Table::default();
        let a = t.insert(flight(10, 1, 1));
        let b = t.insert(flight(10, 1, 2));
        assert_eq!(t.len(), 1);
        assert!(t.live(a, 1).is_none());
        // Taking out the stale slot leaves the live one findable.
        assert!(t.remove_slot(a).is_none());
        assert_eq!(t.get_mut(10).map(|(slot, _)| slot), Some(b));
        assert_eq!(t.values().count(), 1);
    }
}
