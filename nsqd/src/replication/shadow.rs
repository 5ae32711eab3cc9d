//! The holder's shadow of one origin: per topic and channel, the messages
//! the origin accepted and has not reported finished. Applying the origin's
//! records here is pure bookkeeping; nothing is delivered from a shadow
//! until a takeover turns it into this node's messages.

use std::collections::{BTreeMap, HashSet, VecDeque};

use nsq_protocol::{ChannelName, TopicName};

use super::batch::Batch;
use super::held_set::HeldSet;
pub use super::spill::Held;
use super::spill::{Drain, DrainCheck, FinishedSet, Spill, SpillTo};
use super::wire::MetaOp;
use place::{place, place_batch, Added};

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
    /// No id above this was ever in `recent` (so most appends need not
    /// look there).
    recent_max: u64,
}

/// Messages a spill still holds unfinished.
fn live(s: &Option<Spill>) -> u64 {
    s.as_ref().map_or(0, |s| s.finished.live())
}

/// Remove a spill's queue; what it held unfinished.
fn drop_spill(s: &mut Option<Spill>) -> u64 {
    s.take().map_or(0, |s| {
        let live = s.finished.live();
        s.delete();
        live
    })
}

impl ShadowChannel {
    /// Messages held, in memory and spilled.
    pub fn len(&self) -> usize {
        self.msgs.len() + live(&self.spilled) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids the origin reported finished lately.
    pub fn recently_finished(&self) -> impl Iterator<Item = &u64> {
        self.recent_order.iter()
    }

    /// Place copies of `msgs` (not those finished lately) in this copy.
    fn take_copies(
        &mut self,
        to: Option<&SpillTo>,
        topic: &TopicName,
        name: &ChannelName,
        msgs: impl Iterator<Item = Held>,
    ) -> Added {
        let ShadowChannel {
            msgs: mem,
            spilled,
            recent,
            ..
        } = self;
        let fresh = msgs.filter(|h| !recent.contains(&h.msg.id));
        place(mem, spilled, to, (topic, Some(name)), fresh)
    }

    /// Place copies of `batch`'s messages (not those finished lately).
    fn take_batch(
        &mut self,
        to: Option<&SpillTo>,
        topic: &TopicName,
        name: &ChannelName,
        (batch, due): (&Batch, i64),
    ) -> Added {
        let ShadowChannel {
            msgs: mem,
            spilled,
            recent,
            recent_max,
            ..
        } = self;
        let max = *recent_max;
        let skip = |id: u64| id <= max && recent.contains(&id);
        place_batch(mem, spilled, to, (topic, Some(name)), (batch, due), skip)
    }

    fn remember_finished(&mut self, id: u64) {
        self.recent_max = self.recent_max.max(id);
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
    /// What of that did not fit in memory.
    pub held_spill: Option<Spill>,
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
    /// Where channels and held sets past their memory bound spill.
    spill_to: Option<SpillTo>,
    /// Bumped by every change, so a save can tell whether anything did.
    changes: u64,
    /// Where drain checks go to be scanned off the link task (none: they
    /// are scanned at once).
    drains: Option<tokio::sync::mpsc::UnboundedSender<DrainCheck>>,
}

impl Shadow {
    /// Messages held (each channel's copy counts once).
    pub fn depth(&self) -> u64 {
        self.messages
    }

    /// Bytes of bodies held in memory.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn set_spill(&mut self, to: SpillTo) {
        self.spill_to = Some(to);
    }

    /// Scan spill queues that may be drained off the link task: checks go
    /// to `tx`, results come back through [`Shadow::drain_checked`].
    pub fn set_drain_checks(&mut self, tx: tokio::sync::mpsc::UnboundedSender<DrainCheck>) {
        self.drains = Some(tx);
    }

    /// What a drain check's scan found (`None`: unreadable).
    pub fn drain_checked(&mut self, check: DrainCheck, ids: Option<HashSet<u64>>) {
        self.changes += 1;
        let Some(ch) = self
            .topics
            .get_mut(&check.topic)
            .and_then(|t| t.channels.get_mut(&check.channel))
        else {
            return;
        };
        let before = live(&ch.spilled);
        match ch.spilled.as_mut() {
            Some(s) if s.is(&check) => {
                if s.checked(&check, ids) == Drain::Done {
                    drop_spill(&mut ch.spilled);
                }
            }
            _ => return,
        }
        let after = live(&ch.spilled);
        self.messages = self.messages.saturating_sub(before) + after;
    }

    pub fn changes(&self) -> u64 {
        self.changes
    }

    pub fn spill_to(&self) -> Option<&SpillTo> {
        self.spill_to.as_ref()
    }

    pub fn reset(&mut self) {
        for t in self.topics.values_mut() {
            drop_spill(&mut t.held_spill);
            for ch in t.channels.values_mut() {
                drop_spill(&mut ch.spilled);
            }
        }
        let (spill_to, drains) = (self.spill_to.take(), self.drains.take());
        *self = Shadow {
            spill_to,
            drains,
            changes: self.changes + 1,
            ..Shadow::default()
        };
    }

    fn add(&mut self, a: &Added) {
        self.messages += a.msgs + a.spilled;
        self.bytes += a.bytes;
    }

    /// Spilled messages of channels going away: their queues too.
    fn spill_gone(&mut self, chans: impl IntoIterator<Item = ShadowChannel>) -> Vec<Held> {
        let mut gone = Vec::new();
        for mut ch in chans {
            self.messages = self.messages.saturating_sub(drop_spill(&mut ch.spilled));
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
        msgs: &Batch,
        max_bytes: u64,
    ) -> Result<(), ShadowError> {
        if topic.is_ephemeral() || channel.is_some_and(|c| c.is_ephemeral()) {
            return Ok(());
        }
        self.changes += 1;
        if self.bytes > max_bytes {
            return Err(ShadowError::Full(self.bytes));
        }
        let to = self.spill_to.as_ref();
        let t = match self.topics.get_mut(topic) {
            Some(t) => t,
            None => self.topics.entry(topic.clone()).or_default(),
        };
        let batch = (msgs, due);
        let mut total = Added::default();
        match channel {
            Some(c) => {
                let ch = t.channels.entry(c.clone()).or_default();
                total.plus(ch.take_batch(to, topic, c, batch));
            }
            None if t.holding() => {
                let names = (topic, None);
                let held = &mut t.held;
                total.plus(place_batch(
                    held,
                    &mut t.held_spill,
                    to,
                    names,
                    batch,
                    |_| false,
                ));
            }
            None => {
                for (name, ch) in t.channels.iter_mut() {
                    total.plus(ch.take_batch(to, topic, name, batch));
                }
            }
        }
        self.add(&total);
        Ok(())
    }

    /// The origin's channel finished these messages.
    pub fn finish(&mut self, topic: &TopicName, channel: &ChannelName, ids: &[u64]) {
        self.changes += 1;
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
        let before = live(&ch.spilled);
        // Drained on the origin: the queue goes once a scan agrees (which
        // also corrects a count that copies spilled twice kept up).
        let check = ch.spilled.as_mut().filter(|_| spilled_done > 0);
        if let Some((s, check)) = check.and_then(|s| s.wants_check(topic, channel).map(|c| (s, c)))
        {
            match &self.drains {
                Some(tx) => {
                    if let Err(back) = tx.send(check) {
                        s.checked(&back.0, None);
                    }
                }
                None => {
                    let ids = s.ids_now();
                    if s.checked(&check, ids) == Drain::Done {
                        drop_spill(&mut ch.spilled);
                    }
                }
            }
        }
        let after = live(&ch.spilled);
        self.messages = self
            .messages
            .saturating_sub(spilled_done)
            .saturating_sub(before)
            + after;
        self.removed_all(gone.iter());
    }

    /// Mirror a topic or channel change made on the origin.
    pub fn meta(&mut self, op: MetaOp, topic: &TopicName, channel: Option<&ChannelName>) {
        self.changes += 1;
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
                    self.release(topic);
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
                if let Some(mut t) = self.topics.remove(topic) {
                    let spilled = drop_spill(&mut t.held_spill);
                    self.messages = self.messages.saturating_sub(spilled);
                    gone = self.spill_gone(t.channels.into_values());
                    gone.extend(t.held.into_values());
                }
            }
            (MetaOp::TopicEmpty, _) => {
                if let Some(t) = self.topics.get_mut(topic) {
                    let spilled = drop_spill(&mut t.held_spill);
                    gone.extend(std::mem::take(&mut t.held).into_values());
                    self.messages = self.messages.saturating_sub(spilled);
                }
            }
            (MetaOp::TopicPause | MetaOp::TopicUnpause, _) => {
                let t = self.topics.entry(topic.clone()).or_default();
                t.paused = op == MetaOp::TopicPause;
                self.release(topic);
            }
            // A channel operation without a channel: nothing to do.
            _ => {}
        }
        self.removed_all(gone.iter());
    }

