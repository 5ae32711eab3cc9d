//! Compressed connections: the Snappy framing format and raw DEFLATE (RFC
//! 1951, no zlib header, as Go's compress/flate and pynsq's
//! `zlib.compressobj(.., -MAX_WBITS)` speak it), as async adaptors over one
//! direction of a connection. IDENTIFY wraps the read half in a
//! [`Decompressor`] and the write half in a [`Compressor`].
//!
//! The block coders come from crates (`snap::raw`, `flate2::Compress`); only
//! the Snappy framing (chunk headers, masked CRC-32C) is assembled here,
//! because the crate's frame reader/writer are blocking `Read`/`Write` types
//! that cannot pause mid-chunk.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which compression a connection negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Snappy,
    /// Raw DEFLATE at this level (1..=9).
    Deflate(u32),
}

/// The Snappy framing format's stream identifier chunk.
const SNAPPY_STREAM_ID: &[u8] = b"\xff\x06\x00\x00sNaPpY";
/// Most uncompressed bytes one Snappy chunk may carry.
const SNAPPY_MAX_BLOCK: usize = 65536;
/// Bytes read from the underlying stream at a time, and the most decoded
/// bytes held before the reader takes them.
const READ_CHUNK: usize = 64 * 1024;
/// Largest data chunk body: a checksum and a block that did not compress
/// (a compressed block is never larger than this either, or it is stored).
const SNAPPY_MAX_CHUNK: usize = 4 + SNAPPY_MAX_BLOCK + SNAPPY_MAX_BLOCK / 6 + 32;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The framing format's checksum: CRC-32C, rotated and offset so that a
/// checksum of data containing checksums stays well distributed.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

enum Encoder {
    Snappy {
        // Boxed: the encoder carries a 2 KiB hash table.
        raw: Box<snap::raw::Encoder>,
        started: bool,
        scratch: Vec<u8>,
    },
    Deflate {
        z: Box<Compress>,
        /// Data went in since the last sync flush.
        dirty: bool,
    },
}

/// Compresses everything written to it. Compressed bytes are held until the
/// next write or flush, so a caller must flush when it runs out of work: a
/// flush ends the current Snappy chunk or emits a DEFLATE sync marker, so
/// the peer can decode everything sent so far.
pub struct Compressor<W> {
    inner: W,
    enc: Encoder,
    /// Compressed bytes not yet written to `inner`.
    out: BytesMut,
}

impl<W: AsyncWrite + Unpin> Compressor<W> {
    pub fn new(inner: W, codec: Codec) -> Self {
        let enc = match codec {
            Codec::Snappy => Encoder::Snappy {
                raw: Box::new(snap::raw::Encoder::new()),
                started: false,
                scratch: Vec::new(),
            },
            Codec::Deflate(level) => Encoder::Deflate {
                z: Box::new(Compress::new(Compression::new(level.clamp(1, 9)), false)),
                dirty: false,
            },
        };
        Compressor {
            inner,
            enc,
            out: BytesMut::new(),
        }
    }

    fn encode(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.enc {
            Encoder::Snappy {
                raw,
                started,
                scratch,
            } => {
                if !*started {
                    self.out.extend_from_slice(SNAPPY_STREAM_ID);
                    *started = true;
                }
                for block in data.chunks(SNAPPY_MAX_BLOCK) {
                    scratch.resize(snap::raw::max_compress_len(block.len()), 0);
                    let n = raw
                        .compress(block, scratch)
                        .map_err(|e| invalid(e.to_string()))?;
                    // As the reference encoder: keep the compressed form only
                    // when it saves at least an eighth.
                    let (kind, body) = if n < block.len() - block.len() / 8 {
                        (0x00u8, &scratch[..n])
                    } else {
                        (0x01u8, block)
                    };
                    let len = (body.len() + 4) as u32;
                    self.out.extend_from_slice(&[
                        kind,
                        len as u8,
                        (len >> 8) as u8,
                        (len >> 16) as u8,
                    ]);
                    self.out.extend_from_slice(&masked_crc(block).to_le_bytes());
                    self.out.extend_from_slice(body);
                }
            }
            Encoder::Deflate { z, dirty } => {
                *dirty |= !data.is_empty();
                deflate_into(z, data, &mut self.out, FlushCompress::None)?;
            }
        }
        Ok(())
    }

