//! Reading the link's frames off a socket: a `tokio_util` codec and a
//! reader whose buffer grows only as far as a validated frame size says.

use std::future::Future;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::wire::{Frame, WireError, MAX_FRAME};
use crate::spin::{ReadNow, Spin};

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

/// Frames at least this large are read into an allocation of their own,
/// faulted in at once; smaller ones are copied out of the read buffer.
const OWN_BUFFER: usize = 16 * 1024;
/// The read buffer's size: what one read may take off the socket.
const READ_CHUNK: usize = 64 * 1024;

/// Reads frames from one side of a link. A frame's bytes are handed out in
/// an allocation of exactly its size (its messages' bodies are slices of
/// it, kept by the holder's shadow), so the read buffer is reused and a
/// held message pins no more than its own frame. Everything here can be
/// cancelled between reads: a frame read in part stays in `self`.
pub struct FrameReader<R> {
    r: R,
    /// Bytes read and not yet handed out; never shared, so never regrown.
    buf: BytesMut,
    /// A large frame being read straight into its own buffer (size prefix
    /// removed), and its size.
    own: Option<(BytesMut, usize)>,
    /// What a look ahead ([`Self::more_ready`]) got: the next result.
    ready: Option<Result<Option<Bytes>, WireError>>,
    /// Largest frame accepted now (small until the peer said who it is).
    limit: usize,
    /// Tries of the socket before a wait ([`Self::spin`]); off until set.
    spin: Spin,
}

