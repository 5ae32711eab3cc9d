//! A channel: its queue of messages, the messages in flight to its clients,
//! the deferred ones, and the clients that compete for them.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;

use nsq_protocol::{ChannelName, TopicName};
use tokio::time::Instant;

use crate::client::Client;
use crate::disk_io::{DiskDamage, DiskSink, QueueHandle, WriteBatch};
use crate::disk_queue::Position;
use crate::message::{unix_nanos, Message};

mod dead_letter;
mod jobs;
pub use dead_letter::{ChannelOptions, DeadLetterStats};
pub use jobs::{FireStatus, JobLimits, JobStatus, JobWorker, ShardStatus, WorkerStatus};

/// Records read from disk at a time.
const READ_AHEAD: usize = 1024;
/// Read ahead while fewer than this many messages wait in memory: one batch
/// stays ready for the consumers while the next is being read.
const READ_AHEAD_BELOW: usize = 2 * READ_AHEAD;

/// Completion of a publish's disk write: resolves once the records that did
/// not fit in memory are written.
pub type DiskWrite = tokio::sync::oneshot::Receiver<io::Result<()>>;

/// Hasher for message IDs and client IDs: they are already well spread
/// numbers, so one multiply is enough and far cheaper than SipHash.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Why FIN, REQ or TOUCH could not act on a message; the texts are upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InFlightError {
    #[error("ID not in flight")]
    NotInFlight,
    #[error("client does not own message")]
    NotOwner,
}

/// Why a client could not join a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("consumers for {topic}:{channel} exceeds limit of {limit}")]
    TooManyConsumers {
        topic: String,
        channel: String,
        limit: usize,
    },
    #[error("channel is exiting")]
    Exiting,
}

/// Limits a channel needs from the server options.
#[derive(Debug, Clone, Copy)]
pub struct ChannelLimits {
    pub mem_queue_size: usize,
    pub max_msg_timeout: Duration,
    pub max_channel_consumers: usize,
    /// `--e2e-processing-latency-window-time`, when percentiles are
    /// configured; `None` keeps no latency stream.
    pub e2e_window: Option<Duration>,
    /// `--durable`: every message goes through the disk queue and stays
    /// there until it is finished.
    pub durable: bool,
    /// Settle window of job channels (see `jobs.rs`).
    pub jobs: JobLimits,
}

struct InFlight {
    msg: Message,
    client_id: u64,
    deadline: Instant,
    delivered_at: Instant,
    /// Distinguishes this delivery from earlier ones of the same message, so
    /// stale entries in a client's deadline order are recognised.
    generation: u64,
}

/// A client's in-flight deliveries in deadline order. Each client has one
/// msg_timeout, so new deliveries append in order; FINs leave stale entries
/// behind, dropped from the front as they are met and compacted when they
/// outnumber live ones.
struct ClientSlot {
    client: Arc<Client>,
    order: VecDeque<(Instant, u64, u64)>,
    live: usize,
}

struct Deferred {
    due: Instant,
    seq: u64,
    msg: Message,
}

impl PartialEq for Deferred {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}
impl Eq for Deferred {}
impl PartialOrd for Deferred {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Deferred {
    // Reversed, so the BinaryHeap (a max-heap) yields the earliest due first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.due.cmp(&self.due).then(other.seq.cmp(&self.seq))
    }
}

/// Counters reported in `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub depth: u64,
    pub backend_depth: u64,
    pub in_flight_count: u64,
    pub deferred_count: u64,
    pub message_count: u64,
    pub requeue_count: u64,
    pub timeout_count: u64,
    pub client_count: usize,
    pub paused: bool,
    /// What the disk queue had to skip (checksum failures, unreadable segments).
    pub disk_damage: DiskDamage,
}

/// `--durable`: the disk records this channel still needs. Each message in
/// memory came from a record; the disk queue is told to keep every record
/// from the oldest one whose message is not finished yet.
#[derive(Default)]
struct Unfinished {
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
    fn read(&mut self, id: u64, at: Position) {
        self.records.push_back((at, false));
        if let Some(older) = self.record_of.insert(id, at) {
            // The same message read twice (a reopened queue): the newer
            // copy stands for it from now on.
            self.finished_at(older);
        }
    }

