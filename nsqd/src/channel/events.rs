//! What a channel tells observers outside its state: the seam where
//! behaviour that only watches plugs in. The end-to-end latency stream
//! (`e2e.rs`) hears every FIN; a [`ChannelEvents`] implementation (the place
//! for replication) hears FINs and the channel's life: created, deleted,
//! paused, unpaused, emptied.
//!
//! Every call is made after the channel's lock is released (the topic's
//! too, for created and deleted), so an observer may take its own locks.

use std::sync::Arc;

use nsq_protocol::{ChannelName, TopicName};

use crate::e2e::E2eStream;
use crate::message::Message;

/// Observer of channel events. Every method defaults to doing nothing.
pub trait ChannelEvents: Send + Sync {
    /// A client FINished `msg`: it left the channel for good.
    fn finished(&self, _topic: &TopicName, _channel: &ChannelName, _msg: &Message) {}
    fn created(&self, _topic: &TopicName, _channel: &ChannelName) {}
    fn deleted(&self, _topic: &TopicName, _channel: &ChannelName) {}
    fn paused(&self, _topic: &TopicName, _channel: &ChannelName, _paused: bool) {}
    fn emptied(&self, _topic: &TopicName, _channel: &ChannelName) {}
}

/// The observer nsqd gives its channels, if any (cheap to clone).
#[derive(Clone, Default)]
pub struct Events(pub Option<Arc<dyn ChannelEvents>>);

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Events(on)"
        } else {
            "Events(off)"
        })
    }
}

impl Events {
    pub fn get(&self) -> Option<&dyn ChannelEvents> {
        self.0.as_deref()
    }
}

/// A channel's observers.
pub(super) struct Observers {
    /// End-to-end latency of FINished messages, when configured.
    pub e2e: Option<E2eStream>,
    pub events: Events,
}

impl Observers {
    pub fn finished(&self, topic: &TopicName, channel: &ChannelName, msg: &Message) {
        if let Some(s) = &self.e2e {
            s.record_finish(msg.timestamp);
        }
        if let Some(e) = self.events.get() {
            e.finished(topic, channel, msg);
        }
    }
}
