//! Making the disk queue durable: data fsynced before the meta that counts
//! it, the meta replaced atomically, read segments deleted only after a meta
//! reading past them is durable.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use tracing::error;

use super::segment::{Meta, META_VERSION};
use super::DiskQueue;

impl DiskQueue {
    /// Make the current state durable: fsync the segments written since the
    /// last sync, then replace the meta atomically, then delete segments the
    /// meta says are read.
    pub fn sync(&mut self) -> io::Result<()> {
        self.refuse_after_failed_fsync()?;
        let synced = crate::disk_latency::timed(&crate::disk_latency::FSYNC, || self.sync_data());
        if let Err(e) = synced {
            self.fsync_failed = Some(e.kind());
            error!(queue = %self.name, error = %e, "disk queue fsync failed; no further syncs until reopened");
            return Err(e);
        }
        self.write_meta()?;
        // Only now may read segments go: until this meta was durable, a
        // crash would have restarted reading inside them. With
        // `commit_reads`, only those the commit point has passed.
        let keep_from = self.committed.map_or(u64::MAX, |c| c.file);
        let (gone, kept) = std::mem::take(&mut self.pending_deletes)
            .into_iter()
            .partition(|&f| f < keep_from);
        self.pending_deletes = kept;
        for f in gone {
            self.remove_segment(f);
        }
        self.ops = 0;
        self.dirty = false;
        Ok(())
    }

    /// Make every record appended so far durable without rewriting the meta:
    /// recovery adopts intact records past the meta's write position, so
    /// after this returns Ok they survive a crash. One fdatasync (two when a
    /// segment was rolled, plus the directory when one was created): the
    /// cheap half of [`sync`](DiskQueue::sync), for acknowledging writes.
    pub fn flush_data(&mut self) -> io::Result<()> {
        self.refuse_after_failed_fsync()?;
        self.sync_data().inspect_err(|e| {
            self.fsync_failed = Some(e.kind());
            error!(queue = %self.name, error = %e, "disk queue fsync failed; no further syncs until reopened");
        })
    }

    /// After a failed fsync no sync may claim anything durable.
    fn refuse_after_failed_fsync(&self) -> io::Result<()> {
        match self.fsync_failed {
            Some(kind) => Err(io::Error::new(
                kind,
                format!(
                    "disk queue {}: an earlier fsync failed; reopen to recover",
                    self.name
                ),
            )),
            None => Ok(()),
        }
    }

    /// Data before meta: the meta counts records up to its write position,
    /// so they must be on disk before any meta naming them can be.
    fn sync_data(&mut self) -> io::Result<()> {
        for file in &self.unsynced {
            file.sync_data()?;
        }
        self.unsynced.clear();
        if self.writer_dirty {
            if let Some(file) = &self.writer {
                file.sync_data()?;
            }
            self.writer_dirty = false;
        }
        if self.dir_dirty {
            // New segments' directory entries, before the meta that names them.
            File::open(&self.dir)?.sync_all()?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    pub(super) fn meta_path(&self) -> PathBuf {
        self.dir.join(format!("{}.diskqueue.meta.json", self.name))
    }

    pub(super) fn meta_tmp_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.diskqueue.meta.json.tmp", self.name))
    }

    pub(super) fn meta(&self) -> Meta {
        let read = self.committed.unwrap_or(self.read);
        // A segment's count is of its records past `read`. Where reading is
        // to restart before that (records read, not committed), the count
        // is left out and a reopen counts the records by scanning.
        let segments: Vec<(u64, u64)> = self
            .segments
            .iter()
            .copied()
            .filter(|&(f, _)| read == self.read || f > self.read.file)
            .collect();
        Meta {
            version: META_VERSION,
            depth: segments.iter().map(|&(_, n)| n).sum(),
            read,
            write: self.write,
            segments,
        }
    }

    /// Replace the meta so that a crash leaves the old or the new one whole:
    /// write a temporary file, fsync it, rename it over, fsync the directory
    /// (the rename itself is durable only then).
    fn write_meta(&self) -> io::Result<()> {
        let data = serde_json::to_vec(&self.meta()).map_err(io::Error::other)?;
        let tmp = self.meta_tmp_path();
        let file = File::create(&tmp)?;
        file.write_all_at(&data, 0)?;
        file.sync_all()?;
        fs::rename(&tmp, self.meta_path())?;
        File::open(&self.dir)?.sync_all()
    }
}
