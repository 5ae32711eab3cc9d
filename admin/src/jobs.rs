//! Ours: the jobs page's data and its one action.
//!
//! `GET /api/jobs[?job=NAME]` asks every nsqd for its `GET /job/status` and
//! its `/stats`, and answers one entry per job channel with each node's
//! status under it (workers, fires, shards), the dead-letter topic and how
//! many dead letters wait there; a node that does not answer is listed as
//! unreachable.
//!
//! `POST /api/jobs/:job` with `{"action":"requeue"}` moves a job's dead
//! letters back to the job topic, on every node that has them. nsqd has no
//! HTTP call that takes messages out of a topic, so nsqadmin consumes them
//! like any client: a V2 connection subscribes to a channel of the
//! dead-letter topic with RDY 1, publishes each body to the job topic on the
//! same nsqd with `/pub`, and FINishes the dead letter only once the publish
//! succeeded. A failed publish REQueues it; a lost connection gives it back;
//! so nothing is lost (a crash between the publish and the FIN can at worst
//! run a shard once more, NSQ's usual at-least-once). Only the dead letters
//! waiting when the action starts are moved, so shards that die again are not
//! chased in a loop.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use nsq_app::http_client::HttpClient;
use nsq_protocol::names::{is_valid_name, EPHEMERAL_SUFFIX, MAX_NAME_LEN};

use crate::cluster::{enc, get_json, warning, Node, NodeError, Sources};
use crate::context::Context;
use crate::routes::{Reply, Req};

/// The channel of a job topic that workers use unless told otherwise.
pub const DEFAULT_CHANNEL: &str = "workers";

/// The channel of a dead-letter topic that requeue consumes when the topic
/// has no channel yet (creating it moves the topic's backlog into it).
pub const REQUEUE_CHANNEL: &str = "nsqadmin_requeue";

/// How long requeue waits for the next dead letter before it stops.
const IDLE: Duration = Duration::from_secs(5);

mod requeue;
use requeue::{requeue, Requeue};

/// nsqd's default dead-letter topic for `topic` (`<topic>.dead`, cut to the
/// name limit; an ephemeral topic's dead letters go to a durable topic).
pub fn default_dead_topic(topic: &str) -> String {
    const SUFFIX: &str = ".dead";
    let base = topic.strip_suffix(EPHEMERAL_SUFFIX).unwrap_or(topic);
    let keep = base.len().min(MAX_NAME_LEN - SUFFIX.len());
    format!("{}{SUFFIX}", &base[..keep])
}

/// A topic's entry in a node's `/stats` JSON.
fn stats_topic<'a>(stats: &'a Value, topic: &str) -> Option<&'a Value> {
    stats["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic_name"] == topic)
}

fn channels(topic: &Value) -> &[Value] {
    topic["channels"].as_array().map_or(&[], Vec::as_slice)
}

/// The dead-letter topic of `topic`/`channel` as the node's `/stats` shows
/// it (set only with max attempts), else the default.
fn dead_topic_of(stats: &Value, topic: &str, channel: &str) -> String {
    stats_topic(stats, topic)
        .and_then(|t| {
            channels(t)
                .iter()
                .find(|c| c["channel_name"] == channel)
                .and_then(|c| c["dead_letter_topic"].as_str())
        })
        .map_or_else(|| default_dead_topic(topic), str::to_owned)
}

