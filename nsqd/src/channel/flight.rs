//! A channel's messages out with clients: the in-flight table with each
//! client's deliveries in deadline order, and the deferred heap. Everything
//! here runs under the channel's lock.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::IdMap;
use crate::client::Client;
use crate::message::Message;

mod table;

/// Why FIN, REQ or TOUCH could not act on a message; the texts are upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InFlightError {
    #[error("ID not in flight")]
    NotInFlight,
    #[error("client does not own message")]
    NotOwner,
}

/// What a delivery is handed to as it starts: a kept copy of the message
/// (`Vec<Message>`), or its frame encoded at once from the message in
/// flight, which then needs no copy (no reference count taken and dropped
/// per message).
pub trait Deliver {
    fn deliver(&mut self, msg: &Message);
}

impl Deliver for Vec<Message> {
    fn deliver(&mut self, msg: &Message) {
        self.push(msg.clone());
    }
}

pub(super) struct InFlight {
    pub msg: Message,
    pub client_id: u64,
    pub delivered_at: Instant,
    /// Distinguishes this delivery from earlier ones of the same message, so
    /// stale entries in a client's deadline order are recognised.
    generation: u64,
}

/// A client's in-flight deliveries in deadline order, as (deadline, slot in
/// the table, generation). Each client has one msg_timeout, so new
/// deliveries append in order; FINs leave stale entries behind, dropped
/// from the front as they are met and compacted when they outnumber live
/// ones.
pub(super) struct ClientSlot {
    pub client: Arc<Client>,
    order: VecDeque<(Instant, u32, u64)>,
    live: usize,
}

struct Deferred {
    due: Instant,
    seq: u64,
    msg: Message,
}

impl PartialEq for Deferred {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}
impl Eq for Deferred {}
impl PartialOrd for Deferred {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Deferred {
    // Reversed, so the BinaryHeap (a max-heap) yields the earliest due first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.due.cmp(&self.due).then(other.seq.cmp(&self.seq))
    }
}

/// A message that outlived its deadline, taken out of flight.
pub(super) struct Expired {
    pub client_id: u64,
    pub id: u64,
    pub msg: Message,
    /// Delivery time plus how long it was held (quarantine for jobs).
    pub until: Instant,
}

#[derive(Default)]
pub(super) struct Flights {
    in_flight: table::Table,
    clients: IdMap<ClientSlot>,
    deferred: BinaryHeap<Deferred>,
    generation: u64,
}

impl Flights {
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub fn clients(&self) -> impl Iterator<Item = &Arc<Client>> {
        self.clients.values().map(|s| &s.client)
    }

