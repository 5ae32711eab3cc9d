//! A topic: fans every published message out to all of its channels, and
//! holds messages (memory, then its own disk queue) while it has no channel,
//! is paused, or is starting.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use nsq_protocol::{ChannelName, TopicName};
use tokio::time::Instant;

use crate::channel::{Channel, ChannelLimits, ChannelStats, DiskWrite};
use crate::disk_io::{DiskDamage, DiskIo, DiskSink, QueueHandle, WriteBatch};
use crate::disk_queue::Position;
use crate::message::{unix_nanos, IdGenerator, Message};
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
    /// paused or starting; they go to the channels once delivery can begin.
    held: VecDeque<Message>,
    /// Deferred publishes held likewise, with their due time.
    held_deferred: Vec<(Message, Instant)>,
    /// Held records sent to the disk queue and not yet written / on disk.
    to_disk: u64,
    on_disk: u64,
    /// The pump has a read outstanding (durable: or a commit).
    pumping: bool,
    /// Durable: `held` came from disk up to here, not yet committed.
    held_from_disk: Option<Position>,
    disk_damage: DiskDamage,
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
    /// The topic's own disk queue (`None` for ephemeral topics).
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
            name,
            limits,
            state: Mutex::new(TopicState {
                channels: BTreeMap::new(),
                held: VecDeque::new(),
                held_deferred: Vec::new(),
                to_disk: 0,
                on_disk: 0,
                pumping: false,
                held_from_disk: None,
                disk_damage: DiskDamage::default(),
                paused: false,
                starting,
                ids: IdGenerator::new(node_id),
                message_count: 0,
                message_bytes: 0,
            }),
            deleted: AtomicBool::new(false),
            disk_io,
            disk,
            pump_ctx,
            me: me.clone(),
        })
    }

    /// `--durable`, with a disk queue to be durable on.
    fn durable(&self) -> bool {
        self.limits.durable && self.disk.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, TopicState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sink(&self) -> Weak<dyn DiskSink> {
        self.me.clone()
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
                out.push((Some(c.clone()), d.clone()));
            }
        }
        out
    }

    /// Records found on the topic's disk queue after a restart.
    pub(crate) fn set_on_disk(&self, depth: u64) {
        let mut st = self.lock();
        st.on_disk = depth;
        self.pump(&mut st);
    }

    /// Publish bodies as new messages, all or none. `defer` holds them back
    /// from delivery for that long (DPUB). Returns the disk writes to wait
    /// for before acknowledging.
    pub fn put(
        &self,
        bodies: Vec<Bytes>,
        defer: Option<Duration>,
    ) -> Result<Vec<DiskWrite>, PutError> {
        self.put_kept(bodies, defer, None)
    }

    /// [`Topic::put`], also handing copies of the new messages to `kept`
    /// (for replication).
    pub fn put_kept(
        &self,
        bodies: Vec<Bytes>,
        defer: Option<Duration>,
        kept: Option<&mut Vec<Message>>,
    ) -> Result<Vec<DiskWrite>, PutError> {
        let n = bodies.len();
        let mut st = self.lock();
        if self.is_deleted() {
            return Err(PutError::Exiting);
        }
        let fits = if st.holding() {
            self.disk.is_some()
                || self.is_ephemeral()
                || st.held.len() + st.held_deferred.len() + n <= self.limits.mem_queue_size
        } else {
            st.channels
                .values()
                .all(|c| c.is_unbounded() || c.room() >= n)
        };
        if !fits {
            return Err(PutError::QueueFull);
        }
        let now_nanos = unix_nanos();
        let mut bytes = 0u64;
        let msgs: Vec<Message> = bodies
            .into_iter()
            .map(|body| {
                bytes += body.len() as u64;
                Message::new(st.ids.next_at(now_nanos), now_nanos, body)
            })
            .collect();
        st.message_count += n as u64;
        st.message_bytes += bytes;
        let due = defer.filter(|d| !d.is_zero()).map(|d| Instant::now() + d);
        if let Some(kept) = kept {
            kept.extend_from_slice(&msgs);
        }
        let mut writes = Vec::new();
        if st.holding() {
            writes.extend(self.hold(&mut st, msgs, due));
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
        msgs: Vec<Message>,
        due: Option<Instant>,
    ) -> Option<DiskWrite> {
        // Durable: everything goes through the disk queue.
        let on_disk = st.to_disk + st.on_disk > 0 || self.durable();
        let room = if on_disk {
            0
        } else {
            self.limits
                .mem_queue_size
                .saturating_sub(st.held.len() + st.held_deferred.len())
        };
        let keep = match &self.disk {
            None if !self.is_ephemeral() => msgs.len(),
            _ => room.min(msgs.len()),
        };
        let mut msgs = msgs.into_iter();
        for m in msgs.by_ref().take(keep) {
            match due {
                Some(at) => st.held_deferred.push((m, at)),
                None => st.held.push_back(m),
            }
        }
        let disk = self.disk.as_ref()?;
        let due_nanos = due.map_or(0, |at| {
            unix_nanos() + at.saturating_duration_since(Instant::now()).as_nanos() as i64
        });
        let mut batch = WriteBatch::default();
        for m in msgs {
            batch.push(|out| m.encode_disk(due_nanos, out));
        }
        if batch.is_empty() {
            return None;
        }
        st.to_disk += batch.len() as u64;
        let (tx, rx) = tokio::sync::oneshot::channel();
        disk.write(batch, self.sink(), Some(tx));
        Some(rx)
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
        let channel = Channel::new(self.name.clone(), name.clone(), self.limits, disk);
        st.channels.insert(name.clone(), channel.clone());
        self.release_held(&mut st);
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
            c.mark_deleted();
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
            channel.mark_deleted();
            return true;
        }
        false
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
        st.held.clear();
        st.held_deferred.clear();
        st.held_from_disk = None;
        st.on_disk = 0;
        if let Some(disk) = &self.disk {
            disk.empty(self.sink());
        }
    }

    /// Write what the topic holds in memory to its disk queue, at shutdown.
    pub fn flush_to_disk(&self) -> usize {
        let Some(disk) = &self.disk else { return 0 };
        let mut st = self.lock();
        let mut batch = WriteBatch::default();
        for m in st.held.drain(..) {
            batch.push(|out| m.encode_disk(0, out));
        }
        let now = Instant::now();
        let wall = unix_nanos();
        for (m, at) in st.held_deferred.drain(..) {
            let due = wall + at.saturating_duration_since(now).as_nanos() as i64;
            batch.push(|out| m.encode_disk(due, out));
        }
        let n = batch.len();
        if n > 0 {
            st.to_disk += n as u64;
            disk.write(batch, self.sink(), None);
        }
        if let Some(end) = st.held_from_disk.take() {
            // Written again just now: the records they came from are done.
            disk.commit(end);
        }
        n
    }

    /// What the topic holds in memory, with due times (replication's copy).
    pub fn held_in_memory(&self) -> Vec<(Message, Option<Instant>)> {
        let st = self.lock();
        let now = st.held.iter().map(|m| (m.clone(), None));
        let later = st
            .held_deferred
            .iter()
            .map(|(m, at)| (m.clone(), Some(*at)));
        now.chain(later).collect()
    }

    /// Remove the disk files of the topic and its channels (it was deleted).
    pub(crate) fn delete_disk(&self) {
        if let Some(d) = &self.disk {
            d.delete();
        }
    }

    pub fn stats(&self) -> (TopicStats, Vec<(ChannelName, ChannelStats)>) {
        let st = self.lock();
        let backend = st.to_disk + st.on_disk;
        let topic = TopicStats {
            depth: (st.held.len() + st.held_deferred.len()) as u64 + backend,
            backend_depth: backend,
            message_count: st.message_count,
            message_bytes: st.message_bytes,
            paused: st.paused,
            disk_damage: st.disk_damage,
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
        let held: Vec<Message> = st.held.drain(..).collect();
        let mut writes = Vec::new();
        if !held.is_empty() {
            fan_out(st, &held, None, &mut writes);
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
        let durable = self.durable();
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
        if let Some(disk) = &self.disk {
            if !st.pumping && !st.holding() && st.on_disk + st.to_disk > 0 {
                st.pumping = true;
                disk.read(PUMP_BATCH, self.sink());
            }
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

impl DiskSink for Topic {
    fn written(&self, count: u64, result: &io::Result<()>, depth: u64) {
        let mut st = self.lock();
        st.to_disk = st.to_disk.saturating_sub(count);
        st.on_disk = depth;
        if result.is_err() {
            tracing::error!(topic = %self.name, count, "messages lost to a failed disk write");
        }
        self.pump(&mut st);
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
        let mut st = self.lock();
        st.on_disk = depth;
        st.pumping = false;
        st.disk_damage = damage;
        let mut now_msgs = Vec::with_capacity(records.len());
        let mut writes = Vec::new();
        for (_, r) in &records {
            match Message::decode_disk(r) {
                Some((m, due)) if due > wall => {
                    let at = now + Duration::from_nanos((due - wall) as u64);
                    if st.holding() {
                        st.held_deferred.push((m, at));
                    } else {
                        fan_out(&st, std::slice::from_ref(&m), Some(at), &mut writes);
                    }
                }
                Some((m, _)) => now_msgs.push(m),
                None => tracing::error!(topic = %self.name, "undecodable disk record skipped"),
            }
        }
        let held = st.holding();
        if held {
            // Paused again meanwhile: keep them in memory.
            st.held.extend(now_msgs);
        } else if !now_msgs.is_empty() {
            fan_out(&st, &now_msgs, None, &mut writes);
        }
        if held && self.durable() {
            st.held_from_disk = Some(end);
        } else if !held {
            self.pump_after(&mut st, writes, end);
        }
    }
}
