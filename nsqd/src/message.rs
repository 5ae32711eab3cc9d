//! Messages as nsqd holds them, and the per-topic ID generator.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes};
use nsq_protocol::frame::encode_message_frame;
use nsq_protocol::MessageId;

/// A message inside nsqd. The ID is kept as the number behind its 16 hex
/// digits (half the memory of the text form); the body is shared by every
/// channel that holds a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u64,
    /// Nanoseconds since the Unix epoch, set when the message was published.
    pub timestamp: i64,
    /// Deliveries so far; the first delivery sends 1.
    pub attempts: u16,
    pub body: Bytes,
}

impl Message {
    pub fn new(id: u64, timestamp: i64, body: Bytes) -> Self {
        Message {
            id,
            timestamp,
            attempts: 0,
            body,
        }
    }

    /// Append this message as a message frame.
    pub fn encode_frame(&self, buf: &mut impl BufMut) {
        encode_message_frame(
            buf,
            self.timestamp,
            self.attempts,
            &MessageId::from_u64(self.id),
            &self.body,
        );
    }
}

/// Nanoseconds since the Unix epoch, as message timestamps carry them.
pub fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Upstream's ID epoch (ms-ish ticks of 2^20 ns are counted from here).
const ID_EPOCH_TICKS: i64 = 1_288_834_974_288;
const SEQUENCE_BITS: u32 = 12;
const NODE_BITS: u32 = 10;
const SEQUENCE_MASK: u64 = (1 << SEQUENCE_BITS) - 1;

/// Snowflake-style IDs in upstream's layout:
/// `(tick - epoch) << 22 | node_id << 12 | sequence`, tick = unix ns >> 20.
///
/// Upstream sleeps when the 4096 IDs of one tick run out; at millions of
/// messages a second that would stall publishers, so this generator borrows
/// the next tick instead and lets the clock catch up. IDs stay unique and
/// increasing for a topic either way.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    node_id: u64,
    last_tick: i64,
    sequence: u64,
}

impl IdGenerator {
    pub fn new(node_id: u16) -> Self {
        IdGenerator {
            node_id: u64::from(node_id) & ((1 << NODE_BITS) - 1),
            last_tick: 0,
            sequence: 0,
        }
    }

    /// The next ID, given the current time in Unix nanoseconds.
    pub fn next_at(&mut self, now_nanos: i64) -> u64 {
        let tick = (now_nanos >> 20) - ID_EPOCH_TICKS;
        if tick > self.last_tick {
            self.last_tick = tick;
            self.sequence = 0;
        } else if self.sequence == SEQUENCE_MASK {
            self.last_tick += 1;
            self.sequence = 0;
        } else {
            self.sequence += 1;
        }
        ((self.last_tick as u64) << (SEQUENCE_BITS + NODE_BITS))
            | (self.node_id << SEQUENCE_BITS)
            | self.sequence
    }

    /// Reserve `n` (at least 1) IDs at once and return the first: the rest
    /// follow it as [`id_after`] walks them, exactly the IDs `n` calls of
    /// [`IdGenerator::next_at`] would have given.
    pub fn reserve(&mut self, now_nanos: i64, n: usize) -> u64 {
        let first = self.next_at(now_nanos);
        let total = self.sequence + n.saturating_sub(1) as u64;
        self.last_tick += (total >> SEQUENCE_BITS) as i64;
        self.sequence = total & SEQUENCE_MASK;
        first
    }
}

