//! The peer link's wire format: length-prefixed frames, both directions,
//! decoded with every size checked before anything is reserved. The peer
//! on the other end is treated as hostile: a frame that lies about a size,
//! names an invalid topic or exceeds a bound closes the link.
//!
//! ```text
//! frame   = size:u32 kind:u8 payload        (size counts kind + payload)
//! string  = len:u8 bytes                    (topic/channel names, ids)
//! Hello     1  version:u16 origin:string incarnation:u64
//! Welcome   2  taken_over:u64               (messages the holder took over)
//! Reset     3  seq:u64
//! Append    4  seq:u64 topic:string channel:string due:i64 count:u32
//!              { id:u64 timestamp:i64 attempts:u16 }*count
//!              { len:u32 body }*count
//! Finish    5  seq:u64 topic:string channel:string count:u32 id:u64*
//! Meta      6  seq:u64 op:u8 topic:string channel:string
//! Ack       7  seq:u64
//! Ping      8  seq:u64
//! TakenOver 9  topic:string count:u32 id:u64*
//! Auth     10  nonce:[32] proof:[32]        (see `peer_auth.rs`)
//! ```
//!
//! `channel` is empty for a topic-wide record. `due` is Unix nanoseconds,
//! 0 for "now". An Append's bodies come last, in the layout an MPUB's
//! bodies have in memory (`backlog::Packed`), so a publish's batch goes on
//! the link as it is queued, after a small head, without another copy.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nsq_protocol::{ChannelName, TopicName};

use super::batch::BatchError;
pub use super::batch::{Batch, WireMessage};
use crate::backlog::Packed;
use crate::message::id_after;

/// The link's protocol version, sent in Hello.
pub const VERSION: u16 = 3;
/// Largest frame either side accepts. An Append batch of MPUB bodies is the
/// largest frame; MPUB bodies are capped by `--max-body-size` (5 MiB by
/// default), so this leaves room and still bounds a hostile peer.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Largest frame either side accepts before the other proved who it is
/// (Hello, Auth).
pub const HELLO_MAX: usize = 1024;
/// Most messages or ids one frame may carry.
pub const MAX_COUNT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the limit")]
    TooBig(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("truncated frame")]
    Truncated,
    #[error("{0} trailing bytes after frame")]
    Trailing(usize),
    #[error("count {0} exceeds the limit")]
    Count(usize),
    #[error("invalid name")]
    Name,
    #[error("unknown meta operation {0}")]
    Op(u8),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub use crate::replica_hooks::MetaOp;

impl MetaOp {
    fn from_u8(b: u8) -> Result<Self, WireError> {
        use MetaOp::*;
        Ok(match b {
            1 => ChannelCreate,
            2 => ChannelDelete,
            3 => ChannelEmpty,
            4 => ChannelPause,
            5 => ChannelUnpause,
            6 => TopicDelete,
            7 => TopicEmpty,
            8 => TopicPause,
            9 => TopicUnpause,
            _ => return Err(WireError::Op(b)),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        version: u16,
        origin: String,
        incarnation: u64,
    },
    Welcome {
        taken_over: u64,
    },
    Reset {
        seq: u64,
    },
    Append {
        seq: u64,
        topic: TopicName,
        channel: Option<ChannelName>,
        due: i64,
        msgs: Batch,
    },
    Finish {
        seq: u64,
        topic: TopicName,
        channel: ChannelName,
        ids: Vec<u64>,
    },
    Meta {
        seq: u64,
        op: MetaOp,
        topic: TopicName,
        channel: Option<ChannelName>,
    },
    Ack {
        seq: u64,
    },
    Ping {
        seq: u64,
    },
    TakenOver {
        topic: TopicName,
        ids: Vec<u64>,
    },
    /// A challenge (`nonce`) and/or the answer to the other side's
    /// (`proof`); zeros where there is none.
    Auth {
        nonce: [u8; 32],
        proof: [u8; 32],
    },
}

impl Frame {
    /// The sequence number an origin's record carries, if it is one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Frame::Reset { seq }
            | Frame::Append { seq, .. }
            | Frame::Finish { seq, .. }
            | Frame::Meta { seq, .. }
            | Frame::Ping { seq } => Some(*seq),
            _ => None,
        }
    }

