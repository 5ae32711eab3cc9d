//! The write half of a compressed connection: Snappy chunks or a raw
//! DEFLATE stream, held until the next write or flush.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, FlushCompress, Status};
use tokio::io::AsyncWrite;

use super::{invalid, masked_crc, Codec, SNAPPY_MAX_BLOCK, SNAPPY_STREAM_ID};

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
    pub(super) inner: W,
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
