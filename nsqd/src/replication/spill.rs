//! Where a shadow channel (or what a shadow topic holds before its first
//! channel) puts what does not fit in memory: past `--mem-queue-size`
//! messages, a holder appends the rest to a disk queue of its own (through
//! the disk I/O threads, like any queue), remembers which of those the
//! origin finished (a set bounded by what was spilled), reads the queue
//! back, skipping those, when it takes the origin over, and removes it once
//! a scan finds every message in it finished.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use tokio::sync::oneshot;

use bytes::{Buf, BufMut, Bytes};
use nsq_protocol::{ChannelName, TopicName};

use super::wire::WireMessage;
use crate::disk_io::{DiskIo, DiskSink, QueueHandle, WriteBatch};
use crate::disk_queue::Position;

/// Queue names start with this: `~` is not allowed in a topic name, so no
/// topic's or channel's queue can take one.
pub const PREFIX: &str = "~replica~";

/// Payload bytes one read-back step brings into memory (about).
const READ_BYTES: u64 = 1 << 20;

/// Record header: due, id, timestamp (8 bytes each), attempts (2).
const HEADER: usize = 26;

/// A message held for an origin, with its due time (Unix ns, 0 = now).
#[derive(Debug, Clone)]
pub struct Held {
    pub msg: WireMessage,
    pub due: i64,
}

/// Where a holder spills one origin's shadow channels.
#[derive(Clone)]
pub struct SpillTo {
    pub disk: Arc<DiskIo>,
    /// Messages a shadow channel keeps in memory (`--mem-queue-size`).
    pub mem_limit: usize,
    /// The origin's address, made safe for a file name.
    origin: String,
}

impl std::fmt::Debug for SpillTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpillTo({}, {})", self.origin, self.mem_limit)
    }
}

impl SpillTo {
    pub fn new(disk: Arc<DiskIo>, mem_limit: usize, origin: &str) -> Self {
        SpillTo {
            disk,
            mem_limit,
            origin: origin_prefix(origin),
        }
    }

    /// The queue of `channel`'s copy, or (`None`) of what `topic` holds.
    /// Derived from the names only, so nothing read back from disk can
    /// point a holder at another queue.
    pub fn queue_name(&self, topic: &TopicName, channel: Option<&ChannelName>) -> String {
        match channel {
            Some(c) => format!("{}{topic}~{c}", self.origin),
            // `~` cannot start a channel name: no channel's queue.
            None => format!("{}{topic}~~held", self.origin),
        }
    }
}

/// The start of every spill queue's name (and file name) for `origin`.
pub fn origin_prefix(origin: &str) -> String {
    format!("{PREFIX}{}~", path_safe(origin))
}

