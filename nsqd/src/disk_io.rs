//! The I/O threads that serve every disk queue. Disk work never runs on the
//! async runtime's workers: channels and topics send jobs here over
//! crossbeam channels, and a fixed pool of threads (each queue always on the
//! same thread, so its jobs run in order) writes, reads ahead, syncs on
//! `--sync-every` / `--sync-timeout`, and reports back through a sink.
//!
//! With `--durable` a write is acknowledged only once fsynced, and the
//! threads commit in groups: a thread runs every job already waiting, then
//! fsyncs each queue those jobs wrote to once, then acknowledges them all,
//! so concurrent publishers share fsyncs.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::disk_queue::{DiskQueue, DiskQueueOptions, Listing, Position};

/// At most this many jobs join one group commit, so that acknowledgements
/// keep flowing under a flood.
const GROUP_MAX: usize = 256;

/// Damage a disk queue found while reading, since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskDamage {
    /// Records skipped because their checksum or length was wrong.
    pub corrupt_records: u64,
    /// Segments that could not be read and were renamed `.bad`.
    pub bad_segments: u64,
}

/// The owner of a queue hears back from the I/O thread through this.
pub trait DiskSink: Send + Sync {
    /// A write of `count` records finished; `depth` is the queue's depth now.
    fn written(&self, count: u64, result: &io::Result<()>, depth: u64);
    /// Records read ahead, each with its position; `end` is where reading
    /// goes on (past them), `depth` what is left on disk, `damage` what the
    /// queue had to skip so far.
    fn refill(
        &self,
        records: Vec<(Position, Bytes)>,
        end: Position,
        depth: u64,
        damage: DiskDamage,
    );
}

/// Records to append, encoded back to back in one buffer.
#[derive(Default)]
pub struct WriteBatch {
    pub buf: Vec<u8>,
    pub ends: Vec<usize>,
}

impl WriteBatch {
    /// Append one record; `encode` writes its payload into the buffer.
    pub fn push(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.buf);
        self.ends.push(self.buf.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let s = &self.buf[start..end];
            start = end;
            s
        })
    }
}

enum Job {
    Write {
        queue: Arc<str>,
        batch: WriteBatch,
        sink: Weak<dyn DiskSink>,
        done: Option<oneshot::Sender<io::Result<()>>>,
    },
    Read {
        queue: Arc<str>,
        max: usize,
        sink: Weak<dyn DiskSink>,
    },
    Depth {
        queue: Arc<str>,
        done: oneshot::Sender<io::Result<u64>>,
    },
    /// Unread records, not consumed (see [`DiskQueue::peek`]).
    Peek {
        queue: Arc<str>,
        from: Position,
        max_bytes: u64,
        done: oneshot::Sender<io::Result<Peeked>>,
    },
    Empty {
        queue: Arc<str>,
        sink: Weak<dyn DiskSink>,
    },
    Delete {
        queue: Arc<str>,
    },
    /// Records before `upto` are done with (see [`DiskQueue::commit`]).
    Commit {
        queue: Arc<str>,
        upto: Position,
    },
    /// Answered once every job sent before it has run.
    Barrier {
        done: crossbeam_channel::Sender<()>,
    },
    /// Sync and close every queue of this thread, then stop.
    Shutdown {
        done: crossbeam_channel::Sender<()>,
    },
}

/// What a peek found: the records, and where the next peek starts.
pub type Peeked = (Vec<bytes::Bytes>, Option<Position>);

/// A queue's address: its name and the thread that owns it. Cheap to clone.
#[derive(Clone)]
pub struct QueueHandle {
    name: Arc<str>,
    tx: Sender<Job>,
}

impl std::fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueueHandle({})", self.name)
    }
}

impl QueueHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Append records. `done` hears the result once they are written (not
    /// yet fsynced, like upstream's acknowledgement), or with `durable` once
    /// they are fsynced.
    pub fn write(
        &self,
        batch: WriteBatch,
        sink: Weak<dyn DiskSink>,
        done: Option<oneshot::Sender<io::Result<()>>>,
    ) {
        self.send(Job::Write {
            queue: self.name.clone(),
            batch,
            sink,
            done,
        });
    }

    /// Read up to `max` records ahead and hand them to `sink`.
    pub fn read(&self, max: usize, sink: Weak<dyn DiskSink>) {
        self.send(Job::Read {
            queue: self.name.clone(),
            max,
            sink,
        });
    }

    /// The queue's depth, opening (and recovering) it if needed.
    pub async fn depth(&self) -> io::Result<u64> {
        let queue = self.name.clone();
        self.ask(|done| Job::Depth { queue, done }).await
    }

    /// Send the job `job` builds around its reply channel; await the reply.
    async fn ask<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<io::Result<T>>) -> Job,
    ) -> io::Result<T> {
        let (done, rx) = oneshot::channel();
        self.send(job(done));
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("disk I/O thread gone")))
    }

    /// Unread records from `from`, about `max_bytes` of them, without
    /// consuming them, and where to go on (`None`: nothing further). In job
    /// order: every write sent before is in it.
    pub async fn peek(&self, from: Position, max_bytes: u64) -> io::Result<Peeked> {
        let queue = self.name.clone();
        self.ask(|done| Job::Peek {
            queue,
            from,
            max_bytes,
            done,
        })
        .await
    }

    /// Drop every record; `sink` hears the new depth (0) in job order.
    pub fn empty(&self, sink: Weak<dyn DiskSink>) {
        self.send(Job::Empty {
            queue: self.name.clone(),
            sink,
        });
    }

    /// The records before `upto` are done with: a restart no longer
    /// returns them (queues opened with `commit_reads`).
    pub fn commit(&self, upto: Position) {
        self.send(Job::Commit {
            queue: self.name.clone(),
            upto,
        });
    }

    /// Remove the queue's files (the topic or channel was deleted).
    pub fn delete(&self) {
        self.send(Job::Delete {
            queue: self.name.clone(),
        });
    }

    fn send(&self, job: Job) {
        if self.tx.send(job).is_err() {
            error!(queue = %self.name, "disk I/O thread is gone; job dropped");
        }
    }
}

