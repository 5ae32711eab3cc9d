//! The holder's shadow of one origin: per topic and channel, the messages
//! the origin accepted and has not reported finished. Applying the origin's
//! records here is pure bookkeeping; nothing is delivered from a shadow
//! until a takeover turns it into this node's messages.

use std::collections::{BTreeMap, HashSet, VecDeque};

use nsq_protocol::{ChannelName, TopicName};

use super::held_set::HeldSet;
pub use super::spill::Held;
use super::spill::{Spill, SpillTo};
use super::wire::{MetaOp, WireMessage};

/// Recently finished ids a channel remembers, so an Append that arrives
/// after its message's Finish (the two are queued by different tasks)
/// does not leave a copy behind that nothing would ever remove.
const RECENT_FINISHED: usize = 65_536;

#[derive(Debug, Default)]
pub struct ShadowChannel {
    pub paused: bool,
    /// By id: ids grow with time, so this is publish order too.
    pub msgs: HeldSet,
    /// What did not fit in memory (`spill.rs`).
    pub spilled: Option<Spill>,
    recent: HashSet<u64>,
    recent_order: VecDeque<u64>,
}

impl ShadowChannel {
    /// Messages held, in memory and spilled.
    pub fn len(&self) -> usize {
        self.msgs.len()
            + self
                .spilled
                .as_ref()
                .map_or(0, |s| s.finished.live() as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn drop_spill(&mut self) -> u64 {
        self.spilled.take().map_or(0, |s| {
            let live = s.finished.live();
            s.delete();
            live
        })
    }

    /// Ids the origin reported finished lately.
    pub fn recently_finished(&self) -> impl Iterator<Item = &u64> {
        self.recent_order.iter()
    }

    fn remember_finished(&mut self, id: u64) {
        if self.recent.insert(id) {
            self.recent_order.push_back(id);
            if self.recent_order.len() > RECENT_FINISHED {
                if let Some(old) = self.recent_order.pop_front() {
                    self.recent.remove(&old);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct ShadowTopic {
    pub paused: bool,
    /// What the origin's topic holds itself (no channel yet, or paused).
    pub held: HeldSet,
    pub channels: BTreeMap<ChannelName, ShadowChannel>,
}

impl ShadowTopic {
    fn holding(&self) -> bool {
        self.channels.is_empty() || self.paused
    }
}

/// Why a record could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShadowError {
    #[error("shadow full ({0} bytes)")]
    Full(u64),
}

/// One origin's shadow. Owned by the holder's per-origin state behind its
/// Mutex (the link task applies records, takeover drains it, stats read it).
#[derive(Debug, Default)]
pub struct Shadow {
    pub topics: BTreeMap<TopicName, ShadowTopic>,
    messages: u64,
    bytes: u64,
    /// Where channels past their memory bound spill (non-durable holders).
    spill_to: Option<SpillTo>,
}

impl Shadow {
    /// Messages held (each channel's copy counts once).
    pub fn depth(&self) -> u64 {
        self.messages
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn set_spill(&mut self, to: SpillTo) {
        self.spill_to = Some(to);
    }

    pub fn reset(&mut self) {
        for t in self.topics.values_mut() {
            for ch in t.channels.values_mut() {
                ch.drop_spill();
            }
        }
        let spill_to = self.spill_to.take();
        *self = Shadow {
            spill_to,
            ..Shadow::default()
        };
    }

    /// Spilled messages of channels going away: their queues too.
    fn spill_gone(&mut self, chans: impl IntoIterator<Item = ShadowChannel>) -> Vec<Held> {
        let mut gone = Vec::new();
        for mut ch in chans {
            self.messages = self.messages.saturating_sub(ch.drop_spill());
            gone.extend(std::mem::take(&mut ch.msgs).into_values());
        }
        gone
    }

    fn removed(&mut self, h: &Held) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(h.msg.body.len() as u64);
    }

    fn removed_all<'a>(&mut self, it: impl Iterator<Item = &'a Held>) {
        for h in it {
            self.removed(h);
        }
    }

    /// New messages of `topic`: into `channel` only (a full copy names it),
    /// else into every channel, or held by the topic while it holds.
    pub fn append(
        &mut self,
        topic: &TopicName,
        channel: Option<&ChannelName>,
        due: i64,
        msgs: &[WireMessage],
        max_bytes: u64,
    ) -> Result<(), ShadowError> {
        if topic.is_ephemeral() || channel.is_some_and(|c| c.is_ephemeral()) {
            return Ok(());
        }
        if self.bytes > max_bytes {
            return Err(ShadowError::Full(self.bytes));
        }
        // Counted as they go in: (messages, bytes) newly held.
        let mut added = (0u64, 0u64);
        let t = match self.topics.get_mut(topic) {
            Some(t) => t,
            None => self.topics.entry(topic.clone()).or_default(),
        };
        let mut hold = |into: &mut HeldSet, m: &WireMessage| {
            if !into.contains_key(&m.id) {
                into.insert(
                    m.id,
                    Held {
                        msg: m.clone(),
                        due,
                    },
                );
                added.0 += 1;
                added.1 += m.body.len() as u64;
            }
        };
        let spill_to = self.spill_to.as_ref();
        let mut into_channel = |name: &ChannelName, ch: &mut ShadowChannel| {
            let mut spilled = Vec::new();
            for m in msgs.iter().filter(|m| !ch.recent.contains(&m.id)) {
                match spill_to {
                    Some(_) if ch.msgs.len() >= spill_to.map_or(0, |s| s.mem_limit) => {
                        if !ch.msgs.contains_key(&m.id) {
                            spilled.push(Held {
                                msg: m.clone(),
                                due,
                            });
                        }
                    }
                    _ => hold(&mut ch.msgs, m),
                }
            }
            if let (Some(to), false) = (spill_to, spilled.is_empty()) {
                ch.spilled
                    .get_or_insert_with(|| Spill::open(to, topic, name))
                    .write(&spilled);
            }
            spilled.len() as u64
        };
        let mut spilled = 0;
        match channel {
            Some(c) => {
                let ch = t.channels.entry(c.clone()).or_default();
                spilled += into_channel(c, ch);
            }
            None if t.holding() => {
                for m in msgs {
                    hold(&mut t.held, m);
                }
            }
            None => {
                for (name, ch) in t.channels.iter_mut() {
                    spilled += into_channel(name, ch);
                }
            }
        }
        self.messages += added.0 + spilled;
        self.bytes += added.1;
        Ok(())
    }

    /// The origin's channel finished these messages.
    pub fn finish(&mut self, topic: &TopicName, channel: &ChannelName, ids: &[u64]) {
        let Some(ch) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.channels.get_mut(channel))
        else {
            return;
        };
        let mut gone = Vec::new();
        let mut spilled_done = 0;
        for id in ids {
            if let Some(h) = ch.msgs.remove(id) {
                gone.push(h);
            } else if ch.spilled.as_mut().is_some_and(|s| s.finished.finish(*id)) {
                spilled_done += 1;
            }
            ch.remember_finished(*id);
        }
        self.messages = self.messages.saturating_sub(spilled_done);
        self.removed_all(gone.iter());
    }

    /// Mirror a topic or channel change made on the origin.
    pub fn meta(&mut self, op: MetaOp, topic: &TopicName, channel: Option<&ChannelName>) {
        if topic.is_ephemeral() || channel.is_some_and(|c| c.is_ephemeral()) {
            return;
        }
        let mut gone: Vec<Held> = Vec::new();
        match (op, channel) {
            (MetaOp::ChannelCreate, Some(c)) => {
                let t = self.topics.entry(topic.clone()).or_default();
                if !t.channels.contains_key(c) {
                    t.channels.insert(c.clone(), ShadowChannel::default());
                    // The origin's first channel receives what its topic held.
                    release(t);
                }
            }
            (MetaOp::ChannelDelete, Some(c)) => {
                if let Some(ch) = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.channels.remove(c))
                {
                    gone = self.spill_gone([ch]);
                }
            }
            (MetaOp::ChannelEmpty, Some(c)) => {
                if let Some(ch) = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.channels.get_mut(c))
                {
                    let emptied = ShadowChannel {
                        msgs: std::mem::take(&mut ch.msgs),
                        spilled: ch.spilled.take(),
                        ..ShadowChannel::default()
                    };
                    gone = self.spill_gone([emptied]);
                }
            }
            (MetaOp::ChannelPause | MetaOp::ChannelUnpause, Some(c)) => {
                let t = self.topics.entry(topic.clone()).or_default();
                t.channels.entry(c.clone()).or_default().paused = op == MetaOp::ChannelPause;
            }
            (MetaOp::TopicDelete, _) => {
                if let Some(t) = self.topics.remove(topic) {
                    gone = self.spill_gone(t.channels.into_values());
                    gone.extend(t.held.into_values());
                }
            }
            (MetaOp::TopicEmpty, _) => {
                if let Some(t) = self.topics.get_mut(topic) {
                    gone.extend(std::mem::take(&mut t.held).into_values());
                }
            }
            (MetaOp::TopicPause | MetaOp::TopicUnpause, _) => {
                let t = self.topics.entry(topic.clone()).or_default();
                t.paused = op == MetaOp::TopicPause;
                release(t);
            }
            // A channel operation without a channel: nothing to do.
            _ => {}
        }
        self.removed_all(gone.iter());
    }

    /// Everything held, for a takeover; the shadow is left empty.
    pub fn take_all(&mut self) -> BTreeMap<TopicName, ShadowTopic> {
        self.messages = 0;
        self.bytes = 0;
        std::mem::take(&mut self.topics)
    }
}

/// Once a topic stops holding, its channels get copies of what it held.
fn release(t: &mut ShadowTopic) {
    if t.holding() || t.held.is_empty() {
        return;
    }
    let held = std::mem::take(&mut t.held);
    let n = t.channels.len();
    // Counted once per channel copy; the topic's copy goes away.
    for (i, ch) in t.channels.values_mut().enumerate() {
        if i + 1 == n {
            ch.msgs.extend(held);
            break;
        }
        ch.msgs.extend(held.iter().map(|(k, v)| (*k, v.clone())));
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn m(id: u64) -> WireMessage {
        WireMessage {
            id,
            timestamp: 1,
            attempts: 0,
            body: Bytes::from_static(b"x"),
        }
    }

    fn t() -> TopicName {
        "t".parse().unwrap()
    }

    fn c(s: &str) -> ChannelName {
        s.parse().unwrap()
    }

    #[test]
    fn fan_out_and_finish_per_channel() {
        let mut s = Shadow::default();
        s.meta(MetaOp::ChannelCreate, &t(), Some(&c("a")));
        s.meta(MetaOp::ChannelCreate, &t(), Some(&c("b")));
        s.append(&t(), None, 0, &[m(1), m(2)], u64::MAX).unwrap();
        assert_eq!(s.depth(), 4);
        s.finish(&t(), &c("a"), &[1, 2]);
        s.finish(&t(), &c("b"), &[1]);
        assert_eq!(s.depth(), 1);
        assert!(s.topics[&t()].channels[&c("b")].msgs.contains_key(&2));
    }

    #[test]
    fn held_until_first_channel_then_released() {
        let mut s = Shadow::default();
        s.append(&t(), None, 0, &[m(1)], u64::MAX).unwrap();
        assert_eq!(s.topics[&t()].held.len(), 1);
        s.meta(MetaOp::ChannelCreate, &t(), Some(&c("a")));
        assert!(s.topics[&t()].held.is_empty());
        assert_eq!(s.topics[&t()].channels[&c("a")].msgs.len(), 1);
        assert_eq!(s.depth(), 1);
    }

    #[test]
    fn a_finish_before_its_append_leaves_nothing_behind() {
        let mut s = Shadow::default();
        s.meta(MetaOp::ChannelCreate, &t(), Some(&c("a")));
        s.finish(&t(), &c("a"), &[7]);
        s.append(&t(), None, 0, &[m(7)], u64::MAX).unwrap();
        assert_eq!(s.depth(), 0);
    }

    #[test]
    fn ephemeral_is_not_shadowed_and_delete_and_empty_drop() {
        let mut s = Shadow::default();
        let e: TopicName = "x#ephemeral".parse().unwrap();
        s.append(&e, None, 0, &[m(1)], u64::MAX).unwrap();
        assert_eq!(s.depth(), 0);
        s.meta(MetaOp::ChannelCreate, &t(), Some(&c("a")));
        s.append(&t(), None, 0, &[m(1), m(2)], u64::MAX).unwrap();
        s.meta(MetaOp::ChannelEmpty, &t(), Some(&c("a")));
        assert_eq!(s.depth(), 0);
        s.append(&t(), None, 0, &[m(3)], u64::MAX).unwrap();
        s.meta(MetaOp::TopicDelete, &t(), None);
        assert_eq!((s.depth(), s.bytes()), (0, 0));
    }

    #[test]
    fn full_shadow_refuses() {
        let mut s = Shadow::default();
        s.append(&t(), None, 0, &[m(1), m(2)], 1).unwrap();
        assert_eq!(
            s.append(&t(), None, 0, &[m(3)], 1),
            Err(ShadowError::Full(2))
        );
    }
}
