//! Topic, channel and config administration endpoints, with upstream's
//! argument checks in upstream's order and its error names.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use nsq_protocol::{ChannelName, TopicName};

use super::{empty, json, Query, Reply};
use crate::nsqd::Nsqd;
use crate::replica_hooks::MetaOp;
use crate::topic::Topic;

type HttpError = (StatusCode, &'static str);

const fn bad(name: &'static str) -> HttpError {
    (StatusCode::BAD_REQUEST, name)
}

/// Argument `key` parsed as `T`: `missing` when it is absent, `invalid`
/// when it does not parse.
fn parsed<T: std::str::FromStr>(
    q: &Query,
    key: &str,
    missing: &'static str,
    invalid: &'static str,
) -> Result<T, HttpError> {
    q.get(key)
        .ok_or(bad(missing))?
        .parse()
        .map_err(|_| bad(invalid))
}

const TOPIC_NOT_FOUND: HttpError = (StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND");
const CHANNEL_NOT_FOUND: HttpError = (StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND");

/// `topic` as given, unvalidated: delete and pause only look it up.
fn raw_topic(q: &Query) -> Result<&str, HttpError> {
    q.get("topic").ok_or(bad("MISSING_ARG_TOPIC"))
}

/// Upstream's `GetTopicChannelArgs` (note the `INVALID_ARG_*` names, unlike
/// `/topic/*`'s `INVALID_TOPIC`), then the topic must exist.
fn existing_topic_and_channel(
    nsqd: &Nsqd,
    req: &Request<Incoming>,
) -> Result<(Arc<Topic>, ChannelName), HttpError> {
    let q = Query::parse(req)?;
    let topic: TopicName = parsed(&q, "topic", "MISSING_ARG_TOPIC", "INVALID_ARG_TOPIC")?;
    let channel: ChannelName = parsed(&q, "channel", "MISSING_ARG_CHANNEL", "INVALID_ARG_CHANNEL")?;
    let topic = nsqd.topic(topic.as_str()).ok_or(TOPIC_NOT_FOUND)?;
    Ok((topic, channel))
}

pub(super) fn create_topic(nsqd: &Arc<Nsqd>, req: &Request<Incoming>) -> Reply {
    let topic = Query::parse(req)?.topic()?;
    nsqd.get_topic(&topic);
    Ok(empty())
}

pub(super) fn delete_topic(nsqd: &Arc<Nsqd>, req: &Request<Incoming>) -> Reply {
    let q = Query::parse(req)?;
    nsqd.delete_topic(raw_topic(&q)?).ok_or(TOPIC_NOT_FOUND)?;
    Ok(empty())
}

pub(super) fn empty_topic(nsqd: &Arc<Nsqd>, req: &Request<Incoming>) -> Reply {
    let topic = Query::parse(req)?.topic()?;
    nsqd.topic(topic.as_str()).ok_or(TOPIC_NOT_FOUND)?.empty();
    nsqd.replica_changed(MetaOp::TopicEmpty, &topic, None);
    Ok(empty())
}

pub(super) fn pause_topic(nsqd: &Arc<Nsqd>, req: &Request<Incoming>, pause: bool) -> Reply {
    let q = Query::parse(req)?;
    let topic = nsqd.topic(raw_topic(&q)?).ok_or(TOPIC_NOT_FOUND)?;
    if pause {
        topic.pause();
    } else {
        topic.unpause();
    }
    let op = [MetaOp::TopicUnpause, MetaOp::TopicPause][usize::from(pause)];
    nsqd.replica_changed(op, &topic.name, None);
    // Persist now, so a crash cannot silently (un)pause it on restart.
    nsqd.metadata_changed();
    Ok(empty())
}

pub(super) fn create_channel(nsqd: &Arc<Nsqd>, req: &Request<Incoming>) -> Reply {
    let (topic, channel) = existing_topic_and_channel(nsqd, req)?;
    nsqd.create_channel(&topic, &channel);
    Ok(empty())
}

pub(super) fn delete_channel(nsqd: &Arc<Nsqd>, req: &Request<Incoming>) -> Reply {
    let (topic, channel) = existing_topic_and_channel(nsqd, req)?;
    nsqd.delete_channel(&topic, channel.as_str())
        .ok_or(CHANNEL_NOT_FOUND)?;
    // Upstream deletes an ephemeral topic with its last channel.
    if topic.is_ephemeral() && topic.channel_count() == 0 {
        nsqd.delete_topic(topic.name.as_str());
    }
    Ok(empty())
}

pub(super) fn empty_channel(nsqd: &Arc<Nsqd>, req: &Request<Incoming>) -> Reply {
    let (topic, channel) = existing_topic_and_channel(nsqd, req)?;
    topic
        .channel(channel.as_str())
        .ok_or(CHANNEL_NOT_FOUND)?
        .empty();
    Ok(empty())
}

pub(super) fn pause_channel(nsqd: &Arc<Nsqd>, req: &Request<Incoming>, pause: bool) -> Reply {
    let (topic, channel) = existing_topic_and_channel(nsqd, req)?;
    let c = topic.channel(channel.as_str()).ok_or(CHANNEL_NOT_FOUND)?;
    if pause {
        c.pause();
    } else {
        c.unpause();
    }
    nsqd.metadata_changed();
    Ok(empty())
}

/// `POST /channel/max_attempts?topic=T&channel=C&max_attempts=N
/// [&dead_letter_topic=D]` (ours): a message delivered N times that is
/// requeued or times out again goes to D (default `T.dead`) instead of back
/// to the channel. `max_attempts=0` turns the limit off. Kept in `nsqd.dat`.
pub(super) fn channel_max_attempts(nsqd: &Arc<Nsqd>, req: &Request<Incoming>) -> Reply {
    let (topic, channel) = existing_topic_and_channel(nsqd, req)?;
    let q = Query::parse(req)?;
    let max_attempts: u16 = parsed(
        &q,
        "max_attempts",
        "MISSING_ARG_MAX_ATTEMPTS",
        "INVALID_ARG_MAX_ATTEMPTS",
    )?;
    let dead_letter_topic = match q.get("dead_letter_topic") {
        None | Some("") => None,
        Some(t) => Some(
            t.parse::<TopicName>()
                .map_err(|_| bad("INVALID_ARG_DEAD_LETTER_TOPIC"))?,
        ),
    };
    if dead_letter_topic.as_ref() == Some(&topic.name) {
        // Its own dead letters would come straight back to it.
        return Err(bad("INVALID_ARG_DEAD_LETTER_TOPIC"));
    }
    let c = topic.channel(channel.as_str()).ok_or(CHANNEL_NOT_FOUND)?;
    let _configuring = crate::channel::CONFIGURING
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if max_attempts > 0 {
        let to = dead_letter_topic
            .clone()
            .unwrap_or_else(|| crate::channel::default_dead_letter_topic(&topic.name));
        let targets = |t: &TopicName| -> Vec<TopicName> {
            nsqd.topic(t.as_str()).map_or_else(Vec::new, |t| {
                t.channels()
                    .iter()
                    .filter_map(|c| c.dead_letter_target())
                    .collect()
            })
        };
        if crate::channel::leads_back(&topic.name, &to, targets) {
            return Err(bad("DEAD_LETTER_CYCLE"));
        }
    }
    c.set_options(crate::channel::ChannelOptions {
        max_attempts,
        dead_letter_topic,
    });
    nsqd.metadata_changed();
    Ok(empty())
}

/// `POST /replica/takeover?peer=ADDR` (ours): deliver that replication
/// peer's messages from here now (planned maintenance of the peer).
pub(super) fn replica_takeover(nsqd: &Arc<Nsqd>, req: &Request<Incoming>) -> Reply {
    let q = Query::parse(req)?;
    let peer = q.get("peer").ok_or(bad("MISSING_ARG_PEER"))?;
    let n = nsqd
        .replicas
        .as_ref()
        .and_then(|r| r.take_over(peer))
        .ok_or((StatusCode::NOT_FOUND, "PEER_NOT_FOUND"))?;
    Ok(json(&serde_json::json!({ "taken_over": n })))
}
