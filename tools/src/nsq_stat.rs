//! `nsq_stat`: poll the nsqds of a topic for one channel's stats and print them as a table, one row per interval.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nsq_app::GoDuration;
use serde_json::Value;

use crate::{Result, ToolError};

/// Upstream's `nsq_stat` flags.
#[derive(Parser, Debug, Clone)]
#[command(about = "Print the rates and depths of an NSQ channel over its nsqds.")]
pub struct StatOptions {
    /// NSQ topic
    #[arg(long, default_value = "")]
    pub topic: String,
    /// NSQ channel
    #[arg(long, default_value = "")]
    pub channel: String,
    /// (deprecated) duration of time between polling/printing output
    #[arg(long)]
    pub status_every: Option<GoDuration>,
    /// duration of time between polling/printing output
    #[arg(long, default_value = "2s")]
    pub interval: GoDuration,
    /// number of reports (default: until stopped)
    #[arg(long, visible_alias = "count-of")]
    pub count: Option<i64>,
    /// timeout for HTTP connect
    #[arg(long, default_value = "2s")]
    pub http_client_connect_timeout: GoDuration,
    /// timeout for HTTP request
    #[arg(long, default_value = "5s")]
    pub http_client_request_timeout: GoDuration,
    /// nsqd HTTP address (may be given multiple times)
    #[arg(long)]
    pub nsqd_http_address: Vec<String>,
    /// lookupd HTTP address (may be given multiple times)
    #[arg(long)]
    pub lookupd_http_address: Vec<String>,
}

impl StatOptions {
    /// Upstream's checks; returns the polling interval.
    fn validate(&self) -> Result<Duration> {
        let bad = |s: &str| Err(ToolError::Config(s.to_owned()));
        if self.topic.is_empty() || self.channel.is_empty() {
            return bad("--topic and --channel are required");
        }
        let interval = match self.status_every {
            Some(d) => {
                eprintln!("--status-every is deprecated, use --interval");
                d.0
            }
            None => self.interval.0,
        };
        if interval.is_zero() {
            return bad("--interval should be positive");
        }
        if self.http_client_connect_timeout.0.is_zero() {
            return bad("--http-client-connect-timeout should be positive");
        }
        if self.http_client_request_timeout.0.is_zero() {
            return bad("--http-client-request-timeout should be positive");
        }
        if self.count.is_some_and(|c| c <= 0) {
            return bad("--count should be positive");
        }
        match (
            self.nsqd_http_address.is_empty(),
            self.lookupd_http_address.is_empty(),
        ) {
            (true, true) => return bad("--nsqd-http-address or --lookupd-http-address required"),
            (false, false) => {
                return bad("use --nsqd-http-address or --lookupd-http-address not both")
            }
            _ => {}
        }
        for (flag, addrs) in [
            ("--nsqd-http-address", &self.nsqd_http_address),
            ("--lookupd-http-address", &self.lookupd_http_address),
        ] {
            if addrs.iter().any(|a| a.starts_with("http")) {
                return Err(ToolError::Config(format!(
                    "{flag} error - address should not contain scheme"
                )));
            }
        }
        Ok(interval)
    }
}

/// One channel's stats summed over every nsqd that has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub depth: i64,
    pub memory_depth: i64,
    pub backend_depth: i64,
    pub in_flight: i64,
    pub deferred: i64,
    pub requeued: i64,
    pub timed_out: i64,
    pub messages: i64,
    pub clients: i64,
}

impl ChannelStats {
    /// Adds the channel `channel` of topic `topic` in one nsqd's
    /// `/stats?format=json` answer; false when that nsqd does not have it.
    pub fn add_from(&mut self, stats: &Value, topic: &str, channel: &str) -> bool {
        let found = stats["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["topic_name"] == topic)
            .flat_map(|t| t["channels"].as_array().into_iter().flatten())
            .find(|c| c["channel_name"] == channel);
        let Some(c) = found else { return false };
        let n = |k: &str| c[k].as_i64().unwrap_or(0);
        self.depth += n("depth");
        self.backend_depth += n("backend_depth");
        // nsqd reports the total and the disk part; the rest is in memory.
        self.memory_depth += n("depth") - n("backend_depth");
        self.in_flight += n("in_flight_count");
        self.deferred += n("deferred_count");
        self.requeued += n("requeue_count");
        self.timed_out += n("timeout_count");
        self.messages += n("message_count");
        self.clients += c["client_count"]
            .as_i64()
            .unwrap_or_else(|| c["clients"].as_array().map_or(0, |a| a.len() as i64));
        true
    }
}

/// The two header lines upstream prints every 25 intervals.
pub fn header() -> String {
    format!(
        "{}+{}+{}\n{:>7} {:>7} | {:>7} {:>7} {:>7} {:>5} {:>5} | {:>7} {:>7} {:>12} {:>7}",
        "------rate------",
        "----------------depth----------------",
        "--------------metadata---------------",
        "ingress",
        "egress",
        "total",
        "mem",
        "disk",
        "inflt",
        "def",
        "req",
        "t-o",
        "msgs",
        "clients"
    )
}

/// One data row: rates per second over the interval since `prev` (ingress:
/// messages that arrived; egress: those that arrived less the depth
/// growth), then the current gauges and counters.
pub fn row(prev: &ChannelStats, cur: &ChannelStats, interval: Duration) -> String {
    let secs = interval.as_secs_f64();
    let ingress = cur.messages - prev.messages;
    let egress = ingress - (cur.depth - prev.depth);
    format!(
        "{:>7} {:>7} | {:>7} {:>7} {:>7} {:>5} {:>5} | {:>7} {:>7} {:>12} {:>7}",
        (ingress as f64 / secs) as i64,
        (egress as f64 / secs) as i64,
        cur.depth,
        cur.memory_depth,
        cur.backend_depth,
        cur.in_flight,
        cur.deferred,
        cur.requeued,
        cur.timed_out,
        cur.messages,
        cur.clients
    )
}

/// A small HTTP GET client for the stats and lookup endpoints.
struct Http {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Http {
    fn new(connect: Duration, request: Duration) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect));
        Http {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: request,
        }
    }

    async fn get_json(&self, addr: &str, path_and_query: &str) -> Result<Value> {
        let url = format!("http://{addr}{path_and_query}");
        let fail = |why: String| ToolError::Config(format!("GET {url}: {why}"));
        let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("{e}")))?;
        let req = hyper::Request::get(uri)
            .header(hyper::header::ACCEPT, "application/vnd.nsq; version=1.0")
            .body(Empty::new())
            .map_err(|e| fail(e.to_string()))?;
        let fetch = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body.to_bytes()))
        };
        let (status, body) = tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(fail)?;
        if !status.is_success() {
            return Err(fail(format!("status {status}")));
        }
        serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))
    }
}

