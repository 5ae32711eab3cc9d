//! A topic: fans every published message out to all of its channels, and
//! holds messages (memory, then its own disk queue) while it has no channel,
//! is paused, or is starting.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use nsq_protocol::{Bodies, ChannelName, TopicName};
use tokio::time::Instant;

use crate::backlog::{wall_due, Backlog, DiskWrite, Entry, Packed};
use crate::channel::{Channel, ChannelLimits, ChannelStats};
use crate::disk_io::{DiskDamage, DiskIo, DiskSink, QueueHandle, ReadAhead};
use crate::disk_queue::Position;
use crate::message::{id_after, unix_nanos, IdGenerator, Message};
use crate::metadata::Progress;

/// How long moving held messages to the channels waits for `nsqd.dat` to
/// name them before giving up for now (the messages stay on disk).
const METADATA_WAIT: Duration = Duration::from_secs(10);

/// How many held records the topic reads from disk at a time once it has
/// channels to give them to.
const PUMP_BATCH: usize = 1024;

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutError {
    #[error("exiting")]
    Exiting,
    /// Memory is full and there is no disk queue to take the rest (only
    /// where nsqd runs without disk queues, as in some tests).
    #[error("queue full")]
    QueueFull,
}

/// Where a topic's pump waits for the channels' disk writes of one batch
/// before reading the next: otherwise a large backlog would be copied into
/// the channels' disk queues all at once, ahead of the consumers' reads on
/// the same I/O threads. Under `--durable` the topic's disk queue also keeps
/// the records until the copies are fsynced and `nsqd.dat` names the
/// channels.
pub struct PumpContext {
    pub runtime: tokio::runtime::Handle,
    pub metadata: Arc<Progress>,
}

/// Counters reported in `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicStats {
    pub depth: u64,
    pub backend_depth: u64,
    pub message_count: u64,
    pub message_bytes: u64,
    pub paused: bool,
    /// What the topic's disk queue had to skip.
    pub disk_damage: DiskDamage,
}

struct TopicState {
    channels: BTreeMap<ChannelName, Arc<Channel>>,
    /// Messages published while there was no channel to take them, or while
    /// paused or starting (in memory, then on the topic's disk queue); they
    /// go to the channels once delivery can begin.
    held: Backlog,
    /// Deferred publishes held likewise, with their due time.
    held_deferred: Vec<(Message, Instant)>,
    /// The pump waits for the channels' copies of a batch (durable: and a
    /// commit) before reading the next.
    pumping: bool,
    /// Durable: `held` came from disk up to here, not yet committed.
    held_from_disk: Option<Position>,
    paused: bool,
    /// Held back from delivery until `start`: a new topic waits while the
    /// channels lookupd knows for it are created, so none misses a message.
    starting: bool,
    ids: IdGenerator,
    message_count: u64,
    message_bytes: u64,
}

impl TopicState {
    fn holding(&self) -> bool {
        self.channels.is_empty() || self.paused || self.starting
    }
}

/// A topic. Its std Mutex is held by publishers for the whole fan-out (so an
/// MPUB lands on every channel in one go, in order) and by channel creation
/// and deletion; never across an `.await`. Lock order: topic before channel.
pub struct Topic {
    pub name: TopicName,
    limits: ChannelLimits,
    state: Mutex<TopicState>,
    deleted: AtomicBool,
    /// Where disk queues come from (`None`: memory only).
    disk_io: Option<Arc<DiskIo>>,
    /// The topic's own disk queue (`None` for ephemeral topics); also in
    /// `held`.
    disk: Option<QueueHandle>,
    /// Where the pump waits (only with a disk queue).
    pump_ctx: Option<Arc<PumpContext>>,
    me: Weak<Topic>,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Topic({})", self.name)
    }
}

