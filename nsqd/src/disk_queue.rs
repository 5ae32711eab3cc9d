//! The disk queue: a topic's or channel's overflow as append-only segment files of CRC-checked records, recoverable after a crash at any moment.
//!
//! Layout in the data directory, for a queue `name` (`<topic>` or `<topic>:<channel>`):
//! `<name>.diskqueue.<NNNNNN>.dat` segments holding records
//! `[u32 BE payload length][u32 BE crc32 of the payload][payload]`, and
//! `<name>.diskqueue.meta.json` naming the read and write positions as of
//! the last [`DiskQueue::sync`].
//!
//! The durability contract: every record put before a `sync` that returned
//! Ok and not read before that `sync` is there after a crash, in order.
//! Records read since the last sync may be delivered again (at-least-once);
//! records put since the last sync are kept when their bytes reached the
//! disk intact. The two orderings that make this hold are stated where they
//! happen: data is fsynced before the meta that counts it, and a fully read
//! segment is deleted only after a meta that reads past it is durable.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use reader::Reader;
pub use segment::Position;
use segment::{parse_segment, HEADER};
#[cfg(test)]
use segment::{Meta, META_VERSION};

mod listing;
mod peek;
mod reader;
mod recovery;
mod segment;
mod sync;

pub use listing::Listing;

/// A write buffer that grew past this (huge batches) is not kept between calls.
const KEEP_WRITE_BUF: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskQueueOptions {
    /// A segment is rolled before a record that would take it past this size
    /// (a record never spans segments; a larger record gets one to itself).
    pub max_bytes_per_file: u64,
    /// Largest valid payload; a larger length on disk is corruption.
    pub max_msg_size: u64,
    /// Reads plus writes between fsyncs, as reported by [`DiskQueue::needs_sync`].
    pub sync_every: u64,
    /// Reading does not consume: a record stays in the queue (is read again
    /// after a crash) until its owner [commits](DiskQueue::commit) past it.
    pub commit_reads: bool,
}

/// A FIFO of opaque records on disk. Not thread-safe by itself: its owner
/// (a topic or channel) keeps it behind its own lock.
///
/// Dropping it without [`close`](DiskQueue::close) is what a crash looks
/// like: nothing is synced (deliberately no `Drop` work), and the next
/// [`open`](DiskQueue::open) recovers.
pub struct DiskQueue {
    dir: PathBuf,
    name: String,
    opts: DiskQueueOptions,
    read: Position,
    write: Position,
    /// With `commit_reads`: where reading starts again after a reopen. Only
    /// segments before it may be deleted. Between it and `read` lie records
    /// read but not yet done with.
    committed: Option<Position>,
    /// Unread records per segment, ascending, read segment first.
    segments: VecDeque<(u64, u64)>,
    depth: u64,
    reader: Option<Reader>,
    writer: Option<File>,
    /// The write segment has writes not yet fsynced.
    writer_dirty: bool,
    /// Rolled segments with writes not yet fsynced.
    unsynced: Vec<File>,
    /// Segment files were created since the last sync (their directory
    /// entries are not durable yet).
    dir_dirty: bool,
    /// Fully read segments, deleted once a meta reading past them is durable.
    pending_deletes: Vec<u64>,
    ops: u64,
    dirty: bool,
    corrupt_records: u64,
    bad_segments: u64,
    write_buf: Vec<u8>,
    /// Set when an fsync failed. The kernel may have dropped the pages it
    /// could not write, and a later fsync can then succeed without them, so
    /// no later sync may claim anything durable; reopening recovers from the
    /// last good meta, emptying drops what depended on it.
    fsync_failed: Option<ErrorKind>,
}

impl DiskQueue {
    /// Open (creating if missing) the queue `name` in `dir`, recovering from
    /// a crash: the meta gives the positions as of the last sync; every
    /// valid record written past its write position is adopted (keeping them
    /// loses less), the first invalid byte there and everything after it in
    /// that segment is cut off, and the depth is the count of records between
    /// the read and write positions.
    pub fn open(dir: &Path, name: &str, opts: DiskQueueOptions) -> io::Result<DiskQueue> {
        Self::open_listed(dir, name, opts, None)
    }

