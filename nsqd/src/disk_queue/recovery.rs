//! Crash recovery on open: from the last synced meta and what the segments hold, the state a crashed process left.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};

use tracing::{error, warn};

use super::segment::{scan, Meta, Position, META_VERSION};
use super::DiskQueue;

impl DiskQueue {
    /// Rebuild positions and per-segment counts from `meta` (the state as of
    /// the last sync, or None to trust nothing) and the segment files:
    /// - segments before the read position were consumed: delete them;
    /// - segments before the synced write segment: their counts are trusted;
    /// - the synced write segment from the synced write position on, and
    ///   every later segment, were never fsynced: keep each valid record
    ///   (length in bounds, CRC right) and cut the segment at the first
    ///   invalid byte, since nothing past it can be a record we wrote whole;
    /// - a missing segment was read, renamed `.bad`, or never reached the
    ///   disk: skip it; if the meta counted unread records in it, they are
    ///   counted as lost.
    pub(super) fn recover(&mut self, meta: Option<&Meta>, files: Vec<u64>) -> io::Result<()> {
        let (read, synced, counts) = match meta {
            Some(m) => (m.read, m.write, m.segments.clone()),
            None => {
                // Nothing was ever synced (or the meta is unusable): every
                // byte on disk is as uncertain as an unsynced tail.
                let first = files.first().copied().unwrap_or(0);
                let start = Position {
                    file: first,
                    pos: 0,
                };
                (start, start, Vec::new())
            }
        };
        let count_of = |f: u64| counts.iter().find(|&&(g, _)| g == f).map(|&(_, n)| n);
        // A segment the synced meta counts unread records in, but that is
        // gone (deleted by hand, lost by the filesystem): its records are
        // lost, and counted as such.
        for &(f, n) in &counts {
            if f >= read.file && n > 0 && files.binary_search(&f).is_err() {
                self.bad_segments += 1;
                self.corrupt_records += n;
                error!(queue = %self.name, segment = f, records = n,
                    "disk queue segment is missing; its unread records are lost");
            }
        }
        let max = self.opts.max_msg_size;
        let mut write = synced;
        let mut write_seen = false;
        let mut read_ok = false;
        for &f in &files {
            if f < read.file {
                // Read to the end before the last sync; deleting it was due
                // after that meta became durable and the crash came between.
                self.remove_segment(f);
                continue;
            }
            let path = self.segment_path(f);
            let start = if f == read.file { read.pos } else { 0 };
            let len = fs::metadata(&path)?.len();
            if len < start {
                self.quarantine_path(
                    &path,
                    &format!("shorter ({len} bytes) than its read position {start}"),
                );
                continue;
            }
            let records = if f < synced.file {
                match count_of(f) {
                    Some(n) => n,
                    None => scan(&File::open(&path)?, start, len, max, false)?.records,
                }
            } else {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                let (from, base) = match count_of(f) {
                    Some(n) if f == synced.file && synced.pos <= len => (synced.pos, n),
                    // No count: the meta restarts reading before records
                    // it did not count (read, not committed). Count them.
                    None if f == synced.file && synced.pos <= len => (start, 0),
                    _ if f > synced.file => (0, 0),
                    _ => {
                        error!(queue = %self.name, segment = f, len, synced = synced.pos,
                            "disk queue segment lost synced data; rescanning it");
                        (start, 0)
                    }
                };
                let s = scan(&file, from, len, max, true)?;
                if s.end < len {
                    warn!(queue = %self.name, segment = f, at = s.end, discarded = len - s.end,
                        "disk queue: cutting an incomplete tail left by a crash");
                    file.set_len(s.end)?;
                }
                write = Position {
                    file: f,
                    pos: s.end,
                };
                write_seen = true;
                // Part of the state the meta will name: fsync before it.
                self.unsynced.push(file);
                base + s.records
            };
            if f == read.file {
                read_ok = true;
            }
            self.segments.push_back((f, records));
            self.depth += records;
        }
        if !write_seen && synced.pos > 0 {
            error!(queue = %self.name, segment = synced.file, "disk queue write segment is missing");
            write.pos = 0;
        }
        self.write = write;
        self.read = if read_ok {
            read
        } else {
            match self.segments.front() {
                Some(&(f, _)) => Position { file: f, pos: 0 },
                None => write,
            }
        };
        self.dir_dirty = !self.unsynced.is_empty();
        Ok(())
    }

    /// The meta, if present and usable. An unknown version is an error (a
    /// newer format must not be misread); an inconsistent one is logged and
    /// ignored, which makes recovery rescan from the oldest segment: records
    /// may come again, none is lost.
    pub(super) fn load_meta(&self) -> io::Result<Option<Meta>> {
        let data = match fs::read(self.meta_path()) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let version = serde_json::from_slice::<serde_json::Value>(&data)
            .ok()
            .and_then(|v| v.get("version").and_then(|v| v.as_u64()));
        if let Some(v) = version.filter(|&v| v != u64::from(META_VERSION)) {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("disk queue {} meta has unknown version {v}", self.name),
            ));
        }
        match serde_json::from_slice::<Meta>(&data) {
            Ok(m) if m.is_consistent() => Ok(Some(m)),
            _ => {
                error!(queue = %self.name, "disk queue meta is unusable; rebuilding from the segments");
                Ok(None)
            }
        }
    }
}