    /// The kind byte on the wire.
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => 1,
            Frame::Welcome { .. } => 2,
            Frame::Reset { .. } => 3,
            Frame::Append { .. } => 4,
            Frame::Finish { .. } => 5,
            Frame::Meta { .. } => 6,
            Frame::Ack { .. } => 7,
            Frame::Ping { .. } => 8,
            Frame::TakenOver { .. } => 9,
            Frame::Auth { .. } => 10,
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        out.put_u8(self.kind());
        match self {
            Frame::Hello {
                version,
                origin,
                incarnation,
            } => {
                out.put_u16(*version);
                put_str(out, origin);
                out.put_u64(*incarnation);
            }
            Frame::Welcome { taken_over: n }
            | Frame::Reset { seq: n }
            | Frame::Ack { seq: n }
            | Frame::Ping { seq: n } => out.put_u64(*n),
            Frame::Append {
                seq,
                topic,
                channel,
                due,
                msgs,
            } => {
                let head = AppendHead {
                    seq: *seq,
                    topic,
                    channel: channel.as_ref(),
                    due: *due,
                };
                head.put_names(out);
                msgs.encode(out);
            }
            Frame::Finish {
                seq,
                topic,
                channel,
                ids,
            } => {
                out.put_u64(*seq);
                put_str(out, topic.as_str());
                put_str(out, channel.as_str());
                put_ids(out, ids);
            }
            Frame::Meta {
                seq,
                op,
                topic,
                channel,
            } => {
                out.put_u64(*seq);
                out.put_u8(*op as u8);
                put_str(out, topic.as_str());
                put_str(out, channel.as_ref().map_or("", |c| c.as_str()));
            }
            Frame::TakenOver { topic, ids } => {
                put_str(out, topic.as_str());
                put_ids(out, ids);
            }
            Frame::Auth { nonce, proof } => {
                out.put_slice(nonce);
                out.put_slice(proof);
            }
        }
        let size = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    }

    /// Decode one frame's kind and payload (the size prefix removed).
    pub fn decode(mut b: Bytes) -> Result<Frame, WireError> {
        if b.is_empty() {
            return Err(WireError::Empty);
        }
        let kind = b.get_u8();
        let frame = match kind {
            1 => Frame::Hello {
                version: get_u16(&mut b)?,
                origin: String::from_utf8(get_str(&mut b)?.to_vec())
                    .map_err(|_| WireError::Name)?,
                incarnation: get_u64(&mut b)?,
            },
            2 => Frame::Welcome {
                taken_over: get_u64(&mut b)?,
            },
            3 => Frame::Reset {
                seq: get_u64(&mut b)?,
            },
            4 => Frame::Append {
                seq: get_u64(&mut b)?,
                topic: get_topic(&mut b)?,
                channel: get_channel(&mut b)?,
                due: get_u64(&mut b)? as i64,
                msgs: Batch::decode(&mut b, MAX_COUNT).map_err(|e| match e {
                    BatchError::Count(n) => WireError::Count(n),
                    BatchError::Truncated => WireError::Truncated,
                })?,
            },
            5 => Frame::Finish {
                seq: get_u64(&mut b)?,
                topic: get_topic(&mut b)?,
                channel: get_channel(&mut b)?.ok_or(WireError::Name)?,
                ids: get_ids(&mut b)?,
            },
            6 => Frame::Meta {
                seq: get_u64(&mut b)?,
                op: MetaOp::from_u8(get_u8(&mut b)?)?,
                topic: get_topic(&mut b)?,
                channel: get_channel(&mut b)?,
            },
            7 => Frame::Ack {
                seq: get_u64(&mut b)?,
            },
            8 => Frame::Ping {
                seq: get_u64(&mut b)?,
            },
            9 => Frame::TakenOver {
                topic: get_topic(&mut b)?,
                ids: get_ids(&mut b)?,
            },
            10 => Frame::Auth {
                nonce: take(&mut b)?,
                proof: take(&mut b)?,
            },
            k => return Err(WireError::Kind(k)),
        };
        if b.has_remaining() {
            return Err(WireError::Trailing(b.remaining()));
        }
        Ok(frame)
    }
}

/// An Append's fields before its messages.
pub struct AppendHead<'a> {
    pub seq: u64,
    pub topic: &'a TopicName,
    pub channel: Option<&'a ChannelName>,
    pub due: i64,
}