    fn finished(&mut self, id: u64) {
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

    /// Where a restart must begin reading: the oldest unfinished record.
    fn commit_point(&self) -> Position {
        self.records.front().map_or(self.read_end, |r| r.0)
    }
}

#[derive(Default)]
struct ChannelState {
    queue: VecDeque<Message>,
    in_flight: IdMap<InFlight>,
    deferred: BinaryHeap<Deferred>,
    clients: IdMap<ClientSlot>,
    /// Clients whose writers found nothing to send and wait for a wake-up.
    waiters: Vec<Arc<Client>>,
    paused: bool,
    generation: u64,
    /// Records sent to the disk I/O thread and not yet written.
    to_disk: u64,
    /// Records on disk, as the I/O thread last reported.
    on_disk: u64,
    /// A read-ahead request is outstanding.
    reading: bool,
    disk_damage: DiskDamage,
    /// `--durable` bookkeeping (empty otherwise).
    unfinished: Unfinished,
    message_count: u64,
    requeue_count: u64,
    timeout_count: u64,
    /// Max attempts and dead-letter topic (see `dead_letter.rs`).
    options: ChannelOptions,
    /// Exhausted messages waiting to be published to the dead-letter topic.
    dead: Vec<Message>,
    dead_count: u64,
    /// Set once shards or a job worker arrive (see `jobs.rs`).
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
    /// Set when `dead` has messages, so nsqd checks without the lock.
    has_dead: AtomicBool,
    /// End-to-end latency of FINished messages (see `e2e.rs`).
    pub(crate) e2e: Option<crate::e2e::E2eStream>,
    /// The disk queue that takes what memory cannot; `None` for ephemeral
    /// channels (which drop overflow, as upstream's do).
    disk: Option<QueueHandle>,
    /// This channel as the I/O thread's sink.
    me: Weak<Channel>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Channel({}:{})", self.topic_name, self.name)
    }
}

impl Channel {
    /// A channel; `disk` is its disk queue (`None`: memory only).
    pub fn new(
        topic_name: TopicName,
        name: ChannelName,
        limits: ChannelLimits,
        disk: Option<QueueHandle>,
    ) -> Arc<Self> {
        let disk = disk.filter(|_| !name.is_ephemeral());
        Arc::new_cyclic(|me| Channel {
            topic_name,
            name,
            limits,
            state: Mutex::new(ChannelState::default()),
            deleted: AtomicBool::new(false),
            has_dead: AtomicBool::new(false),
            e2e: limits.e2e_window.map(crate::e2e::E2eStream::new),
            disk,
            me: me.clone(),
        })
    }

    fn sink(&self) -> Weak<dyn DiskSink> {
        self.me.clone()
    }

    pub(crate) fn disk_handle(&self) -> Option<&QueueHandle> {
        self.disk.as_ref()
    }

    /// Durable: messages reach memory only through the disk queue.
    fn durable(&self) -> bool {
        self.limits.durable && self.disk.is_some()
    }

    /// Durable: tell the disk queue how far this channel is done with it.
    /// Lagging is safe (a restart delivers more again), so this rides on
    /// read-aheads and the timer scan instead of every FIN.
    fn send_commit(&self, st: &mut ChannelState) {
        if let Some(disk) = self.disk.as_ref().filter(|_| self.durable()) {
            let point = st.unfinished.commit_point();
            if point > st.unfinished.sent {
                st.unfinished.sent = point;
                disk.commit(point);
            }
        }
    }

    /// Records already on disk when the channel was opened (after a restart).
    pub(crate) fn set_on_disk(&self, depth: u64) {
        self.lock().on_disk = depth;
    }

    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        // A panic while holding the lock leaves counters possibly off, but no
        // message half-moved; keep serving rather than poison every client.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Queue messages for delivery: memory first, the rest to disk. Once
    /// anything is on disk, new messages follow it there until it drains, so
    /// delivery stays in publish order. Ephemeral channels drop what does not
    /// fit, as upstream does. Returns the disk write to wait for, if any.
    pub fn put(&self, msgs: &[Message]) -> Option<DiskWrite> {
        let mut st = self.lock();
        st.message_count += msgs.len() as u64;
        jobs::on_put(&mut st, self.limits.jobs, msgs);
        let room = match &self.disk {
            Some(_) if st.to_disk + st.on_disk > 0 || self.limits.durable => 0,
            _ => self.limits.mem_queue_size.saturating_sub(st.queue.len()),
        };
        let in_memory = match &self.disk {
            None if !self.is_ephemeral() => msgs.len(),
            _ => msgs.len().min(room),
        };
        st.queue.extend(msgs[..in_memory].iter().cloned());
        let spilled = &msgs[in_memory..];
        let pending = self.write(&mut st, spilled, 0);
        wake_waiters(&mut st);
        pending
    }