/// Dead letters waiting in `dead` on a node: the topic's own backlog plus
/// the fullest of its channels (each channel holds its own copy).
fn dead_letters(stats: &Value, dead: &str) -> u64 {
    let Some(t) = stats_topic(stats, dead) else {
        return 0;
    };
    let backlog = t["depth"].as_u64().unwrap_or(0);
    let fullest = channels(t)
        .iter()
        .map(|c| c["depth"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    backlog + fullest
}

#[derive(Serialize)]
struct NodeHealth {
    node: String,
    hostname: String,
    reachable: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

#[derive(Serialize)]
struct JobEntry {
    job: String,
    channel: String,
    dead_letter_topic: String,
    dead_letters: u64,
    pending: u64,
    running: u64,
    failed: u64,
    done: u64,
    dead: u64,
    capacity: u64,
    load: u64,
    /// Each node's own status (nsqd's `/job/status` entry) with `node`,
    /// `dead_letter_topic` and `dead_letters` added.
    nodes: Vec<Value>,
}

#[derive(Serialize)]
struct JobsBody {
    jobs: Vec<JobEntry>,
    nodes: Vec<NodeHealth>,
    message: String,
}

fn sum(v: &[Value], key: &str) -> u64 {
    v.iter().map(|x| x[key].as_u64().unwrap_or(0)).sum()
}

/// What one node answered: its job statuses and its `/stats`.
async fn node_answer(
    c: &HttpClient,
    node: &Node,
    job: Option<&str>,
) -> Result<(Value, Value), NodeError> {
    let mut url = format!("http://{}/job/status", node.fetch_addr);
    if let Some(j) = job {
        url.push_str(&format!("?job={}", enc(j)));
    }
    let status = get_json::<Value>(c, &url).await?;
    let stats = get_json::<Value>(
        c,
        &format!(
            "http://{}/stats?format=json&include_clients=false",
            node.fetch_addr
        ),
    )
    .await?;
    Ok((status, stats))
}

/// `GET /api/jobs[?job=NAME]`.
pub(crate) async fn list(ctx: &Context, req: &Req) -> Reply {
    let job = req
        .param("job")
        .filter(|j| !j.is_empty())
        .map(str::to_owned);
    let (nodes, mut warnings) = match ctx.cluster.nodes().await {
        Ok(n) => n,
        Err(e) => return Reply::upstream(e),
    };
    let answers = ctx
        .cluster
        .fan_out(nodes.clone(), |c, node| {
            let job = job.clone();
            async move { node_answer(&c, &node, job.as_deref()).await }
        })
        .await;
    let mut health = Vec::new();
    // (job, channel) -> entry, in name order.
    let mut by_job: BTreeMap<(String, String), JobEntry> = BTreeMap::new();
    for (node, answer) in nodes.iter().zip(answers) {
        let name = node.producer.http_address();
        let (status, stats) = match answer {
            Ok(a) => a,
            Err(e) => {
                warnings.push(e.to_string());
                health.push(NodeHealth {
                    node: name,
                    hostname: node.producer.hostname.clone(),
                    reachable: false,
                    error: e.to_string(),
                });
                continue;
            }
        };
        health.push(NodeHealth {
            node: name.clone(),
            hostname: node.producer.hostname.clone(),
            reachable: true,
            error: String::new(),
        });
        let jobs = status["jobs"].as_array().cloned().unwrap_or_default();
        for mut j in jobs {
            let job_name = j["job"].as_str().unwrap_or_default().to_owned();
            let channel = j["channel"].as_str().unwrap_or_default().to_owned();
            let dead = dead_topic_of(&stats, &job_name, &channel);
            let waiting = dead_letters(&stats, &dead);
            let entry = by_job
                .entry((job_name.clone(), channel.clone()))
                .or_insert_with(|| JobEntry {
                    job: job_name,
                    channel,
                    dead_letter_topic: dead.clone(),
                    dead_letters: 0,
                    pending: 0,
                    running: 0,
                    failed: 0,
                    done: 0,
                    dead: 0,
                    capacity: 0,
                    load: 0,
                    nodes: Vec::new(),
                });
            let fires = j["fires"].as_array().cloned().unwrap_or_default();
            let workers = j["workers"].as_array().cloned().unwrap_or_default();
            entry.dead_letters += waiting;
            entry.pending += sum(&fires, "pending");
            entry.running += sum(&fires, "running");
            entry.failed += sum(&fires, "failed");
            entry.done += sum(&fires, "done");
            entry.dead += sum(&fires, "dead");
            entry.capacity += sum(&workers, "capacity");
            entry.load += sum(&workers, "load");
            if let Some(obj) = j.as_object_mut() {
                obj.insert("node".into(), json!(name));
                obj.insert("dead_letter_topic".into(), json!(dead));
                obj.insert("dead_letters".into(), json!(waiting));
            }
            entry.nodes.push(j);
        }
    }
    // With `--nsqd-http-address`, a configured nsqd that did not answer is
    // missing from `nodes` (its failure is among the warnings).
    if let Sources::Nsqd(addrs) = ctx.cluster.sources() {
        for addr in addrs {
            if !nodes.iter().any(|n| n.fetch_addr == addr) {
                let error = warnings
                    .iter()
                    .find(|w| w.contains(addr.as_str()))
                    .cloned()
                    .unwrap_or_else(|| "no answer".into());
                health.push(NodeHealth {
                    node: addr,
                    hostname: String::new(),
                    reachable: false,
                    error,
                });
            }
        }
    }
    Reply::json(&JobsBody {
        jobs: by_job.into_values().collect(),
        nodes: health,
        message: warning(&warnings),
    })
}

#[derive(Deserialize)]
struct ActionBody {
    #[serde(default)]
    action: String,
    /// The job channel whose dead letters are meant (for its configured
    /// dead-letter topic); default `workers`.
    #[serde(default)]
    channel: String,
    /// The dead-letter topic's channel to consume; default its only channel,
    /// or `nsqadmin_requeue` when it has none.
    #[serde(default)]
    dead_channel: String,
}

#[derive(Serialize)]
struct NodeRequeue {
    node: String,
    dead_letter_topic: String,
    dead_channel: String,
    requeued: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

#[derive(Serialize)]
struct RequeueBody {
    requeued: u64,
    nodes: Vec<NodeRequeue>,
    message: String,
}

/// `POST /api/jobs/:job` with `{"action":"requeue"}`.
pub(crate) async fn act(ctx: &Context, req: &Req, job: &str) -> Reply {
    let Ok(body) = serde_json::from_slice::<ActionBody>(&req.body) else {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_BODY");
    };
    if body.action != "requeue" {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_ACTION");
    }
    if !is_valid_name(job.as_bytes()) {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_TOPIC");
    }
    let channel = if body.channel.is_empty() {
        DEFAULT_CHANNEL
    } else {
        body.channel.as_str()
    };
    if !is_valid_name(channel.as_bytes()) {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_CHANNEL");
    }
    if !body.dead_channel.is_empty() && !is_valid_name(body.dead_channel.as_bytes()) {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_DEAD_CHANNEL");
    }
    let (nodes, mut warnings) = match ctx.cluster.nodes().await {
        Ok(n) => n,
        Err(e) => return Reply::upstream(e),
    };
    let client = ctx.cluster.client();
    let mut done = Vec::new();
    let mut failures = 0;
    for node in &nodes {
        let url = format!(
            "http://{}/stats?format=json&include_clients=false",
            node.fetch_addr
        );
        let stats = match get_json::<Value>(client, &url).await {
            Ok(s) => s,
            Err(e) => {
                warnings.push(e.to_string());
                failures += 1;
                continue;
            }
        };
        let dead = dead_topic_of(&stats, job, channel);
        let Some(dead_stats) = stats_topic(&stats, &dead) else {
            continue; // no dead letters on this node
        };
        let names: Vec<&str> = channels(dead_stats)
            .iter()
            .filter_map(|c| c["channel_name"].as_str())
            .collect();
        let dead_channel = match (body.dead_channel.as_str(), names.as_slice()) {
            ("", []) => REQUEUE_CHANNEL.to_owned(),
            ("", [only]) => (*only).to_owned(),
            ("", several) => {
                warnings.push(format!(
                    "{}: {dead} has several channels ({}): name one as dead_channel",
                    node.producer.http_address(),
                    several.join(", ")
                ));
                failures += 1;
                continue;
            }
            (given, _) => given.to_owned(),
        };
        let backlog = dead_stats["depth"].as_u64().unwrap_or(0);
        let queued = channels(dead_stats)
            .iter()
            .find(|c| c["channel_name"] == dead_channel.as_str())
            .map_or(0, |c| c["depth"].as_u64().unwrap_or(0));
        let limit = backlog + queued;
        let mut report = NodeRequeue {
            node: node.producer.http_address(),
            dead_letter_topic: dead.clone(),
            dead_channel: dead_channel.clone(),
            requeued: 0,
            error: String::new(),
        };
        if limit > 0 {
            let what = Requeue {
                node,
                dead: &dead,
                dead_channel: &dead_channel,
                job,
                limit,
            };
            let (n, err) = requeue(client, what).await;
            report.requeued = n;
            if let Some(e) = err {
                tracing::warn!("requeue of {dead} on {}: {e}", node.fetch_addr);
                warnings.push(format!("{}: {e}", report.node));
                report.error = e.to_string();
                failures += 1;
            }
        }
        done.push(report);
    }
    let requeued = done.iter().map(|r| r.requeued).sum();
    if failures > 0 && requeued == 0 {
        let e = warnings.join("; ");
        tracing::error!("requeue of {job}'s dead letters failed: {e}");
        return Reply::upstream(e);
    }
    ctx.notifier
        .notify("requeue_dead_letters", job, channel, "", &req.who);
    Reply::json(&RequeueBody {
        requeued,
        nodes: done,
        message: warning(&warnings),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dead_topic_matches_nsqd() {
        assert_eq!(default_dead_topic("render"), "render.dead");
        assert_eq!(default_dead_topic("tmp#ephemeral"), "tmp.dead");
        let long = "x".repeat(64);
        let d = default_dead_topic(&long);
        assert_eq!(d.len(), 64);
        assert!(d.ends_with(".dead"));
    }

    #[test]
    fn dead_letters_come_from_stats() {
        let stats = json!({"topics": [
            {"topic_name": "j", "channels": [{"channel_name": "workers", "dead_letter_topic": "j_failed", "depth": 0}]},
            {"topic_name": "j_failed", "depth": 2, "channels": [
                {"channel_name": "a", "depth": 3}, {"channel_name": "b", "depth": 1}]}
        ]});
        assert_eq!(dead_topic_of(&stats, "j", "workers"), "j_failed");
        assert_eq!(dead_topic_of(&stats, "j", "other"), "j.dead");
        assert_eq!(dead_letters(&stats, "j_failed"), 5);
        assert_eq!(dead_letters(&stats, "nope"), 0);
    }
}
