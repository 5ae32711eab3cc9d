//! The JSON API: upstream's `/api/*` reads (topics, topic, channel, nodes,
//! node, counter) and actions (create, pause, unpause, empty, delete,
//! tombstone), plus ours for the live dashboard (`/api/live`,
//! `/api/history/...`).

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use nsq_protocol::names::is_valid_name;

use crate::cluster::{enc, warning, Node, NodeError, Sources, StatsQuery, Warnings};
use crate::context::Context;
use crate::history::now_ms;
use crate::routes::{Endpoint, Reply, Req};
use crate::stats::{ChannelStats, Producer, TopicStats};

/// A value's JSON fields followed by `message`, as upstream embeds it
/// (field order kept, so answers read like upstream's).
#[derive(Serialize)]
struct WithMessage<'a, T: Serialize> {
    #[serde(flatten)]
    inner: &'a T,
    message: String,
}

fn with_message<T: Serialize>(value: &T, w: &Warnings) -> Reply {
    Reply::json(&WithMessage {
        inner: value,
        message: warning(w),
    })
}

#[derive(Serialize)]
struct NodesBody {
    nodes: Vec<Producer>,
}

#[derive(Serialize)]
struct TopicsBody<T: Serialize> {
    topics: T,
}

#[derive(Serialize)]
struct NodeBody<'a> {
    node: &'a str,
    topics: Vec<TopicStats>,
    total_messages: i64,
    total_clients: usize,
    /// Ours: the node's replication peers, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<Vec<crate::daemon_json::NsqdReplica>>,
}

#[derive(Serialize)]
struct CounterStats {
    node: String,
    topic_name: String,
    channel_name: String,
    message_count: i64,
}

#[derive(Serialize)]
struct CounterBody {
    stats: BTreeMap<String, CounterStats>,
}

#[derive(Serialize)]
struct Empty {}

macro_rules! upstream {
    ($answer:expr, $warnings:ident) => {
        match $answer {
            Ok((v, w)) => {
                $warnings.extend(w);
                v
            }
            Err(e) => {
                tracing::error!("{e}");
                return Reply::upstream(e);
            }
        }
    };
}

/// GET endpoints of upstream's API.
pub(crate) async fn read(ctx: &Context, endpoint: Endpoint, req: &Req) -> Reply {
    let seg = |i: usize| req.segments[i].as_str();
    match endpoint {
        Endpoint::Topics => topics(ctx, req.param("inactive") == Some("true")).await,
        Endpoint::Topic => topic(ctx, seg(2)).await,
        Endpoint::Channel => channel(ctx, seg(2), seg(3)).await,
        Endpoint::Nodes => {
            let mut w = Warnings::new();
            let nodes = upstream!(ctx.cluster.nodes().await, w);
            let nodes = nodes.into_iter().map(|n| n.producer).collect();
            with_message(&NodesBody { nodes }, &w)
        }
        Endpoint::Node => node(ctx, seg(2)).await,
        Endpoint::Counter => counter(ctx).await,
        _ => Reply::error(StatusCode::NOT_FOUND, "NOT_FOUND"),
    }
}

async fn topics(ctx: &Context, inactive: bool) -> Reply {
    let mut w = Warnings::new();
    let names = upstream!(ctx.cluster.topics().await, w);
    if !inactive {
        return with_message(&TopicsBody { topics: names }, &w);
    }
    // Topics lookupd knows that no nsqd has any more, with their channels:
    // what the lookup page offers to delete. Without lookupds there are none.
    let mut idle: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if matches!(ctx.cluster.sources(), Sources::Lookupd(_)) {
        for t in names {
            let Ok((producers, _)) = ctx.cluster.topic_producers(&t).await else {
                continue;
            };
            if producers.is_empty() {
                let channels = match ctx.cluster.lookupd_channels(&t).await {
                    Ok((c, _)) => c,
                    Err(e) => {
                        w.push(e.to_string());
                        Vec::new()
                    }
                };
                idle.insert(t, channels);
            }
        }
    }
    with_message(&TopicsBody { topics: idle }, &w)
}

/// The nodes that have `topic`, or the reply that says why there are none.
async fn producers_of(ctx: &Context, topic: &str, w: &mut Warnings) -> Result<Vec<Node>, Reply> {
    match ctx.cluster.topic_producers(topic).await {
        Ok((nodes, more)) => {
            w.extend(more);
            if nodes.is_empty() {
                Err(Reply::error(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))
            } else {
                Ok(nodes)
            }
        }
        Err(e) => Err(Reply::upstream(e)),
    }
}

