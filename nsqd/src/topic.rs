//! A topic: fans every published message out to all of its channels, and
//! holds messages while it has no channel or is paused.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use nsq_protocol::{ChannelName, TopicName};
use tokio::time::Instant;

use crate::channel::{Channel, ChannelLimits, ChannelStats};
use crate::message::{unix_nanos, IdGenerator, Message};

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutError {
    #[error("exiting")]
    Exiting,
    /// Memory queues are full and there is no disk spill to take the rest.
    #[error("queue full")]
    QueueFull,
}

/// Counters reported in `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicStats {
    pub depth: u64,
    pub backend_depth: u64,
    pub message_count: u64,
    pub message_bytes: u64,
    pub paused: bool,
}

struct TopicState {
    channels: BTreeMap<ChannelName, Arc<Channel>>,
    /// Messages published while there was no channel to take them, or while
    /// paused; they go to the channels once there are some, or on unpause.
    held: VecDeque<Message>,
    /// Deferred publishes held likewise, with their due time.
    held_deferred: Vec<(Message, Instant)>,
    paused: bool,
    /// Held back from delivery until `start`: a new topic waits while the
    /// channels lookupd knows for it are created, so none misses a message.
    starting: bool,
    ids: IdGenerator,
    message_count: u64,
    message_bytes: u64,
}

/// A topic. Its std Mutex is held by publishers for the whole fan-out (so
/// an MPUB lands atomically on every channel) and by channel creation and
/// deletion; never across an `.await`. Lock order: topic before channel.
pub struct Topic {
    pub name: TopicName,
    limits: ChannelLimits,
    state: Mutex<TopicState>,
    deleted: AtomicBool,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Topic({})", self.name)
    }
}

impl Topic {
    /// A topic; `starting` holds delivery until [`Topic::start`].
    pub fn new(name: TopicName, node_id: u16, limits: ChannelLimits, starting: bool) -> Self {
        Topic {
            name,
            limits,
            state: Mutex::new(TopicState {
                channels: BTreeMap::new(),
                held: VecDeque::new(),
                held_deferred: Vec::new(),
                paused: false,
                starting,
                ids: IdGenerator::new(node_id),
                message_count: 0,
                message_bytes: 0,
            }),
            deleted: AtomicBool::new(false),
        }
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

    /// Publish bodies as new messages, all or none. `defer` holds them back
    /// from delivery for that long (DPUB).
    pub fn put(&self, bodies: Vec<Bytes>, defer: Option<Duration>) -> Result<(), PutError> {
        let n = bodies.len();
        let mut st = self.lock();
        if self.is_deleted() {
            return Err(PutError::Exiting);
        }
        let holding = st.channels.is_empty() || st.paused || st.starting;
        let fits = if holding {
            self.is_ephemeral()
                || st.held.len() + st.held_deferred.len() + n <= self.limits.mem_queue_size
        } else {
            st.channels
                .values()
                .all(|c| c.is_ephemeral() || c.room() >= n)
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
        match defer.filter(|d| !d.is_zero()) {
            Some(delay) => {
                let due = Instant::now() + delay;
                if holding {
                    st.held_deferred.extend(msgs.into_iter().map(|m| (m, due)));
                } else {
                    for c in st.channels.values() {
                        for m in &msgs {
                            c.put_deferred(m.clone(), due);
                        }
                    }
                }
            }
            None if holding => {
                // An ephemeral topic drops what does not fit, as upstream does.
                let keep = if self.is_ephemeral() {
                    self.limits.mem_queue_size.saturating_sub(st.held.len())
                } else {
                    n
                };
                st.held.extend(msgs.into_iter().take(keep));
            }
            None => {
                for c in st.channels.values() {
                    c.put(&msgs);
                }
            }
        }
        Ok(())
    }

    /// The channel of that name, created if missing. Returns whether it was
    /// created. The first channel receives everything the topic held.
    pub fn get_or_create_channel(&self, name: &ChannelName) -> (Arc<Channel>, bool) {
        let mut st = self.lock();
        if let Some(c) = st.channels.get(name) {
            return (c.clone(), false);
        }
        let channel = Arc::new(Channel::new(self.name.clone(), name.clone(), self.limits));
        st.channels.insert(name.clone(), channel.clone());
        if !st.paused && !st.starting {
            release_held(&mut st);
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
        if !st.starting {
            release_held(&mut st);
        }
    }

    /// Begin delivery (see `starting` in [`Topic::new`]).
    pub fn start(&self) {
        let mut st = self.lock();
        st.starting = false;
        if !st.paused {
            release_held(&mut st);
        }
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Drop what the topic itself holds (not its channels' messages).
    pub fn empty(&self) {
        let mut st = self.lock();
        st.held.clear();
        st.held_deferred.clear();
    }

    /// Take what the topic holds, for writing to disk at shutdown.
    pub fn drain_held(&self) -> Vec<Message> {
        let mut st = self.lock();
        let mut out: Vec<Message> = st.held.drain(..).collect();
        out.extend(st.held_deferred.drain(..).map(|(m, _)| m));
        out
    }

    pub fn stats(&self) -> (TopicStats, Vec<(ChannelName, ChannelStats)>) {
        let st = self.lock();
        let topic = TopicStats {
            depth: (st.held.len() + st.held_deferred.len()) as u64,
            backend_depth: 0,
            message_count: st.message_count,
            message_bytes: st.message_bytes,
            paused: st.paused,
        };
        let channels = st
            .channels
            .iter()
            .map(|(n, c)| (n.clone(), c.stats()))
            .collect();
        (topic, channels)
    }
}

/// Hand what the topic held to its channels, if it has any now.
fn release_held(st: &mut TopicState) {
    if st.channels.is_empty() {
        return;
    }
    if !st.held.is_empty() {
        let held: Vec<Message> = st.held.drain(..).collect();
        for c in st.channels.values() {
            c.put(&held);
        }
    }
    for (m, due) in st.held_deferred.drain(..) {
        for c in st.channels.values() {
            c.put_deferred(m.clone(), due);
        }
    }
}
