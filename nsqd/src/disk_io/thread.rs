//! One I/O thread and the disk queues it owns: it runs their jobs in the
//! order they were sent, syncs on `--sync-every` / `--sync-timeout`, and with
//! `--durable` acknowledges writes in groups after one fsync per queue.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;
use tracing::{error, warn};

use super::{DiskDamage, DiskIoOptions, DiskSink, Job, Losses, ReadAhead};
use crate::disk_queue::{DiskQueue, Listing, Position};

/// At most this many jobs join one group commit, so that acknowledgements
/// keep flowing under a flood.
const GROUP_MAX: usize = 256;

/// A durable write waiting for its group's fsync.
struct Unacked {
    queue: Arc<str>,
    count: u64,
    result: io::Result<()>,
    sink: Weak<dyn DiskSink>,
    done: Option<oneshot::Sender<io::Result<()>>>,
}

/// One I/O thread and the queues it owns.
pub(super) struct IoThread {
    opts: DiskIoOptions,
    queues: HashMap<Arc<str>, DiskQueue>,
    last_sync: Instant,
    reads_stopped: Arc<AtomicBool>,
    /// Durable writes of the current group.
    unacked: Vec<Unacked>,
    losses: Arc<Losses>,
    /// The data directory, listed once for every queue's first open.
    listing: Listing,
}

