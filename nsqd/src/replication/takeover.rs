//! Takeover: turning a peer's shadow into this node's own messages when the
//! peer is gone (the other half, what a returning node skips, is
//! `return_filter.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::origin_state::OriginState;
use super::state::Replication;
use crate::channel::Channel;
use crate::message::{unix_nanos, IdGenerator, Message};
use crate::nsqd::Nsqd;

/// How often the holder checks whether a silent origin is due for takeover.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Take over every origin that has been silent for `--replica-takeover-after`.
pub async fn timer(repl: Arc<Replication>, nsqd: Arc<Nsqd>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = nsqd.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        for o in &repl.origins {
            let due = {
                let i = o.lock();
                !i.connected
                    && !i.taken_over
                    && i.incarnation != 0
                    && i.last_seen.elapsed() >= repl.cfg.takeover_after
            };
            if due {
                take_over(&nsqd, &repl, o, "unreachable");
            }
        }
    }
}

/// Move every unfinished message of `origin`'s shadow into this node's
/// topics and channels of the same names (created, so registered with
/// lookupd) under fresh ids. Returns how many messages were taken over.
pub fn take_over(nsqd: &Arc<Nsqd>, repl: &Replication, origin: &OriginState, why: &str) -> u64 {
    let topics = {
        let mut i = origin.lock();
        let topics = i.shadow.take_all();
        for (name, t) in &topics {
            let ids = i.taken.entry(name.clone()).or_default();
            ids.extend(t.held.keys());
            for c in t.channels.values() {
                ids.extend(c.msgs.keys());
                // Finished lately: a durable origin whose commit point
                // lagged would deliver these again after a crash.
                ids.extend(c.recently_finished());
            }
        }
        // (Spilled ones are counted as they are read back.)
        i.taken_messages += topics
            .values()
            .map(|t| t.held.len() + t.channels.values().map(|c| c.msgs.len()).sum::<usize>())
            .sum::<usize>() as u64;
        i.taken_over = true;
        i.takeovers += 1;
        i.journal_emptied();
        topics
    };
    warn!(peer = %origin.addr, "REPLICA {}: taking over its messages ({why})", origin.addr);
    // Fresh ids from a generator of their own (see `Replication::ids`).
    let mut ids = repl.ids.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let wall = unix_nanos();
    let mut total = 0u64;
    for (name, mut t) in topics {
        let topic = nsqd.get_topic(&name);
        let put_held = |held: Vec<super::shadow::Held>| {
            for h in held {
                let defer = (h.due > wall).then(|| Duration::from_nanos((h.due - wall) as u64));
                if let Err(e) = topic.put(vec![h.msg.body.clone()], defer) {
                    error!(topic = %name, "REPLICA {}: taken-over message not stored - {e}", origin.addr);
                }
            }
        };
        total += t.held.len() as u64;
        put_held(std::mem::take(&mut t.held).into_values().collect());
        if let Some(spill) = t.held_spill.take() {
            let mut taken = Vec::new();
            let read = spill.read_back(|step| {
                taken.extend(step.iter().map(|h| h.msg.id));
                put_held(step);
            });
            if let Err(e) = read {
                error!(topic = %name, "REPLICA {}: spilled messages not all read back - {e}", origin.addr);
            }
            total += taken.len() as u64;
            let mut i = origin.lock();
            i.taken_messages += taken.len() as u64;
            i.taken.entry(name.clone()).or_default().extend(taken);
        }
        for (cname, mut c) in t.channels {
            let (_, channel) = nsqd.get_topic_channel(&name, &cname);
            if c.paused && !channel.is_paused() {
                channel.pause();
                nsqd.metadata_changed();
            }
            total += c.msgs.len() as u64;
            put(
                &channel,
                std::mem::take(&mut c.msgs).into_values(),
                &mut ids,
                now,
                wall,
            );
            if let Some(spill) = c.spilled.take() {
                // Streamed from disk a step at a time, finished ones skipped.
                let mut taken = Vec::new();
                let read = spill.read_back(|step| {
                    taken.extend(step.iter().map(|h| h.msg.id));
                    put(&channel, step.into_iter(), &mut ids, now, wall);
                });
                if let Err(e) = read {
                    error!(topic = %name, channel = %cname, "REPLICA {}: spilled messages not all read back - {e}", origin.addr);
                }
                total += taken.len() as u64;
                let mut i = origin.lock();
                i.taken_messages += taken.len() as u64;
                i.taken.entry(name.clone()).or_default().extend(taken);
            }
        }
    }
    info!(peer = %origin.addr, messages = total, "REPLICA {}: took over {total} messages", origin.addr);
    total
}

fn put(
    channel: &Channel,
    held: impl Iterator<Item = super::shadow::Held>,
    ids: &mut IdGenerator,
    now: Instant,
    wall: i64,
) {
    let mut ready = Vec::new();
    for h in held {
        let mut m: Message = h.msg.to_message();
        m.id = ids.next_at(wall);
        m.attempts = 0;
        if h.due > wall {
            let at = now + Duration::from_nanos((h.due - wall) as u64);
            // Durable channels return a write; the takeover does not wait.
            let _ = channel.put_deferred(std::slice::from_ref(&m), at);
        } else {
            ready.push(m);
        }
    }
    if !ready.is_empty() {
        let _ = channel.put(&ready);
    }
}
