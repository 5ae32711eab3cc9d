//! Where a shadow's copies go: into memory up to its bound (a batch as
//! runs of it, `held_set.rs`), the rest into the channel's spill queue.

use nsq_protocol::{ChannelName, TopicName};

use super::super::batch::Batch;
use super::super::held_set::HeldSet;
use super::super::spill::{FinishedSet, Held, Spill, SpillTo};

/// What placing messages added: in memory (count, bytes) and spilled.
#[derive(Default)]
pub(super) struct Added {
    pub msgs: u64,
    pub bytes: u64,
    pub spilled: u64,
}

impl Added {
    pub fn plus(&mut self, a: Added) {
        self.msgs += a.msgs;
        self.bytes += a.bytes;
        self.spilled += a.spilled;
    }
}

/// Put `msgs` into `mem` up to the memory bound, the rest into `spill`
/// (opened on first use as `topic`'s `channel` queue).
pub(super) fn place(
    mem: &mut HeldSet,
    spill: &mut Option<Spill>,
    to: Option<&SpillTo>,
    (topic, channel): (&TopicName, Option<&ChannelName>),
    msgs: impl Iterator<Item = Held>,
) -> Added {
    let mut added = Added::default();
    let limit = to.map_or(usize::MAX, |s| s.mem_limit);
    let mut over = Vec::new();
    for h in msgs {
        if mem.len() >= limit {
            if !mem.contains_key(&h.msg.id) {
                over.push(h);
            }
        } else if !mem.contains_key(&h.msg.id) {
            added.msgs += 1;
            added.bytes += h.msg.body.len() as u64;
            mem.insert(h.msg.id, h);
        }
    }
    if let (Some(to), false) = (to, over.is_empty()) {
        added.spilled = over.len() as u64;
        spill
            .get_or_insert_with(|| Spill::open(to, topic, channel, FinishedSet::default()))
            .write(&over);
    }
    added
}

/// [`place`] for a batch: a run of it in memory while there is room
/// (`skip` names messages to leave out), the rest spilled.
pub(super) fn place_batch(
    mem: &mut HeldSet,
    spill: &mut Option<Spill>,
    to: Option<&SpillTo>,
    names: (&TopicName, Option<&ChannelName>),
    (batch, due): (&Batch, i64),
    skip: impl Fn(u64) -> bool,
) -> Added {
    let limit = to.map_or(usize::MAX, |s| s.mem_limit);
    let fit = limit.saturating_sub(mem.len()).min(batch.len());
    let (msgs, bytes) = mem.append(batch, 0..fit, due, &skip);
    let mut added = Added {
        msgs,
        bytes,
        spilled: 0,
    };
    if fit < batch.len() {
        let rest = (fit..batch.len())
            .filter(|&i| !skip(batch.id(i)))
            .map(|i| Held {
                msg: batch.message(i),
                due,
            });
        added.plus(place(mem, spill, to, names, rest));
    }
    added
}
