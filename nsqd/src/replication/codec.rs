//! Reading the link's frames off a socket: a `tokio_util` codec and a
//! reader whose buffer grows only as far as a validated frame size says.

use std::future::Future;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::wire::{Frame, WireError, HELLO_MAX, MAX_FRAME};
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

/// The chunk a holder reads its origin's records into: many MPUB-sized
/// records per read and per faulted-in allocation, and no more pinned by
/// one held message than a default MPUB (`--max-body-size`) pins already.
pub const RECORDS_CHUNK: usize = 1024 * 1024;
/// Frames at least this large are handed out as views of their chunk;
/// smaller ones are copied out (a copy costs little next to a read), so a
/// held message of a small record (a PUB's) pins no more than its record.
const SHARE_FROM: usize = 16 * 1024;
/// What one read may take off the socket by default (and the size of the
/// chunk it reads into); see [`FrameReader::set_chunk`].
const READ_CHUNK: usize = 64 * 1024;
/// The chunk before the other side proved who it is: enough for a Hello.
const HELLO_CHUNK: usize = 4 * 1024;
/// A chunk with less room than this left (and no frame begun that fits
/// it) is replaced before the next read: reads stay large.
const MIN_ROOM: usize = 4 * 1024;

/// Reads frames from one side of a link, several per read when they have
/// arrived. Reads go into a chunk (faulted in at once), and each large
/// frame is cut off its front as a view, so an Append's bodies are slices
/// of the chunk, kept by the holder's shadow: no copy, no allocation per
/// frame, and the chunk is freed once every frame cut from it is dropped.
/// A frame larger than a chunk gets a chunk of its own, of its validated
/// size; a small one is copied out. A held message thus pins its own
/// record, or at most a chunk, as on the origin it pins its MPUB's batch
/// (up to `--max-body-size`). Everything here can be cancelled between
/// reads: what a read took stays in `self`.
pub struct FrameReader<R> {
    r: R,
    /// The chunk: bytes read and not yet handed out, then its spare room.
    buf: BytesMut,
    /// What a look ahead ([`Self::more_ready`]) got: the next result.
    ready: Option<Result<Option<Bytes>, WireError>>,
    /// Largest frame accepted now (small until the peer said who it is).
    limit: usize,
    /// Size of a new chunk once the peer is known.
    chunk: usize,
    /// Tries of the socket before a wait ([`Self::spin`]); off until set.
    spin: Spin,
}

impl<R: tokio::io::AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        FrameReader {
            r,
            buf: BytesMut::new(),
            ready: None,
            limit: MAX_FRAME,
            chunk: READ_CHUNK,
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

    /// Read into chunks of `size` bytes from now on (a side that receives
    /// the other's records reads larger chunks than one receiving acks).
    pub fn set_chunk(&mut self, size: usize) {
        self.chunk = size.max(MIN_ROOM);
    }