    /// Once a topic stops holding, each of its channels gets a copy of
    /// what it held (what spilled is read back from its queue and placed
    /// like any append, then the queue goes); the topic's copy goes away.
    fn release(&mut self, topic: &TopicName) {
        let to = self.spill_to.clone();
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        if t.holding() || (t.held.is_empty() && t.held_spill.is_none()) {
            return;
        }
        let held = std::mem::take(&mut t.held);
        let spilled = t.held_spill.take();
        let gone = (
            held.len() as u64 + live(&spilled),
            held.values().map(|h| h.msg.body.len() as u64).sum::<u64>(),
        );
        let mut total = Added::default();
        let mut give = |t: &mut ShadowTopic, step: &[Held]| {
            for (name, ch) in t.channels.iter_mut() {
                total.plus(ch.take_copies(to.as_ref(), topic, name, step.iter().cloned()));
            }
        };
        give(t, &held.into_values().collect::<Vec<_>>());
        if let Some(s) = spilled {
            if let Err(e) = s.read_back(|step| give(t, &step)) {
                tracing::error!(topic = %topic, "REPLICA: a held copy spilled to disk was not all read back - {e}");
            }
        }
        self.messages = self.messages.saturating_sub(gone.0);
        self.bytes = self.bytes.saturating_sub(gone.1);
        self.add(&total);
    }

