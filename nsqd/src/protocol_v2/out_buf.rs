//! The bytes a connection has made and not yet written: small frames are
//! copied into one growing buffer, while a large message body stays the
//! shared `Bytes` it already is and goes out by a vectored write, so a
//! 64 KiB body is copied once (by the socket) instead of twice.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use nsq_protocol::frame::encode_message_frame_head;
use nsq_protocol::MessageId;
use tokio::io::AsyncWrite;

use crate::channel::Deliver;
use crate::message::Message;

/// Bodies from this size on are written from where they are: below it a
/// copy costs less than another piece in the vectored write.
pub(super) const SHARED_BODY_MIN: usize = 8 * 1024;
/// Pieces handed to one vectored write (the kernel takes up to 1024).
const MAX_PIECES: usize = 64;

/// Output in order: `sealed` pieces first, then `tail`.
pub(super) struct OutBuf {
    /// Frozen frame bytes and shared bodies, oldest first.
    sealed: VecDeque<Bytes>,
    sealed_len: usize,
    /// Where new frames are appended.
    tail: BytesMut,
}

impl OutBuf {
    pub fn with_capacity(capacity: usize) -> Self {
        OutBuf {
            sealed: VecDeque::new(),
            sealed_len: 0,
            tail: BytesMut::with_capacity(capacity),
        }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.sealed_len + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer frames are appended to; they go out after everything
    /// before them.
    pub fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Append a message frame; a large body is referenced, not copied.
    pub fn push_message(&mut self, m: &Message) {
        if m.body.len() < SHARED_BODY_MIN {
            m.encode_frame(&mut self.tail);
            return;
        }
        let id = MessageId::from_u64(m.id);
        encode_message_frame_head(&mut self.tail, m.timestamp, m.attempts, &id, m.body.len());
        let head = self.tail.split().freeze();
        self.seal(head);
        self.seal(m.body.clone());
    }

    fn seal(&mut self, piece: Bytes) {
        self.sealed_len += piece.len();
        self.sealed.push_back(piece);
    }

    /// Drop the first `n` bytes, which were written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.sealed.front_mut() else {
                self.tail.advance(n);
                return;
            };
            let step = n.min(front.len());
            front.advance(step);
            self.sealed_len -= step;
            n -= step;
            if front.is_empty() {
                self.sealed.pop_front();
            }
        }
    }

    /// One write of what is waiting: a plain write while there are no
    /// shared bodies, else a vectored one.
    pub fn poll_write_some<W: AsyncWrite + Unpin>(
        &mut self,
        write: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let n = if self.sealed.is_empty() {
            std::task::ready!(write.poll_write(cx, &self.tail))?
        } else {
            let mut pieces = [IoSlice::new(&[]); MAX_PIECES];
            let mut used = 0;
            let tail = std::iter::once(&self.tail[..]).filter(|t| !t.is_empty());
            for piece in self.sealed.iter().map(|b| &b[..]).chain(tail) {
                if used == MAX_PIECES {
                    break;
                }
                pieces[used] = IoSlice::new(piece);
                used += 1;
            }
            std::task::ready!(write.poll_write_vectored(cx, &pieces[..used]))?
        };
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.advance(n);
        Poll::Ready(Ok(n))
    }

    /// Write everything waiting.
    pub async fn write_all<W: AsyncWrite + Unpin>(&mut self, write: &mut W) -> io::Result<()> {
        while !self.is_empty() {
            poll_fn(|cx| self.poll_write_some(Pin::new(&mut *write), cx)).await?;
        }
        Ok(())
    }

    /// After everything was written: give back a buffer one burst made
    /// large.
    pub fn reset(&mut self, keep: usize) {
        self.sealed.clear();
        self.sealed_len = 0;
        self.tail.clear();
        if self.tail.capacity() > 8 * keep {
            self.tail = BytesMut::with_capacity(keep);
        }
    }
}