    /// Finish what was written so far so the peer can decode all of it.
    fn sync(&mut self) -> io::Result<()> {
        if let Encoder::Deflate { z, dirty } = &mut self.enc {
            if std::mem::take(dirty) {
                deflate_into(z, &[], &mut self.out, FlushCompress::Sync)?;
            }
        }
        Ok(())
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

/// Run `input` through the deflater into `out`, growing `out` as needed.
fn deflate_into(
    z: &mut Compress,
    mut input: &[u8],
    out: &mut BytesMut,
    flush: FlushCompress,
) -> io::Result<()> {
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(input.len() / 2 + 4096);
        }
        let before_in = z.total_in();
        let len = out.len();
        let spare = out.capacity() - len;
        // Zero the spare room, let the deflater fill it, cut back to what it wrote.
        out.resize(len + spare, 0);
        let before_out = z.total_out();
        let status = z
            .compress(input, &mut out[len..], flush)
            .map_err(|e| invalid(e.to_string()))?;
        let produced = (z.total_out() - before_out) as usize;
        out.truncate(len + produced);
        input = &input[(z.total_in() - before_in) as usize..];
        let room_left = produced < spare;
        match status {
            Status::Ok | Status::BufError if input.is_empty() && room_left => return Ok(()),
            Status::StreamEnd => return Ok(()),
            _ => {}
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Compressor<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Bound what is held: send the last batch before taking more.
        ready!(this.poll_drain(cx))?;
        this.encode(buf)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.sync()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.sync()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

enum Decoder {
    Snappy {
        raw: snap::raw::Decoder,
        seen_id: bool,
        /// Bytes of a skippable chunk still to drop.
        skipping: usize,
    },
    Deflate(Box<Decompress>),
}

/// Decompresses everything read through it.
pub struct Decompressor<R> {
    inner: R,
    dec: Decoder,
    /// Compressed bytes read but not decoded yet.
    raw: BytesMut,
    /// Decoded bytes not handed out yet.
    plain: BytesMut,
    eof: bool,
}

impl<R: AsyncRead + Unpin> Decompressor<R> {
    /// `already_read` holds compressed bytes that arrived with the command
    /// that negotiated compression.
    pub fn new(inner: R, codec: Codec, already_read: BytesMut) -> Self {
        let dec = match codec {
            Codec::Snappy => Decoder::Snappy {
                raw: snap::raw::Decoder::new(),
                seen_id: false,
                skipping: 0,
            },
            Codec::Deflate(_) => Decoder::Deflate(Box::new(Decompress::new(false))),
        };
        Decompressor {
            inner,
            dec,
            raw: already_read,
            plain: BytesMut::new(),
            eof: false,
        }
    }

    /// Decode from `raw` into `plain` until `plain` holds [`READ_CHUNK`]
    /// bytes or `raw` runs out. Bounding the output, not the input, is what
    /// defuses a bomb: a few KB of DEFLATE can stand for gigabytes, and only
    /// as much as the command decoder asks for is ever inflated.
    fn decode(&mut self) -> io::Result<()> {
        match &mut self.dec {
            Decoder::Snappy {
                raw,
                seen_id,
                skipping,
            } => loop {
                if *skipping > 0 {
                    // Padding is dropped as it arrives, never buffered whole.
                    let n = (*skipping).min(self.raw.len());
                    self.raw.advance(n);
                    *skipping -= n;
                    if *skipping > 0 {
                        return Ok(());
                    }
                }
                if self.plain.len() >= READ_CHUNK || self.raw.len() < 4 {
                    return Ok(());
                }
                let kind = self.raw[0];
                let len = usize::from(self.raw[1])
                    | usize::from(self.raw[2]) << 8
                    | usize::from(self.raw[3]) << 16;
                if (0x80..=0xfe).contains(&kind) {
                    self.raw.advance(4);
                    *skipping = len;
                    continue;
                }
                // A data chunk carries at most one block plus its checksum;
                // refuse a larger one before waiting for (and holding) it.
                if len > SNAPPY_MAX_CHUNK {
                    return Err(invalid("snappy: chunk too large"));
                }
                if self.raw.len() < 4 + len {
                    return Ok(());
                }
                let chunk = self.raw.split_to(4 + len);
                let body = &chunk[4..];
                if kind == 0xff {
                    if body != b"sNaPpY" {
                        return Err(invalid("snappy: bad stream identifier"));
                    }
                    *seen_id = true;
                    continue;
                }
                if !*seen_id {
                    return Err(invalid("snappy: stream does not start with its identifier"));
                }
                match kind {
                    0x00 | 0x01 => {
                        if body.len() < 4 {
                            return Err(invalid("snappy: chunk too short"));
                        }
                        let crc = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                        let data = &body[4..];
                        let start = self.plain.len();
                        if kind == 0x00 {
                            let n = snap::raw::decompress_len(data)
                                .map_err(|e| invalid(e.to_string()))?;
                            if n > SNAPPY_MAX_BLOCK {
                                return Err(invalid("snappy: chunk too large"));
                            }
                            self.plain.resize(start + n, 0);
                            raw.decompress(data, &mut self.plain[start..])
                                .map_err(|e| invalid(e.to_string()))?;
                        } else {
                            if data.len() > SNAPPY_MAX_BLOCK {
                                return Err(invalid("snappy: chunk too large"));
                            }
                            self.plain.extend_from_slice(data);
                        }
                        if masked_crc(&self.plain[start..]) != crc {
                            return Err(invalid("snappy: checksum mismatch"));
                        }
                    }
                    _ => return Err(invalid("snappy: unskippable chunk")),
                }
            },
            Decoder::Deflate(z) => {
                while !self.raw.is_empty() && self.plain.len() < READ_CHUNK {
                    let start = self.plain.len();
                    self.plain.resize(READ_CHUNK, 0);
                    let (in0, out0) = (z.total_in(), z.total_out());
                    let status = z
                        .decompress(&self.raw, &mut self.plain[start..], FlushDecompress::None)
                        .map_err(|e| invalid(format!("deflate: {e}")))?;
                    let consumed = (z.total_in() - in0) as usize;
                    let produced = (z.total_out() - out0) as usize;
                    self.plain.truncate(start + produced);
                    self.raw.advance(consumed);
                    if status == Status::StreamEnd {
                        // The peer ended the stream; nothing after it counts.
                        self.raw.clear();
                        self.eof = true;
                    }
                    if consumed == 0 && produced == 0 {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Give back memory a burst left behind: both buffers return to one
    /// read's worth once they are drained.
    fn shrink(&mut self) {
        for buf in [&mut self.raw, &mut self.plain] {
            if buf.is_empty() && buf.capacity() > 2 * READ_CHUNK {
                *buf = BytesMut::new();
            }
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Decompressor<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                return Poll::Ready(Ok(()));
            }
            this.decode()?;
            if !this.plain.is_empty() {
                continue;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.shrink();
            this.raw.reserve(READ_CHUNK);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.raw
            ))?;
            if n == 0 {
                this.eof = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i * 7 % 251) as u8 ^ (i / 300) as u8)
            .collect()
    }

    async fn compress(codec: Codec, parts: &[&[u8]]) -> Vec<u8> {
        let mut c = Compressor::new(Vec::new(), codec);
        for p in parts {
            c.write_all(p).await.unwrap();
            c.flush().await.unwrap();
        }
        c.inner
    }

    async fn decompress(codec: Codec, wire: &[u8]) -> io::Result<Vec<u8>> {
        let mut d = Decompressor::new(wire, codec, BytesMut::new());
        let mut out = Vec::new();
        d.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn snappy_output_reads_back_with_the_snap_crate() {
        let big = sample(200_000);
        let wire = compress(Codec::Snappy, &[b"OK", &big, &[0u8; 100]]).await;
        assert!(wire.starts_with(SNAPPY_STREAM_ID));
        let mut got = Vec::new();
        snap::read::FrameDecoder::new(&wire[..])
            .read_to_end(&mut got)
            .unwrap();
        let mut want = b"OK".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(&[0u8; 100]);
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn snap_crate_output_reads_back() {
        let big = sample(300_000);
        let mut enc = snap::write::FrameEncoder::new(Vec::new());
        enc.write_all(&big).unwrap();
        let wire = enc.into_inner().unwrap();
        assert_eq!(decompress(Codec::Snappy, &wire).await.unwrap(), big);
    }

    #[tokio::test]
    async fn snappy_rejects_a_bad_checksum_and_a_missing_identifier() {
        let mut wire = compress(Codec::Snappy, &[b"hello world"]).await;
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert!(decompress(Codec::Snappy, &wire).await.is_err());
        let wire = compress(Codec::Snappy, &[b"hello world"]).await;
        assert!(decompress(Codec::Snappy, &wire[SNAPPY_STREAM_ID.len()..])
            .await
            .is_err());
    }

    #[tokio::test]
    async fn deflate_is_raw_and_each_flush_is_decodable() {
        let big = sample(150_000);
        let first = compress(Codec::Deflate(6), &[b"OK"]).await;
        // A sync flush ends with an empty stored block: 00 00 ff ff.
        assert!(first.ends_with(&[0, 0, 0xff, 0xff]));
        let mut got = Vec::new();
        // flate2's raw reader (no zlib header) decodes what was flushed.
        let _ = flate2::read::DeflateDecoder::new(&first[..]).read_to_end(&mut got);
        assert_eq!(got, b"OK");
        let wire = compress(Codec::Deflate(9), &[b"OK", &big]).await;
        let mut want = b"OK".to_vec();
        want.extend_from_slice(&big);
        assert_eq!(decompress(Codec::Deflate(9), &wire).await.unwrap(), want);
    }

    #[tokio::test]
    async fn deflate_from_flate2_reads_back_across_split_reads() {
        let big = sample(100_000);
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), Compression::new(1));
        enc.write_all(&big).unwrap();
        enc.flush().unwrap();
        let wire = enc.get_ref().clone();
        // Feed the stream a few bytes at a time through a duplex pipe.
        let (mut a, b) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            for c in wire.chunks(5) {
                a.write_all(c).await.unwrap();
            }
        });
        let mut d = Decompressor::new(b, Codec::Deflate(1), BytesMut::new());
        let mut got = vec![0u8; big.len()];
        d.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, big);
    }

    #[tokio::test]
    async fn a_deflate_bomb_is_inflated_only_as_far_as_it_is_read() {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), Compression::best());
        let block = b"NOP\n".repeat(64 * 1024);
        for _ in 0..128 {
            enc.write_all(&block).unwrap();
        }
        enc.flush().unwrap();
        let wire = enc.get_ref().clone();
        assert!(wire.len() < 64 * 1024);
        let mut d = Decompressor::new(&wire[..], Codec::Deflate(9), BytesMut::new());
        let mut got = [0u8; 8];
        d.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"NOP\nNOP\n");
        assert!(
            d.plain.capacity() <= 2 * READ_CHUNK,
            "holds {} decoded bytes",
            d.plain.capacity()
        );
    }