/// The HTTP addresses of the nsqds to poll: the given ones, or every
/// producer of the topic the lookupds know.
async fn nsqds(http: &Http, opts: &StatOptions) -> Result<Vec<String>> {
    if opts.lookupd_http_address.is_empty() {
        return Ok(opts.nsqd_http_address.clone());
    }
    let mut found = BTreeSet::new();
    let path = format!("/lookup?topic={}", nsq_app::url::query_escape(&opts.topic));
    for lookupd in &opts.lookupd_http_address {
        let v = http.get_json(lookupd, &path).await?;
        let producers = v["producers"]
            .as_array()
            .or_else(|| v["data"]["producers"].as_array());
        for p in producers.into_iter().flatten() {
            if let (Some(host), Some(port)) =
                (p["broadcast_address"].as_str(), p["http_port"].as_u64())
            {
                found.insert(if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                });
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// The channel's stats summed over its nsqds now.
async fn poll(http: &Http, opts: &StatOptions) -> Result<ChannelStats> {
    let path = format!(
        "/stats?format=json&topic={}&channel={}",
        nsq_app::url::query_escape(&opts.topic),
        nsq_app::url::query_escape(&opts.channel)
    );
    let mut sum = ChannelStats::default();
    let mut found = false;
    for nsqd in nsqds(http, opts).await? {
        let stats = http.get_json(&nsqd, &path).await?;
        found |= sum.add_from(&stats, &opts.topic, &opts.channel);
    }
    if !found {
        return Err(ToolError::Config(format!(
            "failed to find channel({}) in stats metadata for topic({})",
            opts.channel, opts.topic
        )));
    }
    Ok(sum)
}

/// Polls until `--count` rows are printed (forever without it), writing
/// each line through `print`. The first poll is only the baseline for the
/// rates, so `--count=N` makes N + 1 polls, as upstream.
pub async fn run(opts: &StatOptions, mut print: impl FnMut(&str)) -> Result<()> {
    let interval = opts.validate()?;
    let http = Http::new(
        opts.http_client_connect_timeout.0,
        opts.http_client_request_timeout.0,
    );
    let mut prev: Option<ChannelStats> = None;
    let mut i: i64 = 0;
    loop {
        let cur = poll(&http, opts).await?;
        if i % 25 == 0 {
            print(&header());
        }
        if let Some(p) = &prev {
            print(&row(p, &cur, interval));
        }
        prev = Some(cur);
        if opts.count.is_some_and(|c| i >= c) {
            return Ok(());
        }
        i += 1;
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_line_up_with_the_header() {
        let h = header();
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(
            lines[1],
            "ingress  egress |   total     mem    disk inflt   def |     req     t-o         msgs clients"
        );
        let prev = ChannelStats {
            messages: 100,
            depth: 10,
            ..ChannelStats::default()
        };
        let cur = ChannelStats {
            depth: 30,
            memory_depth: 20,
            backend_depth: 10,
            in_flight: 2,
            deferred: 1,
            requeued: 3,
            timed_out: 4,
            messages: 300,
            clients: 5,
        };
        // 200 arrived in 2 s (100/s); depth grew by 20, so 180 left (90/s).
        let r = row(&prev, &cur, Duration::from_secs(2));
        assert_eq!(
            r,
            "    100      90 |      30      20      10     2     1 |       3       4          300       5"
        );
        assert_eq!(r.len(), lines[1].len());
        assert_eq!(lines[0].len(), lines[1].len());
    }

    #[test]
    fn stats_are_summed_for_the_named_channel_only() {
        let one: Value = serde_json::json!({"topics": [
            {"topic_name": "t", "channels": [
                {"channel_name": "c", "depth": 5, "backend_depth": 2, "in_flight_count": 1,
                 "deferred_count": 0, "requeue_count": 1, "timeout_count": 0,
                 "message_count": 9, "client_count": 1},
                {"channel_name": "other", "depth": 100}
            ]},
            {"topic_name": "u", "channels": [{"channel_name": "c", "depth": 100}]}
        ]});
        let mut s = ChannelStats::default();
        assert!(s.add_from(&one, "t", "c"));
        assert!(s.add_from(&one, "t", "c"));
        assert!(!s.add_from(&one, "t", "missing"));
        assert_eq!(s.depth, 10);
        assert_eq!(s.memory_depth, 6);
        assert_eq!(s.messages, 18);
        assert_eq!(s.clients, 2);
    }
}
