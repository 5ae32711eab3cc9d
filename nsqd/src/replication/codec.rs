//! Reading the link's frames off a socket: a `tokio_util` codec and a
//! reader whose buffer grows only as far as a validated frame size says.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::wire::{Frame, WireError, MAX_FRAME};

/// Why no frame came.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no frame within the replica timeout")]
    Timeout,
    #[error("link closed by the peer")]
    Closed,
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// The size prefix of the frame at the head of `buf`, if it is there.
fn size_of_next(buf: &[u8]) -> Option<usize> {
    let head: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(head) as usize)
}

/// `tokio_util` codec over [`Frame`]s.
#[derive(Debug, Default)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        let Some(size) = size_of_next(src) else {
            return Ok(None);
        };
        if size > MAX_FRAME {
            return Err(WireError::TooBig(size));
        }
        if src.len() < 4 + size {
            // Reserve only what a validated size says is coming.
            src.reserve(4 + size - src.len());
            return Ok(None);
        }
        src.advance(4);
        Frame::decode(src.split_to(size).freeze()).map(Some)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        item.encode(dst);
        Ok(())
    }
}

/// Reads frames from one side of a link into a buffer that grows only as
/// far as a validated frame size says.
pub struct FrameReader<R> {
    r: R,
    buf: BytesMut,
    /// Largest frame accepted now (small until the peer said who it is).
    limit: usize,
}

impl<R: tokio::io::AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        FrameReader {
            r,
            buf: BytesMut::with_capacity(64 * 1024),
            limit: MAX_FRAME,
        }
    }

    /// Accept frames of at most `limit` bytes (never more than [`MAX_FRAME`]).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(MAX_FRAME);
    }

    /// The next frame; `None` when the peer closed the link.
    pub async fn next(&mut self) -> Option<Result<Frame, WireError>> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(size) = size_of_next(&self.buf).filter(|s| *s > self.limit) {
                return Some(Err(WireError::TooBig(size)));
            }
            match FrameCodec.decode(&mut self.buf) {
                Ok(Some(f)) => return Some(Ok(f)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            match self.r.read_buf(&mut self.buf).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
    }

    /// The next frame, waiting at most `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Frame, ReadError> {
        tokio::time::timeout(timeout, self.next())
            .await
            .map_err(|_| ReadError::Timeout)?
            .ok_or(ReadError::Closed)?
            .map_err(ReadError::from)
    }

    /// Whether a whole frame is already buffered (so an ack can wait for it).
    pub fn has_frame(&self) -> bool {
        size_of_next(&self.buf).is_some_and(|size| self.buf.len() >= 4 + size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_frame_is_refused_before_reading_it() {
        let mut b = BytesMut::from(&((MAX_FRAME + 1) as u32).to_be_bytes()[..]);
        assert!(matches!(
            FrameCodec.decode(&mut b),
            Err(WireError::TooBig(_))
        ));
    }

    #[tokio::test]
    async fn reader_refuses_a_frame_past_its_limit_and_reads_the_rest() {
        let mut bytes = BytesMut::new();
        Frame::Ack { seq: 1 }.encode(&mut bytes);
        Frame::Reset { seq: 2 }.encode(&mut bytes);
        let mut r = FrameReader::new(&bytes[..]);
        assert_eq!(r.next().await.unwrap().unwrap(), Frame::Ack { seq: 1 });
        assert!(r.has_frame(), "the Reset is already buffered");
        assert_eq!(r.next().await.unwrap().unwrap(), Frame::Reset { seq: 2 });
        assert!(r.next().await.is_none());
        let mut r = FrameReader::new(&bytes[..]);
        r.set_limit(4);
        assert!(matches!(r.next().await, Some(Err(WireError::TooBig(9)))));
    }

    #[test]
    fn partial_frame_waits() {
        let mut out = BytesMut::new();
        Frame::Ack { seq: 1 }.encode(&mut out);
        let mut part = BytesMut::from(&out[..6]);
        assert!(FrameCodec.decode(&mut part).unwrap().is_none());
    }
}