impl Topic {
    /// A topic; `starting` holds delivery until [`Topic::start`].
    pub fn new(
        name: TopicName,
        node_id: u16,
        limits: ChannelLimits,
        starting: bool,
        disk_io: Option<Arc<DiskIo>>,
        pump_ctx: Option<Arc<PumpContext>>,
    ) -> Arc<Self> {
        let disk = disk_io
            .as_ref()
            .filter(|_| !name.is_ephemeral())
            .map(|d| d.queue(name.as_str()));
        let pump_ctx = pump_ctx.filter(|_| disk.is_some());
        Arc::new_cyclic(|me| Topic {
            state: Mutex::new(TopicState {
                channels: BTreeMap::new(),
                held: Backlog::new(
                    disk.clone().map(|d| (d, me.clone() as Weak<dyn DiskSink>)),
                    limits.mem_queue_size,
                    limits.durable,
                    name.is_ephemeral(),
                ),
                held_deferred: Vec::new(),
                pumping: false,
                held_from_disk: None,
                paused: false,
                starting,
                ids: IdGenerator::new(node_id),
                message_count: 0,
                message_bytes: 0,
            }),
            name,
            limits,
            deleted: AtomicBool::new(false),
            disk_io,
            disk,
            pump_ctx,
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, TopicState> {
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
        for c in self.lock().channels.values() {
            c.mark_deleted();
        }
    }

    /// The disk queues of this topic and its channels, for reopening after a
    /// restart: the topic's own, then each channel's.
    pub(crate) fn disk_queues(&self) -> Vec<(Option<Arc<Channel>>, QueueHandle)> {
        let mut out = Vec::new();
        if let Some(d) = &self.disk {
            out.push((None, d.clone()));
        }
        for c in self.channels() {
            if let Some(d) = c.disk_handle() {
                out.push((Some(c.clone()), d));
            }
        }
        out
    }

    /// Records found on the topic's disk queue after a restart.
    pub(crate) fn set_on_disk(&self, depth: u64) {
        let mut st = self.lock();
        st.held.set_on_disk(depth);
        self.pump(&mut st);
    }

    /// Publish bodies as new messages, all or none. `defer` holds them back
    /// from delivery for that long (DPUB). Returns the disk writes to wait
    /// for before acknowledging.
    pub fn put(
        &self,
        bodies: impl Into<Bodies>,
        defer: Option<Duration>,
    ) -> Result<Vec<DiskWrite>, PutError> {
        self.put_kept(bodies.into(), defer, None)
    }

    /// [`Topic::put`], also handing the new messages to `kept` (for
    /// replication): packed, sharing their bodies' buffer.
    pub fn put_kept(
        &self,
        bodies: Bodies,
        defer: Option<Duration>,
        kept: Option<&mut Vec<Packed>>,
    ) -> Result<Vec<DiskWrite>, PutError> {
        let n = bodies.len();
        let body_bytes = bodies.body_bytes() as u64;
        let due = defer.filter(|d| !d.is_zero()).map(|d| Instant::now() + d);
        // An MPUB stays one packed entry on its way to every channel: the
        // buffer the decoder copied its bodies into, as it is. (A list, from
        // HTTP, is packed here, before the lock is taken: the copy allocates
        // and faults in fresh pages, and under the lock it made concurrent
        // publishers to this topic wait for each other.)
        let (packed, bodies) = match n > 1 && due.is_none() {
            true => (Some(Packed::new(bodies)), None),
            false => (None, Some(bodies)),
        };
        // A list kept for replication is packed here too (one copy).
        let list_kept = match (&kept, &bodies) {
            (Some(_), Some(b)) => Some(Packed::new(b.clone())),
            _ => None,
        };
        let mut st = self.lock();
        if self.is_deleted() {
            return Err(PutError::Exiting);
        }
        let fits = if st.holding() {
            st.held.unbounded() || st.held.room(st.held_deferred.len()) >= n
        } else {
            st.channels
                .values()
                .all(|c| c.is_unbounded() || c.room() >= n)
        };
        if !fits {
            return Err(PutError::QueueFull);
        }
        let now_nanos = unix_nanos();
        let first = st.ids.reserve(now_nanos, n);
        st.message_count += n as u64;
        st.message_bytes += body_bytes;
        let mut writes = Vec::new();
        if let Some(packed) = packed {
            let packed = packed.stamped(first, now_nanos);
            if let Some(kept) = kept {
                kept.push(packed.clone());
            }
            if st.holding() {
                let others = st.held_deferred.len();
                writes.extend(st.held.push_packed(packed, others));
            } else {
                fan_out_packed(&st, &packed, &mut writes);
            }
            return Ok(writes);
        }
        let mut id = first;
        let msgs: Vec<Message> = bodies
            .iter()
            .flat_map(Bodies::iter)
            .map(|body| {
                let m = Message::new(id, now_nanos, body);
                id = id_after(id);
                m
            })
            .collect();
        if let (Some(kept), Some(p)) = (kept, list_kept) {
            kept.push(p.stamped(first, now_nanos));
        }
        if st.holding() {
            writes.extend(self.hold(&mut st, &msgs, due));
        } else {
            fan_out(&st, &msgs, due, &mut writes);
        }
        Ok(writes)
    }

    /// Keep messages until delivery can begin: memory while there is room
    /// and nothing on disk (so order holds), else the topic's disk queue.
    fn hold(
        &self,
        st: &mut TopicState,
        msgs: &[Message],
        due: Option<Instant>,
    ) -> Option<DiskWrite> {
        let keep = st.held.keep_in_memory(msgs.len(), st.held_deferred.len());
        let (now, rest) = msgs.split_at(keep);
        match due {
            Some(at) => st.held_deferred.extend(now.iter().map(|m| (m.clone(), at))),
            None => st.held.mem.extend(now.iter().cloned()),
        }
        let due_nanos = due.map_or(0, |at| wall_due(at, Instant::now(), unix_nanos()));
        st.held.write(rest, due_nanos)
    }

    /// The channel of that name, created if missing. Returns whether it was
    /// created. The first channel receives everything the topic held.
    pub fn get_or_create_channel(&self, name: &ChannelName) -> (Arc<Channel>, bool) {
        let mut st = self.lock();
        if let Some(c) = st.channels.get(name) {
            return (c.clone(), false);
        }
        let disk = self
            .disk_io
            .as_ref()
            .map(|d| d.queue(&format!("{}:{}", self.name, name)));
        let channel = Channel::new(self.name.clone(), name.clone(), self.limits.clone(), disk);
        st.channels.insert(name.clone(), channel.clone());
        self.release_held(&mut st);
        drop(st);
        if let Some(e) = self.limits.events.get() {
            e.created(&self.name, name);
        }
        (channel, true)
    }

    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.lock().channels.get(name).cloned()
    }

    pub fn channels(&self) -> Vec<Arc<Channel>> {
        self.lock().channels.values().cloned().collect()
    }

    pub fn channel_count(&self) -> usize {
        self.lock().channels.len()
    }

    /// Remove a channel; returns it (marked deleted) if it existed.
    pub fn delete_channel(&self, name: &str) -> Option<Arc<Channel>> {
        let removed = self.lock().channels.remove(name);
        if let Some(c) = &removed {
            self.channel_deleted(c);
        }
        removed
    }

    /// Remove an ephemeral channel only if it still has no client, so a
    /// client that joined meanwhile keeps it.
    pub(crate) fn delete_channel_if_unused(&self, channel: &Arc<Channel>) -> bool {
        let mut st = self.lock();
        let same = st
            .channels
            .get(&channel.name)
            .is_some_and(|c| Arc::ptr_eq(c, channel));
        if same && channel.client_count() == 0 {
            st.channels.remove(&channel.name);
            drop(st);
            self.channel_deleted(channel);
            return true;
        }
        false
    }

    /// Called outside the topic's lock.
    fn channel_deleted(&self, channel: &Channel) {
        channel.mark_deleted();
        if let Some(e) = self.limits.events.get() {
            e.deleted(&self.name, &channel.name);
        }
    }

    pub fn pause(&self) {
        self.lock().paused = true;
    }

    pub fn unpause(&self) {
        let mut st = self.lock();
        st.paused = false;
        self.release_held(&mut st);
    }

    /// Begin delivery (see `starting` in [`Topic::new`]).
    pub fn start(&self) {
        let mut st = self.lock();
        st.starting = false;
        self.release_held(&mut st);
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Drop what the topic itself holds (not its channels' messages).
    pub fn empty(&self) {
        let mut st = self.lock();
        st.held.empty();
        st.held_deferred.clear();
        st.held_from_disk = None;
    }

    /// Write what the topic holds in memory to its disk queue, at shutdown.
    pub fn flush_to_disk(&self) -> usize {
        let mut st = self.lock();
        let st = &mut *st;
        let (now, wall) = (Instant::now(), unix_nanos());
        let deferred = st
            .held_deferred
            .drain(..)
            .map(|(m, at)| (m, wall_due(at, now, wall)));
        let n = st.held.flush(deferred);
        if let Some(end) = st.held_from_disk.take() {
            // Written again just now: the records they came from are done.
            st.held.commit(end);
        }
        n
    }

    /// What the topic holds in memory, with due times (replication's copy).
    pub fn held_in_memory(&self) -> Vec<(Message, Option<Instant>)> {
        let st = self.lock();
        let now = st.held.mem.iter().map(|m| (m, None));
        let later = st
            .held_deferred
            .iter()
            .map(|(m, at)| (m.clone(), Some(*at)));
        now.chain(later).collect()
    }

    /// The topic's disk queue, if it has one (replication's full copy
    /// peeks at what spilled there).
    pub fn disk_queue(&self) -> Option<QueueHandle> {
        self.disk.clone()
    }

    /// Remove the disk files of the topic and its channels (it was deleted).
    pub(crate) fn delete_disk(&self) {
        if let Some(d) = &self.disk {
            d.delete();
        }
    }

    pub fn stats(&self) -> (TopicStats, Vec<(ChannelName, ChannelStats)>) {
        let st = self.lock();
        let topic = TopicStats {
            depth: st.held.depth() + st.held_deferred.len() as u64,
            backend_depth: st.held.on_disk(),
            message_count: st.message_count,
            message_bytes: st.message_bytes,
            paused: st.paused,
            disk_damage: st.held.damage(),
        };
        let channels = st
            .channels
            .iter()
            .map(|(n, c)| (n.clone(), c.stats()))
            .collect();
        (topic, channels)
    }

    /// Hand what the topic held to its channels, if delivery can begin.
    fn release_held(&self, st: &mut TopicState) {
        if st.holding() {
            return;
        }
        let (mut writes, mut ones) = (Vec::new(), Vec::new());
        for entry in st.held.mem.take_entries() {
            match entry {
                Entry::One(m) => ones.push(m),
                Entry::Packed(p) => {
                    if !ones.is_empty() {
                        fan_out(st, &std::mem::take(&mut ones), None, &mut writes);
                    }
                    fan_out_packed(st, &p, &mut writes);
                }
            }
        }
        if !ones.is_empty() {
            fan_out(st, &ones, None, &mut writes);
        }
        for (m, due) in std::mem::take(&mut st.held_deferred) {
            fan_out(st, std::slice::from_ref(&m), Some(due), &mut writes);
        }
        match st.held_from_disk.take() {
            Some(end) => self.pump_after(st, writes, end),
            None => self.pump(st),
        }
    }

    /// Once the channels' copies of a batch are written (durable: fsynced,
    /// and `nsqd.dat` names the channels, then the topic's disk queue may
    /// forget the records up to `end`), pump the next batch. The pump waits
    /// meanwhile, so batches and commits stay in order.
    fn pump_after(&self, st: &mut TopicState, writes: Vec<DiskWrite>, end: Position) {
        let (Some(ctx), Some(disk)) = (&self.pump_ctx, &self.disk) else {
            return self.pump(st);
        };
        let durable = st.held.durable();
        if writes.is_empty() && !durable {
            return self.pump(st);
        }
        st.pumping = true;
        let me = self.me.clone();
        let disk = disk.clone();
        let metadata = ctx.metadata.clone();
        let changes = metadata.current();
        ctx.runtime.spawn(async move {
            let mut written = true;
            for w in writes {
                written &= matches!(w.await, Ok(Ok(())));
            }
            if durable {
                let named = written && metadata.wait_saved(changes, METADATA_WAIT).await.is_ok();
                if named {
                    disk.commit(end);
                } else {
                    // Left on the topic's disk queue: delivered again after
                    // a restart rather than lost.
                    tracing::error!(
                        queue = disk.name(),
                        "messages moved to channels are not safe on disk yet; keeping the topic's copy"
                    );
                }
            }
            if let Some(topic) = me.upgrade() {
                let mut st = topic.lock();
                st.pumping = false;
                topic.pump(&mut st);
            }
        });
    }

    /// Stream the held records on disk to the channels, a batch at a time.
    fn pump(&self, st: &mut TopicState) {
        if !st.pumping && !st.holding() {
            st.held.read(PUMP_BATCH);
        }
    }
}

/// Give every channel a copy. Disk writes of channels that spill are not
/// awaited here when nobody waits for them (pump, release).
fn fan_out(st: &TopicState, msgs: &[Message], due: Option<Instant>, writes: &mut Vec<DiskWrite>) {
    for c in st.channels.values() {
        match due {
            Some(at) => writes.extend(c.put_deferred(msgs, at)),
            None => writes.extend(c.put(msgs)),
        }
    }
}

/// Give every channel the batch, still packed.
fn fan_out_packed(st: &TopicState, packed: &Packed, writes: &mut Vec<DiskWrite>) {
    writes.extend(st.channels.values().filter_map(|c| c.put_packed(packed)));
}

impl DiskSink for Topic {
    fn written(&self, count: u64, result: &io::Result<()>, depth: u64) {
        let mut st = self.lock();
        if st.held.written(count, result, depth) {
            tracing::error!(topic = %self.name, count, "messages lost to a failed disk write");
        }
        self.pump(&mut st);
    }

    fn refill(&self, read: ReadAhead) {
        let mut st = self.lock();
        let st = &mut *st;
        let (refilled, end) = st.held.refilled(read, &self.name);
        let mut now_msgs = Vec::with_capacity(refilled.len());
        let mut writes = Vec::new();
        for r in refilled {
            match r.due {
                Some(at) if st.holding() => st.held_deferred.push((r.msg, at)),
                Some(at) => fan_out(st, std::slice::from_ref(&r.msg), Some(at), &mut writes),
                None => now_msgs.push(r.msg),
            }
        }
        let held = st.holding();
        if held {
            // Paused again meanwhile: keep them in memory.
            st.held.mem.extend(now_msgs);
        } else if !now_msgs.is_empty() {
            fan_out(st, &now_msgs, None, &mut writes);
        }
        if held && st.held.durable() {
            st.held_from_disk = Some(end);
        } else if !held {
            self.pump_after(st, writes, end);
        }
    }
}

#[cfg(test)]
mod tests;
