//! `nsq_to_nsq`: consume topics and publish every message to other nsqds,
//! finishing it only once a destination acknowledged the publish;
//! optionally only JSON messages with a required field, cut down to some
//! fields.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use nsq::{handler_fn, Consumer, HandlerError, Message, Producer};
use tracing::info;

use crate::source::SourceOptions;
use crate::targets::{Mode, Targets};
use crate::{Result, ToolError};

/// Upstream's `nsq_to_nsq` flags.
#[derive(Parser, Debug, Clone)]
#[command(about = "Copy the messages of NSQ topics to other nsqds.")]
pub struct ToNsqdOptions {
    /// nsq topic (may be given multiple times)
    #[arg(long)]
    pub topic: Vec<String>,
    /// nsq channel
    #[arg(long, default_value = "nsq_to_nsq")]
    pub channel: String,
    /// use this destination topic for all consumed topics (default is the consumed topic's name)
    #[arg(long, default_value = "")]
    pub destination_topic: String,
    /// Where messages are read from.
    #[command(flatten)]
    pub source: SourceOptions,
    /// destination nsqd TCP address (may be given multiple times)
    #[arg(long)]
    pub destination_nsqd_tcp_address: Vec<String>,
    /// option to pass through to the producers: `option,value` with go-nsq's option names (may be given multiple times)
    #[arg(long)]
    pub producer_opt: Vec<String>,
    /// how publishes are spread over the destinations: round-robin, or hostpool (skips a destination that failed for a while; epsilon-greedy is taken as hostpool)
    #[arg(long, default_value = "hostpool")]
    pub mode: String,
    /// the number of publishes between status lines in the log; 0 disables
    #[arg(long, default_value_t = 250)]
    pub status_every: u64,
    /// for JSON messages: only pass messages that contain this field
    #[arg(long, default_value = "")]
    pub require_json_field: String,
    /// for JSON messages: only pass messages in which the required field has this value
    #[arg(long, default_value = "")]
    pub require_json_value: String,
    /// for JSON messages: pass only this field (may be given multiple times)
    #[arg(long)]
    pub whitelist_json_field: Vec<String>,
}

impl ToNsqdOptions {
    fn validate(&self) -> Result<Mode> {
        let fail = |m: &str| Err(ToolError::Config(m.into()));
        if self.topic.is_empty() || self.channel.is_empty() {
            return fail("--topic and --channel are required");
        }
        self.source.check()?;
        if self.destination_nsqd_tcp_address.is_empty() {
            return fail("--destination-nsqd-tcp-address required");
        }
        if !self.require_json_value.is_empty() && self.require_json_field.is_empty() {
            return fail("--require-json-value requires --require-json-field");
        }
        Ok(Mode::parse(&self.mode)?)
    }
}

/// What the JSON flags make of a message body: `None` to drop it.
struct Filter {
    field: String,
    value: String,
    whitelist: Vec<String>,
}

impl Filter {
    fn active(&self) -> bool {
        !self.field.is_empty() || !self.whitelist.is_empty()
    }

    fn apply(&self, body: &Bytes) -> Option<Bytes> {
        if !self.active() {
            return Some(body.clone());
        }
        // Not JSON, or not an object: not a message these flags describe.
        let serde_json::Value::Object(mut obj) = serde_json::from_slice(body).ok()? else {
            return None;
        };
        if !self.field.is_empty() {
            let v = obj.get(&self.field)?;
            if !self.value.is_empty() {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if text != self.value {
                    return None;
                }
            }
        }
        if self.whitelist.is_empty() {
            return Some(body.clone());
        }
        obj.retain(|k, _| self.whitelist.iter().any(|w| w == k));
        Some(Bytes::from(serde_json::Value::Object(obj).to_string()))
    }
}

/// The destinations and how a message gets to one of them.
struct Copier {
    producers: Vec<Producer>,
    targets: Targets,
    destination_topic: String,
    filter: Filter,
    status_every: u64,
    published: AtomicU64,
}

