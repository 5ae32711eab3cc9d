//! Reading nsqd's JSON stats (`/stats?format=json`): the entry of one topic, one channel, and
//! every client, for tests that check what nsqd reports; and creating topics and channels and
//! publishing over HTTP for tests that only need them there.

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

    /// Assert nothing of `topic`/`channel` is left queued or in flight.
    pub fn assert_channel_drained(&self, topic: &str, channel: &str) {
        let ch = self.channel_stats(topic, channel);
        assert_eq!(ch["depth"], 0, "{ch}");
        assert_eq!(ch["in_flight_count"], 0, "{ch}");
    }

    /// Create `topic` over HTTP, failing the test (with nsqd's logs) unless nsqd answers 200.
    pub fn create_topic(&self, topic: &str) {
        self.post_ok(&format!("/topic/create?topic={topic}"), b"");
    }

    /// Create `topic` and its `channel` over HTTP, failing the test unless both answer 200.
    pub fn create_channel(&self, topic: &str, channel: &str) {
        self.create_topic(topic);
        self.post_ok(
            &format!("/channel/create?topic={topic}&channel={channel}"),
            b"",
        );
    }

    /// POST `body` to `target`, failing the test (with nsqd's logs) unless nsqd answers 200.
    pub fn post_ok(&self, target: &str, body: &[u8]) {
        let r = self.http_post(target, body);
        if r.status != 200 {
            self.fail(&format!("{target}: {} {}", r.status, r.text()));
        }
    }

    /// Publish `bodies` to `topic` with one HTTP `/mpub` (newline-separated, so no body may
    /// hold a newline), for tests whose subject is not the publishing.
    pub fn mpub<B: AsRef<[u8]>>(&self, topic: &str, bodies: impl IntoIterator<Item = B>) {
        let mut joined = Vec::new();
        for body in bodies {
            let body = body.as_ref();
            assert!(
                !body.contains(&b'\n'),
                "an /mpub body holds a newline: {body:?}"
            );
            joined.extend_from_slice(body);
            joined.push(b'\n');
        }
        self.post_ok(&format!("/mpub?topic={topic}"), &joined);
    }

    /// Every client this nsqd lists for `topic` (subscribers and publishers).
    pub fn clients(&self, topic: &str) -> Vec<Value> {
        clients_in(&self.stats_of(topic))
    }
}
