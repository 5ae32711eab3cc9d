//! Job-shard dispatch on a channel: workers that declared a capacity at
//! IDENTIFY are given shards by load instead of taking the queue's front.
//!
//! Pending shards are handed out heaviest first, each to the eligible worker
//! (room for the shard's load, RDY room for one more message) with the lowest
//! in-flight load of this job, then the lowest in-flight load over all its
//! jobs on this nsqd, then the worker that ran that item last. A worker never
//! holds more load than its capacity. Delivery stays pull-based: the worker
//! whose writer asks runs the assignment for everyone, takes its own share and
//! wakes the others to take theirs (they recompute on the same state, so they
//! find the same shards).
//!
//! The seam: the channel holds an `Option<Box<JobState>>` (set once shards
//! or a worker arrive) and calls its methods under the channel's lock. This
//! module never sees the channel's state: `pick` reads the queue's front
//! window and names the messages; the channel moves them into flight (its
//! one `start`) and reports them back with `started`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nsq_protocol::job::{is_shard, peek_load, Shard};
use serde::Serialize;
use tokio::time::Instant;

use super::IdMap;
use crate::backlog::Queue;
use crate::client::Client;
use crate::message::Message;

mod status;
pub(super) use status::View;
pub use status::{FireStatus, JobStatus, ShardStatus, WorkerStatus};

/// How far into the queue dispatch looks for the heaviest shards: a job
/// fire is thousands of shards at most; a deeper backlog is served in order.
const WINDOW: usize = 4096;
/// Fires whose finished shards are remembered for status, per channel.
const MAX_FIRES: usize = 64;

/// nsqd-wide job settings (`--job-settle-time`, `--job-min-workers`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JobLimits {
    /// Job channels hold dispatch until this instant (nsqd start plus the
    /// settle time) unless `min_workers` workers joined earlier.
    pub settle_until: Option<Instant>,
    pub min_workers: usize,
}

struct WorkerSlot {
    client: Arc<Client>,
    /// In-flight load on this channel.
    load: u64,
    shards: u64,
    /// Set when one of its shards timed out: a hung worker holds nothing
    /// after its timeout and would otherwise look like the idlest worker and
    /// get its shards straight back. It gets none until this passes (one
    /// message timeout) or it FINs or REQs something, proof it is alive.
    quarantined_until: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Done,
    Dead,
}

#[derive(Debug, Clone, Serialize)]
struct Record {
    state: Outcome,
    attempts: u16,
    load: u32,
    param: String,
    /// The worker that finished it (done only).
    #[serde(skip_serializing_if = "Option::is_none")]
    worker: Option<String>,
}

#[derive(Default)]
struct FireBook {
    seq: u64,
    shards: BTreeMap<u32, Record>,
}

/// Job state of a channel.
pub(super) struct JobState {
    limits: JobLimits,
    /// Dispatch has started (settle window over or enough workers).
    settled: bool,
    workers: IdMap<WorkerSlot>,
    /// Load of each in-flight message given to a worker, by message ID.
    loads: IdMap<(u64, u64)>,
    /// Which worker (by name) last ran each item.
    last_ran: HashMap<u32, String>,
    /// Finished and dead shards of recent fires, for status.
    book: HashMap<String, FireBook>,
    fire_seq: u64,
}

impl JobState {
    fn new(limits: JobLimits) -> Self {
        JobState {
            limits,
            settled: false,
            workers: IdMap::default(),
            loads: IdMap::default(),
            last_ran: HashMap::new(),
            book: HashMap::new(),
            fire_seq: 0,
        }
    }

    /// Whether dispatch must still wait; settles for good once it need not.
    fn holding(&mut self, now: Instant) -> bool {
        if !self.settled {
            let window_over = self.limits.settle_until.is_none_or(|t| now >= t);
            let enough =
                self.limits.min_workers > 0 && self.workers.len() >= self.limits.min_workers;
            self.settled = window_over || enough;
        }
        !self.settled
    }

    fn record(&mut self, msg: &Message, state: Outcome, worker: Option<String>) {
        let Ok(h) = Shard::decode_header(&msg.body) else {
            return;
        };
        if !self.book.contains_key(h.fire) {
            if self.book.len() >= MAX_FIRES {
                let oldest = self
                    .book
                    .iter()
                    .min_by_key(|(_, f)| f.seq)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.book.remove(&k);
                }
            }
            self.fire_seq += 1;
            self.book.insert(
                h.fire.to_string(),
                FireBook {
                    seq: self.fire_seq,
                    shards: BTreeMap::new(),
                },
            );
        }
        if let Some(f) = self.book.get_mut(h.fire) {
            f.shards.insert(
                h.item,
                Record {
                    state,
                    attempts: msg.attempts,
                    load: h.load,
                    param: h.param.to_string(),
                    worker,
                },
            );
        }
    }
}