    /// Send messages to the disk queue (with their due time, 0 for now).
    fn write(&self, st: &mut ChannelState, msgs: &[Message], due: i64) -> Option<DiskWrite> {
        let disk = self.disk.as_ref().filter(|_| !msgs.is_empty())?;
        let mut batch = WriteBatch::default();
        for m in msgs {
            batch.push(|out| m.encode_disk(due, out));
        }
        st.to_disk += msgs.len() as u64;
        let (tx, rx) = tokio::sync::oneshot::channel();
        disk.write(batch, self.sink(), Some(tx));
        Some(rx)
    }

    /// Room left in memory before a publish would spill (only meaningful for
    /// a channel without a disk queue).
    pub fn room(&self) -> usize {
        self.limits
            .mem_queue_size
            .saturating_sub(self.lock().queue.len())
    }

    /// Whether this channel can take any number of messages (it has a disk
    /// queue, or drops overflow by design).
    pub fn is_unbounded(&self) -> bool {
        self.disk.is_some() || self.is_ephemeral()
    }

    /// Hold messages until `due`, then queue them. Durable: they go to the
    /// disk queue with their due time, and the write is returned.
    pub fn put_deferred(&self, msgs: &[Message], due: Instant) -> Option<DiskWrite> {
        let mut st = self.lock();
        st.message_count += msgs.len() as u64;
        if self.durable() {
            let wall =
                unix_nanos() + due.saturating_duration_since(Instant::now()).as_nanos() as i64;
            return self.write(&mut st, msgs, wall);
        }
        for m in msgs {
            push_deferred(&mut st, m.clone(), due);
        }
        None
    }

    /// Add a subscriber.
    pub fn add_client(&self, client: Arc<Client>) -> Result<(), JoinError> {
        let mut st = self.lock();
        if self.is_deleted() {
            return Err(JoinError::Exiting);
        }
        let limit = self.limits.max_channel_consumers;
        if limit > 0 && st.clients.len() >= limit {
            return Err(JoinError::TooManyConsumers {
                topic: self.topic_name.to_string(),
                channel: self.name.to_string(),
                limit,
            });
        }
        st.clients.insert(
            client.id,
            ClientSlot {
                client: client.clone(),
                order: VecDeque::new(),
                live: 0,
            },
        );
        jobs::on_join(&mut st, self.limits.jobs, &client);
        Ok(())
    }

    /// Drop a subscriber. Its in-flight messages go back to the front of the
    /// queue at once: no other client can FIN them, so waiting for their
    /// timeout (as upstream does) only delays them. Returns the clients left.
    pub fn remove_client(&self, client_id: u64) -> usize {
        let mut st = self.lock();
        if let Some(slot) = st.clients.remove(&client_id) {
            let mut back = Vec::with_capacity(slot.live);
            for &(_, id, generation) in &slot.order {
                if let Some(f) = st.in_flight.get(&id) {
                    if f.generation == generation && f.client_id == client_id {
                        if let Some(f) = st.in_flight.remove(&id) {
                            back.push(f.msg);
                        }
                    }
                }
            }
            // Oldest first at the very front.
            for msg in back.into_iter().rev() {
                st.queue.push_front(msg);
            }
            slot.client.reset_in_flight();
            jobs::on_leave(&mut st, client_id);
            st.waiters.retain(|w| w.id != client_id);
            wake_waiters(&mut st);
        }
        st.clients.len()
    }

    pub fn client_count(&self) -> usize {
        self.lock().clients.len()
    }

    /// The subscribed clients, for stats and for closing them.
    pub fn clients(&self) -> Vec<Arc<Client>> {
        self.lock()
            .clients
            .values()
            .map(|s| s.client.clone())
            .collect()
    }