/// The ID the generator gives after `id`: the next sequence number, or the
/// next tick's first once a tick's sequence is used up.
pub fn id_after(id: u64) -> u64 {
    if id & SEQUENCE_MASK < SEQUENCE_MASK {
        return id + 1;
    }
    let shift = SEQUENCE_BITS + NODE_BITS;
    let node = id & (((1 << NODE_BITS) - 1) << SEQUENCE_BITS);
    (((id >> shift) + 1) << shift) | node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_increasing_even_past_a_ticks_sequence() {
        let mut g = IdGenerator::new(7);
        let now = 1_795_000_000_000_000_000;
        let mut last = 0;
        for _ in 0..10_000 {
            let id = g.next_at(now);
            assert!(id > last);
            assert_eq!((id >> 12) & 0x3ff, 7, "node bits stay intact");
            last = id;
        }
        // A clock that steps back does not make IDs go back.
        assert!(g.next_at(now - 1_000_000_000) > last);
    }

    #[test]
    fn reserved_ids_are_the_ones_single_calls_give() {
        let now = 1_795_000_000_000_000_000;
        for (start, n) in [(0, 1), (0, 200), (4000, 200), (4095, 3), (3000, 9000)] {
            let (mut one, mut many) = (IdGenerator::new(5), IdGenerator::new(5));
            for _ in 0..start {
                one.next_at(now);
                many.next_at(now);
            }
            let mut id = many.reserve(now, n);
            for _ in 0..n {
                assert_eq!(id, one.next_at(now));
                id = id_after(id);
            }
            assert_eq!(many.next_at(now), one.next_at(now), "state after {n}");
        }
    }

    #[test]
    fn layout_matches_upstream() {
        let mut g = IdGenerator::new(1);
        let now: i64 = (ID_EPOCH_TICKS + 5) << 20;
        assert_eq!(g.next_at(now), (5 << 22) | (1 << 12));
        assert_eq!(g.next_at(now), (5 << 22) | (1 << 12) | 1);
        assert_eq!(
            MessageId::from_u64(g.next_at(now)).to_u64(),
            Some((5 << 22) | (1 << 12) | 2)
        );
    }
}

/// Version byte of the disk record payload, so the format can evolve.
pub const DISK_FORMAT_V1: u8 = 1;
/// `[u8 version][i64 timestamp][u16 attempts][u64 id][i64 due][body]`.
const DISK_HEADER_LEN: usize = 1 + 8 + 2 + 8 + 8;

impl Message {
    /// Append this message as a disk record payload. `due_unix_nanos` is when
    /// a deferred message becomes deliverable (0 for now): unlike upstream,
    /// a deferred message keeps its due time across a restart.
    pub fn encode_disk(&self, due_unix_nanos: i64, out: &mut Vec<u8>) {
        out.reserve(DISK_HEADER_LEN + self.body.len());
        out.push(DISK_FORMAT_V1);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.attempts.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&due_unix_nanos.to_be_bytes());
        out.extend_from_slice(&self.body);
    }

    /// Parse a disk record payload: the message and its due time (0 = now).
    /// The body shares `record`'s memory.
    pub fn decode_disk(record: &Bytes) -> Option<(Message, i64)> {
        if record.len() < DISK_HEADER_LEN || record[0] != DISK_FORMAT_V1 {
            return None;
        }
        let be8 = |at: usize| -> [u8; 8] { record[at..at + 8].try_into().unwrap_or_default() };
        let timestamp = i64::from_be_bytes(be8(1));
        let attempts = u16::from_be_bytes([record[9], record[10]]);
        let id = u64::from_be_bytes(be8(11));
        let due = i64::from_be_bytes(be8(19));
        let body = record.slice(DISK_HEADER_LEN..);
        Some((
            Message {
                id,
                timestamp,
                attempts,
                body,
            },
            due,
        ))
    }
}

#[cfg(test)]
mod disk_format_tests {
    use super::*;

    #[test]
    fn disk_payload_round_trips_with_due_time() {
        let m = Message {
            id: 0xdead_beef,
            timestamp: 1_700_000_000_000_000_000,
            attempts: 3,
            body: Bytes::from_static(b"payload"),
        };
        let mut out = Vec::new();
        m.encode_disk(42, &mut out);
        assert_eq!(out[0], DISK_FORMAT_V1);
        assert_eq!(out.len(), DISK_HEADER_LEN + 7);
        let (back, due) = Message::decode_disk(&Bytes::from(out)).unwrap();
        assert_eq!((back, due), (m, 42));
        assert!(Message::decode_disk(&Bytes::from_static(b"\x02short")).is_none());
    }
}