    /// The next frame; `None` when the peer closed the link.
    pub async fn next(&mut self) -> Option<Result<Frame, WireError>> {
        match self.next_bytes().await {
            Ok(Some(b)) => Some(Frame::decode(b)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The next frame's kind and payload, a view of the chunk it was read
    /// into.
    async fn next_bytes(&mut self) -> Result<Option<Bytes>, WireError> {
        if let Some(r) = self.ready.take() {
            return r;
        }
        loop {
            // The capacity the frame at the front needs to be read whole
            // here; while its size is unknown, some room for a large read.
            let needs = match size_of_next(&self.buf) {
                Some(size) if size > self.limit => return Err(WireError::TooBig(size)),
                Some(size) if self.buf.len() >= 4 + size && size < SHARE_FROM => {
                    let frame = Bytes::copy_from_slice(&self.buf[4..4 + size]);
                    self.buf.advance(4 + size);
                    return Ok(Some(frame));
                }
                Some(size) if self.buf.len() >= 4 + size => {
                    let mut frame = self.buf.split_to(4 + size).freeze();
                    frame.advance(4);
                    return Ok(Some(frame));
                }
                Some(size) => 4 + size,
                None => self.buf.len() + MIN_ROOM,
            };
            if self.buf.capacity() < needs {
                self.next_chunk(needs);
            }
            let room = self.buf.capacity() - self.buf.len();
            let n = tokio::io::AsyncReadExt::read_buf(&mut self.r, &mut self.buf).await?;
            self.spin.read_done(n, room);
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// Move the frame begun at the end of the chunk (if any) to a new one
    /// with room for `needs` bytes, a size validated by now.
    fn next_chunk(&mut self, needs: usize) {
        let size = match self.limit {
            l if l <= HELLO_MAX => HELLO_CHUNK,
            _ => self.chunk,
        };
        let mut fresh = crate::prefault::batch_buffer(needs.max(size));
        fresh.extend_from_slice(&self.buf);
        // The old chunk lives on in the frames cut from it, if any.
        self.buf = fresh;
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
    /// frame is buffered (nor after a large read: `Spin` knows).
    pub(crate) fn spin(&mut self, give_way: impl FnMut() -> bool) -> std::io::Result<()>
    where
        R: ReadNow,
    {
        if self.ready.is_some() || self.has_frame() {
            return Ok(());
        }
        // A try takes a few small frames: room for them in the chunk.
        let needs = self.buf.len() + MIN_ROOM;
        if self.buf.capacity() < needs {
            self.next_chunk(needs);
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
    use crate::replication::wire::WireMessage;

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
        let splits = [
            vec![1],
            vec![3, 4096, 7],
            vec![65_536],
            vec![100_000, 2],
            vec![usize::MAX],
        ];
        for (steps, chunk) in splits
            .iter()
            .flat_map(|s| [READ_CHUNK, RECORDS_CHUNK, MIN_ROOM, 50_000].map(|c| (s, c)))
        {
            let mut r = FrameReader::new(Trickle {
                data: data.to_vec(),
                pos: 0,
                steps: steps.clone(),
                turn: 0,
            });
            r.set_chunk(chunk);
            for f in &frames {
                let got = r.next().await.unwrap().unwrap();
                assert_eq!(&got, f, "steps {steps:?}, chunk {chunk}");
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
        assert!(r.buf.capacity() < 40_000);
    }

    /// What a holder's reader hands out for `frames`, read at once.
    async fn views_of(frames: impl Iterator<Item = Frame>) -> Vec<Bytes> {
        let mut data = BytesMut::new();
        frames.for_each(|f| f.encode(&mut data));
        let mut r = FrameReader::new(&data[..]);
        r.set_chunk(RECORDS_CHUNK);
        let mut views = Vec::new();
        while let Some(b) = r.next_bytes().await.unwrap() {
            views.push(b);
        }
        views
    }

    #[tokio::test]
    async fn large_frames_read_together_share_a_chunk_small_ones_are_copied_out() {
        let pings = (1..=3).map(|seq| Frame::Ping { seq });
        let views = views_of(pings).await;
        assert_eq!(views.len(), 3);
        let next_in_chunk =
            |a: &Bytes, b: &Bytes| a.as_ptr() as usize + a.len() + 4 == b.as_ptr() as usize;
        assert!(
            !next_in_chunk(&views[0], &views[1]),
            "small frames are copied out"
        );
        // Large frames are shared instead.
        let views = views_of((1..=3).map(|seq| append(seq, &[SHARE_FROM]))).await;
        assert_eq!(views.len(), 3);
        for w in views.windows(2) {
            // Each view skips the next frame's 4-byte size prefix.
            assert!(next_in_chunk(&w[0], &w[1]), "not cut from one chunk");
        }
        let mut big = BytesMut::new();
        append(1, &[RECORDS_CHUNK]).encode(&mut big);
        let size = big.len() - 4;
        let mut r = FrameReader::new(&big[..]);
        r.set_chunk(RECORDS_CHUNK);
        assert_eq!(r.next_bytes().await.unwrap().unwrap().len(), size);
        assert_eq!(r.buf.capacity(), 0, "a chunk of exactly its size");
    }
}
