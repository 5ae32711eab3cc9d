//! Server-side max attempts: a message whose deliveries reach the channel's
//! limit is not redelivered but moved to a dead-letter topic. The channel
//! only sets such messages aside (under its lock); nsqd publishes them to the
//! dead-letter topic afterwards, outside every channel lock, so the topic
//! lock is never taken inside a channel lock.
//!
//! Dead-letter topics may not form a loop (A's dead letters to B, B's back
//! to A): republished messages start with fresh attempts, so one failing
//! message would go round for ever, copied to every channel on the way.
//! Setting a limit that would close a loop is refused ([`leads_back`]).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use nsq_protocol::names::{EPHEMERAL_SUFFIX, MAX_NAME_LEN};
use nsq_protocol::TopicName;

use super::{Channel, ChannelState};
use crate::message::Message;

/// `<topic>.dead`.
const SUFFIX: &str = ".dead";

/// A channel's delivery limits, kept in `nsqd.dat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Deliveries after which a message goes to the dead-letter topic
    /// instead of back to the channel; 0 means no limit (upstream's way).
    pub max_attempts: u16,
    /// Where exhausted messages go; `None` means [`default_topic`].
    pub dead_letter_topic: Option<TopicName>,
}

/// What `/stats` shows about dead letters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterStats {
    pub options: ChannelOptions,
    /// Messages moved to the dead-letter topic since start.
    pub dead_count: u64,
}

/// Held while a channel's dead-letter topic is checked and set, so two
/// changes that each look fine alone cannot close a loop together.
pub static CONFIGURING: Mutex<()> = Mutex::new(());

/// Whether dead letters moved from topic `from` into `to` could come back
/// to `from`, following `targets` (the dead-letter topics of a topic's
/// channels that have a limit).
pub fn leads_back(
    from: &TopicName,
    to: &TopicName,
    targets: impl Fn(&TopicName) -> Vec<TopicName>,
) -> bool {
    let mut seen = HashSet::new();
    let mut todo = vec![to.clone()];
    while let Some(t) = todo.pop() {
        if &t == from {
            return true;
        }
        if seen.insert(t.clone()) {
            todo.extend(targets(&t));
        }
    }
    false
}

/// `<topic>.dead`, with the topic cut so the name fits the 64-byte limit. An
/// ephemeral topic's dead letters go to a durable topic: they are kept for
/// someone to look at, which is their whole point.
pub fn default_topic(topic: &TopicName) -> TopicName {
    let base = topic
        .as_str()
        .strip_suffix(EPHEMERAL_SUFFIX)
        .unwrap_or(topic.as_str());
    let keep = base.len().min(MAX_NAME_LEN - SUFFIX.len());
    format!("{}{SUFFIX}", &base[..keep])
        .parse()
        .unwrap_or_else(|_| topic.clone())
}

/// A channel's dead-letter state, under the channel's lock: the options,
/// and the exhausted messages set aside until nsqd publishes them.
#[derive(Default)]
pub(super) struct DeadLetters {
    pub options: ChannelOptions,
    /// Exhausted messages waiting to be published to the dead-letter topic.
    dead: Vec<Message>,
    count: u64,
}

impl DeadLetters {
    /// Whether a message that failed (REQ or timeout) has used up its
    /// attempts and must not go back.
    pub fn exhausted(&self, msg: &Message) -> bool {
        let max = self.options.max_attempts;
        max > 0 && msg.attempts >= max
    }

    /// Set an exhausted message aside for the dead-letter topic.
    pub fn bury(&mut self, msg: Message) {
        self.count += 1;
        self.dead.push(msg);
    }

    pub fn take(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.dead)
    }

    pub fn stats(&self) -> DeadLetterStats {
        DeadLetterStats {
            options: self.options.clone(),
            dead_count: self.count,
        }
    }
}

impl Channel {
    pub fn options(&self) -> ChannelOptions {
        self.lock().dead.options.clone()
    }

    pub fn set_options(&self, options: ChannelOptions) {
        self.lock().dead.options = options;
    }

    pub fn dead_letter_stats(&self) -> DeadLetterStats {
        self.lock().dead.stats()
    }

    /// The topic this channel's exhausted messages go to.
    pub fn dead_letter_topic(&self) -> TopicName {
        self.lock()
            .dead
            .options
            .dead_letter_topic
            .clone()
            .unwrap_or_else(|| default_topic(&self.topic_name))
    }

    /// Where this channel's exhausted messages go, when it has a limit.
    pub fn dead_letter_target(&self) -> Option<TopicName> {
        let st = self.lock();
        (st.dead.options.max_attempts > 0).then(|| {
            st.dead
                .options
                .dead_letter_topic
                .clone()
                .unwrap_or_else(|| default_topic(&self.topic_name))
        })
    }

    /// Messages set aside for the dead-letter topic since the last call.
    /// Costs one atomic load when there are none.
    pub fn take_dead(&self) -> Vec<Message> {
        // A plain load, not a swap: this runs on every REQ and scan.
        if !self.has_dead.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut st = self.lock();
        // Cleared under the lock that sets it, so no message is missed.
        self.has_dead.store(false, Ordering::Release);
        st.dead.take()
    }

    /// Seam: a failed message goes back (`Some`) unless it used up its
    /// attempts; then it is set aside for the dead-letter topic.
    pub(super) fn retry_or_bury(&self, st: &mut ChannelState, msg: Message) -> Option<Message> {
        if !st.dead.exhausted(&msg) {
            return Some(msg);
        }
        if let Some(job) = st.job.as_mut() {
            job.dead(&msg);
        }
        st.dead.bury(msg);
        self.has_dead.store(true, Ordering::Release);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_fit_the_limit() {
        let t = |s: &str| s.parse::<TopicName>().unwrap();
        assert_eq!(default_topic(&t("orders")).as_str(), "orders.dead");
        assert_eq!(default_topic(&t("tmp#ephemeral")).as_str(), "tmp.dead");
        let long = "x".repeat(64);
        let dead = default_topic(&t(&long));
        assert_eq!(dead.as_str().len(), 64);
        assert_eq!(dead.as_str(), format!("{}.dead", "x".repeat(59)));
    }

    #[test]
    fn loops_are_found_through_any_number_of_topics() {
        let t = |s: &str| s.parse::<TopicName>().unwrap();
        // a -> b -> c, and d -> a.
        let edges = |x: &TopicName| -> Vec<TopicName> {
            match x.as_str() {
                "a" => vec![t("b")],
                "b" => vec![t("c"), t("b")],
                "d" => vec![t("a")],
                _ => vec![],
            }
        };
        assert!(leads_back(&t("c"), &t("a"), edges), "c -> a -> b -> c");
        assert!(leads_back(&t("a"), &t("a"), edges), "onto itself");
        assert!(!leads_back(&t("d"), &t("b"), edges));
        assert!(!leads_back(&t("x"), &t("d"), edges));
    }
}