/// A channel encodes each delivery here as it goes into flight.
impl Deliver for OutBuf {
    fn deliver(&mut self, msg: &Message) {
        self.push_message(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64, len: usize) -> Message {
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        Message::new(id, 7, Bytes::from(body))
    }

    /// A writer that takes at most `step` bytes per call and records them.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
        vectored_calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.vectored_calls += 1;
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.got.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_go_out_in_order_whatever_the_write_sizes() {
        let msgs: Vec<Message> = [10, SHARED_BODY_MIN, 300, SHARED_BODY_MIN * 3, 1]
            .iter()
            .enumerate()
            .map(|(i, &len)| message(i as u64 + 1, len))
            .collect();
        let mut want = Vec::new();
        for m in &msgs {
            let mut b = BytesMut::new();
            m.encode_frame(&mut b);
            want.extend_from_slice(&b);
        }
        want.extend_from_slice(b"after");
        for step in [1, 7, 4096, 1 << 20] {
            let mut out = OutBuf::with_capacity(64);
            for m in &msgs {
                out.push_message(m);
            }
            out.tail().extend_from_slice(b"after");
            assert_eq!(out.len(), want.len());
            let mut w = Trickle {
                got: Vec::new(),
                step,
                vectored_calls: 0,
            };
            out.write_all(&mut w).await.unwrap();
            assert!(out.is_empty());
            assert_eq!(w.got, want, "step {step}");
            assert!(w.vectored_calls > 0, "large bodies go out vectored");
        }
    }

    #[test]
    fn a_take_encodes_each_delivery_as_it_goes_into_flight() {
        use crate::channel::{Channel, ChannelLimits};
        use crate::client::{Client, ClientState};
        use std::sync::Arc;
        let limits = ChannelLimits {
            mem_queue_size: 100,
            ..Default::default()
        };
        let ch = Channel::new("t".parse().unwrap(), "c".parse().unwrap(), limits, None);
        let client = Arc::new(Client::new(1, "127.0.0.1:1".parse().unwrap(), 0));
        client.set_state(ClientState::Subscribed);
        ch.add_client(client.clone()).unwrap();
        let msgs: Vec<Message> = [3, SHARED_BODY_MIN, 5]
            .iter()
            .enumerate()
            .map(|(i, &len)| message(i as u64 + 1, len))
            .collect();
        ch.put(&msgs);
        let mut out = OutBuf::with_capacity(64);
        let now = tokio::time::Instant::now();
        let timeout = std::time::Duration::from_secs(60);
        assert_eq!(ch.take(&client, 10, timeout, 0, now, &mut out), 3);
        // The frames are those of the deliveries: first attempt each.
        let mut want = BytesMut::new();
        for m in &msgs {
            let mut m = m.clone();
            m.attempts = 1;
            m.encode_frame(&mut want);
        }
        let mut got = Vec::new();
        for piece in &out.sealed {
            got.extend_from_slice(piece);
        }
        got.extend_from_slice(&out.tail);
        assert_eq!(got, &want[..]);
        assert_eq!(client.in_flight(), 3);
        for m in &msgs {
            ch.finish(client.id, m.id).expect("in flight");
        }
    }

    #[tokio::test]
    async fn small_bodies_are_copied_and_written_plainly() {
        let mut out = OutBuf::with_capacity(64);
        out.push_message(&message(1, SHARED_BODY_MIN - 1));
        assert!(out.sealed.is_empty());
        let mut w = Trickle {
            got: Vec::new(),
            step: 1 << 20,
            vectored_calls: 0,
        };
        out.write_all(&mut w).await.unwrap();
        assert_eq!(w.vectored_calls, 0);
        assert_eq!(
            w.got.len(),
            nsq_protocol::frame::message_frame_len(SHARED_BODY_MIN - 1)
        );
    }

    #[tokio::test]
    async fn more_pieces_than_one_write_takes() {
        let mut out = OutBuf::with_capacity(64);
        let msgs: Vec<Message> = (0..MAX_PIECES as u64)
            .map(|i| message(i, SHARED_BODY_MIN))
            .collect();
        let mut want = Vec::new();
        for m in &msgs {
            out.push_message(m);
            let mut b = BytesMut::new();
            m.encode_frame(&mut b);
            want.extend_from_slice(&b);
        }
        let mut w = Trickle {
            got: Vec::new(),
            step: usize::MAX,
            vectored_calls: 0,
        };
        out.write_all(&mut w).await.unwrap();
        assert_eq!(w.got, want);
        assert!(w.vectored_calls >= 2);
    }
}
