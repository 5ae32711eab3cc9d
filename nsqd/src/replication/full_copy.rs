//! The full copy a peer gets when its link (re)connects: every topic's and
//! channel's state and every unfinished message, from memory and from the
//! disk queues they spilled to.
//!
//! Messages move while the copy is taken (disk to memory as a backlog is
//! read, topic to channel as the topic pumps), so the order is chosen to
//! lose none, only to copy some twice (the holder keeps one per id): the
//! live stream is on before anything is copied; memory is copied, then each
//! disk queue (a topic's before its channels'), then memory again, which
//! catches what was read from disk meanwhile. A disk queue is peeked
//! through its I/O thread in job order, so every write sent before is seen.

use std::collections::BTreeMap;

use std::sync::Arc;

use nsq_protocol::{ChannelName, TopicName};
use tokio::time::Instant;

use super::link::{Outbox, PeerLink};
use super::return_filter::ReturnFilter;
use super::wire::{MetaOp, WireMessage};
use crate::channel::Channel;
use crate::disk_io::QueueHandle;
use crate::disk_queue::Position;
use crate::message::{unix_nanos, Message};
use crate::nsqd::Nsqd;

/// Payload bytes one peek at a disk queue returns (about).
const PEEK_BYTES: u64 = 4 << 20;

/// Why the disk part of a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("link replaced during the full copy")]
    Replaced,
    #[error("disk queue {queue} could not be read for the full copy - {source}")]
    Disk {
        queue: String,
        source: std::io::Error,
    },
}

/// Queue the records that rebuild this node's state on a peer: topics'
/// pause state, channels, and every message held in memory. Returns how
/// many messages were copied.
pub(super) fn copy_memory(nsqd: &Nsqd, filter: &ReturnFilter, o: &mut Outbox) -> u64 {
    let now = Instant::now();
    let wall = unix_nanos();
    let due_of = |at: Option<Instant>| {
        at.map_or(0, |at| {
            wall.saturating_add(at.saturating_duration_since(now).as_nanos() as i64)
        })
    };
    let mut copied = 0u64;
    for topic in nsqd.topics_snapshot() {
        if topic.is_ephemeral() {
            continue;
        }
        let name = &topic.name;
        if topic.is_paused() {
            o.push_meta(MetaOp::TopicPause, name, None);
        }
        let channels: Vec<_> = topic
            .channels()
            .into_iter()
            .filter(|c| !c.is_ephemeral())
            .collect();
        for c in &channels {
            o.push_meta(MetaOp::ChannelCreate, name, Some(&c.name));
            if c.is_paused() {
                o.push_meta(MetaOp::ChannelPause, name, Some(&c.name));
            }
        }
        let mut groups = vec![(None, topic.held_in_memory())];
        for c in &channels {
            groups.push((Some(&c.name), c.messages_in_memory()));
        }
        for (channel, msgs) in groups {
            let timed = msgs.into_iter().map(|(m, at)| (m, due_of(at)));
            copied += push_by_due(o, filter, name, channel, timed);
        }
    }
    copied
}

/// Queue every message that spilled to a disk queue, a few MiB at a time,
/// each batch once the peer acknowledged the one before the last.
pub(super) async fn copy_disk(
    nsqd: &Nsqd,
    filter: &ReturnFilter,
    link: &PeerLink,
    conn: u64,
) -> Result<u64, CopyError> {
    let mut copied = 0u64;
    for topic in nsqd.topics_snapshot() {
        if topic.is_ephemeral() {
            continue;
        }
        let mut queues: Vec<(Option<Arc<Channel>>, QueueHandle)> = Vec::new();
        queues.extend(topic.disk_queue().map(|q| (None, q)));
        for c in topic.channels().into_iter().filter(|c| !c.is_ephemeral()) {
            queues.extend(c.disk_queue().map(|q| (Some(c.clone()), q)));
        }
        for (channel, queue) in queues {
            // Peeking at a deleted queue would open (create) it again.
            let gone = || topic.is_deleted() || channel.as_ref().is_some_and(|c| c.is_deleted());
            let name = channel.as_ref().map(|c| &c.name);
            copied += copy_queue(filter, link, conn, &topic.name, name, &queue, gone).await?;
        }
    }
    Ok(copied)
}

async fn copy_queue(
    filter: &ReturnFilter,
    link: &PeerLink,
    conn: u64,
    topic: &TopicName,
    channel: Option<&ChannelName>,
    queue: &QueueHandle,
    gone: impl Fn() -> bool,
) -> Result<u64, CopyError> {
    let mut from = Position::default();
    let mut copied = 0;
    let mut previous = None;
    loop {
        if gone() {
            return Ok(copied);
        }
        let (records, next) =
            queue
                .peek(from, PEEK_BYTES)
                .await
                .map_err(|source| CopyError::Disk {
                    queue: queue.name().to_string(),
                    source,
                })?;
        let msgs = records.iter().filter_map(Message::decode_disk);
        let sent = {
            let mut o = link.lock();
            if o.conn != conn {
                return Err(CopyError::Replaced);
            }
            copied += push_by_due(&mut o, filter, topic, channel, msgs);
            o.seq
        };
        link.wake.notify_one();
        // At most two batches unacknowledged: memory stays bounded.
        if let Some(seq) = previous.replace(sent) {
            if !link.acked_through(conn, seq).await {
                return Err(CopyError::Replaced);
            }
        }
        match next {
            Some(p) => from = p,
            None => return Ok(copied),
        }
    }
}

/// Queue `msgs` (with their due times) as Appends, one group per due time,
/// leaving out what a peer took over. Returns how many were queued.
fn push_by_due(
    o: &mut Outbox,
    filter: &ReturnFilter,
    topic: &TopicName,
    channel: Option<&ChannelName>,
    msgs: impl Iterator<Item = (Message, i64)>,
) -> u64 {
    let mut by_due: BTreeMap<i64, Vec<WireMessage>> = BTreeMap::new();
    let mut n = 0;
    for (m, due) in msgs {
        if !filter.contains(topic, m.id) {
            by_due.entry(due).or_default().push(WireMessage::from(&m));
            n += 1;
        }
    }
    for (due, ms) in by_due {
        o.push_copy(topic, channel, due, ms);
    }
    n
}
