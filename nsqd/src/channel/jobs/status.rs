//! `GET /job/status`: what a job channel reports about its workers and the
//! shards of its recent fires.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nsq_protocol::job::Shard;
use serde::Serialize;
use tokio::time::Instant;

use super::{worker_name, JobState, Outcome};
use crate::client::Client;
use crate::message::Message;

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

/// What job status reads of the channel: its messages where they are.
pub(in crate::channel) struct View<'a> {
    pub job: String,
    pub channel: String,
    pub queued: &'a crate::backlog::Queue,
    pub deferred: Vec<&'a Message>,
    /// In flight, with the client holding it.
    pub running: Vec<(&'a Message, Option<&'a Arc<Client>>)>,
    pub on_disk: u64,
}

impl JobState {
    /// The job status of the channel `view` shows.
    pub fn status(&mut self, view: View<'_>, now: Instant) -> JobStatus {
        let job = self;
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
        for m in view.queued.iter() {
            add(&m, if m.attempts > 0 { "failed" } else { "pending" }, None);
        }
        for m in view.deferred {
            add(m, "failed", None);
        }
        for (m, client) in view.running {
            add(m, "running", client.map(|c| worker_name(c)));
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
        JobStatus {
            job: view.job,
            channel: view.channel,
            settling,
            settle_remaining_ms,
            min_workers: job.limits.min_workers,
            workers,
            fires,
            pending_on_disk: view.on_disk,
            other_messages: other,
        }
    }
}
