//! The on-disk formats of the disk queue: records in segment files, the meta file, and buffered reading of a segment.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

/// Bytes before each payload: length, then CRC.
pub(super) const HEADER: u64 = 8;
/// The meta format this code writes and understands.
pub(super) const META_VERSION: u32 = 1;
/// Read-ahead per queue. Below glibc's mmap threshold so that releasing it
/// when the queue drains and taking it again is cheap; 64 KiB already makes
/// the syscall cost per 200-byte record negligible.
pub(super) const READ_BUF: usize = 64 * 1024;

/// A position in the queue: segment number and byte offset of a record boundary.
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    pub(super) file: u64,
    pub(super) pos: u64,
}

/// The meta file. `segments` lists, for every segment from the read one to
/// the write one, how many unread records it holds, so that opening does not
/// have to rescan a backlog that was synced (only the tail past `write`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) version: u32,
    pub(super) depth: u64,
    pub(super) read: Position,
    pub(super) write: Position,
    pub(super) segments: Vec<(u64, u64)>,
}

impl Meta {
    /// Whether the meta describes a state this code could have written.
    pub(super) fn is_consistent(&self) -> bool {
        let in_range = |f: u64| self.read.file <= f && f <= self.write.file;
        self.read <= self.write
            && self.segments.windows(2).all(|w| w[0].0 < w[1].0)
            && self.segments.iter().all(|&(f, _)| in_range(f))
            && self.segments.iter().map(|&(_, n)| n).sum::<u64>() == self.depth
    }
}

/// A file region buffered for reading: `buf[lo..hi]` holds the file's bytes
/// starting at offset `pos()`.
#[derive(Default)]
pub(super) struct Window {
    pub(super) buf: Vec<u8>,
    pub(super) lo: usize,
    pub(super) hi: usize,
    /// File offset of `buf[hi]`.
    pub(super) next: u64,
}

impl Window {
    pub(super) fn at(pos: u64) -> Window {
        Window {
            next: pos,
            ..Window::default()
        }
    }

    pub(super) fn pos(&self) -> u64 {
        self.next - (self.hi - self.lo) as u64
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[self.lo..self.hi]
    }

    /// Make at least `need` bytes available without reading at or past
    /// `limit`; Ok(false) when the file (or the limit) ends first.
    pub(super) fn fill(&mut self, file: &File, need: usize, limit: u64) -> io::Result<bool> {
        if self.hi - self.lo >= need {
            return Ok(true);
        }
        if self.lo > 0 {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
        }
        let size = need.max(READ_BUF);
        if self.buf.len() < size {
            self.buf.resize(size, 0);
        }
        while self.hi < need {
            let room = (self.buf.len() - self.hi) as u64;
            let want = room.min(limit.saturating_sub(self.next)) as usize;
            if want == 0 {
                return Ok(false);
            }
            match file.read_at(&mut self.buf[self.hi..self.hi + want], self.next) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.hi += n;
                    self.next += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Move past `n` bytes, which may extend beyond what is buffered.
    pub(super) fn advance(&mut self, n: u64) {
        let buffered = (self.hi - self.lo) as u64;
        if n <= buffered {
            self.lo += n as usize;
        } else {
            self.next += n - buffered;
            self.lo = 0;
            self.hi = 0;
        }
    }
}

/// The header at the front of `w`: (payload length, crc).
pub(super) fn header(w: &Window) -> (u64, u32) {
    let b = w.bytes();
    let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let crc = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    (u64::from(len), crc)
}

/// What a forward scan over one segment found.
pub(super) struct Scan {
    pub(super) records: u64,
    /// Offset just past the last well-formed record.
    pub(super) end: u64,
}

/// Walk the records of `file` from `start` up to `len`, stopping at the
/// first impossible length or short record. With `check_crc` a CRC failure
/// stops it too: that is what a torn write looks like in an unsynced tail.
pub(super) fn scan(
    file: &File,
    start: u64,
    len: u64,
    max_msg: u64,
    check_crc: bool,
) -> io::Result<Scan> {
    let mut w = Window::at(start);
    let mut records = 0;
    while w.fill(file, HEADER as usize, len)? {
        let (n, crc) = header(&w);
        let end = w.pos() + HEADER + n;
        if n == 0 || n > max_msg || end > len {
            break;
        }
        if check_crc {
            if !w.fill(file, (HEADER + n) as usize, len)? {
                break;
            }
            if crc32fast::hash(&w.bytes()[HEADER as usize..(HEADER + n) as usize]) != crc {
                break;
            }
        }
        w.advance(HEADER + n);
        records += 1;
    }
    Ok(Scan {
        records,
        end: w.pos(),
    })
}

/// `<NNNNNN>.dat` → the segment number.
pub(super) fn parse_segment(rest: &str) -> Option<u64> {
    let digits = rest.strip_suffix(".dat")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
