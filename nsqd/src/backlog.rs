//! The backlog of a topic or a channel: the messages waiting for delivery,
//! in memory up to `--mem-queue-size` and past it in the owner's disk queue,
//! in publish order. Topic and channel both keep theirs in this one type;
//! it lives inside its owner's lock and is never locked on its own.

use std::io;
use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use crate::disk_io::{DiskDamage, DiskSink, QueueHandle, ReadAhead, WriteBatch};
use crate::disk_queue::Position;
use crate::message::{unix_nanos, Message};

mod queue;
pub use queue::{Entry, Packed, Queue};

/// Completion of a publish's disk write: resolves once the records that did
/// not fit in memory are written.
pub type DiskWrite = tokio::sync::oneshot::Receiver<io::Result<()>>;

/// A message read back from disk, with the record it came from and, for a
/// deferred one, when it falls due.
pub struct Refilled {
    pub at: Position,
    pub msg: Message,
    pub due: Option<Instant>,
}

/// The owner's disk queue and the owner as the I/O thread's sink.
struct Disk {
    queue: QueueHandle,
    sink: Weak<dyn DiskSink>,
}

pub struct Backlog {
    /// Messages in memory, oldest first.
    pub mem: Queue,
    disk: Option<Disk>,
    mem_limit: usize,
    /// `--durable` with a disk queue: every message goes through disk.
    durable: bool,
    /// Without a disk queue, drop what memory cannot take (ephemeral
    /// names, as upstream) instead of keeping it all (memory-only nsqd).
    drop_overflow: bool,
    /// Records sent to the disk I/O thread and not yet written.
    to_disk: u64,
    /// Records on disk, as the I/O thread last reported.
    on_disk: u64,
    /// A read request is outstanding.
    reading: bool,
    damage: DiskDamage,
}

impl Backlog {
    /// `disk` is the owner's queue and the owner itself as its sink.
    pub fn new(
        disk: Option<(QueueHandle, Weak<dyn DiskSink>)>,
        mem_limit: usize,
        durable: bool,
        ephemeral: bool,
    ) -> Self {
        Backlog {
            mem: Queue::default(),
            durable: durable && disk.is_some(),
            disk: disk.map(|(queue, sink)| Disk { queue, sink }),
            mem_limit,
            drop_overflow: ephemeral,
            to_disk: 0,
            on_disk: 0,
            reading: false,
            damage: DiskDamage::default(),
        }
    }

    pub fn handle(&self) -> Option<&QueueHandle> {
        self.disk.as_ref().map(|d| &d.queue)
    }

    /// `--durable` with a disk queue.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// Whether any number of messages fits (a disk queue takes the rest, or
    /// the rest is dropped by design).
    pub fn unbounded(&self) -> bool {
        self.disk.is_some() || self.drop_overflow
    }

    /// Room left in memory, with `others` messages the owner keeps in
    /// memory beside `mem`.
    pub fn room(&self, others: usize) -> usize {
        self.mem_limit.saturating_sub(self.mem.len() + others)
    }

    /// How many of `n` new messages stay in memory; the rest go to disk (or
    /// are dropped). Once anything is on disk, new messages follow it there
    /// until it drains, so delivery stays in publish order.
    pub fn keep_in_memory(&self, n: usize, others: usize) -> usize {
        match &self.disk {
            None if !self.drop_overflow => n,
            Some(_) if self.durable || self.on_disk() > 0 => 0,
            _ => n.min(self.room(others)),
        }
    }

    /// Queue messages: memory first, the rest to disk. Returns the disk
    /// write to wait for, if any.
    pub fn push(&mut self, msgs: &[Message]) -> Option<DiskWrite> {
        let keep = self.keep_in_memory(msgs.len(), 0);
        self.mem.extend(msgs[..keep].iter().cloned());
        self.write(&msgs[keep..], 0)
    }

    /// Queue a packed batch likewise, with `others` messages the owner
    /// keeps in memory beside `mem`: what does not fit is unpacked and
    /// written to disk.
    pub fn push_packed(&mut self, mut packed: Packed, others: usize) -> Option<DiskWrite> {
        let keep = self.keep_in_memory(packed.len(), others);
        self.mem.push_packed(packed.split_front(keep));
        if packed.is_empty() || self.disk.is_none() {
            return None;
        }
        let rest: Vec<Message> = packed.messages().collect();
        self.write(&rest, 0)
    }

