//! Server-to-client frames: `[i32 size][i32 type][data]`, size = 4 + len(data).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::message::{encode_message, MessageFrame, MessageId, MESSAGE_HEADER_LEN};
use crate::ProtocolError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum FrameType {
    Response = 0,
    Error = 1,
    Message = 2,
}

impl FrameType {
    pub fn from_i32(n: i32) -> Option<Self> {
        match n {
            0 => Some(FrameType::Response),
            1 => Some(FrameType::Error),
            2 => Some(FrameType::Message),
            _ => None,
        }
    }
}

/// Append one frame to `buf`.
pub fn encode_frame(buf: &mut impl BufMut, frame_type: FrameType, data: &[u8]) {
    buf.put_i32(4 + data.len() as i32);
    buf.put_i32(frame_type as i32);
    buf.put_slice(data);
}

/// Append a response frame (`OK`, `CLOSE_WAIT`, `_heartbeat_`, JSON).
pub fn encode_response(buf: &mut impl BufMut, data: &[u8]) {
    encode_frame(buf, FrameType::Response, data);
}

/// Append an error frame carrying `"<CODE> <text>"`.
pub fn encode_error(buf: &mut impl BufMut, err: &ProtocolError) {
    encode_frame(buf, FrameType::Error, &err.to_wire());
}

/// Append a message frame, writing the layout straight into `buf` so the body
/// is copied once, from the message into the output buffer.
pub fn encode_message_frame(
    buf: &mut impl BufMut,
    timestamp: i64,
    attempts: u16,
    id: &MessageId,
    body: &[u8],
) {
    encode_message_frame_head(buf, timestamp, attempts, id, body.len());
    buf.put_slice(body);
}

/// Append everything of a message frame that precedes its body, for a body
/// of `body_len` bytes the caller writes right after from where it lies (a
/// large body goes out by a vectored write instead of being copied).
pub fn encode_message_frame_head(
    buf: &mut impl BufMut,
    timestamp: i64,
    attempts: u16,
    id: &MessageId,
    body_len: usize,
) {
    let size = 4 + MESSAGE_HEADER_LEN + body_len;
    buf.put_i32(size as i32);
    buf.put_i32(FrameType::Message as i32);
    encode_message(buf, timestamp, attempts, id, &[]);
}

/// The size a message frame takes on the wire, header included.
pub fn message_frame_len(body_len: usize) -> usize {
    8 + MESSAGE_HEADER_LEN + body_len
}

/// A frame as a client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Response(Bytes),
    Error(Bytes),
    Message(MessageFrame),
}

/// What can go wrong reading frames from a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// go-nsq reports this when it meets an HTTP server: the size reads as "HTTP".
    #[error("unexpected HTTP response, a client talking to an HTTP port")]
    UnexpectedHttp,
    #[error("frame size {0} is out of range")]
    BadSize(i64),
    #[error("unknown frame type {0}")]
    BadType(i32),
    #[error("message frame of {0} bytes is shorter than a message header")]
    ShortMessage(usize),
}

/// Client-side frame decoder over a growing buffer.
#[derive(Debug, Clone, Default)]
pub struct FrameDecoder {
    /// Largest frame accepted (size field), 0 for no limit.
    pub max_frame: usize,
}

const HTTP_AS_SIZE: i32 = i32::from_be_bytes(*b"HTTP");

