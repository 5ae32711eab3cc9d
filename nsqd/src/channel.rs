//! A channel: its backlog of messages, the messages in flight to its
//! clients, the deferred ones, and the clients that compete for them.
//!
//! This file is the plain NSQ channel. The optional behaviours plug in at
//! marked seams, each in its own module that owns its state:
//! - `jobs.rs`: load-aware job dispatch (`take` diverts to it through
//!   `job_seam.rs`; hooks on join, leave, answer, timeout, done, dead, empty
//!   and the timer scan);
//! - `dead_letter.rs`: max attempts (`retry_or_bury`);
//! - `durable.rs`: `--durable` commits of the disk records still needed;
//! - `events.rs`: observers outside the lock (e2e latency, and the place
//!   for replication): finished, paused, emptied; created and deleted come
//!   from the topic.
//!
//! Around the core: `put.rs` (the publish side), `flight.rs` (in flight and
//! deferred), `waiters.rs` (idle clients), `disk.rs` (its disk queue),
//! `limits.rs`, `stats.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nsq_protocol::{ChannelName, TopicName};
use tokio::time::Instant;

use crate::backlog::Backlog;
pub use crate::backlog::DiskWrite;
use crate::client::Client;
use crate::disk_io::{DiskSink, QueueHandle};
pub use crate::id_map::{IdHasher, IdMap};

mod dead_letter;
mod disk;
mod durable;
mod events;
mod flight;
mod job_seam;
mod jobs;
mod limits;
mod put;
mod stats;
mod waiters;
pub use crate::client::JobWorker;
pub(crate) use dead_letter::{default_topic as default_dead_letter_topic, leads_back, CONFIGURING};
pub use dead_letter::{ChannelOptions, DeadLetterStats};
pub use events::{ChannelEvents, Events};
pub use flight::{Deliver, InFlightError};
pub use jobs::{FireStatus, JobLimits, JobStatus, ShardStatus, WorkerStatus};
pub use limits::{ChannelLimits, JoinError};
pub use stats::ChannelStats;

struct ChannelState {
    backlog: Backlog,
    flights: flight::Flights,
    /// Clients whose writers found nothing to send and wait for a wake-up.
    waiters: waiters::Waiters,
    paused: bool,
    counts: stats::Counters,
    /// Seam: max attempts and dead letters.
    dead: dead_letter::DeadLetters,
    /// Seam: `--durable` commits (`None` unless durable with a disk queue).
    unfinished: Option<durable::Unfinished>,
    /// Seam: set once shards or a job worker arrive.
    job: Option<Box<jobs::JobState>>,
}

/// One channel of a topic. All mutable state sits behind one short std Mutex:
/// publishers (via the topic), each client's writer (taking messages), each
/// client's reader (FIN/REQ/TOUCH) and the timer scan lock it, never across an
/// `.await`. Lock order: topic before channel.
pub struct Channel {
    pub topic_name: TopicName,
    pub name: ChannelName,
    limits: ChannelLimits,
    state: Mutex<ChannelState>,
    deleted: AtomicBool,
    /// Set when dead letters wait, so nsqd checks without the lock.
    has_dead: AtomicBool,
    /// Seam: observers told outside the lock.
    observers: events::Observers,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Channel({}:{})", self.topic_name, self.name)
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.topic_name, self.name)
    }
}