    /// [`open`](DiskQueue::open), with the queue's segment numbers when the
    /// caller already listed the directory ([`Listing`]).
    pub fn open_listed(
        dir: &Path,
        name: &str,
        opts: DiskQueueOptions,
        segments: Option<Vec<u64>>,
    ) -> io::Result<DiskQueue> {
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("invalid disk queue name {name:?}"),
            ));
        }
        fs::create_dir_all(dir)?;
        let mut q = DiskQueue {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            opts,
            read: Position { file: 0, pos: 0 },
            write: Position { file: 0, pos: 0 },
            committed: None,
            segments: VecDeque::new(),
            depth: 0,
            reader: None,
            writer: None,
            writer_dirty: false,
            unsynced: Vec::new(),
            dir_dirty: false,
            pending_deletes: Vec::new(),
            ops: 0,
            dirty: false,
            corrupt_records: 0,
            bad_segments: 0,
            write_buf: Vec::new(),
            fsync_failed: None,
        };
        match fs::remove_file(q.meta_tmp_path()) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let meta = q.load_meta()?;
        let files = match segments {
            Some(files) => files,
            None => q.segment_files()?,
        };
        let nothing_there = meta.is_none() && files.is_empty();
        q.recover(meta.as_ref(), files)?;
        if opts.commit_reads {
            q.committed = Some(q.read);
        }
        if nothing_there || meta.as_ref() == Some(&q.meta()) {
            // A queue with no files and no meta is empty either way: writing
            // (and fsyncing) a meta for it would only slow a restart with
            // many topics down.
            // Nothing past the synced state: nothing new to make durable.
            q.unsynced.clear();
            q.dir_dirty = false;
        } else {
            // Make what recovery decided durable (the adopted records, the
            // cut tails, a rebuilt meta), so that a crash right after this
            // open cannot resurrect a state we have already moved past.
            q.sync()?;
        }
        Ok(q)
    }

    /// Append one record.
    pub fn put(&mut self, payload: &[u8]) -> io::Result<()> {
        self.put_many(std::iter::once(payload))
    }

    /// Append records with one write(2) per segment touched. A payload that
    /// is empty or larger than `max_msg_size` is refused with `InvalidInput`
    /// (empty because a zero-filled tail after a crash would read as a run of
    /// valid empty records); the payloads before it are stored.
    pub fn put_many<'a, I: IntoIterator<Item = &'a [u8]>>(
        &mut self,
        payloads: I,
    ) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.write_buf);
        buf.clear();
        let mut records = 0;
        let mut end = self.write.pos;
        let mut result = Ok(());
        for p in payloads {
            let n = p.len() as u64;
            if n == 0 || n > self.opts.max_msg_size.min(u64::from(u32::MAX)) {
                result = Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "invalid disk queue record size {n} (1..={})",
                        self.opts.max_msg_size
                    ),
                ));
                break;
            }
            if end > 0 && end + HEADER + n > self.opts.max_bytes_per_file {
                if let Err(e) = self.append(&buf, records) {
                    result = Err(e);
                    records = 0;
                    break;
                }
                buf.clear();
                records = 0;
                self.roll();
                end = 0;
            }
            buf.extend_from_slice(&(n as u32).to_be_bytes());
            buf.extend_from_slice(&crc32fast::hash(p).to_be_bytes());
            buf.extend_from_slice(p);
            records += 1;
            end += HEADER + n;
        }
        if records > 0 {
            let appended = self.append(&buf, records);
            result = result.and(appended);
        }
        if buf.capacity() <= KEEP_WRITE_BUF {
            self.write_buf = buf;
        }
        result
    }

    /// Write `buf` (holding `records` whole records) at the write position.
    fn append(&mut self, buf: &[u8], records: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.segment_path(self.write.file))?;
            if file.metadata()?.len() > self.write.pos {
                // Nothing past the write position is ours (a new segment
                // number has no valid content; recovery already cut tails).
                file.set_len(self.write.pos)?;
            }
            if self.write.pos == 0 {
                self.dir_dirty = true;
            }
            self.writer = Some(file);
        }
        let file = self.writer.as_ref().expect("opened above");
        let wrote = crate::disk_latency::timed(&crate::disk_latency::WRITE, || {
            file.write_all_at(buf, self.write.pos)
        });
        if let Err(e) = wrote {
            // Part of the batch may be on disk; the caller got an error and
            // may retry, so do not let recovery adopt a half-failed batch.
            let _ = file.set_len(self.write.pos);
            return Err(e);
        }
        self.write.pos += buf.len() as u64;
        match self.segments.back_mut() {
            Some((f, n)) if *f == self.write.file => *n += records,
            _ => self.segments.push_back((self.write.file, records)),
        }
        self.depth += records;
        self.ops += records;
        self.dirty = true;
        self.writer_dirty = true;
        Ok(())
    }

    /// Start the next segment. Its predecessor is fsynced at the next sync
    /// rather than now (upstream syncs here): the meta that names the new
    /// segment is written only after that fsync, which is all durability
    /// needs, and a put never waits for the disk.
    fn roll(&mut self) {
        if let Some(file) = self.writer.take() {
            if self.writer_dirty {
                self.unsynced.push(file);
            }
        }
        self.writer_dirty = false;
        self.write = Position {
            file: self.write.file + 1,
            pos: 0,
        };
        self.dirty = true;
    }

    /// Records written and not yet read.
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Reads plus writes since the last sync reached `sync_every`.
    pub fn needs_sync(&self) -> bool {
        self.ops > 0 && self.ops >= self.opts.sync_every
    }

    /// Anything happened since the last sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Drop every record; writing continues with a fresh segment number.
    pub fn empty(&mut self) -> io::Result<()> {
        let fresh = Position {
            file: self.write.file + 1,
            pos: 0,
        };
        self.reader = None;
        self.writer = None;
        self.writer_dirty = false;
        self.unsynced.clear();
        // Nothing that a failed fsync may have lost is kept.
        self.fsync_failed = None;
        self.dir_dirty = false;
        self.segments.clear();
        self.depth = 0;
        self.read = fresh;
        self.write = fresh;
        if self.committed.is_some() {
            self.committed = Some(fresh);
        }
        self.pending_deletes.clear();
        // Meta first: once it says everything before `fresh` is read, a crash
        // part-way through the deletions leaves files that open deletes; the
        // other order would leave a meta naming records that are gone.
        self.sync()?;
        for f in self.segment_files()? {
            if f < fresh.file {
                self.remove_segment(f);
            }
        }
        Ok(())
    }

    /// Remove every file of this queue (segments, `.bad` segments, meta).
    pub fn delete(mut self) -> io::Result<()> {
        // Emptying first makes a crash in the middle harmless: what is left
        // is older than the meta's read position and open deletes it.
        self.empty()?;
        let prefix = format!("{}.diskqueue.", self.name);
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let ours = parse_segment(rest).is_some()
                || rest
                    .split_once(".dat.bad")
                    .is_some_and(|(num, _)| parse_segment(&format!("{num}.dat")).is_some())
                || rest == "meta.json"
                || rest == "meta.json.tmp";
            if ours {
                match fs::remove_file(self.dir.join(&name)) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        File::open(&self.dir)?.sync_all()
    }

    /// Sync, then release the files.
    pub fn close(mut self) -> io::Result<()> {
        self.sync()
    }

    /// Records skipped because their CRC failed (or that went missing).
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt_records
    }

    /// Count `n` records the reader got whole but its owner could not use
    /// (a good checksum over contents that are not a message).
    pub fn count_unusable(&mut self, n: u64) {
        self.corrupt_records += n;
    }

    /// An fsync failed: only reopening can tell what is really on disk.
    pub fn fsync_failed(&self) -> bool {
        self.fsync_failed.is_some()
    }

    /// Segments found unreadable and renamed `.bad`.
    pub fn bad_segments(&self) -> u64 {
        self.bad_segments
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn segment_path(&self, file: u64) -> PathBuf {
        self.dir
            .join(format!("{}.diskqueue.{file:06}.dat", self.name))
    }

    /// Existing segment numbers, ascending.
    fn segment_files(&self) -> io::Result<Vec<u64>> {
        let prefix = format!("{}.diskqueue.", self.name);
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(parse_segment)
            {
                files.push(n);
            }
        }
        files.sort_unstable();
        Ok(files)
    }

    fn remove_segment(&self, file: u64) {
        match fs::remove_file(self.segment_path(file)) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                // Harmless to the queue (open deletes it later); worth a look.
                warn!(queue = %self.name, segment = file, error = %e, "could not delete a read disk queue segment")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
