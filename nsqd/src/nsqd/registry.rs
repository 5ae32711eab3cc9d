//! nsqd's topics and channels: finding or creating them (a new topic waits
//! for the channels lookupd knows), deleting them, and ephemeral ones going
//! away with their last client; replicas and lookupd hear of each change.

use std::sync::Arc;

use nsq_protocol::{ChannelName, TopicName};
use tracing::{info, warn};

use super::Nsqd;
use crate::channel::Channel;
use crate::replica_hooks::MetaOp;
use crate::topic::Topic;

impl Nsqd {
    /// The topic of that name, created if missing. A topic created while
    /// lookupds are connected holds delivery until the channels they know for
    /// it exist here, as upstream does, so no channel misses a message.
    pub fn get_topic(self: &Arc<Self>, name: &TopicName) -> Arc<Topic> {
        let lookupds = self.lookup.http_addresses();
        let topic = {
            let mut topics = self.topics();
            if let Some(t) = topics.get(name) {
                return t.clone();
            }
            let starting = !lookupds.is_empty();
            let topic = self.new_topic(name.clone(), starting);
            topics.insert(name.clone(), topic.clone());
            topic
        };
        info!("TOPIC({name}): created");
        self.lookup.register(name, None);
        if !topic.is_ephemeral() {
            self.metadata_changed();
        }
        if !lookupds.is_empty() {
            let nsqd = self.clone();
            let t = topic.clone();
            self.tracker.spawn(async move {
                nsqd.create_channels_known_to_lookupd(&t, &lookupds).await;
                t.start();
            });
        }
        topic
    }

    async fn create_channels_known_to_lookupd(
        self: &Arc<Self>,
        topic: &Arc<Topic>,
        lookupds: &[String],
    ) {
        for addr in lookupds {
            let url = format!("http://{addr}/channels?topic={}", topic.name);
            info!("CI: querying nsqlookupd {url}");
            let names = match self.http_client.get(&url).await {
                Ok((200, body)) => serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("channels").cloned())
                    .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
                    .unwrap_or_default(),
                Ok((status, _)) => {
                    warn!(topic = %topic.name, "lookupd {addr} answered {status} for channels");
                    continue;
                }
                Err(e) => {
                    warn!(topic = %topic.name, "cannot query lookupd for channels: {e}");
                    continue;
                }
            };
            for name in names {
                match name.parse::<ChannelName>() {
                    Ok(c) if !c.is_ephemeral() => self.create_channel(topic, &c),
                    _ => {}
                }
            }
        }
    }

    /// The topic and channel of those names, created if missing.
    pub fn get_topic_channel(
        self: &Arc<Self>,
        topic: &TopicName,
        channel: &ChannelName,
    ) -> (Arc<Topic>, Arc<Channel>) {
        let t = self.get_topic(topic);
        let c = self.create_channel_inner(&t, channel);
        (t, c)
    }

    /// Create a channel of an existing topic (no-op if it exists).
    pub fn create_channel(&self, topic: &Topic, channel: &ChannelName) {
        self.create_channel_inner(topic, channel);
    }

    fn create_channel_inner(&self, topic: &Topic, channel: &ChannelName) -> Arc<Channel> {
        if topic.channel(channel.as_str()).is_none() {
            self.replica_changed(MetaOp::ChannelCreate, &topic.name, Some(channel));
        }
        let (c, created) = topic.get_or_create_channel(channel);
        if created {
            info!("TOPIC({}): new channel({channel})", topic.name);
            self.lookup.register(&topic.name, Some(channel));
            if !topic.is_ephemeral() && !c.is_ephemeral() {
                self.metadata_changed();
            }
        }
        c
    }

    /// Delete a channel: its clients are disconnected, its messages dropped.
    pub fn delete_channel(&self, topic: &Topic, channel: &str) -> Option<Arc<Channel>> {
        let c = topic.delete_channel(channel)?;
        info!("TOPIC({}): deleting channel {}", topic.name, c.name);
        info!("CHANNEL({}): deleting", c.name);
        self.replica_changed(MetaOp::ChannelDelete, &topic.name, Some(&c.name));
        self.channel_gone(topic, &c);
        Some(c)
    }

    fn channel_gone(&self, topic: &Topic, c: &Channel) {
        for client in c.clients() {
            client.close();
        }
        c.empty();
        c.delete_disk();
        self.lookup.unregister(&topic.name, Some(&c.name));
        if !topic.is_ephemeral() && !c.is_ephemeral() {
            self.metadata_changed();
        }
    }

    /// Tell the replicas (if any) of a topic or channel change.
    pub fn replica_changed(&self, op: MetaOp, topic: &TopicName, channel: Option<&ChannelName>) {
        if let Some(r) = &self.replicas {
            r.changed(op, topic, channel);
        }
    }

    /// The topic of that name, if it exists.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics().get(name).cloned()
    }

    /// Every topic, sorted by name.
    pub fn topics_snapshot(&self) -> Vec<Arc<Topic>> {
        self.topics().values().cloned().collect()
    }

    /// Delete a topic and its channels; their clients are disconnected.
    pub fn delete_topic(&self, name: &str) -> Option<Arc<Topic>> {
        let t = self.topics().remove(name)?;
        t.mark_deleted();
        info!("TOPIC({name}): deleting");
        self.replica_changed(MetaOp::TopicDelete, &t.name, None);
        for c in t.channels() {
            if let Some(c) = t.delete_channel(c.name.as_str()) {
                self.channel_gone(&t, &c);
            }
        }
        t.empty();
        t.delete_disk();
        self.lookup.unregister(&t.name, None);
        if !t.is_ephemeral() {
            self.metadata_changed();
        }
        Some(t)
    }

    /// A client left `channel`: its in-flight messages go back at once, and
    /// an ephemeral channel (then an ephemeral topic) left without clients
    /// goes away.
    pub(crate) fn client_left_channel(&self, channel: &Arc<Channel>, client_id: u64) {
        let left = channel.remove_client(client_id);
        if left > 0 || !channel.is_ephemeral() {
            return;
        }
        let Some(topic) = self.topic(channel.topic_name.as_str()) else {
            return;
        };
        if topic.delete_channel_if_unused(channel) {
            // Upstream's texts: the channel's delete callback deletes it as an
            // API call would.
            info!("TOPIC({}): deleting channel {}", topic.name, channel.name);
            info!("CHANNEL({}): deleting", channel.name);
            self.lookup.unregister(&topic.name, Some(&channel.name));
        }
        if topic.is_ephemeral() {
            let removed = {
                let mut topics = self.topics();
                let same = topics
                    .get(&topic.name)
                    .is_some_and(|t| Arc::ptr_eq(t, &topic));
                same && topic.channel_count() == 0 && topics.remove(&topic.name).is_some()
            };
            if removed {
                topic.mark_deleted();
                info!("TOPIC({}): deleting", topic.name);
                self.lookup.unregister(&topic.name, None);
            }
        }
    }
}
