//! The thread that writes a durable holder's journal and fsyncs it, in
//! groups: the link task hands it batches of records (each with a ticket)
//! and goes on reading the origin's stream; the thread writes every batch
//! already waiting, fsyncs once, and reports the highest ticket now on
//! disk. So a slow fsync never stops the link, and each fsync covers what
//! arrived while the previous one ran.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};

use bytes::BytesMut;
use tokio::sync::watch;

/// What the thread did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Synced {
    /// Every ticket up to this one was handled (written and fsynced, or
    /// failed).
    pub done: u64,
    /// The highest ticket whose group failed (0: none).
    pub failed: u64,
}

/// Why a journal write was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("replication journal write or fsync failed")]
    Failed,
    #[error("replication journal writer gone")]
    Gone,
}

/// Spill queue writes a snapshot counts on: each answers once written
/// (fsynced under `--durable`).
pub type SpillWrites = Vec<tokio::sync::oneshot::Receiver<io::Result<()>>>;

enum Job {
    /// Records to append.
    Append(u64, BytesMut),
    /// A snapshot replacing the whole journal, once the spill writes it
    /// refers to are on disk.
    Replace(u64, BytesMut, SpillWrites),
}

/// The link task's end: submits batches, waits for their tickets.
pub struct Writer {
    tx: Sender<Job>,
    synced: watch::Receiver<Synced>,
    ticket: u64,
}

impl Writer {
    /// Start the thread, appending to `file` (the journal at `path`).
    pub fn start(path: PathBuf, file: File) -> io::Result<Writer> {
        let (tx, rx) = channel();
        let (report, synced) = watch::channel(Synced::default());
        std::thread::Builder::new()
            .name("repl-journal".into())
            .spawn(move || run(path, file, rx, report))?;
        Ok(Writer {
            tx,
            synced,
            ticket: 0,
        })
    }

    /// The ticket of everything submitted so far.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// Append `records` (when not empty); the ticket that covers them.
    pub fn append(&mut self, records: BytesMut) -> u64 {
        if !records.is_empty() {
            self.send(|t| Job::Append(t, records));
        }
        self.ticket
    }

    /// Replace the journal with `snapshot`, after what was submitted and
    /// once `spills` are on disk.
    pub fn replace(&mut self, snapshot: BytesMut, spills: SpillWrites) -> u64 {
        self.send(|t| Job::Replace(t, snapshot, spills));
        self.ticket
    }

    fn send(&mut self, job: impl FnOnce(u64) -> Job) {
        self.ticket += 1;
        // A thread that is gone never confirms: waiters see `Gone`.
        let _ = self.tx.send(job(self.ticket));
    }

    /// A receiver to wait on without holding the journal.
    pub fn waiter(&self) -> Waiter {
        Waiter(self.synced.clone())
    }
}

/// Waits for tickets to reach the disk.
#[derive(Clone)]
pub struct Waiter(watch::Receiver<Synced>);

impl Waiter {
    /// Wait until `ticket` is written and fsynced.
    pub async fn wait(&mut self, ticket: u64) -> Result<(), SyncError> {
        let s = *self
            .0
            .wait_for(|s| s.done >= ticket)
            .await
            .map_err(|_| SyncError::Gone)?;
        // A failure after `ticket` may be counted against it too: the link
        // then drops and the origin sends a full copy, never a loss.
        if s.failed >= ticket && ticket > 0 {
            return Err(SyncError::Failed);
        }
        Ok(())
    }
}

fn run(path: PathBuf, mut file: File, rx: Receiver<Job>, report: watch::Sender<Synced>) {
    let mut failed = 0;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter());
        let mut done = 0;
        let mut result = Ok(());
        for job in jobs {
            let (ticket, r) = match job {
                Job::Append(t, b) => (t, file.write_all(&b)),
                Job::Replace(t, b, spills) => (
                    t,
                    spilled(spills).and_then(|()| replace(&path, &mut file, &b)),
                ),
            };
            done = ticket;
            if result.is_ok() {
                result = r;
            }
        }
        if result.is_ok() {
            result = file.sync_data();
        }
        if let Err(e) = result {
            tracing::error!(journal = %path.display(), "replication journal: write failed - {e}");
            failed = done;
        }
        report.send_replace(Synced { done, failed });
    }
}

/// Wait for the spill writes a snapshot refers to: until they are on
/// disk, the journal's own records are the only copy of those messages.
fn spilled(spills: SpillWrites) -> io::Result<()> {
    for rx in spills {
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(io::Error::other("disk I/O thread gone")))?;
    }
    Ok(())
}

/// Write `snapshot` aside, fsync it, rename it over the journal and go on
/// appending to it.
fn replace(path: &PathBuf, file: &mut File, snapshot: &[u8]) -> io::Result<()> {
    // What was appended before must be on disk if the rename is not.
    file.sync_data()?;
    let tmp = path.with_extension("journal.tmp");
    let mut t = File::create(&tmp)?;
    t.write_all(snapshot)?;
    t.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    *file = OpenOptions::new().append(true).open(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(b: &[u8]) -> BytesMut {
        BytesMut::from(b)
    }

    #[tokio::test]
    async fn groups_are_written_in_order_and_a_snapshot_replaces_what_came_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.journal");
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        let mut w = Writer::start(path.clone(), file).unwrap();
        assert_eq!(w.append(BytesMut::new()), 0, "nothing to write, no ticket");
        w.append(bytes(b"ab"));
        let t = w.append(bytes(b"cd"));
        let mut waiter = w.waiter();
        waiter.wait(t).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abcd");
        // Appends before a snapshot land in the old file; after it, in the
        // new one.
        w.append(bytes(b"ef"));
        w.replace(bytes(b"S"), Vec::new());
        let t = w.append(bytes(b"gh"));
        waiter.wait(t).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"Sgh");
        assert_eq!(w.ticket(), t);
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_to_its_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.journal");
        // Read-only: every write fails.
        std::fs::write(&path, b"").unwrap();
        let file = File::open(&path).unwrap();
        let mut w = Writer::start(path, file).unwrap();
        let t = w.append(bytes(b"ab"));
        assert!(matches!(w.waiter().wait(t).await, Err(SyncError::Failed)));
    }
}
