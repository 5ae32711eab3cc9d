//! The message layout inside a message frame, and message IDs.
//!
//! ```text
//! [i64 timestamp ns][u16 attempts][16 bytes id][body...]
//! ```

use bytes::{Buf, BufMut, Bytes};

/// Bytes before the body: timestamp, attempts and id.
pub const MESSAGE_HEADER_LEN: usize = 8 + 2 + 16;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The value of each lowercase hex digit; 0xff for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 16 {
        t[HEX[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// A message ID as it travels: 16 bytes, which nsqd fills with the lowercase
/// hex of a 64-bit value. Clients treat it as opaque; a FIN/REQ/TOUCH may carry
/// any 16 bytes, so the raw form is kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// The 16 hex digits of `n`.
    pub fn from_u64(n: u64) -> Self {
        let mut out = [0u8; 16];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 60 - 4 * i;
            *slot = HEX[((n >> shift) & 0xf) as usize];
        }
        MessageId(out)
    }

    /// The value behind the hex digits, when these are 16 lowercase hex digits
    /// (the only IDs nsqd hands out).
    pub fn to_u64(&self) -> Option<u64> {
        // A table lookup per digit with one check at the end: no branch per
        // digit on the FIN path, which parses one of these per message.
        let mut n = 0u64;
        let mut bad = 0u8;
        for &b in &self.0 {
            let digit = HEX_VALUE[usize::from(b)];
            bad |= digit;
            n = (n << 4) | u64::from(digit & 0xf);
        }
        (bad & 0xf0 == 0).then_some(n)
    }

    pub fn from_slice(raw: &[u8]) -> Option<Self> {
        raw.try_into().ok().map(MessageId)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Write the message layout (header then body) into `buf`.
pub fn encode_message(
    buf: &mut impl BufMut,
    timestamp: i64,
    attempts: u16,
    id: &MessageId,
    body: &[u8],
) {
    buf.put_i64(timestamp);
    buf.put_u16(attempts);
    buf.put_slice(&id.0);
    buf.put_slice(body);
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFrame {
    pub timestamp: i64,
    pub attempts: u16,
    pub id: MessageId,
    pub body: Bytes,
}

impl MessageFrame {
    /// Parse a message frame's data; `None` when shorter than the header.
    pub fn parse(mut data: Bytes) -> Option<Self> {
        if data.len() < MESSAGE_HEADER_LEN {
            return None;
        }
        let timestamp = data.get_i64();
        let attempts = data.get_u16();
        let id = MessageId::from_slice(&data.split_to(16))?;
        Some(MessageFrame {
            timestamp,
            attempts,
            id,
            body: data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hex_round_trip() {
        let id = MessageId::from_u64(0x0123_4567_89ab_cdef);
        assert_eq!(&id.0, b"0123456789abcdef");
        assert_eq!(id.to_u64(), Some(0x0123_4567_89ab_cdef));
        assert_eq!(MessageId(*b"0123456789ABCDEF").to_u64(), None);
        assert_eq!(MessageId::from_u64(u64::MAX).to_u64(), Some(u64::MAX));
    }

    #[test]
    fn only_lowercase_hex_digits_make_a_number() {
        for b in 0..=255u8 {
            let mut raw = *b"00000000000000a0";
            raw[7] = b;
            let hex = b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
            let want = hex.then(|| (u64::from((b as char).to_digit(16).unwrap()) << 32) | 0xa0);
            assert_eq!(MessageId(raw).to_u64(), want, "byte {b:#x}");
        }
    }

    #[test]
    fn message_layout_golden() {
        let mut buf = Vec::new();
        let id = MessageId(*b"06b8c3c1a2d0f000");
        encode_message(&mut buf, 0x0102030405060708, 3, &id, b"hi");
        let mut want = vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 3];
        want.extend_from_slice(b"06b8c3c1a2d0f000hi");
        assert_eq!(buf, want);
        let m = MessageFrame::parse(Bytes::from(buf)).unwrap();
        assert_eq!(m.timestamp, 0x0102030405060708);
        assert_eq!(m.attempts, 3);
        assert_eq!(m.id, id);
        assert_eq!(&m.body[..], b"hi");
        assert!(MessageFrame::parse(Bytes::from_static(&[0; 25])).is_none());
    }
}
