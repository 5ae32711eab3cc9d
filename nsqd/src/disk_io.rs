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

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{unbounded, Sender};
use tokio::sync::oneshot;
use tracing::error;

use crate::disk_queue::{DiskQueueOptions, Position};

mod thread;
use thread::IoThread;

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
    /// Records read ahead.
    fn refill(&self, read: ReadAhead);
}

/// What a read-ahead brought back from a disk queue.
pub struct ReadAhead {
    /// The records, each with the position it starts at.
    pub records: Vec<(Position, Bytes)>,
    /// Where reading goes on (past them).
    pub end: Position,
    /// What is left on disk.
    pub depth: u64,
    /// What the queue had to skip so far.
    pub damage: DiskDamage,
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
pub type Peeked = (Vec<Bytes>, Option<Position>);

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

    /// One thread, small segments, no fsync per write: for unit tests.
    #[cfg(test)]
    pub fn for_tests(dir: &std::path::Path) -> Arc<DiskIo> {
        Arc::new(
            DiskIo::start(DiskIoOptions {
                dir: dir.to_path_buf(),
                queue: DiskQueueOptions {
                    max_bytes_per_file: 4096,
                    max_msg_size: 1 << 20,
                    sync_every: 100,
                    commit_reads: false,
                },
                sync_timeout: Duration::from_secs(1),
                threads: 1,
                durable: false,
            })
            .expect("disk I/O threads"),
        )
    }

    /// Send every thread the job `make` builds and wait until each has
    /// answered on the `done` sender it was given.
    fn on_every_thread(&self, make: impl Fn(crossbeam_channel::Sender<()>) -> Job) {
        let (done_tx, done_rx) = crossbeam_channel::bounded(self.senders.len());
        for tx in &self.senders {
            let _ = tx.send(make(done_tx.clone()));
        }
        for _ in &self.senders {
            let _ = done_rx.recv();
        }
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
        self.on_every_thread(|done| Job::Barrier { done });
    }

    /// Records whose write failed since start, and queues whose sync
    /// failed at shutdown.
    pub fn losses(&self) -> (u64, u64) {
        (
            self.losses.records.load(Ordering::SeqCst),
            self.losses.unsynced_queues.load(Ordering::SeqCst),
        )
    }

    /// Sync and close every queue and stop the threads, after the jobs
    /// already sent.
    pub fn shutdown(&self) {
        self.on_every_thread(|done| Job::Shutdown { done });
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

#[cfg(test)]
mod tests;