impl FrameDecoder {
    /// Take one complete frame off the front of `buf`, if there is one.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if size == HTTP_AS_SIZE {
            return Err(FrameError::UnexpectedHttp);
        }
        if size < 4 || (self.max_frame > 0 && size as usize > self.max_frame) {
            return Err(FrameError::BadSize(size.into()));
        }
        let total = 4 + size as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let frame_type = buf.get_i32();
        let data = buf.split_to(size as usize - 4).freeze();
        match FrameType::from_i32(frame_type) {
            Some(FrameType::Response) => Ok(Some(Frame::Response(data))),
            Some(FrameType::Error) => Ok(Some(Frame::Error(data))),
            Some(FrameType::Message) => {
                let len = data.len();
                MessageFrame::parse(data)
                    .map(|m| Some(Frame::Message(m)))
                    .ok_or(FrameError::ShortMessage(len))
            }
            None => Err(FrameError::BadType(frame_type)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn golden_frames() {
        let mut buf = BytesMut::new();
        encode_response(&mut buf, b"OK");
        assert_eq!(&buf[..], b"\x00\x00\x00\x06\x00\x00\x00\x00OK");
        buf.clear();
        encode_response(&mut buf, crate::HEARTBEAT);
        assert_eq!(&buf[..], b"\x00\x00\x00\x0f\x00\x00\x00\x00_heartbeat_");
        buf.clear();
        encode_response(&mut buf, crate::CLOSE_WAIT);
        assert_eq!(&buf[..], b"\x00\x00\x00\x0e\x00\x00\x00\x00CLOSE_WAIT");
        buf.clear();
        encode_error(
            &mut buf,
            &ProtocolError::new(ErrorCode::Invalid, "invalid command FOO"),
        );
        assert_eq!(
            &buf[..],
            b"\x00\x00\x00\x21\x00\x00\x00\x01E_INVALID invalid command FOO"
        );
        buf.clear();
        let id = MessageId(*b"0000000000000001");
        encode_message_frame(&mut buf, 1, 1, &id, b"body");
        let mut want = vec![0, 0, 0, 34, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        want.extend_from_slice(b"0000000000000001body");
        assert_eq!(&buf[..], &want[..]);
        assert_eq!(buf.len(), message_frame_len(4));
        // The head alone, then the body, is the same frame.
        let mut head = BytesMut::new();
        encode_message_frame_head(&mut head, 1, 1, &id, 4);
        head.extend_from_slice(b"body");
        assert_eq!(&head[..], &want[..]);
    }

    #[test]
    fn decode_round_trip_and_partial() {
        let mut buf = BytesMut::new();
        encode_response(&mut buf, b"OK");
        encode_error(&mut buf, &ProtocolError::invalid("x"));
        encode_message_frame(&mut buf, 7, 2, &MessageId::from_u64(9), b"hello");
        let all = buf.clone();
        let dec = FrameDecoder::default();
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Frame::Response(Bytes::from_static(b"OK")))
        );
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Frame::Error(Bytes::from_static(b"E_INVALID x")))
        );
        match dec.decode(&mut buf).unwrap() {
            Some(Frame::Message(m)) => {
                assert_eq!(m.attempts, 2);
                assert_eq!(m.timestamp, 7);
                assert_eq!(&m.body[..], b"hello");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        // Byte by byte: nothing comes out until a frame is whole.
        let mut part = BytesMut::new();
        let mut frames = 0;
        for b in all.iter() {
            part.extend_from_slice(&[*b]);
            while dec.decode(&mut part).unwrap().is_some() {
                frames += 1;
            }
        }
        assert_eq!(frames, 3);
    }

    #[test]
    fn decode_errors() {
        let dec = FrameDecoder::default();
        let mut http = BytesMut::from(&b"HTTP/1.1 400 Bad Request\r\n"[..]);
        assert_eq!(dec.decode(&mut http), Err(FrameError::UnexpectedHttp));
        let mut bad_type = BytesMut::from(&b"\x00\x00\x00\x04\x00\x00\x00\x09"[..]);
        assert_eq!(dec.decode(&mut bad_type), Err(FrameError::BadType(9)));
        let mut short = BytesMut::from(&b"\x00\x00\x00\x05\x00\x00\x00\x02x"[..]);
        assert_eq!(dec.decode(&mut short), Err(FrameError::ShortMessage(1)));
        let mut tiny = BytesMut::from(&b"\x00\x00\x00\x02"[..]);
        assert_eq!(dec.decode(&mut tiny), Err(FrameError::BadSize(2)));
    }
}