    /// Move up to `max` messages into flight for `client` and append copies
    /// to `out`. When nothing is available the client is registered to be
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
        out: &mut Vec<Message>,
    ) -> usize {
        let mut st = self.lock();
        let st = &mut *st;
        if st.paused || max == 0 {
            return 0;
        }
        if st.job.is_some() && jobs::diverts(st, client, now) {
            return self.take_job(st, client, max, msg_timeout, now, out);
        }
        let Some(slot) = st.clients.get_mut(&client.id) else {
            return 0;
        };
        let deadline = now + msg_timeout;
        let taken = max.min(st.queue.len());
        let mut n = 0;
        for mut msg in st.queue.drain(..taken) {
            if sample_rate > 0 && rand::random::<u32>() % 100 > u32::from(sample_rate) {
                st.unfinished.finished(msg.id);
                continue;
            }
            n += 1;
            msg.attempts = msg.attempts.saturating_add(1);
            st.generation += 1;
            out.push(msg.clone());
            let id = msg.id;
            slot.order.push_back((deadline, id, st.generation));
            st.in_flight.insert(
                id,
                InFlight {
                    msg,
                    client_id: client.id,
                    deadline,
                    delivered_at: now,
                    generation: st.generation,
                },
            );
        }
        slot.live += n;
        client.add_in_flight(n as u64);
        client.message_count.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 {
            compact_order(slot, &st.in_flight);
        }
        self.read_ahead(st);
        if st.queue.is_empty() && !client.waiting.swap(true, Ordering::AcqRel) {
            st.waiters.push(client.clone());
        }
        taken
    }

    /// FIN: the client is done with the message.
    pub fn finish(&self, client_id: u64, id: u64) -> Result<(), InFlightError> {
        let mut st = self.lock();
        let msg = take_in_flight(&mut st, client_id, id)?;
        if self.limits.durable {
            st.unfinished.finished(id);
        }
        if st.job.is_some() {
            let client = st.clients.get(&client_id).map(|s| s.client.clone());
            jobs::on_done(&mut st, &msg, client.as_ref());
        }
        drop(st);
        self.record_e2e(&msg);
        Ok(())
    }

    /// Durable: messages that left this channel some other way (moved to
    /// the dead-letter topic) no longer need their records.
    pub(crate) fn forget(&self, ids: &[u64]) {
        if self.durable() {
            let mut st = self.lock();
            for &id in ids {
                st.unfinished.finished(id);
            }
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
        let msg = take_in_flight(&mut st, client_id, id)?;
        st.requeue_count += 1;
        let Some(msg) = self.retry_or_bury(&mut st, msg) else {
            return Ok(());
        };
        if delay.is_zero() {
            st.queue.push_back(msg);
            wake_waiters(&mut st);
        } else {
            push_deferred(&mut st, msg, now + delay);
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
        let mut st = self.lock();
        let st = &mut *st;
        let f = st
            .in_flight
            .get_mut(&id)
            .ok_or(InFlightError::NotInFlight)?;
        if f.client_id != client_id {
            return Err(InFlightError::NotOwner);
        }
        let mut deadline = now + msg_timeout;
        let cap = f.delivered_at + self.limits.max_msg_timeout;
        if deadline > cap {
            deadline = cap;
        }
        f.deadline = deadline;
        st.generation += 1;
        f.generation = st.generation;
        if let Some(slot) = st.clients.get_mut(&client_id) {
            // Keep the order sorted: a capped deadline may fall before later
            // deliveries. TOUCH is rare, so the shift is cheap enough.
            let at = slot.order.partition_point(|e| e.0 <= deadline);
            slot.order.insert(at, (deadline, id, st.generation));
        }
        Ok(())
    }

    /// Requeue what timed out and release what is due. Returns when the next
    /// timer of this channel falls due, if any.
    pub fn process_timers(&self, now: Instant) -> Option<Instant> {
        let mut st = self.lock();
        let st = &mut *st;
        let mut next: Option<Instant> = None;
        let mut released = false;
        let mut timed_out = Vec::new();
        for slot in st.clients.values_mut() {
            let mut expired = 0u64;
            while let Some(&(deadline, id, generation)) = slot.order.front() {
                let live = st
                    .in_flight
                    .get(&id)
                    .is_some_and(|f| f.generation == generation);
                if !live {
                    slot.order.pop_front();
                    continue;
                }
                if deadline > now {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    break;
                }
                slot.order.pop_front();
                if let Some(f) = st.in_flight.remove(&id) {
                    // Quarantine a hung worker for as long as it held this.
                    let until = now + now.saturating_duration_since(f.delivered_at);
                    timed_out.push((f.client_id, id, f.msg, until));
                    st.timeout_count += 1;
                    expired += 1;
                }
            }
            if expired > 0 {
                slot.live = slot.live.saturating_sub(expired as usize);
                slot.client.sub_in_flight(expired);
                slot.client.wake.notify_one();
                released = true;
            }
        }
        for (client_id, id, msg, until) in timed_out {
            jobs::on_timeout(st, client_id, id, until);
            if let Some(msg) = self.retry_or_bury(st, msg) {
                st.queue.push_back(msg);
            }
        }
        while let Some(d) = st.deferred.peek() {
            if d.due > now {
                next = Some(next.map_or(d.due, |n| n.min(d.due)));
                break;
            }
            if let Some(d) = st.deferred.pop() {
                st.queue.push_back(d.msg);
                released = true;
            }
        }
        if let Some(t) = jobs::on_timers(st, now) {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if released {
            wake_waiters(st);
        }
        self.send_commit(st);
        next
    }

    pub fn pause(&self) {
        self.lock().paused = true;
    }

    /// Resume delivery and wake every client, idle or not.
    pub fn unpause(&self) {
        let mut st = self.lock();
        st.paused = false;
        for slot in st.clients.values() {
            slot.client.wake.notify_one();
        }
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Drop every queued, in-flight and deferred message, on disk too.
    pub fn empty(&self) {
        let mut st = self.lock();
        if let Some(disk) = &self.disk {
            disk.empty(self.sink());
        }
        st.on_disk = 0;
        st.queue.clear();
        st.in_flight.clear();
        st.deferred.clear();
        st.unfinished = Unfinished::default();
        jobs::on_empty(&mut st);
        for slot in st.clients.values_mut() {
            slot.order.clear();
            slot.live = 0;
            slot.client.reset_in_flight();
            slot.client.wake.notify_one();
        }
    }

    /// Write every message held in memory (queued, in flight, deferred with
    /// its due time) to the disk queue, at shutdown. Returns how many.
    pub fn flush_to_disk(&self, now: Instant) -> usize {
        let Some(disk) = &self.disk else { return 0 };
        let mut st = self.lock();
        let mut batch = WriteBatch::default();
        for m in st.queue.drain(..) {
            batch.push(|out| m.encode_disk(0, out));
        }
        for (_, f) in st.in_flight.drain() {
            batch.push(|out| f.msg.encode_disk(0, out));
        }
        let wall = unix_nanos();
        for d in st.deferred.drain() {
            let due = wall + d.due.saturating_duration_since(now).as_nanos() as i64;
            batch.push(|out| d.msg.encode_disk(due, out));
        }
        let n = batch.len();
        if n > 0 {
            st.to_disk += n as u64;
            disk.write(batch, self.sink(), None);
        }
        if self.durable() {
            // Every unfinished message was just written again: the records
            // they were read from are done with.
            let end = st.unfinished.read_end;
            st.unfinished = Unfinished::default();
            disk.commit(end);
        }
        n
    }

    /// Every unfinished message in memory (queued, in flight, deferred with
    /// its due time), for replication's full copy.
    pub fn messages_in_memory(&self) -> Vec<(Message, Option<Instant>)> {
        let st = self.lock();
        let queued = st.queue.iter().chain(st.in_flight.values().map(|f| &f.msg));
        let mut out: Vec<_> = queued.map(|m| (m.clone(), None)).collect();
        out.extend(st.deferred.iter().map(|d| (d.msg.clone(), Some(d.due))));
        out
    }

    /// Remove the channel's disk files (it was deleted).
    pub(crate) fn delete_disk(&self) {
        if let Some(disk) = &self.disk {
            disk.delete();
        }
    }

    /// Ask the I/O thread for more messages when memory runs low and disk
    /// has some. Demand-driven: only `take` calls it, so a channel without
    /// consumers keeps its backlog on disk.
    fn read_ahead(&self, st: &mut ChannelState) {
        if let Some(disk) = &self.disk {
            if !st.reading && st.queue.len() < READ_AHEAD_BELOW && st.on_disk + st.to_disk > 0 {
                st.reading = true;
                self.send_commit(st);
                disk.read(READ_AHEAD, self.sink());
            }
        }
    }

    pub fn stats(&self) -> ChannelStats {
        let st = self.lock();
        ChannelStats {
            depth: st.queue.len() as u64 + st.on_disk + st.to_disk,
            backend_depth: st.on_disk + st.to_disk,
            in_flight_count: st.in_flight.len() as u64,
            deferred_count: st.deferred.len() as u64,
            message_count: st.message_count,
            requeue_count: st.requeue_count,
            timeout_count: st.timeout_count,
            client_count: st.clients.len(),
            paused: st.paused,
            disk_damage: st.disk_damage,
        }
    }
}

impl DiskSink for Channel {
    fn written(&self, count: u64, result: &io::Result<()>, depth: u64) {
        let mut st = self.lock();
        st.to_disk = st.to_disk.saturating_sub(count);
        st.on_disk = depth;
        if result.is_err() {
            tracing::error!(topic = %self.topic_name, channel = %self.name, count, "messages lost to a failed disk write");
        }
        // A consumer may be waiting for exactly these records.
        if !st.waiters.is_empty() {
            self.read_ahead(&mut st);
        }
    }

    fn refill(
        &self,
        records: Vec<(Position, Bytes)>,
        end: Position,
        depth: u64,
        damage: DiskDamage,
    ) {
        let now = Instant::now();
        let wall = unix_nanos();
        let durable = self.durable();
        let mut st = self.lock();
        st.on_disk = depth;
        st.reading = false;
        st.disk_damage = damage;
        if durable {
            st.unfinished.read_end = end;
        }
        for (at, r) in &records {
            let Some((m, due)) = Message::decode_disk(r) else {
                tracing::error!(topic = %self.topic_name, channel = %self.name, "undecodable disk record skipped");
                continue;
            };
            if durable {
                st.unfinished.read(m.id, *at);
            }
            if due > wall {
                let at = now + Duration::from_nanos((due - wall) as u64);
                push_deferred(&mut st, m, at);
            } else {
                st.queue.push_back(m);
            }
        }
        wake_waiters(&mut st);
    }
}

fn wake_waiters(st: &mut ChannelState) {
    if st.queue.is_empty() {
        return;
    }
    for w in st.waiters.drain(..) {
        w.waiting.store(false, Ordering::Release);
        w.wake.notify_one();
    }
}

fn push_deferred(st: &mut ChannelState, msg: Message, due: Instant) {
    st.generation += 1;
    let seq = st.generation;
    st.deferred.push(Deferred { due, seq, msg });
}

/// Remove a message from flight on behalf of its owner.
fn take_in_flight(
    st: &mut ChannelState,
    client_id: u64,
    id: u64,
) -> Result<Message, InFlightError> {
    match st.in_flight.get(&id) {
        None => return Err(InFlightError::NotInFlight),
        Some(f) if f.client_id != client_id => return Err(InFlightError::NotOwner),
        Some(_) => {}
    }
    let f = st.in_flight.remove(&id).ok_or(InFlightError::NotInFlight)?;
    jobs::on_answer(st, client_id, id);
    if let Some(slot) = st.clients.get_mut(&client_id) {
        slot.live = slot.live.saturating_sub(1);
        slot.client.sub_in_flight(1);
    }
    Ok(f.msg)
}

/// Drop stale entries: from the front always, and everywhere once they
/// outnumber the live ones (a client holding one message for long while
/// finishing thousands would otherwise grow the order without bound).
fn compact_order(slot: &mut ClientSlot, in_flight: &IdMap<InFlight>) {
    let is_live = |&(_, id, generation): &(Instant, u64, u64)| {
        in_flight
            .get(&id)
            .is_some_and(|f| f.generation == generation)
    };
    while slot.order.front().is_some_and(|e| !is_live(e)) {
        slot.order.pop_front();
    }
    if slot.order.len() > 2 * slot.live + 64 {
        slot.order.retain(is_live);
    }
}

#[cfg(test)]
mod tests;
