//! The in-memory part of a backlog: messages in publish order, where the
//! messages of one MPUB stay packed as a single entry (their bodies in one
//! shared buffer, consecutive IDs, one timestamp) until they are taken.
//! A `Message` is made only for what leaves the queue, so a queued message
//! costs its body and a 4-byte length, and a fan-out to N channels copies
//! one entry per batch per channel instead of one `Message` per message.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};
use nsq_protocol::Bodies;

use crate::message::{id_after, Message};

/// Messages published together, not yet taken: `[u32 len][body]` each, in
/// order, in one buffer that every channel's copy shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    data: Bytes,
    /// The ID of the first message left; the others follow by [`id_after`].
    next_id: u64,
    timestamp: i64,
    left: usize,
}

impl Packed {
    /// A publish's bodies, still without IDs (see [`Packed::stamped`]):
    /// decoded from the wire they are in this layout already and are taken
    /// as they are; a list is packed with one copy.
    pub fn new(bodies: Bodies) -> Packed {
        let (data, left) = bodies.into_packed();
        Packed {
            data,
            next_id: 0,
            timestamp: 0,
            left,
        }
    }

    /// Pack `bodies` (one copy into one buffer), the first getting `first_id`.
    pub fn pack(bodies: &[Bytes], first_id: u64, timestamp: i64) -> Packed {
        Packed::new(bodies.to_vec().into()).stamped(first_id, timestamp)
    }

    /// The same bodies under other IDs and timestamp: a publish packs its
    /// bodies before it takes the topic's lock, and stamps them once the
    /// lock has given it their IDs.
    pub fn stamped(self, first_id: u64, timestamp: i64) -> Packed {
        Packed {
            next_id: first_id,
            timestamp,
            ..self
        }
    }

    /// The bodies left as `([u32 len][body])×n`, the ID of the first, and
    /// the timestamp they share (what a replication link sends as it is).
    pub fn parts(&self) -> (&Bytes, u64, i64) {
        (&self.data, self.next_id, self.timestamp)
    }

    /// Messages left.
    pub fn len(&self) -> usize {
        self.left
    }

    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// The first message left, without taking it.
    pub fn peek(&self) -> Option<Message> {
        self.clone().pop()
    }

    /// Take the first message left.
    pub fn pop(&mut self) -> Option<Message> {
        if self.left == 0 || self.data.len() < 4 {
            return None;
        }
        let len = (self.data.get_u32() as usize).min(self.data.len());
        let body = self.data.split_to(len);
        let msg = Message::new(self.next_id, self.timestamp, body);
        self.next_id = id_after(self.next_id);
        self.left -= 1;
        Some(msg)
    }

    /// Split off and return the first `n` messages (all if fewer are left).
    pub fn split_front(&mut self, n: usize) -> Packed {
        if n >= self.left {
            // The whole batch, as a publish that fits in memory: no walk.
            let rest = Packed {
                data: Bytes::new(),
                left: 0,
                ..self.clone()
            };
            return std::mem::replace(self, rest);
        }
        let (mut at, mut next_id) = (0, self.next_id);
        for _ in 0..n {
            let len = u32::from_be_bytes(self.data[at..at + 4].try_into().unwrap_or_default());
            at = (at + 4 + len as usize).min(self.data.len());
            next_id = id_after(next_id);
        }
        let front = Packed {
            data: self.data.split_to(at),
            next_id: self.next_id,
            timestamp: self.timestamp,
            left: n,
        };
        self.next_id = next_id;
        self.left -= n;
        front
    }

    /// Copies of the messages left, in order.
    pub fn messages(&self) -> impl Iterator<Item = Message> {
        let mut rest = self.clone();
        std::iter::from_fn(move || rest.pop())
    }
}

/// One entry of a [`Queue`].
#[derive(Debug, Clone)]
pub enum Entry {
    One(Message),
    Packed(Packed),
}

impl Entry {
    fn len(&self) -> usize {
        match self {
            Entry::One(_) => 1,
            Entry::Packed(p) => p.len(),
        }
    }
}

/// Messages in memory, oldest first. Lengths count messages, not entries.
#[derive(Debug, Default)]
pub struct Queue {
    /// Messages ahead of `entries`: the batch being taken, unpacked whole
    /// when its first message is taken (its body references are counted up
    /// in one burst on the taking thread rather than one at a time against
    /// the FINs dropping them on another), and messages put back in front.
    front: VecDeque<Message>,
    entries: VecDeque<Entry>,
    len: usize,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push_back(&mut self, msg: Message) {
        self.len += 1;
        self.entries.push_back(Entry::One(msg));
    }

    pub fn push_front(&mut self, msg: Message) {
        self.len += 1;
        self.front.push_front(msg);
    }

    pub fn push_packed(&mut self, packed: Packed) {
        if !packed.is_empty() {
            self.len += packed.len();
            self.entries.push_back(Entry::Packed(packed));
        }
    }

    /// Take the oldest message.
    pub fn pop_front(&mut self) -> Option<Message> {
        let msg = match self.front.pop_front() {
            Some(m) => Some(m),
            None => match self.entries.pop_front()? {
                Entry::One(m) => Some(m),
                Entry::Packed(p) => {
                    self.front.extend(p.messages());
                    self.front.pop_front()
                }
            },
        };
        self.len -= usize::from(msg.is_some());
        msg
    }

    /// Take every message, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Message> + '_ {
        std::iter::from_fn(|| self.pop_front())
    }

    /// Take every entry as it is, oldest first (a topic hands them on).
    pub fn take_entries(&mut self) -> VecDeque<Entry> {
        self.len = 0;
        let mut out: VecDeque<Entry> = self.front.drain(..).map(Entry::One).collect();
        out.append(&mut self.entries);
        out
    }

    pub fn clear(&mut self) {
        self.front.clear();
        self.entries.clear();
        self.len = 0;
    }

    /// Copies of the messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Message> + '_ {
        let queued = self
            .entries
            .iter()
            .flat_map(|e| -> Box<dyn Iterator<Item = Message>> {
                match e {
                    Entry::One(m) => Box::new(std::iter::once(m.clone())),
                    Entry::Packed(p) => Box::new(p.messages()),
                }
            });
        self.front.iter().cloned().chain(queued)
    }

    /// Take out the message at `index` (0 is the oldest); a packed entry
    /// around it is split in two.
    pub fn remove(&mut self, index: usize) -> Option<Message> {
        if index < self.front.len() {
            self.len -= 1;
            return self.front.remove(index);
        }
        let mut skip = index - self.front.len();
        let at = self.entries.iter().position(|e| {
            let inside = skip < e.len();
            if !inside {
                skip -= e.len();
            }
            inside
        })?;
        let msg = match &mut self.entries[at] {
            Entry::One(_) => match self.entries.remove(at) {
                Some(Entry::One(m)) => Some(m),
                _ => None,
            },
            Entry::Packed(p) => {
                let front = p.split_front(skip);
                let m = p.pop();
                if p.is_empty() {
                    self.entries.remove(at);
                }
                if !front.is_empty() {
                    self.entries.insert(at, Entry::Packed(front));
                }
                m
            }
        };
        self.len -= usize::from(msg.is_some());
        msg
    }
}

impl Extend<Message> for Queue {
    fn extend<I: IntoIterator<Item = Message>>(&mut self, iter: I) {
        iter.into_iter().for_each(|m| self.push_back(m));
    }
}

#[cfg(test)]
mod tests;
