//! What survives a restart: `nsqd.dat` (the durable topics and channels,
//! their pause state and options) written when they change and read back at
//! start, and the disk queues reopened at start and filled at shutdown.

use std::sync::Arc;

use nsq_protocol::{ChannelName, TopicName};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{Error, Nsqd, Result};
use crate::metadata::{self, ChannelMeta, Metadata, TopicMeta};

impl Nsqd {
    /// Record that a topic or channel was created, deleted, paused or
    /// unpaused: the metadata writer saves the new state shortly.
    pub fn metadata_changed(&self) {
        self.metadata_progress.changed();
        self.metadata_dirty.notify_one();
    }

    /// What `nsqd.dat` holds: durable topics and channels and their pause state.
    pub fn metadata(&self) -> Metadata {
        let topics = self
            .topics_snapshot()
            .into_iter()
            .filter(|t| !t.is_ephemeral())
            .map(|t| {
                let channels: Vec<ChannelMeta> = t
                    .channels()
                    .into_iter()
                    .filter(|c| !c.is_ephemeral())
                    .map(|c| {
                        let o = c.options();
                        ChannelMeta {
                            name: c.name.to_string(),
                            paused: c.is_paused(),
                            max_attempts: o.max_attempts,
                            dead_letter_topic: o.dead_letter_topic.map(|t| t.to_string()),
                        }
                    })
                    .collect();
                TopicMeta {
                    name: t.name.to_string(),
                    paused: t.is_paused(),
                    channels: (!channels.is_empty()).then_some(channels),
                }
            })
            .collect();
        Metadata {
            topics,
            version: nsq_protocol::VERSION.to_string(),
        }
    }

    /// Save `nsqd.dat`; false (logged) when that failed.
    pub(crate) fn write_metadata(&self) -> bool {
        let changes = self.metadata_progress.current();
        info!(
            "NSQ: persisting topic/channel metadata to {}",
            self.data_path.join(metadata::FILE_NAME).display()
        );
        match metadata::store(&self.data_path, &self.metadata()) {
            Ok(()) => {
                self.metadata_progress.saved(changes);
                true
            }
            Err(e) => {
                error!("failed to persist metadata - {e}");
                false
            }
        }
    }

    /// Recreate what `nsqd.dat` lists.
    pub(super) fn restore(&self, meta: &Metadata) {
        let mut topics = self.topics();
        for tm in &meta.topics {
            let Ok(name) = tm.name.parse::<TopicName>() else {
                warn!("skipping topic {:?} from metadata: invalid name", tm.name);
                continue;
            };
            let topic = self.new_topic(name.clone(), false);
            for cm in tm.channels.iter().flatten() {
                let Ok(cname) = cm.name.parse::<ChannelName>() else {
                    warn!("skipping channel {:?} from metadata: invalid name", cm.name);
                    continue;
                };
                let (c, _) = topic.get_or_create_channel(&cname);
                if cm.paused {
                    c.pause();
                }
                c.set_options(crate::channel::ChannelOptions {
                    max_attempts: cm.max_attempts,
                    dead_letter_topic: cm.dead_letter_topic.as_ref().and_then(|t| t.parse().ok()),
                });
            }
            if tm.paused {
                topic.pause();
            }
            topics.insert(name, topic);
        }
    }

    /// Reopen the disk queues of restored topics and channels and learn
    /// how much each holds.
    pub(super) async fn reopen_disk_queues(&self) -> Result<()> {
        for topic in self.topics_snapshot() {
            for (channel, handle) in topic.disk_queues() {
                let depth = handle.depth().await?;
                match channel {
                    Some(c) => c.set_on_disk(depth),
                    None => topic.set_on_disk(depth),
                }
                if depth > 0 {
                    info!(queue = handle.name(), depth, "disk queue reopened");
                }
            }
        }
        Ok(())
    }

    /// Write everything held in memory to disk and close the disk queues;
    /// an error counts what could not be stored.
    pub(crate) async fn flush_to_disk(self: &Arc<Self>) -> Result<()> {
        let (lost_before, _) = self.disk_io.losses();
        // A read under way could otherwise land in memory after it was
        // written out, and its records' read position be synced: lost.
        let nsqd = self.clone();
        let _ = tokio::task::spawn_blocking(move || nsqd.disk_io.stop_reads()).await;
        let now = Instant::now();
        let mut flushed = 0;
        for topic in self.topics_snapshot() {
            flushed += topic.flush_to_disk();
            for c in topic.channels() {
                flushed += c.flush_to_disk(now);
            }
        }
        let nsqd = self.clone();
        let _ = tokio::task::spawn_blocking(move || nsqd.disk_io.shutdown()).await;
        let (lost_after, queues) = self.disk_io.losses();
        let messages = lost_after.saturating_sub(lost_before);
        if messages > 0 || queues > 0 {
            return Err(Error::LostAtShutdown { messages, queues });
        }
        info!(messages = flushed, "memory queues written to disk");
        Ok(())
    }
}
