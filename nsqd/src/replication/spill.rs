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
mod tests {
    use super::*;

    #[test]
    fn only_spilled_range_enters_and_never_more_than_spilled() {
        let mut f = FinishedSet::default();
        assert!(!f.finish(5), "nothing spilled yet");
        for id in [10, 11, 12] {
            f.spilled(id);
        }
        assert!(!f.finish(9));
        assert!(!f.finish(13));
        assert!(f.finish(11));
        assert!(!f.finish(11), "counted once");
        assert_eq!(f.live(), 2);
        assert!(f.contains(11) && !f.contains(10));
        // An id inside the range that was not spilled still takes a place,
        // but the set never outgrows what was spilled.
        f.spilled(20);
        assert!(f.finish(15));
        assert!(f.finish(10));
        assert!(f.finish(12));
        assert!(!f.finish(20), "full: as many finished as spilled");
        assert_eq!(f.len(), 4);
        assert_eq!(f.live(), 0);
    }

    #[test]
    fn records_round_trip_and_short_ones_are_dropped() {
        let h = Held {
            msg: WireMessage {
                id: 7,
                timestamp: -3,
                attempts: 2,
                body: Bytes::from_static(b"body"),
            },
            due: 99,
        };
        let mut b = Vec::new();
        encode(&h, &mut b);
        let back = decode(Bytes::from(b.clone())).unwrap();
        assert_eq!((back.msg, back.due), (h.msg, 99));
        assert!(decode(Bytes::from(b[..HEADER - 1].to_vec())).is_none());
    }

    fn m(id: u64) -> WireMessage {
        let body = Bytes::from(vec![b'x'; 300]);
        WireMessage::from(&crate::message::Message::new(id, 1, body))
    }

    fn tc() -> (TopicName, ChannelName) {
        ("t".parse().unwrap(), "c".parse().unwrap())
    }

    /// A shadow spilling past `limit` into a fresh directory, with `t`'s
    /// channel `c`.
    fn spilling_shadow(
        limit: usize,
    ) -> (tempfile::TempDir, Arc<DiskIo>, super::super::shadow::Shadow) {
        let dir = tempfile::tempdir().unwrap();
        let io = DiskIo::for_tests(dir.path());
        let (t, c) = tc();
        let mut s = super::super::shadow::Shadow::default();
        s.set_spill(SpillTo::new(io.clone(), limit, "o:1"));
        s.meta(super::super::wire::MetaOp::ChannelCreate, &t, Some(&c));
        (dir, io, s)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shadow_past_its_bound_spills_and_reads_back_the_unfinished_once() {
        let (dir, io, mut s) = spilling_shadow(3);
        let (t, c) = tc();
        let msgs: Vec<_> = (1..=40).map(m).collect();
        s.append(&t, None, 0, &msgs[..20], u64::MAX).unwrap();
        s.append(&t, None, 0, &msgs[20..], u64::MAX).unwrap();
        assert_eq!(s.depth(), 40);
        assert_eq!(s.bytes(), 3 * 300, "only the bound is in memory");
        // One in memory, three spilled; one not held at all, one twice.
        s.finish(&t, &c, &[2, 10, 11, 39, 39, 99]);
        assert_eq!(s.depth(), 36);
        let mut topics = s.take_all();
        let ch = topics.get_mut(&t).unwrap().channels.get_mut(&c).unwrap();
        assert_eq!(ch.msgs.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        let spill = ch.spilled.take().unwrap();
        assert_eq!(spill.finished.len(), 3);
        let mut back = Vec::new();
        spill
            .read_back(|step| back.extend(step.into_iter().map(|h| h.msg.id)))
            .unwrap();
        let want: Vec<u64> = (4..=40).filter(|i| ![10, 11, 39].contains(i)).collect();
        assert_eq!(back, want);
        // Read back means deleted: the files go once the disk thread ran.
        io.shutdown();
        assert_eq!(spill_files(dir.path()), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drained_queue_is_removed_only_once_a_scan_agrees() {
        let (dir, io, mut s) = spilling_shadow(2);
        let (t, c) = tc();
        let msgs: Vec<_> = [1, 2, 3, 5, 7, 9].into_iter().map(m).collect();
        s.append(&t, None, 0, &msgs, u64::MAX).unwrap();
        // FINs inside the spilled range of ids never spilled (their appends
        // may still come) make the count reach zero too early...
        s.finish(&t, &c, &[4, 6, 8, 3]);
        // ...but the scan finds 5, 7 and 9 unfinished: kept, counted right.
        assert_eq!(s.depth(), 2 + 3);
        assert_eq!(s.spill_names().len(), 1);
        s.finish(&t, &c, &[5, 7, 9]);
        assert_eq!(s.depth(), 2);
        assert!(s.spill_names().is_empty(), "drained and removed");
        // A copy spilled twice (as a full copy may send): half finished by
        // the count, all by the scan.
        s.append(&t, None, 0, &[m(11)], u64::MAX).unwrap();
        s.append(&t, None, 0, &[m(11)], u64::MAX).unwrap();
        s.finish(&t, &c, &[11]);
        assert_eq!(s.depth(), 2);
        assert!(s.spill_names().is_empty());
        io.shutdown();
        assert_eq!(spill_files(dir.path()), 0);
    }

    /// Spill files in `dir`.
    fn spill_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
            .count()
    }

    #[test]
    fn reset_empty_and_delete_remove_spilled_copies() {
        use super::super::shadow::Shadow;
        use super::super::wire::MetaOp;
        let dir = tempfile::tempdir().unwrap();
        let io = DiskIo::for_tests(dir.path());
        let t: TopicName = "t".parse().unwrap();
        let (a, b): (ChannelName, ChannelName) = ("a".parse().unwrap(), "b".parse().unwrap());
        let mut s = Shadow::default();
        s.set_spill(SpillTo::new(io.clone(), 2, "o:1"));
        let fill = |s: &mut Shadow, from: u64| {
            s.meta(MetaOp::ChannelCreate, &t, Some(&a));
            s.meta(MetaOp::ChannelCreate, &t, Some(&b));
            let msgs: Vec<_> = (from..from + 10).map(m).collect();
            s.append(&t, None, 0, &msgs, u64::MAX).unwrap();
            assert_eq!(s.depth(), 20);
        };
        fill(&mut s, 1);
        s.meta(MetaOp::ChannelEmpty, &t, Some(&a));
        assert_eq!(s.depth(), 10);
        s.meta(MetaOp::ChannelDelete, &t, Some(&b));
        assert_eq!((s.depth(), s.bytes()), (0, 0));
        fill(&mut s, 11);
        s.meta(MetaOp::TopicDelete, &t, None);
        assert_eq!(s.depth(), 0);
        fill(&mut s, 21);
        s.reset();
        assert_eq!(s.depth(), 0);
        // Still spilling after a reset (a full copy follows one).
        fill(&mut s, 31);
        s.reset();
        io.shutdown();
        assert_eq!(spill_files(dir.path()), 0);
    }

    #[test]
    fn queue_names_cannot_be_topics() {
        let p = origin_prefix("127.0.0.1:4150");
        assert_eq!(p, "~replica~127.0.0.1_4150~");
        assert!(p.parse::<TopicName>().is_err());
    }
}