/// A message's load for dispatch: a shard's declared load, 1 for anything
/// else. A load of 0 counts as 1, so RDY and capacity stay meaningful.
fn load_of(msg: &Message) -> u64 {
    peek_load(&msg.body).map_or(1, |l| u64::from(l.load.max(1)))
}

impl JobState {
    /// Job state for a channel whose first messages are shards.
    pub fn for_messages(limits: JobLimits, msgs: &[Message]) -> Option<Box<JobState>> {
        msgs.first()
            .is_some_and(|m| is_shard(&m.body))
            .then(|| Box::new(JobState::new(limits)))
    }

    /// Job state for a channel a worker joins.
    pub fn for_worker(limits: JobLimits) -> Box<JobState> {
        Box::new(JobState::new(limits))
    }

    /// A client that declared a capacity subscribed. Returns true when
    /// enough workers have joined to end the settle window (the channel
    /// then wakes its idle clients).
    pub fn join(&mut self, client: &Arc<Client>, now: Instant) -> bool {
        self.workers.insert(
            client.id,
            WorkerSlot {
                client: client.clone(),
                load: 0,
                shards: 0,
                quarantined_until: None,
            },
        );
        !self.holding(now)
    }

    /// A client left (after its messages went back to the queue).
    pub fn leave(&mut self, client_id: u64) {
        if let Some(slot) = self.workers.remove(&client_id) {
            if let Some(w) = slot.client.job() {
                sub(&w.total, slot.load);
            }
        }
        self.loads.retain(|_, (owner, _)| *owner != client_id);
    }

    /// A message timed out on `client_id`: besides the release, the worker
    /// is quarantined until `until` (it held the message that long).
    pub fn timed_out(&mut self, client_id: u64, id: u64, until: Instant) {
        self.release(client_id, id);
        if let Some(slot) = self.workers.get_mut(&client_id) {
            slot.quarantined_until = Some(until);
        }
    }

    /// FIN or REQ: the worker's load goes down, and it is alive.
    pub fn answered(&mut self, client_id: u64, id: u64) {
        self.release(client_id, id);
        if let Some(slot) = self.workers.get_mut(&client_id) {
            slot.quarantined_until = None;
        }
    }

    /// The worker's load goes down as a message leaves flight.
    fn release(&mut self, client_id: u64, id: u64) {
        let Some((_, load)) = self.loads.remove(&id) else {
            return;
        };
        if let Some(slot) = self.workers.get_mut(&client_id) {
            slot.load = slot.load.saturating_sub(load);
            if let Some(w) = slot.client.job() {
                sub(&w.total, load);
            }
        }
    }

    /// FIN: remember the shard as done, by `client`.
    pub fn done(&mut self, msg: &Message, client: Option<&Arc<Client>>) {
        let worker = client.map(|c| worker_name(c));
        self.record(msg, Outcome::Done, worker);
    }

    /// A message moved to the dead-letter topic.
    pub fn dead(&mut self, msg: &Message) {
        self.record(msg, Outcome::Dead, None);
    }

    /// The channel was emptied: nothing is in flight any more.
    pub fn emptied(&mut self) {
        self.loads.clear();
        for slot in self.workers.values_mut() {
            if let Some(w) = slot.client.job() {
                sub(&w.total, slot.load);
            }
            slot.load = 0;
        }
    }

    /// The timer scan: end quarantines and the settle window on time.
    /// Returns when the settle window ends while it holds, and whether it
    /// just ended (the channel then wakes its idle clients).
    pub fn timers(&mut self, now: Instant) -> (Option<Instant>, bool) {
        for slot in self.workers.values_mut() {
            if slot.quarantined_until.is_some_and(|t| now >= t) {
                slot.quarantined_until = None;
                slot.client.wake.notify_one();
            }
        }
        if self.settled {
            return (None, false);
        }
        if self.holding(now) {
            return (self.limits.settle_until, false);
        }
        (None, true)
    }

    /// Whether `take` for this client goes through job dispatch: job
    /// workers always; plain clients only while the settle window holds.
    pub fn diverts(&mut self, client: &Client, now: Instant) -> bool {
        client.job().is_some() || self.holding(now)
    }