impl Channel {
    /// A channel; `disk` is its disk queue (`None`: memory only; ephemeral
    /// channels drop overflow, as upstream's do).
    pub fn new(
        topic_name: TopicName,
        name: ChannelName,
        limits: ChannelLimits,
        disk: Option<QueueHandle>,
    ) -> Arc<Self> {
        let disk = disk.filter(|_| !name.is_ephemeral());
        Arc::new_cyclic(|me: &std::sync::Weak<Channel>| {
            let sink: std::sync::Weak<dyn DiskSink> = me.clone();
            let backlog = Backlog::new(
                disk.map(|d| (d, sink)),
                limits.mem_queue_size,
                limits.durable,
                name.is_ephemeral(),
            );
            let state = ChannelState {
                unfinished: backlog.durable().then(Default::default),
                backlog,
                flights: Default::default(),
                waiters: Default::default(),
                paused: false,
                counts: Default::default(),
                dead: Default::default(),
                job: None,
            };
            Channel {
                topic_name,
                name,
                observers: events::Observers::new(&limits),
                limits,
                state: Mutex::new(state),
                deleted: AtomicBool::new(false),
                has_dead: AtomicBool::new(false),
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        // A panic while holding the lock leaves counters possibly off, but no
        // message half-moved; keep serving rather than poison every client.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The end-to-end latency stream, when configured.
    pub fn e2e(&self) -> Option<&crate::e2e::E2eStream> {
        self.observers.e2e.as_ref()
    }

    pub fn is_ephemeral(&self) -> bool {
        self.name.is_ephemeral()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Add a subscriber.
    pub fn add_client(&self, client: Arc<Client>) -> Result<(), JoinError> {
        let mut st = self.lock();
        if self.is_deleted() {
            return Err(JoinError::Exiting);
        }
        let limit = self.limits.max_channel_consumers;
        if limit > 0 && st.flights.client_count() >= limit {
            return Err(JoinError::TooManyConsumers {
                topic: self.topic_name.to_string(),
                channel: self.name.to_string(),
                limit,
            });
        }
        st.flights.join(client.clone());
        if client.job().is_some() {
            let job = st
                .job
                .get_or_insert_with(|| jobs::JobState::for_worker(self.limits.jobs));
            if job.join(&client, Instant::now()) {
                st.waiters.wake_all();
            }
        }
        Ok(())
    }

    /// Drop a subscriber. Its in-flight messages go back to the front of the
    /// queue at once: no other client can FIN them, so waiting for their
    /// timeout (as upstream does) only delays them. Returns the clients left.
    pub fn remove_client(&self, client_id: u64) -> usize {
        let mut st = self.lock();
        if let Some((_, back)) = st.flights.leave(client_id) {
            // Oldest first at the very front.
            for msg in back.into_iter().rev() {
                st.backlog.mem.push_front(msg);
            }
            if let Some(job) = st.job.as_mut() {
                job.leave(client_id);
            }
            st.waiters.remove(client_id);
            wake_waiters(&mut st);
        }
        st.flights.client_count()
    }

    pub fn client_count(&self) -> usize {
        self.lock().flights.client_count()
    }

    /// The subscribed clients, for stats and for closing them.
    pub fn clients(&self) -> Vec<Arc<Client>> {
        self.lock().flights.clients().cloned().collect()
    }

    /// Move up to `max` messages into flight for `client` and hand each to
    /// `out` (a copy kept, or its frame encoded). When nothing is available the client is registered to be
    /// woken by the next put, under the same lock, so no wake-up is lost.
    ///
    /// With a `sample_rate` (1..=99, from IDENTIFY) a message is delivered
    /// only when a random 0..=99 is at most the rate; the others are dropped
    /// for this channel, as upstream does. Returns how many messages left
    /// the queue (delivered or sampled out).
    pub fn take(
        &self,
        client: &Arc<Client>,
        max: usize,
        msg_timeout: Duration,
        sample_rate: u8,
        now: Instant,
        out: &mut impl Deliver,
    ) -> usize {
        let mut st = self.lock();
        let st = &mut *st;
        if st.paused || max == 0 {
            return 0;
        }
        if st.job.as_mut().is_some_and(|j| j.diverts(client, now)) {
            return self.take_job(st, client, max, msg_timeout, now, out);
        }
        if st.flights.client(client.id).is_none() {
            return 0;
        }
        let taken = max.min(st.backlog.mem.len());
        let (unfinished, mem) = (&mut st.unfinished, &mut st.backlog.mem);
        let queued = std::iter::from_fn(|| mem.pop_front()).take(taken);
        let sampled = queued.filter(|msg| {
            let keep = sample_rate == 0 || rand::random::<u32>() % 100 <= u32::from(sample_rate);
            if let (false, Some(u)) = (keep, unfinished.as_mut()) {
                u.finished(msg.id);
            }
            keep
        });
        st.flights
            .start(client, sampled, now + msg_timeout, now, out);
        self.read_ahead(st);
        if st.backlog.mem.is_empty() {
            st.waiters.park(client);
        }
        taken
    }
    /// FIN: the client is done with the message.
    pub fn finish(&self, client_id: u64, id: u64) -> Result<(), InFlightError> {
        let mut result = Ok(());
        self.finish_many(client_id, &[id], |_, e| result = Err(e));
        result
    }

    /// FIN of several messages in one lock section (the FINs one read
    /// brought in); `failed` hears, in order, of each one that could not be
    /// finished, by its index in `ids`.
    pub fn finish_many(
        &self,
        client_id: u64,
        ids: &[u64],
        mut failed: impl FnMut(usize, InFlightError),
    ) {
        let watched = self.observers.e2e.is_some() || self.observers.events.get().is_some();
        let mut done = Vec::new();
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            let mut settled = 0;
            for (i, &id) in ids.iter().enumerate() {
                let msg = match st.flights.take_back(client_id, id) {
                    Ok(msg) => msg,
                    Err(e) => {
                        failed(i, e);
                        continue;
                    }
                };
                settled += 1;
                st.counts.finish += 1;
                if let Some(u) = st.unfinished.as_mut() {
                    u.finished(id);
                }
                if let Some(job) = st.job.as_mut() {
                    job.answered(client_id, id);
                    job.done(&msg, st.flights.client(client_id));
                }
                if watched {
                    done.push(msg);
                }
            }
            st.flights.released(client_id, settled);
        }
        for msg in &done {
            self.observers.finished(&self.topic_name, &self.name, msg);
        }
    }

    /// Durable: messages that left this channel some other way (moved to
    /// the dead-letter topic) no longer need their records.
    pub(crate) fn forget(&self, ids: &[u64]) {
        let mut st = self.lock();
        if let Some(u) = st.unfinished.as_mut() {
            ids.iter().for_each(|&id| u.finished(id));
        }
    }

    /// REQ: give the message back, now or after `delay`.
    pub fn requeue(
        &self,
        client_id: u64,
        id: u64,
        delay: Duration,
        now: Instant,
    ) -> Result<(), InFlightError> {
        let mut st = self.lock();
        let msg = st.flights.settle(client_id, id)?;
        if let Some(job) = st.job.as_mut() {
            job.answered(client_id, id);
        }
        st.counts.requeue += 1;
        let Some(msg) = self.retry_or_bury(&mut st, msg) else {
            return Ok(());
        };
        if delay.is_zero() {
            st.backlog.mem.push_back(msg);
            wake_waiters(&mut st);
        } else {
            st.flights.defer(msg, now + delay);
        }
        Ok(())
    }
    /// TOUCH: restart the message's timeout, never past delivery + max.
    pub fn touch(
        &self,
        client_id: u64,
        id: u64,
        msg_timeout: Duration,
        now: Instant,
    ) -> Result<(), InFlightError> {
        let max = self.limits.max_msg_timeout;
        self.lock().flights.touch(client_id, id, |delivered_at| {
            (now + msg_timeout).min(delivered_at + max)
        })
    }

    /// Requeue what timed out and release what is due. Returns when the next
    /// timer of this channel falls due, if any.
    pub fn process_timers(&self, now: Instant) -> Option<Instant> {
        let mut st = self.lock();
        let st = &mut *st;
        let mut next: Option<Instant> = None;
        let timed_out = st.flights.expire(now, &mut next);
        let mut released = !timed_out.is_empty();
        st.counts.timeout += timed_out.len() as u64;
        for e in timed_out {
            if let Some(job) = st.job.as_mut() {
                job.timed_out(e.client_id, e.id, e.until);
            }
            if let Some(msg) = self.retry_or_bury(st, e.msg) {
                st.backlog.mem.push_back(msg);
            }
        }
        let due = st.flights.release_due(now, &mut next);
        released |= !due.is_empty();
        st.backlog.mem.extend(due);
        if let Some(job) = st.job.as_mut() {
            let (settle_at, settled) = job.timers(now);
            if let Some(t) = settle_at {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            if settled {
                st.waiters.wake_all();
            }
        }
        if released {
            wake_waiters(st);
        }
        if let Some(u) = st.unfinished.as_mut() {
            u.commit(&st.backlog);
        }
        next
    }

    pub fn pause(&self) {
        self.lock().paused = true;
        self.tell(|e| e.paused(&self.topic_name, &self.name, true));
    }

    /// Resume delivery and wake every client, idle or not.
    pub fn unpause(&self) {
        let mut st = self.lock();
        st.paused = false;
        st.flights.clients().for_each(|c| c.wake.notify_one());
        drop(st);
        self.tell(|e| e.paused(&self.topic_name, &self.name, false));
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Drop every queued, in-flight and deferred message, on disk too.
    pub fn empty(&self) {
        let mut st = self.lock();
        st.backlog.empty();
        st.flights.clear();
        if let Some(u) = st.unfinished.as_mut() {
            *u = Default::default();
        }
        if let Some(job) = st.job.as_mut() {
            job.emptied();
        }
        drop(st);
        self.tell(|e| e.emptied(&self.topic_name, &self.name));
    }
    fn tell(&self, event: impl FnOnce(&dyn ChannelEvents)) {
        if let Some(e) = self.observers.events.get() {
            event(e);
        }
    }
}

fn wake_waiters(st: &mut ChannelState) {
    if !st.backlog.mem.is_empty() {
        st.waiters.wake_all();
    }
}

#[cfg(test)]
mod tests;