    /// A spilled queue a snapshot recorded: `channel`'s copy, or what
    /// `topic` holds (`None`), with what of it the origin had finished.
    pub fn restore_spill(
        &mut self,
        topic: &TopicName,
        channel: Option<&ChannelName>,
        finished: FinishedSet,
    ) {
        let Some(to) = self.spill_to.clone() else {
            return;
        };
        let t = self.topics.entry(topic.clone()).or_default();
        let slot = match channel {
            Some(c) => &mut t.channels.entry(c.clone()).or_default().spilled,
            None => &mut t.held_spill,
        };
        let old = live(slot);
        let s = Spill::open(&to, topic, channel, finished);
        let new = s.finished.live();
        *slot = Some(s);
        self.messages = self.messages.saturating_sub(old) + new;
    }

    /// Ids a snapshot recorded as finished in a spill queue it restored.
    pub fn restore_finished(
        &mut self,
        topic: &TopicName,
        channel: Option<&ChannelName>,
        ids: &[u64],
    ) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        let slot = match channel {
            Some(c) => t.channels.get_mut(c).map(|c| &mut c.spilled),
            None => Some(&mut t.held_spill),
        };
        if let Some(Some(s)) = slot {
            let n = ids.iter().filter(|id| s.finished.finish(**id)).count() as u64;
            self.messages = self.messages.saturating_sub(n);
        }
    }

    /// The spill queues in use, by name.
    pub fn spill_names(&self) -> HashSet<String> {
        let mut names = HashSet::new();
        for t in self.topics.values() {
            names.extend(t.held_spill.iter().map(|s| s.name().to_string()));
            for c in t.channels.values() {
                names.extend(c.spilled.iter().map(|s| s.name().to_string()));
            }
        }
        names
    }

    /// The results of the spill writes not yet waited for (a snapshot that
    /// counts on them waits for these first).
    pub fn take_spill_writes(
        &mut self,
    ) -> Vec<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
        let mut out = Vec::new();
        for t in self.topics.values_mut() {
            out.extend(t.held_spill.as_mut().and_then(|s| s.take_last_write()));
            for c in t.channels.values_mut() {
                out.extend(c.spilled.as_mut().and_then(|s| s.take_last_write()));
            }
        }
        out
    }

    /// Everything held, for a takeover; the shadow is left empty.
    pub fn take_all(&mut self) -> BTreeMap<TopicName, ShadowTopic> {
        self.messages = 0;
        self.bytes = 0;
        std::mem::take(&mut self.topics)
    }
}

mod place;
#[cfg(test)]
mod tests;