impl<R: tokio::io::AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        FrameReader {
            r,
            buf: BytesMut::with_capacity(READ_CHUNK),
            own: None,
            ready: None,
            limit: MAX_FRAME,
            spin: Spin::new(Duration::ZERO),
        }
    }

    /// Let [`Self::spin`] try the socket for up to `window` (zero: never).
    pub(crate) fn set_spin(&mut self, window: Duration) {
        self.spin = Spin::new(window);
    }

    /// Accept frames of at most `limit` bytes (never more than [`MAX_FRAME`]).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(MAX_FRAME);
    }

    /// The next frame; `None` when the peer closed the link.
    pub async fn next(&mut self) -> Option<Result<Frame, WireError>> {
        match self.next_bytes().await {
            Ok(Some(b)) => Some(Frame::decode(b)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The next frame's kind and payload, in a buffer of its own.
    async fn next_bytes(&mut self) -> Result<Option<Bytes>, WireError> {
        use tokio::io::AsyncReadExt;
        if let Some(r) = self.ready.take() {
            return r;
        }
        loop {
            if let Some((own, size)) = &mut self.own {
                let rest = *size - own.len();
                if rest == 0 {
                    let (own, _) = self.own.take().unwrap_or_default();
                    return Ok(Some(own.freeze()));
                }
                // Cancel-safe: what a read took is in `own` before it returns.
                let n = (&mut self.r).take(rest as u64).read_buf(own).await?;
                // A large frame's read: nothing to spin for.
                self.spin.read_done(n, n);
                if n == 0 {
                    return Ok(None);
                }
                continue;
            }
            if let Some(size) = size_of_next(&self.buf) {
                if size > self.limit {
                    return Err(WireError::TooBig(size));
                }
                let have = self.buf.len() - 4;
                if have >= size || size >= OWN_BUFFER {
                    // The size is validated: now it may be allocated.
                    let mut own = crate::prefault::batch_buffer(size);
                    let take = have.min(size);
                    own.extend_from_slice(&self.buf[4..4 + take]);
                    self.buf.advance(4 + take);
                    self.own = Some((own, size));
                    continue;
                }
            }
            // Only a small frame's beginning (or nothing) is buffered, at the
            // front of a buffer that is never shared: room without regrowing.
            if self.buf.capacity() - self.buf.len() < 4096 {
                // Moves what is left back to the front (nothing else
                // refers to the buffer), so it keeps its allocation.
                self.buf.reserve(READ_CHUNK - self.buf.len());
            }
            let room = self.buf.capacity() - self.buf.len();
            let n = self.r.read_buf(&mut self.buf).await?;
            self.spin.read_done(n, room);
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// The next frame, waiting at most `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Frame, ReadError> {
        self.next_until(tokio::time::Instant::now() + timeout).await
    }

    /// The next frame, waiting until `deadline` at the latest.
    pub async fn next_until(&mut self, deadline: tokio::time::Instant) -> Result<Frame, ReadError> {
        tokio::time::timeout_at(deadline, self.next())
            .await
            .map_err(|_| ReadError::Timeout)?
            .ok_or(ReadError::Closed)?
            .map_err(ReadError::from)
    }

    /// Before a wait for the next frame: try the socket for a while when
    /// that pays (`crate::spin`), giving way as soon as `give_way` says so;
    /// what came is buffered for [`Self::next`]. Nothing is tried while a
    /// frame is buffered or a large one is being read.
    pub(crate) fn spin(&mut self, give_way: impl FnMut() -> bool) -> std::io::Result<()>
    where
        R: ReadNow,
    {
        if self.ready.is_some() || self.own.is_some() || self.has_frame() {
            return Ok(());
        }
        match self.spin.input_unless(&mut self.r, &mut self.buf, give_way) {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether a whole frame is already buffered.
    pub fn has_frame(&self) -> bool {
        size_of_next(&self.buf).is_some_and(|size| self.buf.len() >= 4 + size)
    }

    /// Whether the next frame (or the end of the link) can be had without
    /// waiting: buffered, or read from what the socket holds now. So an
    /// acknowledgement can wait for records that already arrived.
    pub fn more_ready(&mut self) -> bool {
        if self.ready.is_some() || self.has_frame() {
            return true;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // Dropping the read when it would wait loses nothing: what it read
        // stays buffered (see `next_bytes`).
        let polled = std::pin::pin!(self.next_bytes()).poll(&mut cx);
        match polled {
            std::task::Poll::Ready(r) => {
                self.ready = Some(r);
                true
            }
            std::task::Poll::Pending => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::wire::{WireMessage, HELLO_MAX};

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

    /// Hands out its bytes a few at a time, the sizes taken in turn.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        steps: Vec<usize>,
        turn: usize,
    }

    impl tokio::io::AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let step = self.steps[self.turn % self.steps.len()];
            self.turn += 1;
            let n = step.min(buf.remaining()).min(self.data.len() - self.pos);
            buf.put_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn append(seq: u64, sizes: &[usize]) -> Frame {
        let msgs = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| WireMessage {
                id: seq * 1000 + i as u64,
                timestamp: 1,
                attempts: 0,
                body: Bytes::from(vec![(seq + i as u64) as u8; *n]),
            })
            .collect();
        Frame::Append {
            seq,
            topic: "t".parse().unwrap(),
            channel: None,
            due: 0,
            msgs,
        }
    }

    #[tokio::test]
    async fn frames_large_and_small_survive_any_split_into_reads() {
        let frames = vec![
            append(1, &[200; 300]),
            Frame::Ack { seq: 1 },
            append(2, &[10]),
            append(3, &[70_000, 5]),
            Frame::Ping { seq: 3 },
            append(4, &[20_000; 4]),
        ];
        let mut data = BytesMut::new();
        for f in &frames {
            f.encode(&mut data);
        }
        for steps in [
            vec![1],
            vec![3, 4096, 7],
            vec![65_536],
            vec![100_000, 2],
            vec![usize::MAX],
        ] {
            let mut r = FrameReader::new(Trickle {
                data: data.to_vec(),
                pos: 0,
                steps: steps.clone(),
                turn: 0,
            });
            for f in &frames {
                assert_eq!(&r.next().await.unwrap().unwrap(), f, "steps {steps:?}");
            }
            assert!(r.next().await.is_none());
        }
    }

    #[tokio::test]
    async fn more_ready_says_whether_a_whole_frame_arrived_without_losing_a_byte() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut r = FrameReader::new(rx);
        let mut data = BytesMut::new();
        append(1, &[30_000]).encode(&mut data);
        Frame::Ack { seq: 9 }.encode(&mut data);
        use tokio::io::AsyncWriteExt;
        assert!(!r.more_ready(), "nothing sent yet");
        tx.write_all(&data[..100]).await.unwrap();
        assert!(!r.more_ready(), "a part of the Append");
        tx.write_all(&data[100..20_000]).await.unwrap();
        assert!(!r.more_ready(), "still a part");
        tx.write_all(&data[20_000..]).await.unwrap();
        assert!(r.more_ready());
        assert!(r.more_ready(), "asking twice keeps the frame");
        assert_eq!(r.next().await.unwrap().unwrap(), append(1, &[30_000]));
        assert!(r.more_ready(), "the Ack is there too");
        assert_eq!(r.next().await.unwrap().unwrap(), Frame::Ack { seq: 9 });
        drop(tx);
        assert!(r.more_ready(), "the end of the link is ready too");
        assert!(r.next().await.is_none());
    }

    /// Both ends of a loopback TCP connection: the reading half, and the
    /// other end to send on.
    async fn tcp_pair() -> (tokio::net::tcp::OwnedReadHalf, std::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let send = std::net::TcpStream::connect(addr).unwrap();
        let (recv, _) = listener.accept().await.unwrap();
        (recv.into_split().0, send)
    }

    fn bytes_of(f: &Frame) -> BytesMut {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        b
    }

    #[tokio::test]
    async fn a_spin_takes_the_next_frame_off_the_socket_and_off_means_none() {
        let test = tokio::time::timeout(Duration::from_secs(120), spin_on_and_off());
        test.await.expect("test timed out");
    }

    async fn spin_on_and_off() {
        use std::io::Write;
        for window in [Duration::from_secs(30), Duration::ZERO] {
            let (recv, mut send) = tcp_pair().await;
            let mut r = FrameReader::new(recv);
            r.set_spin(window);
            // A spin tries only after a small read that drained the socket.
            send.write_all(&bytes_of(&Frame::Ack { seq: 1 })).unwrap();
            assert_eq!(r.next().await.unwrap().unwrap(), Frame::Ack { seq: 1 });
            // Sent while (or before) the reader tries the socket.
            let late = std::thread::spawn(move || {
                send.write_all(&bytes_of(&append(2, &[100]))).unwrap();
                send
            });
            if window.is_zero() {
                r.spin(|| false).unwrap();
                assert!(!r.has_frame(), "spinning off: nothing tried");
            } else {
                // Tries until the frame is whole (it is one small write,
                // so seldom more than one spin).
                for _ in 0..100 {
                    if r.has_frame() {
                        break;
                    }
                    r.spin(|| false).unwrap();
                }
                assert!(r.has_frame(), "buffered by the spins");
            }
            assert_eq!(r.next().await.unwrap().unwrap(), append(2, &[100]));
            let mut send = late.join().unwrap();
            // A reader that must give way tries nothing.
            send.write_all(&bytes_of(&Frame::Ping { seq: 3 })).unwrap();
            r.spin(|| true).unwrap();
            assert!(!r.has_frame());
            assert_eq!(r.next().await.unwrap().unwrap(), Frame::Ping { seq: 3 });
            drop(send);
            r.spin(|| false).unwrap();
            assert!(
                r.next().await.is_none(),
                "the end of the link comes through"
            );
        }
    }

    #[tokio::test]
    async fn a_large_frame_past_the_limit_is_refused_before_its_buffer_exists() {
        let mut data = BytesMut::new();
        append(1, &[40_000]).encode(&mut data);
        let mut r = FrameReader::new(&data[..]);
        r.set_limit(HELLO_MAX);
        assert!(matches!(r.next().await, Some(Err(WireError::TooBig(_)))));
        assert!(r.own.is_none());
    }
}