    #[tokio::test]
    async fn snappy_refuses_an_oversized_chunk_before_buffering_it() {
        let mut wire = SNAPPY_STREAM_ID.to_vec();
        // A data chunk header claiming 16 MiB.
        wire.extend_from_slice(&[0x00, 0xff, 0xff, 0xff]);
        wire.extend_from_slice(&[0u8; 64]);
        assert!(decompress(Codec::Snappy, &wire).await.is_err());
        // Skippable padding of any length is dropped as it streams past.
        let mut wire = SNAPPY_STREAM_ID.to_vec();
        wire.extend_from_slice(&[0xfe, 0x00, 0x00, 0x02]);
        wire.extend_from_slice(&vec![0u8; 0x20000]);
        wire.extend_from_slice(
            &compress(Codec::Snappy, &[b"after"]).await[SNAPPY_STREAM_ID.len()..],
        );
        assert_eq!(decompress(Codec::Snappy, &wire).await.unwrap(), b"after");
    }

    /// What a hostile peer may send after negotiating compression: bytes,
    /// or a valid stream of highly compressible data with garbage after it.
    fn hostile_wire() -> impl proptest::strategy::Strategy<Value = (bool, Vec<u8>)> {
        use proptest::prelude::*;
        prop_oneof![
            (
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..2048)
            ),
            (0usize..100, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(cut, tail)| {
                // One 16 MiB bomb, built once; each case cuts it somewhere.
                static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
                let bomb = BOMB.get_or_init(|| {
                    let mut enc =
                        flate2::write::DeflateEncoder::new(Vec::new(), Compression::best());
                    let block = vec![b'A'; 1024 * 1024];
                    for _ in 0..16 {
                        enc.write_all(&block).unwrap();
                    }
                    enc.flush().unwrap();
                    enc.get_ref().clone()
                });
                let mut wire = bomb[..bomb.len() * (cut + 1) / 100].to_vec();
                wire.extend(tail);
                (false, wire)
            }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever arrives, decoding never panics and never holds more
        /// than a couple of reads' worth, decoded or not.
        #[test]
        fn hostile_compressed_input_stays_bounded((snappy, wire) in hostile_wire()) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let codec = if snappy { Codec::Snappy } else { Codec::Deflate(6) };
                let mut d = Decompressor::new(&wire[..], codec, BytesMut::new());
                let mut chunk = [0u8; 4096];
                // Read a bounded amount: a bomb may stand for gigabytes.
                for _ in 0..256 {
                    match d.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    proptest::prop_assert!(d.plain.capacity() <= 2 * READ_CHUNK);
                    proptest::prop_assert!(d.raw.capacity() <= 2 * READ_CHUNK + wire.len());
                }
                Ok(())
            })?;
        }
    }
}