impl AppendHead<'_> {
    /// The head of a publish's Append frame for `batch`, encoded straight
    /// from the queued batch (no intermediate [`Frame`]), the frame's size
    /// counting the bodies; returns the bodies, which follow the head on the
    /// link as they are (shared, not copied).
    pub fn encode(&self, out: &mut BytesMut, batch: &Packed) -> Bytes {
        let (data, first_id, timestamp) = batch.parts();
        let start = out.len();
        out.put_u32(0);
        out.put_u8(4);
        let mut id = first_id;
        let metas = std::iter::from_fn(|| {
            let m = (id, timestamp, 0);
            id = id_after(id);
            Some(m)
        });
        self.put_head(out, batch.len(), metas.take(batch.len()));
        let size = (out.len() - start - 4 + data.len()) as u32;
        out[start..start + 4].copy_from_slice(&size.to_be_bytes());
        data.clone()
    }

    /// Everything before the count.
    fn put_names(&self, out: &mut BytesMut) {
        out.put_u64(self.seq);
        put_str(out, self.topic.as_str());
        put_str(out, self.channel.map_or("", |c| c.as_str()));
        out.put_i64(self.due);
    }

    /// Everything before the bodies.
    fn put_head(
        &self,
        out: &mut BytesMut,
        count: usize,
        metas: impl Iterator<Item = (u64, i64, u16)>,
    ) {
        self.put_names(out);
        out.put_u32(count as u32);
        for (id, timestamp, attempts) in metas {
            out.put_u64(id);
            out.put_i64(timestamp);
            out.put_u16(attempts);
        }
    }
}

pub(super) fn put_str(out: &mut BytesMut, s: &str) {
    // Names are at most 64 bytes; origins are addresses. Longer is cut, and
    // the other side then refuses it as invalid.
    let b = &s.as_bytes()[..s.len().min(255)];
    out.put_u8(b.len() as u8);
    out.put_slice(b);
}

pub(super) fn put_ids(out: &mut BytesMut, ids: &[u64]) {
    out.put_u32(ids.len() as u32);
    for id in ids {
        out.put_u64(*id);
    }
}

/// The next `N` bytes, or `Truncated`.
fn take<const N: usize>(b: &mut Bytes) -> Result<[u8; N], WireError> {
    if b.remaining() < N {
        return Err(WireError::Truncated);
    }
    let mut a = [0; N];
    b.copy_to_slice(&mut a);
    Ok(a)
}

fn get_u8(b: &mut Bytes) -> Result<u8, WireError> {
    take(b).map(u8::from_be_bytes)
}

fn get_u16(b: &mut Bytes) -> Result<u16, WireError> {
    take(b).map(u16::from_be_bytes)
}

fn get_u32(b: &mut Bytes) -> Result<u32, WireError> {
    take(b).map(u32::from_be_bytes)
}

pub(super) fn get_u64(b: &mut Bytes) -> Result<u64, WireError> {
    take(b).map(u64::from_be_bytes)
}

fn get_str(b: &mut Bytes) -> Result<Bytes, WireError> {
    let len = get_u8(b)? as usize;
    if b.remaining() < len {
        return Err(WireError::Truncated);
    }
    Ok(b.split_to(len))
}

pub(super) fn get_topic(b: &mut Bytes) -> Result<TopicName, WireError> {
    TopicName::new(&get_str(b)?).ok_or(WireError::Name)
}

pub(super) fn get_channel(b: &mut Bytes) -> Result<Option<ChannelName>, WireError> {
    let s = get_str(b)?;
    if s.is_empty() {
        return Ok(None);
    }
    ChannelName::new(&s).map(Some).ok_or(WireError::Name)
}

/// A count of items at least `min_size` bytes each: bounded, and no larger
/// than what the rest of the frame can hold, before anything is reserved.
fn get_count(b: &mut Bytes, min_size: usize) -> Result<usize, WireError> {
    let n = get_u32(b)? as usize;
    if n > MAX_COUNT || n.saturating_mul(min_size) > b.remaining() {
        return Err(WireError::Count(n));
    }
    Ok(n)
}

pub(super) fn get_ids(b: &mut Bytes) -> Result<Vec<u64>, WireError> {
    let n = get_count(b, 8)?;
    Ok((0..n).map(|_| b.get_u64()).collect())
}

#[cfg(test)]
mod tests;
