//! Reading a queue's unread records without consuming them: what
//! replication's full copy sends a peer of a backlog that spilled to disk.

use std::fs::File;
use std::io::{self, ErrorKind};

use bytes::Bytes;

use super::segment::{header, Position, Window, HEADER};
use super::DiskQueue;

/// The segment being peeked at.
struct Open {
    num: u64,
    file: File,
    window: Window,
    limit: u64,
}

impl DiskQueue {
    /// Good records from `from` (or from the read position, if reading is
    /// past it) until their payloads reach `max_bytes`, appended to `out`; where to go on, or `None`
    /// once the write position is reached. Damaged records and missing
    /// segments are skipped, as reading skips them.
    pub fn peek(
        &self,
        from: Position,
        max_bytes: u64,
        out: &mut Vec<Bytes>,
    ) -> io::Result<Option<Position>> {
        let mut at = from.max(self.read);
        let mut open: Option<Open> = None;
        let next_segment = |at: &mut Position| {
            *at = Position {
                file: at.file + 1,
                pos: 0,
            }
        };
        let mut taken = 0;
        while taken < max_bytes {
            if at >= self.write {
                return Ok(None);
            }
            if open.as_ref().map(|o| o.num) != Some(at.file) {
                let file = match File::open(self.segment_path(at.file)) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        next_segment(&mut at);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let limit = if at.file == self.write.file {
                    self.write.pos
                } else {
                    file.metadata()?.len()
                };
                open = Some(Open {
                    num: at.file,
                    file,
                    window: Window::at(at.pos),
                    limit,
                });
            }
            let o = open.as_mut().expect("opened above");
            let whole = o.window.fill(&o.file, HEADER as usize, o.limit)?;
            let (n, crc) = if whole { header(&o.window) } else { (0, 0) };
            let total = HEADER + n;
            if n == 0
                || n > self.opts.max_msg_size
                || at.pos + total > o.limit
                || !o.window.fill(&o.file, total as usize, o.limit)?
            {
                // The rest of this segment is unreadable (or it ended).
                next_segment(&mut at);
                continue;
            }
            let payload = &o.window.bytes()[HEADER as usize..total as usize];
            if crc32fast::hash(payload) == crc {
                out.push(Bytes::copy_from_slice(payload));
                taken += n;
            }
            o.window.advance(total);
            at.pos += total;
        }
        Ok(Some(at))
    }
}
