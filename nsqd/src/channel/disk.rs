//! The channel's side of its disk queue: read-ahead when memory runs low,
//! the I/O thread's reports (writes done, records read), and everything in
//! memory: flushed at shutdown, copied for replication's full copy.

use tokio::time::Instant;

use super::{wake_waiters, Channel, ChannelState};
use crate::disk_io::{DiskSink, QueueHandle, ReadAhead};
use crate::message::{unix_nanos, Message};

/// Records read from disk at a time.
const READ_AHEAD: usize = 1024;
/// Read ahead while fewer than this many messages wait in memory: one batch
/// stays ready for the consumers while the next is being read.
const READ_AHEAD_BELOW: usize = 2 * READ_AHEAD;

impl Channel {
    pub(crate) fn disk_handle(&self) -> Option<QueueHandle> {
        self.lock().backlog.handle().cloned()
    }

    /// Records already on disk when the channel was opened (after a restart).
    pub(crate) fn set_on_disk(&self, depth: u64) {
        self.lock().backlog.set_on_disk(depth);
    }

    /// Write every message held in memory (queued, in flight, deferred with
    /// its due time) to the disk queue, at shutdown. Returns how many.
    pub fn flush_to_disk(&self, now: Instant) -> usize {
        let mut st = self.lock();
        let st = &mut *st;
        if st.backlog.handle().is_none() {
            return 0;
        }
        let n = st.backlog.flush(st.flights.drain(now, unix_nanos()));
        if let Some(u) = st.unfinished.as_mut() {
            u.rewritten(&st.backlog);
        }
        n
    }

    /// Remove the channel's disk files (it was deleted).
    pub(crate) fn delete_disk(&self) {
        self.lock().backlog.delete();
    }

    /// Ask the I/O thread for more messages when memory runs low and disk
    /// has some. Demand-driven: only `take` calls it, so a channel without
    /// consumers keeps its backlog on disk.
    pub(super) fn read_ahead(&self, st: &mut ChannelState) {
        let b = &st.backlog;
        if !b.reading() && b.mem.len() < READ_AHEAD_BELOW && b.on_disk() > 0 {
            if let Some(u) = st.unfinished.as_mut() {
                u.commit(&st.backlog);
            }
            st.backlog.read(READ_AHEAD);
        }
    }

    /// Every unfinished message in memory (queued, in flight, deferred with
    /// its due time), for replication's full copy.
    pub fn messages_in_memory(&self) -> Vec<(Message, Option<Instant>)> {
        let st = self.lock();
        let flying = st.flights.in_flight().map(|f| f.msg.clone());
        let mut out: Vec<_> = st
            .backlog
            .mem
            .iter()
            .chain(flying)
            .map(|m| (m, None))
            .collect();
        out.extend(
            st.flights
                .deferred_due()
                .map(|(m, at)| (m.clone(), Some(at))),
        );
        out
    }

    /// The channel's disk queue, if it has one (replication's full copy
    /// peeks at what spilled there).
    pub fn disk_queue(&self) -> Option<QueueHandle> {
        self.lock().backlog.handle().cloned()
    }
}

impl DiskSink for Channel {
    fn written(&self, count: u64, result: &std::io::Result<()>, depth: u64) {
        let mut st = self.lock();
        if st.backlog.written(count, result, depth) {
            tracing::error!(topic = %self.topic_name, channel = %self.name, count, "messages lost to a failed disk write");
        }
        // A consumer may be waiting for exactly these records.
        if !st.waiters.is_empty() {
            self.read_ahead(&mut st);
        }
    }

    fn refill(&self, read: ReadAhead) {
        let mut st = self.lock();
        let st = &mut *st;
        let (refilled, end) = st.backlog.refilled(read, self);
        if let Some(u) = st.unfinished.as_mut() {
            u.read_to(end);
        }
        for r in refilled {
            if let Some(u) = st.unfinished.as_mut() {
                u.read(r.msg.id, r.at);
            }
            match r.due {
                Some(due) => st.flights.defer(r.msg, due),
                None => st.backlog.mem.push_back(r.msg),
            }
        }
        wake_waiters(st);
    }
}
