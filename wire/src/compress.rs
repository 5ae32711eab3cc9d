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

mod read;
mod write;

pub use read::Decompressor;
pub use write::Compressor;

/// Which compression a connection negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Snappy,
    /// Raw DEFLATE at this level (1..=9).
    Deflate(u32),
}

/// The Snappy framing format's stream identifier chunk.
pub(crate) const SNAPPY_STREAM_ID: &[u8] = b"\xff\x06\x00\x00sNaPpY";
/// Most uncompressed bytes one Snappy chunk may carry.
pub(crate) const SNAPPY_MAX_BLOCK: usize = 65536;
/// Bytes read from the underlying stream at a time, and the most decoded
/// bytes held before the reader takes them.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Largest data chunk body: a checksum and a block that did not compress
/// (a compressed block is never larger than this either, or it is stored).
pub(crate) const SNAPPY_MAX_CHUNK: usize = 4 + SNAPPY_MAX_BLOCK + SNAPPY_MAX_BLOCK / 6 + 32;

pub(crate) fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The framing format's checksum: CRC-32C, rotated and offset so that a
/// checksum of data containing checksums stays well distributed.
pub(crate) fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests;