/// Settings every queue shares.
#[derive(Debug, Clone)]
pub struct DiskIoOptions {
    pub dir: PathBuf,
    pub queue: DiskQueueOptions,
    pub sync_timeout: Duration,
    pub threads: usize,
    /// Acknowledge writes only once fsynced, committing in groups.
    pub durable: bool,
}

/// The pool of I/O threads.
pub struct DiskIo {
    senders: Vec<Sender<Job>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Set at shutdown: reads are refused, so records stay on disk instead of
    /// landing in memory that has already been written out.
    reads_stopped: Arc<AtomicBool>,
    /// What the I/O threads could not store (see [`Losses`]).
    losses: Arc<Losses>,
}

/// Records the disk refused since start (writes that failed), and queues
/// whose final sync failed at shutdown: what a stop must not hide.
#[derive(Debug, Default)]
pub struct Losses {
    pub records: AtomicU64,
    pub unsynced_queues: AtomicU64,
}

impl DiskIo {
    pub fn start(opts: DiskIoOptions) -> io::Result<DiskIo> {
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        let reads_stopped = Arc::new(AtomicBool::new(false));
        let losses = Arc::new(Losses::default());
        for i in 0..opts.threads.max(1) {
            let (tx, rx) = unbounded();
            let o = opts.clone();
            let stopped = reads_stopped.clone();
            let lost = losses.clone();
            let handle = std::thread::Builder::new()
                .name(format!("nsqd-disk-{i}"))
                .spawn(move || IoThread::new(o, stopped, lost).run(rx))?;
            senders.push(tx);
            threads.push(handle);
        }
        Ok(DiskIo {
            losses,
            senders,
            threads: Mutex::new(threads),
            reads_stopped,
        })
    }

    /// The handle of queue `name` ("topic" or "topic:channel"). The queue is
    /// opened on its thread by its first job. A name always maps to the same
    /// thread, so a deleted and recreated queue's jobs stay in order.
    pub fn queue(&self, name: &str) -> QueueHandle {
        let thread = (crc32fast::hash(name.as_bytes()) as usize) % self.senders.len();
        QueueHandle {
            name: Arc::from(name),
            tx: self.senders[thread].clone(),
        }
    }

    /// Refuse reads from now on and wait until every read already under way
    /// has delivered its records. After this, what memory holds is all there
    /// is to write out at shutdown: nothing more arrives from disk. Blocking.
    pub fn stop_reads(&self) {
        self.reads_stopped.store(true, Ordering::Release);
        let (done_tx, done_rx) = crossbeam_channel::bounded(self.senders.len());
        for tx in &self.senders {
            let _ = tx.send(Job::Barrier {
                done: done_tx.clone(),
            });
        }
        for _ in &self.senders {
            let _ = done_rx.recv();
        }
    }

    /// Sync and close every queue and stop the threads, after the jobs
    /// already sent.
    /// Records whose write failed since start, and queues whose sync
    /// failed at shutdown.
    pub fn losses(&self) -> (u64, u64) {
        (
            self.losses.records.load(Ordering::SeqCst),
            self.losses.unsynced_queues.load(Ordering::SeqCst),
        )
    }

    pub fn shutdown(&self) {
        let (done_tx, done_rx) = crossbeam_channel::bounded(self.senders.len());
        for tx in &self.senders {
            let _ = tx.send(Job::Shutdown {
                done: done_tx.clone(),
            });
        }
        for _ in &self.senders {
            let _ = done_rx.recv();
        }
        for t in self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
    }
}

/// A durable write waiting for its group's fsync.
struct Unacked {
    queue: Arc<str>,
    count: u64,
    result: io::Result<()>,
    sink: Weak<dyn DiskSink>,
    done: Option<oneshot::Sender<io::Result<()>>>,
}

/// One I/O thread and the queues it owns.
struct IoThread {
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
    fn new(opts: DiskIoOptions, reads_stopped: Arc<AtomicBool>, losses: Arc<Losses>) -> Self {
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

    fn run(mut self, rx: Receiver<Job>) {
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
            let mut q = DiskQueue::open_listed(&self.opts.dir, name, self.opts.queue, listed)?;
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
                    s.refill(out, end, self.depth(&queue), damage);
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
