//! The filter a returning node applies so it does not deliver again what
//! its peer took over while it was away.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nsq_protocol::TopicName;
use tracing::{info, warn};

use crate::channel::Channel;
use crate::message::Message;

/// Most taken-over ids a returning node remembers (a hostile peer cannot
/// make it hold more).
const MAX_FILTER_IDS: usize = 8 << 20;

/// Ids a peer took over while this node was away: their copies here are
/// dropped (FINished) when they come up for delivery.
#[derive(Default)]
pub struct ReturnFilter {
    /// Set once anything was added, so delivery skips the lock otherwise.
    active: AtomicBool,
    /// Locked by delivery (after a take, outside the channel's lock) and by
    /// the link when a peer reports a takeover.
    ids: Mutex<(HashMap<TopicName, HashSet<u64>>, usize)>,
}

impl ReturnFilter {
    pub fn add(&self, topic: &TopicName, ids: &[u64]) {
        let mut g = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let (map, count) = &mut *g;
        let room = MAX_FILTER_IDS.saturating_sub(*count);
        if ids.len() > room {
            warn!(topic = %topic, "REPLICATION: too many taken-over ids; {} not remembered", ids.len() - room);
        }
        let set = map.entry(topic.clone()).or_default();
        for id in ids.iter().take(room) {
            if set.insert(*id) {
                *count += 1;
            }
        }
        self.active.store(true, Ordering::Release);
    }

    pub fn contains(&self, topic: &TopicName, id: u64) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        let g = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        g.0.get(topic).is_some_and(|s| s.contains(&id))
    }

    /// Remove from `batch` (and FIN) what was taken over; returns those ids.
    pub fn apply(&self, channel: &Channel, client_id: u64, batch: &mut Vec<Message>) -> Vec<u64> {
        if !self.active.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut dropped = Vec::new();
        {
            let g = self.ids.lock().unwrap_or_else(|e| e.into_inner());
            let Some(set) = g.0.get(&channel.topic_name) else {
                return dropped;
            };
            batch.retain(|m| {
                let taken = set.contains(&m.id);
                if taken {
                    dropped.push(m.id);
                }
                !taken
            });
        }
        for id in &dropped {
            let _ = channel.finish(client_id, *id);
        }
        if !dropped.is_empty() {
            info!(topic = %channel.topic_name, channel = %channel.name, count = dropped.len(), "REPLICATION: dropped messages a peer took over");
        }
        dropped
    }
}
