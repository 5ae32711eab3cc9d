//! MPUB bodies, `[i32 n]([i32 len][bytes])×n`: scanned as they arrive on a
//! connection, or whole from HTTP `/mpub?binary=true`, and kept packed as
//! they arrived ([`Bodies`]).

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{err, positive_within, DecodeError};
use super::limits::Limits;
use crate::error::{ErrorCode, ProtocolError};

/// Progress through an MPUB body, kept between calls so a large body arriving
/// in many reads is scanned once.
#[derive(Debug, Clone, Default)]
pub(super) struct MpubScan {
    /// The body size the command declared, which the messages must fill
    /// exactly (`usize::MAX` for an HTTP body, bounded by its own length).
    pub(super) declared: usize,
    /// Waiting for a message's bytes (not its length prefix).
    pub(super) in_body: bool,
    /// The message count, once its 4 bytes have arrived.
    pub(super) count: Option<usize>,
    /// Bytes of the body already scanned, from the front of the buffer.
    pub(super) pos: usize,
    /// Messages found so far.
    pub(super) found: usize,
}

/// Scan as much of an MPUB body as has arrived: the messages are read by
/// their own lengths and must stay inside the declared body size (upstream
/// does not check, which lets a 9-byte MPUB carry megabytes). Returns true
/// when every message is in `buf`.
pub(super) fn scan_mpub(l: &Limits, scan: &mut MpubScan, buf: &[u8]) -> Result<bool, DecodeError> {
    let count = match scan.count {
        Some(c) => c,
        None => {
            if buf.len() < 4 {
                return Ok(false);
            }
            let n = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            // 4 bytes of count, then at least 5 bytes a message.
            let max = (l.max_body_size.saturating_sub(4)) / 5;
            if n <= 0 || n as u64 > max {
                return Err(err(
                    ErrorCode::BadBody,
                    format!("MPUB invalid message count {n}"),
                ));
            }
            scan.pos = 4;
            scan.count = Some(n as usize);
            n as usize
        }
    };
    // (The count itself is 4 bytes; a body shorter than that is caught by
    // the first message's overrun check.)
    while scan.found < count {
        let i = scan.found;
        let at = scan.pos;
        if buf.len() < at + 4 {
            return Ok(false);
        }
        let size = i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        scan.in_body = true;
        // Formatted only for an error: this runs for every message.
        let size = positive_within(
            size,
            l.max_msg_size,
            ErrorCode::BadMessage,
            format_args!("MPUB invalid message({i}) body size"),
            "MPUB message",
        )?;
        if (at + 4).saturating_add(size) > scan.declared {
            return Err(err(
                ErrorCode::BadBody,
                format!("MPUB message({i}) overruns the body size {}", scan.declared),
            ));
        }
        if buf.len() < at + 4 + size {
            return Ok(false);
        }
        scan.found += 1;
        scan.pos = at + 4 + size;
        scan.in_body = false;
    }
    Ok(true)
}

/// Parse a complete binary MPUB body, `[i32 n]([i32 len][bytes])×n`, as
/// nsqd's HTTP `/mpub?binary=true` receives it, with the TCP command's
/// checks and texts. The bodies are copied once, into a buffer of their
/// own: `body` may be a slice of a larger read buffer that a queued batch
/// must not keep alive.
pub fn parse_mpub_body(body: &Bytes, limits: &Limits) -> Result<Bodies, ProtocolError> {
    // The HTTP body is already whole: what it lacks is reported as a
    // short read, in upstream's words, not as an overrun.
    let mut scan = MpubScan {
        declared: usize::MAX,
        ..MpubScan::default()
    };
    let complete = scan_mpub(limits, &mut scan, body).map_err(|e| match e {
        DecodeError::Protocol(p) | DecodeError::Params { error: p, .. } => p,
        DecodeError::LineTooLong => ProtocolError::new(ErrorCode::BadBody, "MPUB body too long"),
    })?;
    if !complete {
        return Err(match scan.count {
            None => ProtocolError::new(ErrorCode::BadBody, "MPUB failed to read message count"),
            Some(_) => {
                ProtocolError::new(ErrorCode::BadMessage, "MPUB failed to read message body")
            }
        });
    }
    Ok(Bodies::packed(
        Bytes::copy_from_slice(&body[4..scan.pos]),
        scan.found,
    ))
}

