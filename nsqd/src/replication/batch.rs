//! An Append's messages as one unit: the link's bytes for them, checked
//! once, and where each body starts. A holder keeps a record's batch as it
//! came off the link (its shadow holds runs of it, `held_set/runs.rs`) and
//! builds a [`WireMessage`] only when one is needed: a takeover, a spill, a
//! full copy, a snapshot.
//!
//! ```text
//! batch = count:u32 { id:u64 timestamp:i64 attempts:u16 }*count
//!                   { len:u32 body }*count
//! ```

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::message::Message;

/// Bytes of one message's id, timestamp and attempts.
const META: usize = 18;
/// Fewest bytes a message takes on the wire: its meta and body length.
const MIN_MESSAGE: usize = META + 4;

/// One message as the link carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireMessage {
    pub id: u64,
    pub timestamp: i64,
    pub attempts: u16,
    pub body: Bytes,
}

impl From<&Message> for WireMessage {
    fn from(m: &Message) -> Self {
        WireMessage {
            id: m.id,
            timestamp: m.timestamp,
            attempts: m.attempts,
            body: m.body.clone(),
        }
    }
}

impl WireMessage {
    pub fn to_message(&self) -> Message {
        Message {
            id: self.id,
            timestamp: self.timestamp,
            attempts: self.attempts,
            body: self.body.clone(),
        }
    }
}

/// Why a batch was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("count {0} exceeds the limit")]
    Count(usize),
    #[error("truncated batch")]
    Truncated,
}

/// The messages of one Append.
#[derive(Clone)]
pub struct Batch {
    /// The metas, then the length-prefixed bodies (no count).
    data: Bytes,
    /// Where each body starts in `data`, then `data.len() + 4` (so body
    /// `i` ends 4 bytes before `starts[i + 1]`).
    starts: Arc<[u32]>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Message `i`'s id. `i < len()`.
    pub fn id(&self, i: usize) -> u64 {
        let at = i * META;
        u64::from_be_bytes(self.data[at..at + 8].try_into().unwrap_or_default())
    }

    /// Where message `i`'s body lies in `data`.
    fn body_range(&self, i: usize) -> std::ops::Range<usize> {
        self.starts[i] as usize..self.starts[i + 1] as usize - 4
    }

    /// Body bytes of messages `range`.
    pub fn body_bytes(&self, range: std::ops::Range<usize>) -> u64 {
        let span = (self.starts[range.end] - self.starts[range.start]) as u64;
        span - 4 * range.len() as u64
    }

    /// Message `i` (its body a slice of the batch). `i < len()`.
    pub fn message(&self, i: usize) -> WireMessage {
        let mut meta = &self.data[i * META + 8..(i + 1) * META];
        WireMessage {
            id: self.id(i),
            timestamp: meta.get_i64(),
            attempts: meta.get_u16(),
            body: self.data.slice(self.body_range(i)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = WireMessage> + '_ {
        (0..self.len()).map(|i| self.message(i))
    }

    /// The batch as the link carries it.
    pub fn encode(&self, out: &mut BytesMut) {
        // At most MAX_COUNT messages: a decoded batch was checked, a built
        // one is as large as the frame limit allows.
        out.put_u32(self.len() as u32);
        out.put_slice(&self.data);
    }

    /// The batch at the front of `b` (taken off it), of at most
    /// `max_count` messages, every count and length checked against what
    /// `b` holds before it is used.
    pub fn decode(b: &mut Bytes, max_count: usize) -> Result<Batch, BatchError> {
        if b.remaining() < 4 {
            return Err(BatchError::Truncated);
        }
        let count = b.get_u32() as usize;
        if count > max_count || count.saturating_mul(MIN_MESSAGE) > b.remaining() {
            return Err(BatchError::Count(count));
        }
        let mut starts = Vec::with_capacity(count + 1);
        let mut at = count * META;
        for _ in 0..count {
            let head = b.get(at..at + 4).ok_or(BatchError::Truncated)?;
            let len = u32::from_be_bytes(head.try_into().unwrap_or_default()) as usize;
            at += 4;
            if b.len() - at < len {
                return Err(BatchError::Truncated);
            }
            starts.push(at as u32);
            at += len;
        }
        // A frame is far below 4 GiB (MAX_FRAME), so these fit.
        starts.push(at as u32 + 4);
        Ok(Batch {
            data: b.split_to(at),
            starts: starts.into(),
        })
    }
}

impl FromIterator<WireMessage> for Batch {
    fn from_iter<I: IntoIterator<Item = WireMessage>>(msgs: I) -> Self {
        let msgs: Vec<WireMessage> = msgs.into_iter().collect();
        let mut metas = BytesMut::with_capacity(msgs.len() * META);
        let mut bodies = BytesMut::new();
        let mut starts = Vec::with_capacity(msgs.len() + 1);
        let base = msgs.len() * META;
        for m in &msgs {
            metas.put_u64(m.id);
            metas.put_i64(m.timestamp);
            metas.put_u16(m.attempts);
            // A body is bounded by the frame limit, far below 4 GiB.
            bodies.put_u32(m.body.len() as u32);
            starts.push((base + bodies.len()) as u32);
            bodies.put_slice(&m.body);
        }
        starts.push((base + bodies.len() + 4) as u32);
        metas.unsplit(bodies);
        Batch {
            data: metas.freeze(),
            starts: starts.into(),
        }
    }
}

impl From<Vec<WireMessage>> for Batch {
    fn from(msgs: Vec<WireMessage>) -> Self {
        msgs.into_iter().collect()
    }
}

impl From<&[WireMessage]> for Batch {
    fn from(msgs: &[WireMessage]) -> Self {
        msgs.iter().cloned().collect()
    }
}

impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        // The layout follows from the bytes.
        self.data == other.data
    }
}

