//! The publish side of a channel: messages from its topic (copies, or a
//! published batch still packed), deferred ones, and the room left.

use tokio::time::Instant;

use super::{jobs, wake_waiters, Channel};
use crate::backlog::{Backlog, DiskWrite, Packed};
use crate::message::{unix_nanos, Message};

impl Channel {
    /// Queue messages for delivery (see [`Backlog::push`]). Returns the disk
    /// write to wait for, if any.
    pub fn put(&self, msgs: &[Message]) -> Option<DiskWrite> {
        self.put_with(msgs.len(), msgs.first().cloned(), |b| b.push(msgs))
    }

    /// Queue a published batch, still packed (see [`Backlog::push_packed`]).
    pub fn put_packed(&self, packed: &Packed) -> Option<DiskWrite> {
        self.put_with(packed.len(), packed.peek(), |b| {
            b.push_packed(packed.clone(), 0)
        })
    }

    fn put_with(
        &self,
        n: usize,
        first: Option<Message>,
        push: impl FnOnce(&mut Backlog) -> Option<DiskWrite>,
    ) -> Option<DiskWrite> {
        let mut st = self.lock();
        st.counts.message += n as u64;
        if st.job.is_none() {
            st.job = jobs::JobState::for_messages(self.limits.jobs, first.as_slice());
        }
        let pending = push(&mut st.backlog);
        wake_waiters(&mut st);
        pending
    }

    /// Room left in memory before a publish would spill.
    pub fn room(&self) -> usize {
        self.lock().backlog.room(0)
    }

    /// Whether this channel can take any number of messages.
    pub fn is_unbounded(&self) -> bool {
        self.lock().backlog.unbounded()
    }

    /// Hold messages until `due`, then queue them. Durable: they go to the
    /// disk queue with their due time, and the write is returned.
    pub fn put_deferred(&self, msgs: &[Message], due: Instant) -> Option<DiskWrite> {
        let mut st = self.lock();
        st.counts.message += msgs.len() as u64;
        if st.backlog.durable() {
            let wall = crate::backlog::wall_due(due, Instant::now(), unix_nanos());
            return st.backlog.write(msgs, wall);
        }
        for m in msgs {
            st.flights.defer(m.clone(), due);
        }
        None
    }
}
