//! The read half of a compressed connection: Snappy chunks checked and
//! decoded, or a raw DEFLATE stream inflated, as the bytes arrive.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, ReadBuf};

use super::{invalid, masked_crc, Codec, READ_CHUNK, SNAPPY_MAX_BLOCK, SNAPPY_MAX_CHUNK};

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
    pub(super) raw: BytesMut,
    /// Decoded bytes not handed out yet.
    pub(super) plain: BytesMut,
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
