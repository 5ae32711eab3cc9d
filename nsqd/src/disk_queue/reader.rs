//! Reading the disk queue: records in order from the read segment, CRC
//! failures skipped and counted, unreadable segments renamed aside, fully
//! read segments handed to the next sync for deletion.

use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::error;

use super::segment::{header, Window, HEADER};
use super::{DiskQueue, Position};

/// The segment being read.
pub(super) struct Reader {
    file: File,
    num: u64,
    window: Window,
    /// The segment's size, once it is no longer the write segment.
    len: Option<u64>,
}

/// One step of reading.
enum Step {
    Record(Bytes),
    /// A record failed its CRC and was skipped.
    Skipped,
    /// The read segment is finished.
    SegmentEnd,
    /// The read segment is unreadable, for this reason.
    Bad(String),
}

impl DiskQueue {
    /// The next good record, or None when the queue is empty.
    pub fn get(&mut self) -> io::Result<Option<Bytes>> {
        Ok(self.get_at()?.map(|(_, b)| b))
    }

    /// The next good record and the position it starts at (what
    /// [`commit`](DiskQueue::commit) takes to keep it).
    pub fn get_at(&mut self) -> io::Result<Option<(Position, Bytes)>> {
        loop {
            if self.read == self.write {
                self.caught_up();
                return Ok(None);
            }
            let at = self.read;
            match self.read_one() {
                Ok(Step::Record(b)) => return Ok(Some((at, b))),
                Ok(Step::Skipped) => {}
                Ok(Step::SegmentEnd) => self.finish_segment(),
                Ok(Step::Bad(why)) => self.quarantine_read_segment(&why)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Up to `max` records appended to `out` (fewer when the queue runs out).
    pub fn get_many(&mut self, max: usize, out: &mut Vec<Bytes>) -> io::Result<()> {
        for _ in 0..max {
            match self.get()? {
                Some(b) => out.push(b),
                None => break,
            }
        }
        Ok(())
    }

    /// Like [`get_many`](DiskQueue::get_many), with each record's position.
    pub fn get_many_at(&mut self, max: usize, out: &mut Vec<(Position, Bytes)>) -> io::Result<()> {
        for _ in 0..max {
            match self.get_at()? {
                Some(r) => out.push(r),
                None => break,
            }
        }
        Ok(())
    }

    /// Where the next read starts: past every record read so far.
    pub fn read_position(&self) -> Position {
        self.read
    }

    /// With `commit_reads`: the records before `upto` (a position from
    /// [`get_at`](DiskQueue::get_at) or [`read_position`](DiskQueue::read_position))
    /// are done with; after the next sync a reopen no longer returns them.
    /// Never moves backwards nor past what was read.
    pub fn commit(&mut self, upto: Position) {
        if let Some(c) = self.committed.as_mut() {
            let upto = upto.min(self.read);
            if upto > *c {
                *c = upto;
                self.dirty = true;
            }
        }
    }

    /// Read at the read position, which is not the write position.
    fn read_one(&mut self) -> io::Result<Step> {
        let at_write = self.read.file == self.write.file;
        if self.reader.as_ref().map(|r| r.num) != Some(self.read.file) {
            let window = match self.reader.take() {
                Some(r) => Window {
                    buf: r.window.buf,
                    ..Window::at(self.read.pos)
                },
                None => Window::at(self.read.pos),
            };
            match File::open(self.segment_path(self.read.file)) {
                Ok(file) => {
                    self.reader = Some(Reader {
                        file,
                        num: self.read.file,
                        window,
                        len: None,
                    })
                }
                Err(e) if e.kind() == ErrorKind::NotFound && !at_write => {
                    // Gone while we ran: what it held is counted lost when
                    // the segment is finished; the segment itself here.
                    if matches!(self.segments.front(), Some(&(f, n)) if f == self.read.file && n > 0)
                    {
                        self.bad_segments += 1;
                    }
                    return Ok(Step::SegmentEnd);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Ok(Step::Bad("missing".into()))
                }
                Err(e) => return Err(e),
            }
        }
        let r = self.reader.as_mut().expect("opened above");
        let limit = if at_write {
            self.write.pos
        } else {
            match r.len {
                Some(len) => len,
                None => match r.file.metadata() {
                    Ok(m) => *r.len.insert(m.len()),
                    Err(e) => return Ok(Step::Bad(format!("stat failed: {e}"))),
                },
            }
        };
        if self.read.pos >= limit {
            return Ok(Step::SegmentEnd);
        }
        let max = self.opts.max_msg_size;
        let w = &mut r.window;
        match w.fill(&r.file, HEADER as usize, limit) {
            Ok(true) => {}
            Ok(false) => return Ok(Step::Bad("ends inside a record header".into())),
            Err(e) => return Ok(Step::Bad(format!("read failed: {e}"))),
        }
        let (n, crc) = header(w);
        if n == 0 || n > max || self.read.pos + HEADER + n > limit {
            return Ok(Step::Bad(format!(
                "impossible record length {n} at offset {}",
                self.read.pos
            )));
        }
        let total = (HEADER + n) as usize;
        match w.fill(&r.file, total, limit) {
            Ok(true) => {}
            Ok(false) => return Ok(Step::Bad("ends inside a record".into())),
            Err(e) => return Ok(Step::Bad(format!("read failed: {e}"))),
        }
        let payload = &w.bytes()[HEADER as usize..total];
        let good = crc32fast::hash(payload) == crc;
        let record = good.then(|| Bytes::copy_from_slice(payload));
        let at = self.read.pos;
        w.advance(total as u64);
        self.read.pos += total as u64;
        self.ops += 1;
        self.dirty = true;
        if let Some((f, left)) = self.segments.front_mut() {
            if *f == self.read.file && *left > 0 {
                *left -= 1;
                self.depth -= 1;
            }
        }
        match record {
            Some(b) => Ok(Step::Record(b)),
            None => {
                self.corrupt_records += 1;
                error!(queue = %self.name, segment = self.read.file, offset = at, len = n,
                    "disk queue record failed its CRC check; skipped");
                Ok(Step::Skipped)
            }
        }
    }

    /// Forget the unread-record counts of segments up to `file`; what was
    /// left in them is returned (zero unless records went missing).
    fn drop_counts_through(&mut self, file: u64) -> u64 {
        let mut left = 0;
        while let Some(&(f, n)) = self.segments.front() {
            if f > file {
                break;
            }
            left += n;
            self.segments.pop_front();
        }
        self.depth -= left;
        left
    }

    /// The reader reached the end of a segment no longer written to.
    fn finish_segment(&mut self) {
        let left = self.drop_counts_through(self.read.file);
        if left > 0 {
            self.corrupt_records += left;
            error!(queue = %self.name, segment = self.read.file, missing = left,
                "disk queue segment ended before all the records counted in it");
        }
        if self
            .reader
            .as_ref()
            .is_some_and(|r| r.num == self.read.file)
        {
            self.pending_deletes.push(self.read.file);
        }
        self.read = Position {
            file: self.read.file + 1,
            pos: 0,
        };
        self.dirty = true;
    }

    /// The reader is at the write position: nothing may still be counted.
    fn caught_up(&mut self) {
        if let Some(r) = self.reader.as_mut() {
            // An idle queue should not hold its read-ahead.
            if r.window.buf.capacity() > 0 {
                r.window = Window::at(self.read.pos);
            }
        }
        if self.depth > 0 {
            let left = self.drop_counts_through(self.read.file);
            self.corrupt_records += left;
            error!(queue = %self.name, missing = left,
                "disk queue reader caught up with the writer with records still counted");
        }
    }

    /// The read segment cannot be read (or holds an impossible length): keep
    /// it as `<file>.bad` for an operator, count it, go on with the next.
    fn quarantine_read_segment(&mut self, why: &str) -> io::Result<()> {
        let file = self.read.file;
        self.reader = None;
        self.quarantine_path(&self.segment_path(file), why);
        let lost = self.drop_counts_through(file);
        if lost > 0 {
            error!(queue = %self.name, segment = file, records = lost, "disk queue records unreadable");
        }
        if file == self.write.file {
            self.writer = None;
            self.writer_dirty = false;
            self.write = Position {
                file: file + 1,
                pos: 0,
            };
        }
        self.read = Position {
            file: file + 1,
            pos: 0,
        };
        self.dirty = true;
        // Durable at once: a restart must not re-read the renamed segment,
        // and the meta must never name a write position in a file now gone.
        self.sync()
    }

    pub(super) fn quarantine_path(&mut self, path: &Path, why: &str) {
        self.bad_segments += 1;
        let mut bad = PathBuf::from(format!("{}.bad", path.display()));
        let mut i = 1;
        while bad.exists() {
            bad = PathBuf::from(format!("{}.bad.{i}", path.display()));
            i += 1;
        }
        match fs::rename(path, &bad) {
            Ok(()) => {
                error!(queue = %self.name, file = %path.display(), renamed = %bad.display(), reason = why,
                "disk queue segment is unreadable; renamed and skipped")
            }
            Err(e) => error!(queue = %self.name, file = %path.display(), reason = why, error = %e,
                "disk queue segment is unreadable and could not be renamed; skipped"),
        }
    }
}