impl Eq for Batch {}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_COUNT: usize = 1000;

    fn m(id: u64, body: &'static [u8]) -> WireMessage {
        WireMessage {
            id,
            timestamp: -(id as i64),
            attempts: id as u16,
            body: Bytes::from_static(body),
        }
    }

    fn wire(b: &Batch) -> Bytes {
        let mut out = BytesMut::new();
        b.encode(&mut out);
        out.freeze()
    }

    #[test]
    fn round_trips_and_reads_each_message_in_place() {
        let msgs = vec![m(7, b"seven"), m(9, b""), m(u64::MAX, b"last one")];
        let b = Batch::from(msgs.clone());
        assert_eq!(
            (b.len(), b.body_bytes(0..3), b.body_bytes(1..2)),
            (3, 13, 0)
        );
        assert_eq!(b.iter().collect::<Vec<_>>(), msgs);
        let mut bytes = BytesMut::from(&wire(&b)[..]);
        bytes.extend_from_slice(b"tail");
        let mut bytes = bytes.freeze();
        let back = Batch::decode(&mut bytes, MAX_COUNT).unwrap();
        assert_eq!(&bytes[..], b"tail", "takes exactly the batch");
        assert_eq!(back, b);
        assert_eq!(back.id(2), u64::MAX);
        assert!(Batch::from(Vec::new()).is_empty());
    }

    #[test]
    fn lying_counts_and_lengths_are_refused() {
        let b = wire(&Batch::from(vec![m(1, b"abc"), m(2, b"de")]));
        // Every cut short of the whole batch.
        for cut in 0..b.len() {
            let mut part = b.slice(..cut);
            assert!(Batch::decode(&mut part, MAX_COUNT).is_err(), "cut at {cut}");
        }
        // A count more than the bytes can hold, and past the limit.
        for count in [3u32, u32::MAX, MAX_COUNT as u32 + 1] {
            let mut lie = BytesMut::from(&b[..]);
            lie[..4].copy_from_slice(&count.to_be_bytes());
            assert!(matches!(
                Batch::decode(&mut lie.freeze(), MAX_COUNT),
                Err(BatchError::Count(_))
            ));
        }
        // A body length past the end, and one that wraps.
        let first_len = 4 + 2 * META;
        for len in [4u32, 1 << 31, u32::MAX] {
            let mut lie = BytesMut::from(&b[..]);
            lie[first_len..first_len + 4].copy_from_slice(&len.to_be_bytes());
            assert!(matches!(
                Batch::decode(&mut lie.freeze(), MAX_COUNT),
                Err(BatchError::Truncated)
            ));
        }
    }
}
