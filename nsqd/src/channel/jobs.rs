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
//! Everything here runs under the channel's lock; a channel without job
//! state (`ChannelState::job == None`) never enters this module.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nsq_protocol::job::{is_shard, peek_load, Shard};
use serde::Serialize;
use tokio::time::Instant;

use super::{Channel, ChannelState, IdMap, InFlight};
use crate::client::Client;
use crate::message::Message;

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

/// What a worker declared at IDENTIFY, shared by its connection.
#[derive(Debug)]
pub struct JobWorker {
    /// Load units this connection may hold at once.
    pub capacity: u64,
    /// The worker's name (IDENTIFY `client_id`); connections with the same
    /// name share `total`.
    pub name: String,
    /// In-flight load of this worker over all its job channels on this nsqd.
    pub total: Arc<AtomicU64>,
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

/// Hook for `put`: a channel becomes a job channel when shards arrive.
pub(super) fn on_put(st: &mut ChannelState, limits: JobLimits, msgs: &[Message]) {
    if st.job.is_none() && msgs.first().is_some_and(|m| is_shard(&m.body)) {
        st.job = Some(Box::new(JobState::new(limits)));
    }
}

/// Hook for `add_client`: register a worker that declared a capacity.
pub(super) fn on_join(st: &mut ChannelState, limits: JobLimits, client: &Arc<Client>) {
    if client.job().is_none() {
        return;
    }
    let job = st
        .job
        .get_or_insert_with(|| Box::new(JobState::new(limits)));
    job.workers.insert(
        client.id,
        WorkerSlot {
            client: client.clone(),
            load: 0,
            shards: 0,
            quarantined_until: None,
        },
    );
    // Enough workers may have joined to end the settle window.
    if !job.holding(Instant::now()) {
        for w in st.waiters.drain(..) {
            w.waiting.store(false, Ordering::Release);
            w.wake.notify_one();
        }
    }
}

/// Hook for `remove_client` (after its messages went back to the queue).
pub(super) fn on_leave(st: &mut ChannelState, client_id: u64) {
    let Some(job) = st.job.as_mut() else { return };
    if let Some(slot) = job.workers.remove(&client_id) {
        if let Some(w) = slot.client.job() {
            sub(&w.total, slot.load);
        }
    }
    job.loads.retain(|_, (owner, _)| *owner != client_id);
}

/// Hook for a message that timed out on `client_id` after being held for
/// `held`: besides the release, the worker is quarantined for that long.
pub(super) fn on_timeout(st: &mut ChannelState, client_id: u64, id: u64, until: Instant) {
    on_release(st, client_id, id);
    if let Some(slot) = st.job.as_mut().and_then(|j| j.workers.get_mut(&client_id)) {
        slot.quarantined_until = Some(until);
    }
}

/// Hook for FIN and REQ: the worker's load goes down, and it is alive.
pub(super) fn on_answer(st: &mut ChannelState, client_id: u64, id: u64) {
    on_release(st, client_id, id);
    if let Some(slot) = st.job.as_mut().and_then(|j| j.workers.get_mut(&client_id)) {
        slot.quarantined_until = None;
    }
}

/// The worker's load goes down as a message leaves flight.
fn on_release(st: &mut ChannelState, client_id: u64, id: u64) {
    let Some(job) = st.job.as_mut() else { return };
    let Some((_, load)) = job.loads.remove(&id) else {
        return;
    };
    if let Some(slot) = job.workers.get_mut(&client_id) {
        slot.load = slot.load.saturating_sub(load);
        if let Some(w) = slot.client.job() {
            sub(&w.total, load);
        }
    }
}

/// Hook for FIN: remember the shard as done.
pub(super) fn on_done(st: &mut ChannelState, msg: &Message, client: Option<&Arc<Client>>) {
    if let Some(job) = st.job.as_mut() {
        let worker = client.map(|c| worker_name(c));
        job.record(msg, Outcome::Done, worker);
    }
}

/// Hook for a message moved to the dead-letter topic.
pub(super) fn on_dead(st: &mut ChannelState, msg: &Message) {
    if let Some(job) = st.job.as_mut() {
        job.record(msg, Outcome::Dead, None);
    }
}

/// Hook for `empty`: nothing is in flight any more.
pub(super) fn on_empty(st: &mut ChannelState) {
    let Some(job) = st.job.as_mut() else { return };
    job.loads.clear();
    for slot in job.workers.values_mut() {
        if let Some(w) = slot.client.job() {
            sub(&w.total, slot.load);
        }
        slot.load = 0;
    }
}

/// Hook for the timer scan: end quarantines and the settle window on time.
/// Returns when the settle window ends, while it has not.
pub(super) fn on_timers(st: &mut ChannelState, now: Instant) -> Option<Instant> {
    let job = st.job.as_mut()?;
    for slot in job.workers.values_mut() {
        if slot.quarantined_until.is_some_and(|t| now >= t) {
            slot.quarantined_until = None;
            slot.client.wake.notify_one();
        }
    }
    if job.settled {
        return None;
    }
    if job.holding(now) {
        return job.limits.settle_until;
    }
    for w in st.waiters.drain(..) {
        w.waiting.store(false, Ordering::Release);
        w.wake.notify_one();
    }
    None
}

/// Whether `take` for this client goes through job dispatch: job workers
/// always; plain clients only while the settle window holds the channel.
pub(super) fn diverts(st: &mut ChannelState, client: &Client, now: Instant) -> bool {
    match st.job.as_mut() {
        None => false,
        Some(job) => client.job().is_some() || job.holding(now),
    }
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

impl Channel {
    /// `take` for job channels: see the module comment. Returns how many
    /// messages went into flight for `client`.
    pub(super) fn take_job(
        &self,
        st: &mut ChannelState,
        client: &Arc<Client>,
        max: usize,
        msg_timeout: Duration,
        now: Instant,
        out: &mut Vec<Message>,
    ) -> usize {
        let Some(job) = st.job.as_mut() else { return 0 };
        let mine = if job.holding(now) || !st.clients.contains_key(&client.id) {
            Vec::new()
        } else {
            assign(job, &st.queue, client.id, max as u64, now)
        };
        let n = mine.len();
        if n > 0 {
            // Remove back to front so earlier indexes stay valid.
            let mut picked: Vec<(usize, u64)> = mine;
            picked.sort_unstable_by_key(|p| std::cmp::Reverse(p.0));
            let mut msgs = Vec::with_capacity(n);
            for (i, load) in picked {
                if let Some(m) = st.queue.remove(i) {
                    msgs.push((m, load));
                }
            }
            // Deliver in queue order.
            msgs.reverse();
            let deadline = now + msg_timeout;
            let name = worker_name(client);
            for (mut msg, load) in msgs {
                msg.attempts = msg.attempts.saturating_add(1);
                st.generation += 1;
                out.push(msg.clone());
                let id = msg.id;
                if let Some(job) = st.job.as_mut() {
                    job.loads.insert(id, (client.id, load));
                    if let Some(item) = peek_load(&msg.body).map(|l| l.item) {
                        job.last_ran.insert(item, name.clone());
                    }
                    if let Some(slot) = job.workers.get_mut(&client.id) {
                        slot.load += load;
                        slot.shards += 1;
                    }
                    if let Some(w) = client.job() {
                        w.total.fetch_add(load, Ordering::AcqRel);
                    }
                }
                if let Some(slot) = st.clients.get_mut(&client.id) {
                    slot.order.push_back((deadline, id, st.generation));
                    slot.live += 1;
                }
                st.in_flight.insert(
                    id,
                    InFlight {
                        msg,
                        client_id: client.id,
                        deadline,
                        delivered_at: now,
                        generation: st.generation,
                    },
                );
            }
            client.add_in_flight(n as u64);
            client.message_count.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.read_ahead(st);
        if n == 0 && !client.waiting.swap(true, Ordering::AcqRel) {
            st.waiters.push(client.clone());
        }
        n
    }
}

/// Run the assignment over the pending window; wake every other worker that
/// was given something and return `me`'s share as (queue index, load).
fn assign(
    job: &mut JobState,
    queue: &std::collections::VecDeque<Message>,
    me: u64,
    my_max: u64,
    now: Instant,
) -> Vec<(usize, u64)> {
    let mut pending: Vec<(usize, u64, Option<u32>)> = queue
        .iter()
        .take(WINDOW)
        .enumerate()
        .map(|(i, m)| (i, load_of(m), peek_load(&m.body).map(|l| l.item)))
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

/// `GET /job/status`: one job channel.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub channel: String,
    /// Dispatch is held by the settle window.
    pub settling: bool,
    pub settle_remaining_ms: u64,
    pub min_workers: usize,
    pub workers: Vec<WorkerStatus>,
    pub fires: Vec<FireStatus>,
    /// Messages on disk, not yet read (their shards are not listed).
    pub pending_on_disk: u64,
    /// Messages in the queue that are not shards.
    pub other_messages: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub worker: String,
    pub remote_address: String,
    pub capacity: u64,
    /// Load held on this job.
    pub load: u64,
    /// Load held over all this worker's jobs on this nsqd.
    pub total_load: u64,
    /// Shards given to it since it joined.
    pub shards_taken: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FireStatus {
    pub fire: String,
    pub pending: u64,
    pub running: u64,
    pub failed: u64,
    pub done: u64,
    pub dead: u64,
    pub shards: Vec<ShardStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    pub item: u32,
    pub param: String,
    pub load: u32,
    /// `pending`, `running`, `failed` (waiting to be retried), `done`, `dead`.
    pub state: &'static str,
    pub attempts: u16,
    /// The worker running it (running) or that finished it (done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl Channel {
    /// The job status of this channel, or `None` for an ordinary channel.
    pub fn job_status(&self, now: Instant) -> Option<JobStatus> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let job = st.job.as_mut()?;
        let settling = job.holding(now);
        let settle_remaining_ms = match (settling, job.limits.settle_until) {
            (true, Some(t)) => t.saturating_duration_since(now).as_millis() as u64,
            _ => 0,
        };
        let mut fires: BTreeMap<String, FireStatus> = BTreeMap::new();
        let mut other = 0u64;
        let mut add = |msg: &Message, state: &'static str, worker: Option<String>| {
            let Ok(h) = Shard::decode_header(&msg.body) else {
                other += 1;
                return;
            };
            let f = fires.entry(h.fire.to_string()).or_default();
            f.shards.push(ShardStatus {
                item: h.item,
                param: h.param.to_string(),
                load: h.load,
                state,
                attempts: msg.attempts,
                worker,
            });
        };
        for m in &st.queue {
            add(m, if m.attempts > 0 { "failed" } else { "pending" }, None);
        }
        for d in st.deferred.iter() {
            add(&d.msg, "failed", None);
        }
        for f in st.in_flight.values() {
            let worker = st.clients.get(&f.client_id).map(|s| worker_name(&s.client));
            add(&f.msg, "running", worker);
        }
        for (fire, book) in &job.book {
            let f = fires.entry(fire.clone()).or_default();
            for (&item, r) in &book.shards {
                // A shard finished in an earlier round may be queued again
                // (a re-fire with the same id); the live state wins.
                if f.shards.iter().any(|s| s.item == item) {
                    continue;
                }
                f.shards.push(ShardStatus {
                    item,
                    param: r.param.clone(),
                    load: r.load,
                    state: match r.state {
                        Outcome::Done => "done",
                        Outcome::Dead => "dead",
                    },
                    attempts: r.attempts,
                    worker: r.worker.clone(),
                });
            }
        }
        let fires = fires
            .into_iter()
            .map(|(fire, mut f)| {
                f.fire = fire;
                f.shards.sort_by_key(|s| s.item);
                for s in &f.shards {
                    match s.state {
                        "pending" => f.pending += 1,
                        "running" => f.running += 1,
                        "failed" => f.failed += 1,
                        "done" => f.done += 1,
                        _ => f.dead += 1,
                    }
                }
                f
            })
            .collect();
        let mut workers: Vec<WorkerStatus> = job
            .workers
            .values()
            .filter_map(|s| {
                let w = s.client.job()?;
                Some(WorkerStatus {
                    worker: w.name.clone(),
                    remote_address: s.client.remote_addr.to_string(),
                    capacity: w.capacity,
                    load: s.load,
                    total_load: w.total.load(Ordering::Acquire),
                    shards_taken: s.shards,
                })
            })
            .collect();
        workers.sort_by(|a, b| a.worker.cmp(&b.worker));
        Some(JobStatus {
            job: self.topic_name.to_string(),
            channel: self.name.to_string(),
            settling,
            settle_remaining_ms,
            min_workers: job.limits.min_workers,
            workers,
            fires,
            pending_on_disk: st.on_disk + st.to_disk,
            other_messages: other,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use bytes::Bytes;

    use super::*;
    use crate::channel::ChannelLimits;
    use crate::client::ClientState;

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn channel(jobs: JobLimits) -> Arc<Channel> {
        Channel::new(
            "render".parse().unwrap(),
            "workers".parse().unwrap(),
            ChannelLimits {
                mem_queue_size: 1000,
                max_msg_timeout: Duration::from_secs(900),
                max_channel_consumers: 0,
                e2e_window: None,
                durable: false,
                jobs,
            },
            None,
        )
    }

    fn worker(id: u64, capacity: Option<u64>) -> Arc<Client> {
        let c = Arc::new(Client::new(id, "127.0.0.1:1".parse().unwrap(), 0));
        if let Some(capacity) = capacity {
            c.set_job(JobWorker {
                capacity,
                name: format!("w{id}"),
                total: Arc::new(AtomicU64::new(0)),
            });
        }
        c.set_state(ClientState::Subscribed);
        c.set_ready_count(100);
        c
    }

    fn shard(id: u64, item: u32, load: u32) -> Message {
        let body = Shard {
            job: "render".into(),
            fire: "f".into(),
            item,
            load,
            param: String::new(),
            payload: Bytes::new(),
        }
        .encode()
        .unwrap();
        Message::new(id, 0, body)
    }

    fn take(ch: &Channel, c: &Arc<Client>, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        ch.take(c, 100, TIMEOUT, 0, now, &mut out);
        out.iter()
            .map(|m| peek_load(&m.body).unwrap().item)
            .collect()
    }

    #[test]
    fn heaviest_first_to_the_least_loaded_worker_within_capacity() {
        let ch = channel(JobLimits::default());
        let (a, b) = (worker(1, Some(4)), worker(2, Some(2)));
        ch.add_client(a.clone()).unwrap();
        ch.add_client(b.clone()).unwrap();
        // Items 0..4 with loads 3, 1, 2, 2.
        ch.put(&[
            shard(10, 0, 3),
            shard(11, 1, 1),
            shard(12, 2, 2),
            shard(13, 3, 2),
        ]);
        let now = Instant::now();
        // 3 → a (tie, lower id); 2 → b (least loaded); the second 2 fits
        // nowhere; 1 → a (room 1). b asks first and gets only its share.
        assert_eq!(take(&ch, &b, now), vec![2]);
        assert_eq!(take(&ch, &a, now), vec![0, 1]);
        assert_eq!(take(&ch, &a, now), Vec::<u32>::new());
        let s = ch.job_status(now).unwrap();
        let loads: Vec<(u64, u64)> = s.workers.iter().map(|w| (w.load, w.capacity)).collect();
        assert_eq!(loads, vec![(4, 4), (2, 2)]);
        assert_eq!((s.fires[0].running, s.fires[0].pending), (3, 1));
        // b finishes: its room takes the last shard; the record says who.
        ch.finish(2, 12).unwrap();
        assert_eq!(take(&ch, &b, now), vec![3]);
        let s = ch.job_status(now).unwrap();
        let done = s.fires[0].shards.iter().find(|s| s.item == 2).unwrap();
        assert_eq!((done.state, done.worker.as_deref()), ("done", Some("w2")));
    }

    #[test]
    fn plain_clients_keep_ordinary_delivery_and_a_leaving_worker_frees_its_load() {
        let ch = channel(JobLimits::default());
        let (w, plain) = (worker(1, Some(1)), worker(2, None));
        ch.add_client(w.clone()).unwrap();
        ch.add_client(plain.clone()).unwrap();
        ch.put(&[shard(10, 0, 1), shard(11, 1, 1), shard(12, 2, 1)]);
        let now = Instant::now();
        assert_eq!(take(&ch, &w, now), vec![0]);
        // The plain client takes the queue's front, as on any channel.
        assert_eq!(take(&ch, &plain, now), vec![1, 2]);
        ch.remove_client(1);
        assert_eq!(w.job().unwrap().total.load(Ordering::Acquire), 0);
        let w2 = worker(3, Some(5));
        ch.add_client(w2.clone()).unwrap();
        assert_eq!(take(&ch, &w2, now), vec![0]);
    }

    #[test]
    fn the_settle_window_holds_everyone_until_enough_workers_join() {
        let now = Instant::now();
        let ch = channel(JobLimits {
            settle_until: Some(now + Duration::from_secs(60)),
            min_workers: 2,
        });
        let (a, plain) = (worker(1, Some(4)), worker(2, None));
        ch.add_client(a.clone()).unwrap();
        ch.add_client(plain.clone()).unwrap();
        ch.put(&[shard(10, 0, 1), shard(11, 1, 1)]);
        assert!(take(&ch, &a, now).is_empty());
        assert!(take(&ch, &plain, now).is_empty());
        assert!(ch.job_status(now).unwrap().settling);
        // The timer scan ends the window on time even without workers.
        let later = now + Duration::from_secs(61);
        ch.process_timers(later);
        assert!(!ch.job_status(later).unwrap().settling);
        assert_eq!(take(&ch, &a, later).len(), 2);
    }
}