impl IoThread {
    pub(super) fn new(
        opts: DiskIoOptions,
        reads_stopped: Arc<AtomicBool>,
        losses: Arc<Losses>,
    ) -> Self {
        IoThread {
            opts,
            queues: HashMap::new(),
            last_sync: Instant::now(),
            reads_stopped,
            unacked: Vec::new(),
            losses,
            listing: Listing::default(),
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Job>) {
        let tick = self.opts.sync_timeout.max(Duration::from_millis(10));
        loop {
            let mut next = match rx.recv_timeout(tick) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut grouped = 0;
            while let Some(job) = next.take() {
                if let Job::Shutdown { done } = job {
                    self.ack_group();
                    for (name, q) in self.queues.drain() {
                        if let Err(e) = q.close() {
                            error!(queue = %name, "closing disk queue failed - {e}");
                            self.losses.unsynced_queues.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    let _ = done.send(());
                    return;
                }
                self.run_job(job);
                grouped += 1;
                if self.opts.durable && grouped < GROUP_MAX {
                    next = rx.try_recv().ok();
                }
            }
            self.ack_group();
            // --sync-timeout: whatever changed is fsynced at least this often.
            if self.last_sync.elapsed() >= self.opts.sync_timeout {
                let mut failed = Vec::new();
                for (name, q) in self.queues.iter_mut() {
                    if q.is_dirty() {
                        if let Err(e) = q.sync() {
                            error!(queue = %name, "disk queue sync failed - {e}");
                            failed.push(name.clone());
                        }
                    }
                }
                for name in failed {
                    self.reopen_later(&name);
                }
                self.last_sync = Instant::now();
            }
        }
    }

    /// The open queue `name`, opening (and recovering) it on first use,
    /// and taking over what an upstream nsqd left under that name.
    fn queue(&mut self, name: &Arc<str>) -> io::Result<&mut DiskQueue> {
        if !self.queues.contains_key(name) {
            let listed = self.listing.take(&self.opts.dir, name)?;
            let import = crate::upstream_import::stage(&self.opts.dir, name)?;
            let (dir, opts) = (&self.opts.dir, self.opts.queue);
            let mut q = match DiskQueue::open_listed(dir, name, opts, listed.clone()) {
                // Files removed since the one listing (a holder removes the
                // spill queues no saved copy refers to when it starts): the
                // queue lists its own.
                Err(e) if e.kind() == io::ErrorKind::NotFound && listed.is_some() => {
                    DiskQueue::open_listed(dir, name, opts, None)?
                }
                r => r?,
            };
            if let Some(import) = import {
                let payloads = import.payloads()?;
                q.put_many(payloads.iter().map(|p| p.as_slice()))?;
                // Ours must be durable before upstream's copy goes.
                q.sync()?;
                import.finish()?;
            }
            self.queues.insert(name.clone(), q);
        }
        Ok(self.queues.get_mut(name).expect("inserted above"))
    }

    fn depth(&self, name: &str) -> u64 {
        self.queues.get(name).map_or(0, |q| q.depth())
    }

    /// `--sync-every`: fsync a queue once enough operations piled up.
    fn maybe_sync(&mut self, name: &str) {
        if let Some(q) = self.queues.get_mut(name) {
            if q.needs_sync() {
                if let Err(e) = q.sync() {
                    error!(queue = %name, "disk queue sync failed - {e}");
                    self.reopen_later(name);
                }
            }
        }
    }

    /// A queue whose fsync failed cannot trust its own state any more (the
    /// kernel may have dropped the pages it could not write); close it as a
    /// crash would, and let its next job reopen it from what is on disk. This
    /// is how a full or failing disk is recovered from without a restart.
    fn reopen_later(&mut self, name: &str) {
        let Some(q) = self.queues.get(name) else {
            return;
        };
        if q.fsync_failed() {
            warn!(queue = %name, "reopening disk queue after a failed fsync");
            self.queues.remove(name);
        }
    }

    /// Durable mode: fsync every queue the group wrote to, once, then
    /// acknowledge the group's writes with the outcome.
    fn ack_group(&mut self) {
        if self.unacked.is_empty() {
            return;
        }
        let group = std::mem::take(&mut self.unacked);
        let mut flushed: HashMap<Arc<str>, io::Result<()>> = HashMap::new();
        for w in &group {
            if w.result.is_err() || flushed.contains_key(&w.queue) {
                continue;
            }
            let result = match self.queues.get_mut(&w.queue) {
                Some(q) => q.flush_data(),
                None => Err(io::Error::other("disk queue closed before its fsync")),
            };
            if let Err(e) = &result {
                error!(queue = %w.queue, "disk fsync failed - {e}");
            }
            flushed.insert(w.queue.clone(), result);
        }
        for w in group {
            let result = match (w.result, flushed.get(&w.queue)) {
                (Ok(()), Some(Err(e))) => Err(io::Error::new(e.kind(), e.to_string())),
                (r, _) => r,
            };
            if let Some(s) = w.sink.upgrade() {
                s.written(w.count, &result, self.depth(&w.queue));
            }
            if let Some(done) = w.done {
                let _ = done.send(result);
            }
        }
        for (name, result) in flushed {
            if result.is_err() {
                self.reopen_later(&name);
            } else {
                self.maybe_sync(&name);
            }
        }
    }

    fn run_job(&mut self, job: Job) {
        match job {
            Job::Write {
                queue,
                batch,
                sink,
                done,
            } => {
                let count = batch.len() as u64;
                let mut stored = 0;
                let result = self.queue(&queue).and_then(|q| {
                    let before = q.depth();
                    let r = q.put_many(batch.payloads());
                    stored = q.depth().saturating_sub(before);
                    r
                });
                if let Err(e) = &result {
                    error!(queue = %queue, "disk write failed - {e}");
                    let lost = count.saturating_sub(stored);
                    self.losses.records.fetch_add(lost, Ordering::SeqCst);
                }
                if self.opts.durable {
                    self.unacked.push(Unacked {
                        queue,
                        count,
                        result,
                        sink,
                        done,
                    });
                    return;
                }
                if let Some(s) = sink.upgrade() {
                    s.written(count, &result, self.depth(&queue));
                }
                if let Some(done) = done {
                    let _ = done.send(result);
                }
                self.maybe_sync(&queue);
            }
            Job::Read { queue, max, sink } => {
                let mut out = Vec::new();
                let max = if self.reads_stopped.load(Ordering::Acquire) {
                    0
                } else {
                    max
                };
                let mut end = Position::default();
                let read = self.queue(&queue).and_then(|q| {
                    let r = q.get_many_at(max, &mut out);
                    end = q.read_position();
                    r
                });
                if let Err(e) = read {
                    error!(queue = %queue, "disk read failed - {e}");
                }
                // A record whose checksum holds but whose contents are no
                // message is as lost as one that failed it: count it here,
                // where the queue's damage is counted.
                let before = out.len();
                out.retain(|(_, r)| crate::message::Message::decode_disk(r).is_some());
                let unusable = (before - out.len()) as u64;
                if unusable > 0 {
                    error!(queue = %queue, records = unusable, "undecodable disk records skipped");
                    if let Some(q) = self.queues.get_mut(&*queue) {
                        q.count_unusable(unusable);
                    }
                }
                let damage = self
                    .queues
                    .get(&*queue)
                    .map_or_else(DiskDamage::default, |q| DiskDamage {
                        corrupt_records: q.corrupt_records(),
                        bad_segments: q.bad_segments(),
                    });
                if let Some(s) = sink.upgrade() {
                    let depth = self.depth(&queue);
                    let (records, end) = (out, end);
                    s.refill(ReadAhead {
                        records,
                        end,
                        depth,
                        damage,
                    });
                }
                self.maybe_sync(&queue);
            }
            Job::Depth { queue, done } => {
                let _ = done.send(self.queue(&queue).map(|q| q.depth()));
            }
            Job::Peek {
                queue,
                from,
                max_bytes,
                done,
            } => {
                let mut out = Vec::new();
                let next = self
                    .queue(&queue)
                    .and_then(|q| q.peek(from, max_bytes, &mut out));
                let _ = done.send(next.map(|next| (out, next)));
            }
            Job::Empty { queue, sink } => {
                let result = self.queue(&queue).and_then(|q| q.empty());
                if let Err(e) = &result {
                    error!(queue = %queue, "emptying disk queue failed - {e}");
                }
                if let Some(s) = sink.upgrade() {
                    s.written(0, &result, self.depth(&queue));
                }
            }
            Job::Delete { queue } => {
                let opened = self.queue(&queue).map(|_| ());
                let result = opened.and_then(|()| match self.queues.remove(&queue) {
                    Some(q) => q.delete(),
                    None => Ok(()),
                });
                if let Err(e) = result {
                    warn!(queue = %queue, "deleting disk queue files failed - {e}");
                }
            }
            Job::Commit { queue, upto } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.commit(upto);
                }
            }
            Job::Barrier { done } => {
                let _ = done.send(());
            }
            Job::Shutdown { .. } => {}
        }
    }
}