    /// Send messages to the disk queue with their due time (Unix ns, 0 for
    /// now), and return the write to wait for.
    pub fn write<'a>(
        &mut self,
        msgs: impl IntoIterator<Item = &'a Message>,
        due: i64,
    ) -> Option<DiskWrite> {
        let mut batch = WriteBatch::default();
        for m in msgs {
            batch.push(|out| m.encode_disk(due, out));
        }
        self.write_batch(batch, true)
    }

    fn write_batch(&mut self, batch: WriteBatch, ack: bool) -> Option<DiskWrite> {
        let disk = self.disk.as_ref().filter(|_| !batch.is_empty())?;
        self.to_disk += batch.len() as u64;
        let (tx, rx) = match ack {
            true => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        disk.queue.write(batch, disk.sink.clone(), tx);
        rx
    }

    /// A read request is outstanding.
    pub fn reading(&self) -> bool {
        self.reading
    }

    /// Records on disk or on their way there.
    pub fn on_disk(&self) -> u64 {
        self.on_disk + self.to_disk
    }

    /// Everything waiting: memory and disk.
    pub fn depth(&self) -> u64 {
        self.mem.len() as u64 + self.on_disk()
    }

    pub fn damage(&self) -> DiskDamage {
        self.damage
    }

    /// Records already on disk when the queue was opened (after a restart).
    pub fn set_on_disk(&mut self, depth: u64) {
        self.on_disk = depth;
    }

    /// The I/O thread wrote `count` records (see [`DiskSink::written`]).
    /// Returns whether the write failed.
    pub fn written(&mut self, count: u64, result: &io::Result<()>, depth: u64) -> bool {
        self.to_disk = self.to_disk.saturating_sub(count);
        self.on_disk = depth;
        result.is_err()
    }

    /// Ask the I/O thread for up to `max` records, unless a read is already
    /// outstanding or the disk has none. Returns whether it asked.
    pub fn read(&mut self, max: usize) -> bool {
        let Some(disk) = &self.disk else { return false };
        if self.reading || self.on_disk() == 0 {
            return false;
        }
        self.reading = true;
        disk.queue.read(max, disk.sink.clone());
        true
    }

    /// Take what a read returned (see [`DiskSink::refill`]) and decode it;
    /// undecodable records are logged and skipped. Also returns where
    /// reading goes on.
    pub fn refilled(
        &mut self,
        read: ReadAhead,
        owner: &dyn std::fmt::Display,
    ) -> (Vec<Refilled>, Position) {
        let ReadAhead {
            records,
            end,
            depth,
            damage,
        } = read;
        self.on_disk = depth;
        self.reading = false;
        self.damage = damage;
        let now = Instant::now();
        let wall = unix_nanos();
        let mut out = Vec::with_capacity(records.len());
        for (at, r) in &records {
            let Some((msg, due)) = Message::decode_disk(r) else {
                tracing::error!(queue = %owner, "undecodable disk record skipped");
                continue;
            };
            let due = (due > wall).then(|| now + Duration::from_nanos((due - wall) as u64));
            out.push(Refilled { at: *at, msg, due });
        }
        (out, end)
    }

    /// The records before `upto` are done with (durable commits).
    pub fn commit(&self, upto: Position) {
        if let Some(disk) = &self.disk {
            disk.queue.commit(upto);
        }
    }

    /// Drop every message, in memory and on disk.
    pub fn empty(&mut self) {
        self.mem.clear();
        self.on_disk = 0;
        if let Some(disk) = &self.disk {
            disk.queue.empty(disk.sink.clone());
        }
    }

    /// Write the memory queue and then `more` (message, due in Unix ns) to
    /// disk, at shutdown. Returns how many were written.
    pub fn flush(&mut self, more: impl IntoIterator<Item = (Message, i64)>) -> usize {
        if self.disk.is_none() {
            return 0;
        }
        let mut batch = WriteBatch::default();
        for m in self.mem.drain() {
            batch.push(|out| m.encode_disk(0, out));
        }
        for (m, due) in more {
            batch.push(|out| m.encode_disk(due, out));
        }
        let n = batch.len();
        self.write_batch(batch, false);
        n
    }

    /// Remove the disk files (the owner was deleted).
    pub fn delete(&self) {
        if let Some(disk) = &self.disk {
            disk.queue.delete();
        }
    }
}

/// `at` as Unix nanoseconds, given `now` and the wall clock `wall` at `now`.
pub fn wall_due(at: Instant, now: Instant, wall: i64) -> i64 {
    wall + at.saturating_duration_since(now).as_nanos() as i64
}
