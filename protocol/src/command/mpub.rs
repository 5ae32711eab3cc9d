//! MPUB bodies, `[i32 n]([i32 len][bytes])×n`: scanned as they arrive on a
//! connection, or whole from HTTP `/mpub?binary=true`.

use bytes::{Bytes, BytesMut};

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
    pub(super) count: Option<usize>,
    /// Bytes of the body already scanned, from the front of the buffer.
    pub(super) pos: usize,
    /// (offset, len) of each message body found so far.
    pub(super) spans: Vec<(usize, usize)>,
    /// Waiting for a message's bytes (not its length prefix).
    pub(super) in_body: bool,
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
            // The count is a claim, not data: grow with the messages.
            scan.spans.reserve((n as usize).min(1024));
            n as usize
        }
    };
    // (The count itself is 4 bytes; a body shorter than that is caught by
    // the first message's overrun check.)
    while scan.spans.len() < count {
        let i = scan.spans.len();
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
        scan.spans.push((at + 4, size));
        scan.pos = at + 4 + size;
        scan.in_body = false;
    }
    Ok(true)
}

/// Copy the message bodies of an MPUB into one allocation, packed without
/// their length prefixes, and slice it: 200 messages cost one allocation and
/// exactly their own bytes.
pub(super) fn pack_bodies(buf: &[u8], spans: &[(usize, usize)]) -> Vec<Bytes> {
    let total = spans.iter().map(|s| s.1).sum();
    let mut packed = BytesMut::with_capacity(total);
    for &(off, len) in spans {
        packed.extend_from_slice(&buf[off..off + len]);
    }
    let packed = packed.freeze();
    let mut at = 0;
    spans
        .iter()
        .map(|&(_, len)| {
            at += len;
            packed.slice(at - len..at)
        })
        .collect()
}

/// Parse a complete binary MPUB body, `[i32 n]([i32 len][bytes])×n`, as
/// nsqd's HTTP `/mpub?binary=true` receives it, with the TCP command's
/// checks and texts. The bodies share `body`'s memory.
pub fn parse_mpub_body(body: &Bytes, limits: &Limits) -> Result<Vec<Bytes>, ProtocolError> {
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
    Ok(scan
        .spans
        .iter()
        .map(|&(off, len)| body.slice(off..off + len))
        .collect())
}