impl Copier {
    async fn copy(&self, topic: &str, msg: &Message) -> nsq::Result<()> {
        let Some(body) = self.filter.apply(&msg.body) else {
            return Ok(());
        };
        let topic = if self.destination_topic.is_empty() {
            topic
        } else {
            &self.destination_topic
        };
        let i = self.targets.pick();
        let result = self.producers[i].publish(topic, body).await;
        self.targets.mark(i, result.is_ok());
        if result.is_ok() && self.status_every > 0 {
            let n = self.published.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(self.status_every) {
                info!("{n} messages published");
            }
        }
        result
    }
}

/// Copies until `shutdown` resolves, then stops the consumers gracefully
/// (every message handed to a handler is published or requeued).
pub async fn run(opts: ToNsqdOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    let mode = opts.validate()?;
    let mut pconfig = crate::source::user_agent_config("nsq_to_nsq");
    crate::apply_opts(&mut pconfig, &opts.producer_opt)?;
    let cconfig = opts.source.consumer_config("nsq_to_nsq")?;

    let producers = opts
        .destination_nsqd_tcp_address
        .iter()
        .map(|a| Producer::new(a.clone(), pconfig.clone()))
        .collect();
    let copier = Arc::new(Copier {
        producers,
        targets: Targets::new(opts.destination_nsqd_tcp_address.clone(), mode),
        destination_topic: opts.destination_topic.clone(),
        filter: Filter {
            field: opts.require_json_field.clone(),
            value: opts.require_json_value.clone(),
            whitelist: opts.whitelist_json_field.clone(),
        },
        status_every: opts.status_every,
        published: AtomicU64::new(0),
    });
    let mut consumers = Vec::new();
    for topic in &opts.topic {
        let consumer = Consumer::new(topic, &opts.channel, cconfig.clone())?;
        let (copier, topic) = (copier.clone(), topic.clone());
        // Publishes are pipelined, so several handlers keep the
        // destinations busy; max-in-flight bounds them.
        let concurrency = usize::try_from(opts.source.max_in_flight.clamp(1, 1000)).unwrap_or(1);
        consumer.add_concurrent_handlers(
            handler_fn(move |msg: Message| {
                let (copier, topic) = (copier.clone(), topic.clone());
                async move { copier.copy(&topic, &msg).await.map_err(HandlerError::new) }
            }),
            concurrency,
        );
        consumers.push(consumer);
    }
    let connect = async { opts.source.connect_all(&consumers).await };
    let connected = connect.await;
    if connected.is_ok() {
        shutdown.await;
    }
    for consumer in &consumers {
        consumer.stop().await;
    }
    for p in &copier.producers {
        p.stop().await;
    }
    Ok(connected?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_as_upstream_does() {
        let err = |args: &[&str]| {
            let mut v = vec!["nsq_to_nsq"];
            v.extend_from_slice(args);
            ToNsqdOptions::parse_from(v)
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(&[]), "--topic and --channel are required");
        assert_eq!(
            err(&["--topic=t"]),
            "--nsqd-tcp-address or --lookupd-http-address required"
        );
        assert_eq!(
            err(&["--topic=t", "--nsqd-tcp-address=a:1"]),
            "--destination-nsqd-tcp-address required"
        );
        assert!(err(&[
            "--topic=t",
            "--nsqd-tcp-address=a:1",
            "--destination-nsqd-tcp-address=b:1",
            "--mode=x"
        ])
        .starts_with("invalid --mode"));
    }

    #[test]
    fn json_filter_requires_and_whitelists_fields() {
        let f = Filter {
            field: "kind".into(),
            value: "click".into(),
            whitelist: vec!["kind".into(), "id".into()],
        };
        let b = |s: &str| Bytes::from(s.to_owned());
        assert_eq!(
            f.apply(&b(r#"{"kind":"click","id":7,"secret":"x"}"#)),
            Some(b(r#"{"id":7,"kind":"click"}"#))
        );
        assert_eq!(f.apply(&b(r#"{"kind":"view","id":7}"#)), None);
        assert_eq!(f.apply(&b(r#"{"id":7}"#)), None);
        assert_eq!(f.apply(&b("not json")), None);
        let none = Filter {
            field: String::new(),
            value: String::new(),
            whitelist: vec![],
        };
        assert_eq!(none.apply(&b("not json")), Some(b("not json")));
    }
}