/// The message bodies of an MPUB. Decoded, they stay packed as they came
/// over the wire, `([u32 len][body])×n` in one buffer, so nsqd queues the
/// batch as it is: a body is copied once, out of the connection's read
/// buffer, and a batch costs one allocation however many messages it has.
/// Built by a client, they are a list.
#[derive(Clone)]
pub struct Bodies(Repr);

#[derive(Clone)]
enum Repr {
    List(Vec<Bytes>),
    /// Every length checked by [`scan_mpub`], so the layout is sound.
    Packed {
        data: Bytes,
        count: usize,
    },
}

impl Bodies {
    /// `data` as [`scan_mpub`] accepted it, after the count.
    pub(super) fn packed(data: Bytes, count: usize) -> Bodies {
        Bodies(Repr::Packed { data, count })
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::List(v) => v.len(),
            Repr::Packed { count, .. } => *count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of all the bodies together.
    pub fn body_bytes(&self) -> usize {
        match &self.0 {
            Repr::List(v) => v.iter().map(Bytes::len).sum(),
            Repr::Packed { data, count } => data.len() - 4 * count,
        }
    }

    /// The bodies, in order, each sharing the batch's memory.
    pub fn iter(&self) -> impl Iterator<Item = Bytes> + '_ {
        let (list, mut data) = match &self.0 {
            Repr::List(v) => (v.as_slice(), Bytes::new()),
            Repr::Packed { data, .. } => (&[][..], data.clone()),
        };
        let packed = std::iter::from_fn(move || {
            let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
            let body = data.slice(4..(4 + len).min(data.len()));
            data = data.slice(4 + body.len()..);
            Some(body)
        });
        list.iter().cloned().chain(packed)
    }

    /// The bodies as `([u32 len][body])×n` in one buffer, with their count:
    /// as they are when decoded, packed with one copy when a list.
    pub fn into_packed(self) -> (Bytes, usize) {
        match self.0 {
            Repr::Packed { data, count } => (data, count),
            Repr::List(v) => {
                let mut data = BytesMut::with_capacity(v.iter().map(|b| 4 + b.len()).sum());
                for b in &v {
                    // A body is bounded by --max-msg-size, far below 4 GiB.
                    data.put_u32(b.len() as u32);
                    data.extend_from_slice(b);
                }
                (data.freeze(), v.len())
            }
        }
    }

    /// The wire form after the MPUB line: body size, count, the bodies.
    pub(super) fn encode(&self, buf: &mut BytesMut) {
        let size = 4 + self.body_bytes() + 4 * self.len();
        buf.reserve(4 + size);
        buf.put_u32(size as u32);
        buf.put_u32(self.len() as u32);
        match &self.0 {
            Repr::Packed { data, .. } => buf.put_slice(data),
            Repr::List(v) => {
                for b in v {
                    buf.put_u32(b.len() as u32);
                    buf.put_slice(b);
                }
            }
        }
    }
}

impl From<Vec<Bytes>> for Bodies {
    fn from(v: Vec<Bytes>) -> Self {
        Bodies(Repr::List(v))
    }
}

impl FromIterator<Bytes> for Bodies {
    fn from_iter<I: IntoIterator<Item = Bytes>>(iter: I) -> Self {
        Bodies(Repr::List(iter.into_iter().collect()))
    }
}

impl From<Bodies> for Vec<Bytes> {
    fn from(b: Bodies) -> Self {
        match b.0 {
            Repr::List(v) => v,
            Repr::Packed { .. } => b.iter().collect(),
        }
    }
}

/// Equal when they hold the same bodies in the same order, however kept.
impl PartialEq for Bodies {
    fn eq(&self, other: &Bodies) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Bodies {}

impl std::fmt::Debug for Bodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