    pub fn client(&self, id: u64) -> Option<&Arc<Client>> {
        self.clients.get(&id).map(|s| &s.client)
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    pub fn deferred_count(&self) -> usize {
        self.deferred.len()
    }

    pub fn in_flight(&self) -> impl Iterator<Item = &InFlight> {
        self.in_flight.values()
    }

    pub fn deferred(&self) -> impl Iterator<Item = &Message> {
        self.deferred.iter().map(|d| &d.msg)
    }

    /// Deferred messages with their due times.
    pub fn deferred_due(&self) -> impl Iterator<Item = (&Message, Instant)> {
        self.deferred.iter().map(|d| (&d.msg, d.due))
    }

    pub fn join(&mut self, client: Arc<Client>) {
        let slot = ClientSlot {
            client,
            order: VecDeque::new(),
            live: 0,
        };
        self.clients.insert(slot.client.id, slot);
    }

    /// Remove a client; returns it with its in-flight messages, oldest
    /// first.
    pub fn leave(&mut self, client_id: u64) -> Option<(Arc<Client>, Vec<Message>)> {
        let slot = self.clients.remove(&client_id)?;
        let mut back = Vec::with_capacity(slot.live);
        for &(_, at, generation) in &slot.order {
            let live =
                (self.in_flight.live(at, generation)).is_some_and(|f| f.client_id == client_id);
            if let Some(f) = live.then(|| self.in_flight.remove_slot(at)).flatten() {
                back.push(f.msg);
            }
        }
        slot.client.reset_in_flight();
        Some((slot.client, back))
    }

    /// Put `msgs` in flight to `client` until `deadline` and hand each to
    /// `out`: the one place a delivery starts. Returns how many (none if
    /// the client is not subscribed, in which case `msgs` is not consumed).
    pub fn start(
        &mut self,
        client: &Client,
        msgs: impl Iterator<Item = Message>,
        deadline: Instant,
        now: Instant,
        out: &mut impl Deliver,
    ) -> usize {
        let Some(slot) = self.clients.get_mut(&client.id) else {
            return 0;
        };
        let mut n = 0;
        for mut msg in msgs {
            n += 1;
            msg.attempts = msg.attempts.saturating_add(1);
            self.generation += 1;
            out.deliver(&msg);
            let at = self.in_flight.insert(InFlight {
                msg,
                client_id: client.id,
                delivered_at: now,
                generation: self.generation,
            });
            slot.order.push_back((deadline, at, self.generation));
        }
        slot.live += n;
        client.add_in_flight(n as u64);
        client.message_count.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 {
            compact_order(slot, &self.in_flight);
        }
        n
    }

    /// Take a message out of flight on behalf of its owner (REQ).
    pub fn settle(&mut self, client_id: u64, id: u64) -> Result<Message, InFlightError> {
        let msg = self.take_back(client_id, id)?;
        self.released(client_id, 1);
        Ok(msg)
    }

    /// Take a message out of flight on behalf of its owner without
    /// counting it off the client yet: a batch of FINs calls `released`
    /// once at the end. One hash lookup when the owner is right.
    pub fn take_back(&mut self, client_id: u64, id: u64) -> Result<Message, InFlightError> {
        match self.in_flight.remove_if(id, |f| f.client_id == client_id) {
            Ok(f) => Ok(f.msg),
            Err(false) => Err(InFlightError::NotInFlight),
            Err(true) => Err(InFlightError::NotOwner),
        }
    }

    /// The client holds `n` messages fewer (taken back with `take_back`).
    pub fn released(&mut self, client_id: u64, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(slot) = self.clients.get_mut(&client_id) {
            slot.live = slot.live.saturating_sub(n);
            slot.client.sub_in_flight(n as u64);
        }
    }

    /// TOUCH: move the message's deadline to `deadline(delivered_at)`.
    pub fn touch(
        &mut self,
        client_id: u64,
        id: u64,
        deadline: impl FnOnce(Instant) -> Instant,
    ) -> Result<(), InFlightError> {
        let (at, f) = (self.in_flight)
            .get_mut(id)
            .ok_or(InFlightError::NotInFlight)?;
        if f.client_id != client_id {
            return Err(InFlightError::NotOwner);
        }
        let deadline = deadline(f.delivered_at);
        self.generation += 1;
        f.generation = self.generation;
        if let Some(slot) = self.clients.get_mut(&client_id) {
            // Keep the order sorted: a capped deadline may fall before later
            // deliveries. TOUCH is rare, so the shift is cheap enough.
            let to = slot.order.partition_point(|e| e.0 <= deadline);
            slot.order.insert(to, (deadline, at, self.generation));
        }
        Ok(())
    }

    /// Take out of flight what passed its deadline, waking the clients that
    /// got room. `next` learns the earliest deadline left.
    pub fn expire(&mut self, now: Instant, next: &mut Option<Instant>) -> Vec<Expired> {
        let mut out = Vec::new();
        for slot in self.clients.values_mut() {
            let mut expired = 0;
            while let Some(&(deadline, at, generation)) = slot.order.front() {
                let Some(id) = self.in_flight.live(at, generation).map(|f| f.msg.id) else {
                    slot.order.pop_front();
                    continue;
                };
                if deadline > now {
                    earliest(next, deadline);
                    break;
                }
                slot.order.pop_front();
                if let Some(f) = self.in_flight.remove_slot(at) {
                    let until = now + now.saturating_duration_since(f.delivered_at);
                    out.push(Expired {
                        client_id: f.client_id,
                        id,
                        msg: f.msg,
                        until,
                    });
                    expired += 1;
                }
            }
            if expired > 0 {
                slot.live = slot.live.saturating_sub(expired);
                slot.client.sub_in_flight(expired as u64);
                slot.client.wake.notify_one();
            }
        }
        out
    }

    pub fn defer(&mut self, msg: Message, due: Instant) {
        self.generation += 1;
        let seq = self.generation;
        self.deferred.push(Deferred { due, seq, msg });
    }

    /// Deferred messages now due, earliest first; `next` learns the next
    /// due time left.
    pub fn release_due(&mut self, now: Instant, next: &mut Option<Instant>) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(d) = self.deferred.peek() {
            if d.due > now {
                earliest(next, d.due);
                break;
            }
            out.extend(self.deferred.pop().map(|d| d.msg));
        }
        out
    }

    /// Drop every in-flight and deferred message; clients hold nothing.
    pub fn clear(&mut self) {
        self.in_flight.clear();
        self.deferred.clear();
        for slot in self.clients.values_mut() {
            slot.order.clear();
            slot.live = 0;
            slot.client.reset_in_flight();
            slot.client.wake.notify_one();
        }
    }

    /// Every in-flight and deferred message with its due time in Unix ns
    /// (0 for now), taken out for writing to disk at shutdown.
    pub fn drain(&mut self, now: Instant, wall: i64) -> Vec<(Message, i64)> {
        let mut out: Vec<(Message, i64)> = self.in_flight.drain().map(|f| (f.msg, 0)).collect();
        for d in self.deferred.drain() {
            out.push((d.msg, crate::backlog::wall_due(d.due, now, wall)));
        }
        out
    }

    #[cfg(test)]
    pub fn order_len(&self, client_id: u64) -> Option<(usize, usize)> {
        self.clients
            .get(&client_id)
            .map(|s| (s.live, s.order.len()))
    }
}

fn earliest(next: &mut Option<Instant>, t: Instant) {
    *next = Some(next.map_or(t, |n| n.min(t)));
}

/// Drop stale entries: from the front always, and everywhere once they
/// outnumber the live ones (a client holding one message for long while
/// finishing thousands would otherwise grow the order without bound).
fn compact_order(slot: &mut ClientSlot, in_flight: &table::Table) {
    let is_live =
        |&(_, at, generation): &(Instant, u32, u64)| in_flight.live(at, generation).is_some();
    while slot.order.front().is_some_and(|e| !is_live(e)) {
        slot.order.pop_front();
    }
    if slot.order.len() > 2 * slot.live + 64 {
        slot.order.retain(is_live);
    }
}