    /// Choose `client`'s share of the queue's front window: (queue index,
    /// load) pairs, none while the settle window holds. Wakes the other
    /// workers that were given something.
    pub fn pick(
        &mut self,
        queue: &Queue,
        client: &Client,
        max: usize,
        now: Instant,
    ) -> Vec<(usize, u64)> {
        if self.holding(now) {
            return Vec::new();
        }
        assign(self, queue, client.id, max as u64, now)
    }

    /// `delivered` went into flight to `client`, with these loads.
    pub fn started(&mut self, client: &Client, delivered: &[Message], loads: &[u64]) {
        let name = worker_name(client);
        for (msg, &load) in delivered.iter().zip(loads) {
            self.loads.insert(msg.id, (client.id, load));
            if let Some(item) = peek_load(&msg.body).map(|l| l.item) {
                self.last_ran.insert(item, name.clone());
            }
            if let Some(slot) = self.workers.get_mut(&client.id) {
                slot.load += load;
                slot.shards += 1;
            }
            if let Some(w) = client.job() {
                w.total.fetch_add(load, Ordering::AcqRel);
            }
        }
    }
}

/// Take the picked (queue index, load) pairs out of the queue, in queue
/// order: the messages and their loads.
pub(super) fn remove_picked(
    queue: &mut Queue,
    mut picks: Vec<(usize, u64)>,
) -> (Vec<Message>, Vec<u64>) {
    // Remove back to front so earlier indexes stay valid.
    picks.sort_unstable_by_key(|p| std::cmp::Reverse(p.0));
    let (mut msgs, mut loads) = (Vec::new(), Vec::new());
    for (i, load) in picks {
        if let Some(m) = queue.remove(i) {
            msgs.push(m);
            loads.push(load);
        }
    }
    msgs.reverse();
    loads.reverse();
    (msgs, loads)
}

fn sub(total: &AtomicU64, n: u64) {
    let _ = total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_sub(n))
    });
}

fn worker_name(client: &Client) -> String {
    match client.job() {
        Some(w) => w.name.clone(),
        None => client.remote_addr.to_string(),
    }
}

/// A worker as the assignment sees it.
struct Candidate {
    id: u64,
    room: u64,
    rdy: u64,
    load: u64,
    total: u64,
    name: String,
}

/// Run the assignment over the pending window; wake every other worker that
/// was given something and return `me`'s share as (queue index, load).
fn assign(
    job: &mut JobState,
    queue: &Queue,
    me: u64,
    my_max: u64,
    now: Instant,
) -> Vec<(usize, u64)> {
    let mut pending: Vec<(usize, u64, Option<u32>)> = queue
        .iter()
        .take(WINDOW)
        .enumerate()
        .map(|(i, m)| (i, load_of(&m), peek_load(&m.body).map(|l| l.item)))
        .collect();
    if pending.is_empty() {
        return Vec::new();
    }
    // Heaviest first; equal loads in queue order (the sort is stable).
    pending.sort_by_key(|p| std::cmp::Reverse(p.1));
    let mut workers: Vec<Candidate> = job
        .workers
        .values()
        .filter(|s| s.quarantined_until.is_none_or(|t| now >= t))
        .filter_map(|s| {
            let w = s.client.job()?;
            let rdy = if s.client.id == me {
                my_max
            } else {
                s.client.capacity()
            };
            Some(Candidate {
                id: s.client.id,
                room: w.capacity.saturating_sub(s.load),
                rdy,
                load: s.load,
                total: w.total.load(Ordering::Acquire),
                name: w.name.clone(),
            })
        })
        .collect();
    let mut mine = Vec::new();
    let mut woken: Vec<u64> = Vec::new();
    for (index, load, item) in pending {
        let last = item.and_then(|i| job.last_ran.get(&i));
        let best = workers
            .iter_mut()
            .filter(|w| w.rdy > 0 && w.room >= load)
            .min_by_key(|w| (w.load, w.total, last != Some(&w.name), w.id));
        let Some(w) = best else { continue };
        w.room -= load;
        w.rdy -= 1;
        w.load += load;
        w.total += load;
        if w.id == me {
            mine.push((index, load));
        } else if !woken.contains(&w.id) {
            woken.push(w.id);
        }
        if workers.iter().all(|w| w.rdy == 0 || w.room == 0) {
            break;
        }
    }
    for id in woken {
        if let Some(s) = job.workers.get(&id) {
            s.client.wake.notify_one();
        }
    }
    mine
}

#[cfg(test)]
mod tests;