/// A peer's address as part of a file name: `.` and alphanumerics kept,
/// anything else `_`.
pub fn path_safe(origin: &str) -> String {
    origin
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Remove every spill file of `origin` left in `dir` except those of the
/// queues in `keep` (what the holder's saved shadow still refers to).
pub fn remove_leftovers(
    dir: &std::path::Path,
    origin: &str,
    keep: &HashSet<String>,
) -> std::io::Result<usize> {
    let prefix = origin_prefix(origin);
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let queue = name.split(".diskqueue.").next().unwrap_or(name);
        if name.starts_with(&prefix) && !keep.contains(queue) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Ids the origin finished among those spilled. Only an id inside the
/// spilled range enters, and never more than were spilled, so the set is
/// bounded by the spilled depth (a FIN dropped past it can only cause a
/// duplicate at takeover, never a loss).
#[derive(Debug, Default)]
pub struct FinishedSet {
    ids: HashSet<u64>,
    lo: u64,
    hi: u64,
    spilled: u64,
}

impl FinishedSet {
    /// `id` was written to the queue.
    pub fn spilled(&mut self, id: u64) {
        if self.spilled == 0 {
            (self.lo, self.hi) = (id, id);
        }
        self.lo = self.lo.min(id);
        self.hi = self.hi.max(id);
        self.spilled += 1;
    }

    /// The origin finished `id`; true when it was counted as a spilled one.
    pub fn finish(&mut self, id: u64) -> bool {
        if self.spilled == 0 || id < self.lo || id > self.hi {
            return false;
        }
        if self.ids.len() as u64 >= self.spilled {
            return false;
        }
        self.ids.insert(id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    /// Lowest and highest id spilled, and how many were.
    pub fn range(&self) -> (u64, u64, u64) {
        (self.lo, self.hi, self.spilled)
    }

    /// The finished ids, for a snapshot.
    pub fn ids(&self) -> impl Iterator<Item = &u64> {
        self.ids.iter()
    }

    /// A set as a snapshot recorded it (its ids then go in through
    /// [`FinishedSet::finish`], so its bounds hold whatever was read back).
    pub fn restored(lo: u64, hi: u64, spilled: u64) -> Self {
        FinishedSet {
            ids: HashSet::new(),
            lo: lo.min(hi),
            hi,
            spilled,
        }
    }

    /// Spilled and not finished.
    pub fn live(&self) -> u64 {
        self.spilled - self.ids.len() as u64
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One shadow channel's (or held set's) spilled messages.
#[derive(Debug)]
pub struct Spill {
    queue: QueueHandle,
    pub finished: FinishedSet,
    /// The last write's result (fsynced under `--durable`), for a journal
    /// snapshot that counts on what was written.
    last_write: Option<oneshot::Receiver<std::io::Result<()>>>,
    /// Finished ids at which the next drain check scans the queue.
    check_at: usize,
    /// A drain check is under way.
    checking: bool,
}

/// A scan of a spill queue the counts say may be drained, run off the link
/// task (reading a large queue takes a while).
#[derive(Debug)]
pub struct DrainCheck {
    pub topic: TopicName,
    pub channel: ChannelName,
    queue: QueueHandle,
    /// Records written when the check started.
    spilled: u64,
}

impl DrainCheck {
    /// Every id in the queue (every write sent before is seen).
    pub async fn scan(&self) -> std::io::Result<HashSet<u64>> {
        let mut ids = HashSet::new();
        let mut from = Position::default();
        loop {
            let (records, next) = self.queue.peek(from, READ_BYTES).await?;
            ids.extend(records.into_iter().filter_map(decode).map(|h| h.msg.id));
            match next {
                Some(p) => from = p,
                None => return Ok(ids),
            }
        }
    }
}

/// What a drain check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    /// Every message in the queue is finished: it was removed.
    Done,
    /// Some are not (the counts are exact again), or nothing was checked.
    Live,
}

impl Spill {
    /// The queue of `channel`'s copy, or (`None`) of what `topic` holds,
    /// with the finished set a snapshot recorded (or an empty one).
    pub fn open(
        to: &SpillTo,
        topic: &TopicName,
        channel: Option<&ChannelName>,
        finished: FinishedSet,
    ) -> Self {
        Spill {
            queue: to.disk.queue(&to.queue_name(topic, channel)),
            finished,
            last_write: None,
            check_at: 0,
            checking: false,
        }
    }

    pub fn name(&self) -> &str {
        self.queue.name()
    }

    /// Append `held` to the queue (not waited for: the shadow lives in
    /// memory, so a copy on disk promises no more than one in memory; a
    /// durable holder's journal holds the record until a snapshot that
    /// waited for it).
    pub fn write(&mut self, held: &[Held]) {
        if held.is_empty() {
            return;
        }
        let mut batch = WriteBatch::default();
        for h in held {
            self.finished.spilled(h.msg.id);
            batch.push(|b| encode(h, b));
        }
        let (done, rx) = oneshot::channel();
        self.last_write = Some(rx);
        self.queue.write(batch, no_sink(), Some(done));
    }

    /// The result of the last write not yet waited for: once it is in,
    /// every write before it is too (one thread runs a queue's jobs in
    /// order and syncs them in groups).
    pub fn take_last_write(&mut self) -> Option<oneshot::Receiver<std::io::Result<()>>> {
        self.last_write.take()
    }

    /// Remove the queue's files.
    pub fn delete(self) {
        self.queue.delete();
    }

    /// After FINs: whether the counts say the queue is drained (or half of
    /// it finished since the last check: copies spilled twice, as a full
    /// copy may send, keep the count from reaching zero) and no check is
    /// under way; if so one starts: scan with [`DrainCheck::scan`], then
    /// hand the ids to [`Spill::checked`].
    pub fn wants_check(&mut self, topic: &TopicName, channel: &ChannelName) -> Option<DrainCheck> {
        let done = self.finished.len();
        let half = done.saturating_mul(2) as u64 >= self.finished.spilled;
        let due = self.finished.live() == 0 || (half && done >= self.check_at);
        if !due || self.checking {
            return None;
        }
        self.checking = true;
        self.check_at = done.saturating_mul(2).max(1);
        Some(DrainCheck {
            topic: topic.clone(),
            channel: channel.clone(),
            queue: self.queue.clone(),
            spilled: self.finished.spilled,
        })
    }

    /// What a scan found (`ids`: every id in the queue, or `None` when it
    /// could not be read): `Done` if every one is finished (the caller
    /// removes the queue); else the counts are rebuilt from what it holds.
    /// A scan that writes since then may have missed proves nothing.
    pub fn checked(&mut self, check: &DrainCheck, ids: Option<HashSet<u64>>) -> Drain {
        self.checking = false;
        let Some(ids) = ids.filter(|_| check.spilled == self.finished.spilled) else {
            return Drain::Live;
        };
        if ids.iter().all(|id| self.finished.contains(*id)) {
            return Drain::Done;
        }
        let (lo, hi) = (ids.iter().min(), ids.iter().max());
        let mut exact = FinishedSet::restored(
            lo.copied().unwrap_or(0),
            hi.copied().unwrap_or(0),
            ids.len() as u64,
        );
        for id in ids.iter().filter(|id| self.finished.contains(**id)) {
            exact.finish(*id);
        }
        self.finished = exact;
        self.check_at = self.finished.len().saturating_mul(2).max(1);
        Drain::Live
    }

    /// Whether `check` is about this queue (not one deleted and opened
    /// again under the same name since).
    pub fn is(&self, check: &DrainCheck) -> bool {
        self.checking && self.queue.name() == check.queue.name()
    }

    /// Read the queue back in order, handing unfinished messages to `put`
    /// a step at a time (each id once), then delete it. Blocks the calling
    /// worker thread (multi-threaded runtime) on the disk thread's answers.
    pub fn read_back(self, mut put: impl FnMut(Vec<Held>)) -> std::io::Result<()> {
        let mut seen = HashSet::new();
        self.scan(|step| {
            let step: Vec<Held> = step
                .into_iter()
                .filter(|h| !self.finished.contains(h.msg.id) && seen.insert(h.msg.id))
                .collect();
            if !step.is_empty() {
                put(step);
            }
        })?;
        self.queue.delete();
        Ok(())
    }

    /// Every id in the queue, read here and now (blocking like
    /// [`Spill::read_back`]); `None` when it cannot be read.
    pub fn ids_now(&self) -> Option<HashSet<u64>> {
        let mut ids = HashSet::new();
        let read = self.scan(|step| ids.extend(step.iter().map(|h| h.msg.id)));
        read.ok().map(|()| ids)
    }

    /// Every record in the queue, a step at a time, without consuming.
    fn scan(&self, mut each: impl FnMut(Vec<Held>)) -> std::io::Result<()> {
        let mut from = Position::default();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Err(std::io::Error::other(
                "spill queue read outside the runtime",
            ));
        };
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(std::io::Error::other(
                "spill queue read needs worker threads",
            ));
        }
        loop {
            let (records, next) =
                tokio::task::block_in_place(|| handle.block_on(self.queue.peek(from, READ_BYTES)))?;
            let read = records.len();
            let decoded: Vec<Held> = records.into_iter().filter_map(decode).collect();
            if decoded.len() < read {
                // A record the disk queue's checksum passed but too short
                // to be a message: lost, and said so rather than skipped.
                tracing::warn!(
                    "REPLICA: {} damaged records in a spilled copy were dropped",
                    read - decoded.len()
                );
            }
            each(decoded);
            match next {
                Some(p) => from = p,
                None => return Ok(()),
            }
        }
    }
}

/// Nobody listens to a spill queue's write results.
struct NoSink;

impl DiskSink for NoSink {
    fn written(&self, _: u64, _: &std::io::Result<()>, _: u64) {}
    fn refill(&self, _: crate::disk_io::ReadAhead) {}
}

fn no_sink() -> Weak<dyn DiskSink> {
    Weak::<NoSink>::new()
}

fn encode(h: &Held, b: &mut Vec<u8>) {
    b.reserve(HEADER + h.msg.body.len());
    b.put_i64(h.due);
    b.put_u64(h.msg.id);
    b.put_i64(h.msg.timestamp);
    b.put_u16(h.msg.attempts);
    b.extend_from_slice(&h.msg.body);
}

/// A record back from disk; `None` for one too short (damaged).
fn decode(mut r: Bytes) -> Option<Held> {
    if r.len() < HEADER {
        return None;
    }
    let due = r.get_i64();
    let id = r.get_u64();
    let timestamp = r.get_i64();
    let attempts = r.get_u16();
    Some(Held {
        msg: WireMessage {
            id,
            timestamp,
            attempts,
            body: r,
        },
        due,
    })
}

#[cfg(test)]
mod tests;
