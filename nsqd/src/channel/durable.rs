//! `--durable` commits: which of a channel's disk records are still needed.
//! Each message in memory came from a record; the disk queue is told to keep
//! every record from the oldest one whose message is not finished yet, so a
//! restart delivers again whatever was not finished (at-least-once).
//!
//! The channel holds one [`Unfinished`] only when it is durable, and calls
//! it as messages are read (`read`), leave for good (`finished`) and when a
//! commit may go out (`commit`). Lagging commits are safe (a restart
//! delivers more again), so they ride on read-aheads and the timer scan
//! instead of every FIN.

use std::collections::VecDeque;

use super::IdMap;
use crate::backlog::Backlog;
use crate::disk_queue::Position;

#[derive(Default)]
pub(super) struct Unfinished {
    /// Records read, oldest first, and whether their message is finished.
    records: VecDeque<(Position, bool)>,
    /// The record of each message in memory (queued, in flight, deferred).
    record_of: IdMap<Position>,
    /// Where the last read ended.
    read_end: Position,
    /// The commit point last sent to the disk queue.
    sent: Position,
}

impl Unfinished {
    /// A read ended at `end`.
    pub fn read_to(&mut self, end: Position) {
        self.read_end = end;
    }

    /// Message `id` was read from the record at `at`.
    pub fn read(&mut self, id: u64, at: Position) {
        self.records.push_back((at, false));
        if let Some(older) = self.record_of.insert(id, at) {
            // The same message read twice (a reopened queue): the newer
            // copy stands for it from now on.
            self.finished_at(older);
        }
    }

    /// Message `id` left the channel for good (FIN, sampled out, moved to
    /// the dead-letter topic).
    pub fn finished(&mut self, id: u64) {
        if let Some(at) = self.record_of.remove(&id) {
            self.finished_at(at);
        }
    }

    fn finished_at(&mut self, at: Position) {
        if let Ok(i) = self.records.binary_search_by_key(&at, |r| r.0) {
            self.records[i].1 = true;
        }
        while self.records.front().is_some_and(|r| r.1) {
            self.records.pop_front();
        }
    }

    /// Tell the disk queue how far this channel is done with it, if that
    /// moved: up to the oldest unfinished record.
    pub fn commit(&mut self, backlog: &Backlog) {
        let point = self.records.front().map_or(self.read_end, |r| r.0);
        if point > self.sent {
            self.sent = point;
            backlog.commit(point);
        }
    }

    /// Every unfinished message was just written to disk again (shutdown):
    /// the records they were read from are all done with.
    pub fn rewritten(&mut self, backlog: &Backlog) {
        backlog.commit(self.read_end);
        *self = Unfinished::default();
    }
}
