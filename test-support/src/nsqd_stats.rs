//! Reading nsqd's JSON stats (`/stats?format=json`): the entry of one topic, one channel, and
//! every client, for tests that check what nsqd reports.

use serde_json::Value;

use crate::daemon::NsqdProcess;

/// The `topic` entry of a stats document, or Null.
pub fn topic_in(stats: &Value, topic: &str) -> Value {
    stats["topics"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["topic_name"] == topic))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The `channel` entry of `topic` in a stats document, or Null.
pub fn channel_in(stats: &Value, topic: &str, channel: &str) -> Value {
    topic_in(stats, topic)["channels"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["channel_name"] == channel))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Every client a stats document lists: each channel's subscribers, then the publishers.
pub fn clients_in(stats: &Value) -> Vec<Value> {
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for t in list(&stats["topics"]) {
        for c in list(&t["channels"]) {
            out.extend(list(&c["clients"]));
        }
    }
    out.extend(list(&stats["producers"]));
    out
}

/// The target asking nsqd for the stats of `topic` alone.
pub fn topic_stats_target(topic: &str) -> String {
    format!("/stats?format=json&topic={topic}")
}

impl NsqdProcess {
    /// This nsqd's JSON stats of `topic` alone.
    pub fn stats_of(&self, topic: &str) -> Value {
        self.http_get(&topic_stats_target(topic)).json()
    }

    /// The `topic` entry of this nsqd's stats, or Null.
    pub fn topic_stats(&self, topic: &str) -> Value {
        topic_in(&self.stats_of(topic), topic)
    }

    /// The `topic`/`channel` entry of this nsqd's stats, or Null.
    pub fn channel_stats(&self, topic: &str, channel: &str) -> Value {
        channel_in(&self.stats_of(topic), topic, channel)
    }

    /// Every client this nsqd lists for `topic` (subscribers and publishers).
    pub fn clients(&self, topic: &str) -> Vec<Value> {
        clients_in(&self.stats_of(topic))
    }
}