async fn topic(ctx: &Context, name: &str) -> Reply {
    let mut w = Warnings::new();
    let producers = match producers_of(ctx, name, &mut w).await {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let answers = upstream!(
        ctx.cluster.stats(&producers, StatsQuery::topic(name)).await,
        w
    );
    let now = now_ms() / 1000;
    let per_node: Vec<TopicStats> = answers
        .iter()
        .flat_map(|(node, stats)| {
            let id = node.producer.node_id();
            stats
                .topics
                .iter()
                .filter(|t| t.topic_name == name)
                .map(move |t| {
                    let mut ts = TopicStats::from_node(&id, t, now);
                    // The topic page lists channels, not their clients.
                    for c in &mut ts.channels {
                        c.clients = None;
                    }
                    ts
                })
                .collect::<Vec<_>>()
        })
        .collect();
    with_message(&TopicStats::aggregate(name, per_node), &w)
}

async fn channel(ctx: &Context, topic: &str, name: &str) -> Reply {
    let mut w = Warnings::new();
    let producers = match producers_of(ctx, topic, &mut w).await {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let answers = upstream!(
        ctx.cluster
            .stats(&producers, StatsQuery::channel(topic, name))
            .await,
        w
    );
    let now = now_ms() / 1000;
    let mut per_node = Vec::new();
    for (node, stats) in &answers {
        let id = node.producer.node_id();
        for t in stats.topics.iter().filter(|t| t.topic_name == topic) {
            for c in t.channels.iter().filter(|c| c.channel_name == name) {
                let mut cs = ChannelStats::from_node(&id, topic, c, now);
                cs.clients.get_or_insert_with(Vec::new);
                per_node.push(cs);
            }
        }
    }
    if per_node.is_empty() {
        return Reply::error(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND");
    }
    with_message(&ChannelStats::aggregate(topic, name, per_node), &w)
}

async fn node(ctx: &Context, name: &str) -> Reply {
    let mut w = Warnings::new();
    let nodes = upstream!(ctx.cluster.nodes().await, w);
    let Some(node) = nodes
        .into_iter()
        .find(|n| n.producer.http_address() == name || n.fetch_addr == name)
    else {
        return Reply::error(StatusCode::NOT_FOUND, "NODE_NOT_FOUND");
    };
    let mut answers = match ctx
        .cluster
        .stats(std::slice::from_ref(&node), StatsQuery::with_clients())
        .await
    {
        Ok((a, _)) => a,
        Err(e) => return Reply::upstream(e),
    };
    let Some((_, stats)) = answers.pop() else {
        return Reply::upstream(format!("no answer from {name}"));
    };
    let now = now_ms() / 1000;
    let id = node.producer.node_id();
    let topics: Vec<TopicStats> = stats
        .topics
        .iter()
        .map(|t| {
            let mut ts = TopicStats::from_node(&id, t, now);
            for c in &mut ts.channels {
                c.clients.get_or_insert_with(Vec::new);
            }
            ts
        })
        .collect();
    let total_messages: i64 = topics.iter().map(|t| t.message_count).sum();
    let total_clients: usize = topics
        .iter()
        .flat_map(|t| &t.channels)
        .map(|c| c.clients.as_ref().map_or(0, Vec::len))
        .sum();
    let body = NodeBody {
        node: name,
        topics,
        total_messages,
        total_clients,
        replicas: stats.replicas.clone(),
    };
    with_message(&body, &w)
}

async fn counter(ctx: &Context) -> Reply {
    let mut w = Warnings::new();
    let nodes = upstream!(ctx.cluster.nodes().await, w);
    let answers = upstream!(ctx.cluster.stats(&nodes, StatsQuery::default()).await, w);
    let mut stats: BTreeMap<String, CounterStats> = BTreeMap::new();
    for (node, s) in &answers {
        let addr = node.producer.http_address();
        for t in &s.topics {
            for c in &t.channels {
                let key = format!("{}:{}:{addr}", t.topic_name, c.channel_name);
                stats
                    .entry(key)
                    .or_insert_with(|| CounterStats {
                        node: addr.clone(),
                        topic_name: t.topic_name.clone(),
                        channel_name: c.channel_name.clone(),
                        message_count: 0,
                    })
                    .message_count += c.message_count;
            }
        }
    }
    with_message(&CounterBody { stats }, &w)
}

// ---- actions ---------------------------------------------------------

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    topic: String,
    #[serde(default)]
    channel: String,
}

#[derive(Deserialize)]
struct ActionBody {
    #[serde(default)]
    action: String,
}

#[derive(Deserialize)]
struct TombstoneBody {
    #[serde(default)]
    topic: String,
}

/// POST and DELETE endpoints: forward to the daemons, notify, answer.
pub(crate) async fn act(ctx: &Context, endpoint: Endpoint, req: &Req) -> Reply {
    let seg = |i: usize| req.segments[i].as_str();
    match endpoint {
        Endpoint::CreateTopicChannel => create(ctx, req).await,
        Endpoint::TopicAction => topic_channel_action(ctx, req, seg(2), None).await,
        Endpoint::ChannelAction => topic_channel_action(ctx, req, seg(2), Some(seg(3))).await,
        Endpoint::DeleteTopic => delete(ctx, req, seg(2), None).await,
        Endpoint::DeleteChannel => delete(ctx, req, seg(2), Some(seg(3))).await,
        Endpoint::TombstoneTopicProducer => tombstone(ctx, req, seg(2)).await,
        Endpoint::JobAction => crate::jobs::act(ctx, req, seg(2)).await,
        _ => Reply::error(StatusCode::NOT_FOUND, "NOT_FOUND"),
    }
}

/// The outcome of an action's requests: all failed is 502, some is a warning.
fn outcome(results: Vec<Result<(), NodeError>>, mut w: Warnings) -> Reply {
    let asked = results.len();
    let failed: Vec<String> = (results.into_iter())
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if asked > 0 && failed.len() == asked {
        let e = failed.join("; ");
        tracing::error!("admin action failed: {e}");
        return Reply::upstream(e);
    }
    if !failed.is_empty() {
        tracing::warn!("admin action partly failed: {}", failed.join("; "));
    }
    w.extend(failed);
    with_message(&Empty {}, &w)
}

async fn create(ctx: &Context, req: &Req) -> Reply {
    let Ok(body) = serde_json::from_slice::<CreateBody>(&req.body) else {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_BODY");
    };
    if !is_valid_name(body.topic.as_bytes()) {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_TOPIC");
    }
    if !body.channel.is_empty() && !is_valid_name(body.channel.as_bytes()) {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_CHANNEL");
    }
    let (t, c) = (enc(&body.topic), enc(&body.channel));
    let mut w = Warnings::new();
    let mut results = Vec::new();
    match ctx.cluster.sources() {
        // As upstream: lookupds learn the topic (and channel), and nsqds
        // that already have the topic get the channel.
        Sources::Lookupd(_) => {
            results.extend(
                ctx.cluster
                    .post_lookupds(&format!("/topic/create?topic={t}"))
                    .await,
            );
            if !body.channel.is_empty() {
                results.extend(
                    ctx.cluster
                        .post_lookupds(&format!("/channel/create?topic={t}&channel={c}"))
                        .await,
                );
                match ctx.cluster.topic_producers(&body.topic).await {
                    Ok((nodes, more)) => {
                        w.extend(more);
                        results.extend(
                            ctx.cluster
                                .post_nodes(
                                    &nodes,
                                    &format!("/channel/create?topic={t}&channel={c}"),
                                )
                                .await,
                        );
                    }
                    Err(e) => w.push(e.to_string()),
                }
            }
        }
        // Without lookupds, every configured nsqd gets them.
        Sources::Nsqd(_) => match ctx.cluster.nodes().await {
            Ok((nodes, more)) => {
                w.extend(more);
                results.extend(
                    ctx.cluster
                        .post_nodes(&nodes, &format!("/topic/create?topic={t}"))
                        .await,
                );
                if !body.channel.is_empty() {
                    results.extend(
                        ctx.cluster
                            .post_nodes(&nodes, &format!("/channel/create?topic={t}&channel={c}"))
                            .await,
                    );
                }
            }
            Err(e) => return Reply::upstream(e),
        },
    }
    ctx.notifier
        .notify("create_topic", &body.topic, "", "", &req.who);
    if !body.channel.is_empty() {
        ctx.notifier
            .notify("create_channel", &body.topic, &body.channel, "", &req.who);
    }
    outcome(results, w)
}

async fn topic_channel_action(
    ctx: &Context,
    req: &Req,
    topic: &str,
    channel: Option<&str>,
) -> Reply {
    let Ok(body) = serde_json::from_slice::<ActionBody>(&req.body) else {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_BODY");
    };
    let action = body.action.as_str();
    if !matches!(action, "pause" | "unpause" | "empty") {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_ACTION");
    }
    let mut w = Warnings::new();
    let producers = match producers_of(ctx, topic, &mut w).await {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let (path, what) = match channel {
        Some(c) => (
            format!("/channel/{action}?topic={}&channel={}", enc(topic), enc(c)),
            "channel",
        ),
        None => (format!("/topic/{action}?topic={}", enc(topic)), "topic"),
    };
    let results = ctx.cluster.post_nodes(&producers, &path).await;
    ctx.notifier.notify(
        &format!("{action}_{what}"),
        topic,
        channel.unwrap_or(""),
        "",
        &req.who,
    );
    outcome(results, w)
}

async fn delete(ctx: &Context, req: &Req, topic: &str, channel: Option<&str>) -> Reply {
    let mut w = Warnings::new();
    let producers = match ctx.cluster.topic_producers(topic).await {
        Ok((p, more)) => {
            w.extend(more);
            p
        }
        Err(e) => return Reply::upstream(e),
    };
    let (path, what) = match channel {
        Some(c) => (
            format!("/channel/delete?topic={}&channel={}", enc(topic), enc(c)),
            "channel",
        ),
        None => (format!("/topic/delete?topic={}", enc(topic)), "topic"),
    };
    // nsqds first: a deleted topic unregisters from lookupd, and lookupd's
    // delete then removes what is left of it.
    let mut results = ctx.cluster.post_nodes(&producers, &path).await;
    results.extend(ctx.cluster.post_lookupds(&path).await);
    if results.is_empty() {
        return Reply::error(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND");
    }
    // A daemon that no longer has it is where we want it.
    let results = results
        .into_iter()
        .map(|r| match r {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        })
        .collect();
    ctx.notifier.notify(
        &format!("delete_{what}"),
        topic,
        channel.unwrap_or(""),
        "",
        &req.who,
    );
    outcome(results, w)
}

async fn tombstone(ctx: &Context, req: &Req, node: &str) -> Reply {
    let Ok(body) = serde_json::from_slice::<TombstoneBody>(&req.body) else {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_BODY");
    };
    if !is_valid_name(body.topic.as_bytes()) {
        return Reply::error(StatusCode::BAD_REQUEST, "INVALID_TOPIC");
    }
    let t = enc(&body.topic);
    let mut results = ctx
        .cluster
        .post_lookupds(&format!("/topic/tombstone?topic={t}&node={}", enc(node)))
        .await;
    // Then the nsqd itself lets go of the topic.
    let mut w = Warnings::new();
    match ctx.cluster.nodes().await {
        Ok((nodes, more)) => {
            w.extend(more);
            let this: Vec<Node> = nodes
                .into_iter()
                .filter(|n| n.producer.http_address() == node || n.fetch_addr == node)
                .collect();
            if this.is_empty() && results.is_empty() {
                return Reply::error(StatusCode::NOT_FOUND, "NODE_NOT_FOUND");
            }
            results.extend(
                ctx.cluster
                    .post_nodes(&this, &format!("/topic/delete?topic={t}"))
                    .await,
            );
        }
        Err(e) => w.push(e.to_string()),
    }
    ctx.notifier
        .notify("tombstone_topic_producer", &body.topic, "", node, &req.who);
    outcome(results, w)
}

// ---- ours: the live dashboard --------------------------------------------

/// What the last sample saw: per topic totals and rate, node and lookupd
/// reachability.
pub(crate) fn live(ctx: &Context) -> Reply {
    let snap = ctx.history.snapshot();
    with_message(&snap, &Warnings::new())
}

/// The last hour of a topic's or channel's samples.
pub(crate) fn history(ctx: &Context, req: &Req) -> Reply {
    let topic = req.segments[3].as_str();
    let channel = req.segments.get(4).map_or("", String::as_str);
    let points = ctx.history.series(topic, channel);
    #[derive(Serialize)]
    struct HistoryBody<'a> {
        topic: &'a str,
        channel: &'a str,
        interval_ms: u64,
        points: Vec<crate::history::Point>,
    }
    let body = HistoryBody {
        topic,
        channel,
        interval_ms: ctx.history.interval().as_millis() as u64,
        points,
    };
    with_message(&body, &Warnings::new())
}
