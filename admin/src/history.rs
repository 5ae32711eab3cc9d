//! The dashboard's memory: every `--history-interval` the sampler reads
//! each nsqd's `/stats` and keeps, per topic and per channel, the last hour
//! of depth, in-flight count and message rate (from the growth of
//! `message_count`), plus which nodes answered. Upstream leaves charts to
//! Graphite; here they need nothing outside nsqadmin.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Sources, StatsQuery};

/// How far back the charts reach.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// One sample of one topic or channel, summed over nodes.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Point {
    /// Unix milliseconds.
    pub ts: i64,
    pub depth: i64,
    pub in_flight: i64,
    pub message_count: i64,
    /// Messages per second since the previous sample (0 for the first, and
    /// after a counter went backwards, e.g. an nsqd restart).
    pub rate: f64,
}

/// The figures a sample records for one topic or channel.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub depth: i64,
    pub in_flight: i64,
    pub message_count: i64,
}

/// How one daemon answered the last sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    pub address: String,
    pub hostname: String,
    pub reachable: bool,
    pub error: String,
}

/// What the last sample saw, for the live overview.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub ts: i64,
    pub interval_ms: u64,
    pub topics: Vec<TopicNow>,
    pub nodes: Vec<Health>,
    pub lookupds: Vec<Health>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicNow {
    pub topic_name: String,
    /// Messages held by the topic itself (waiting for a first channel).
    pub depth: i64,
    /// Messages queued in its channels, summed.
    pub channel_depth: i64,
    pub in_flight_count: i64,
    pub message_count: i64,
    pub rate: f64,
    pub channel_count: usize,
}

/// Series key: topic, and channel (empty for the topic itself).
type Key = (String, String);

/// The sampler writes, HTTP handlers read; each holds the lock only to copy
/// or append, never across a request.
#[derive(Debug)]
pub struct History {
    interval: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    series: HashMap<Key, VecDeque<Point>>,
    snapshot: Snapshot,
}

impl History {
    pub fn new(interval: Duration) -> Self {
        History {
            interval,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add one sample taken at `ts` (Unix ms): figures per (topic, channel)
    /// key, channel `""` for a topic. Points older than [`WINDOW`] go, and
    /// so do series with none left.
    pub fn record(&self, ts: i64, figures: &BTreeMap<Key, Figures>, mut snapshot: Snapshot) {
        let mut inner = self.lock();
        let oldest = ts - WINDOW.as_millis() as i64;
        let mut rates: HashMap<&str, f64> = HashMap::new();
        for (key, f) in figures {
            let series = inner.series.entry(key.clone()).or_default();
            let rate = match series.back() {
                Some(prev) if ts > prev.ts && f.message_count >= prev.message_count => {
                    (f.message_count - prev.message_count) as f64 * 1000.0 / (ts - prev.ts) as f64
                }
                _ => 0.0,
            };
            series.push_back(Point {
                ts,
                depth: f.depth,
                in_flight: f.in_flight,
                message_count: f.message_count,
                rate,
            });
            if key.1.is_empty() {
                rates.insert(key.0.as_str(), rate);
            }
        }
        for t in &mut snapshot.topics {
            t.rate = rates.get(t.topic_name.as_str()).copied().unwrap_or(0.0);
        }
        inner.series.retain(|_, s| {
            while s.front().is_some_and(|p| p.ts < oldest) {
                s.pop_front();
            }
            !s.is_empty()
        });
        snapshot.ts = ts;
        snapshot.interval_ms = self.interval.as_millis() as u64;
        inner.snapshot = snapshot;
    }

    /// The points of a topic (`channel` empty) or channel, oldest first.
    pub fn series(&self, topic: &str, channel: &str) -> Vec<Point> {
        self.lock()
            .series
            .get(&(topic.to_owned(), channel.to_owned()))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().snapshot.clone()
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Take one sample now: ask for the nodes, then every node's `/stats`.
pub async fn sample_once(cluster: &Cluster, history: &History) {
    let ts = now_ms();
    let mut snapshot = Snapshot::default();
    let mut figures: BTreeMap<Key, Figures> = BTreeMap::new();
    let sources = cluster.sources();
    let (nodes, warnings) = match cluster.nodes().await {
        Ok(answer) => answer,
        Err(e) => (Vec::new(), vec![e.to_string()]),
    };
    match &sources {
        Sources::Lookupd(addrs) => snapshot.lookupds = health_of(addrs.iter(), &warnings),
        // A configured nsqd that did not answer is not among `nodes`.
        Sources::Nsqd(addrs) => {
            let missing = addrs
                .iter()
                .filter(|a| !nodes.iter().any(|n| &n.fetch_addr == *a));
            snapshot.nodes = health_of(missing, &warnings);
        }
    }
    // Per topic: its figures, its channels' summed depth, their names.
    let mut topics: BTreeMap<String, (Figures, i64, BTreeSet<String>)> = BTreeMap::new();
    let answers = cluster.stats_each(&nodes, StatsQuery::default()).await;
    for (node, answer) in nodes.iter().zip(answers) {
        let mut health = Health {
            address: node.producer.http_address(),
            hostname: node.producer.hostname.clone(),
            reachable: true,
            error: String::new(),
        };
        let stats = match answer {
            Ok((_, stats)) => stats,
            Err(e) => {
                health.reachable = false;
                health.error = e.to_string();
                snapshot.nodes.push(health);
                continue;
            }
        };
        snapshot.nodes.push(health);
        for t in stats.topics {
            let tf = figures
                .entry((t.topic_name.clone(), String::new()))
                .or_default();
            tf.depth += t.depth;
            tf.message_count += t.message_count;
            tf.in_flight += t.channels.iter().map(|c| c.in_flight_count).sum::<i64>();
            let topic_now = *tf;
            let entry = topics.entry(t.topic_name.clone()).or_default();
            entry.0 = topic_now;
            for c in &t.channels {
                entry.1 += c.depth;
                entry.2.insert(c.channel_name.clone());
                let cf = figures
                    .entry((t.topic_name.clone(), c.channel_name.clone()))
                    .or_default();
                cf.depth += c.depth;
                cf.in_flight += c.in_flight_count;
                cf.message_count += c.message_count;
            }
        }
    }
    snapshot.topics = topics
        .into_iter()
        .map(|(name, (f, channel_depth, channels))| TopicNow {
            topic_name: name,
            depth: f.depth,
            channel_depth,
            in_flight_count: f.in_flight,
            message_count: f.message_count,
            rate: 0.0,
            channel_count: channels.len(),
        })
        .collect();
    history.record(ts, &figures, snapshot);
}

/// Each daemon at `addrs` with the failure the warnings name for it (they
/// quote the URLs asked), reachable when there is none.
fn health_of<'a>(addrs: impl Iterator<Item = &'a String>, warnings: &[String]) -> Vec<Health> {
    addrs
        .map(|a| {
            let needle = format!("http://{a}/");
            let err = warnings.iter().find(|w| w.contains(&needle));
            Health {
                address: a.clone(),
                hostname: String::new(),
                reachable: err.is_none(),
                error: err.cloned().unwrap_or_default(),
            }
        })
        .collect()
}

/// Sample every interval until cancelled. A slow round delays the next
/// instead of piling rounds up.
pub async fn run_sampler(
    cluster: Cluster,
    history: std::sync::Arc<History>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(history.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sample_once(&cluster, &history) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figs(entries: &[(&str, &str, i64, i64)]) -> BTreeMap<Key, Figures> {
        entries
            .iter()
            .map(|(t, c, depth, count)| {
                (
                    (t.to_string(), c.to_string()),
                    Figures {
                        depth: *depth,
                        in_flight: 1,
                        message_count: *count,
                    },
                )
            })
            .collect()
    }

    fn snap(topic: &str) -> Snapshot {
        Snapshot {
            topics: vec![TopicNow {
                topic_name: topic.into(),
                depth: 0,
                channel_depth: 0,
                in_flight_count: 0,
                message_count: 0,
                rate: 0.0,
                channel_count: 1,
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn rates_come_from_counter_growth() {
        let h = History::new(Duration::from_secs(10));
        h.record(
            1_000,
            &figs(&[("t", "", 5, 100), ("t", "c", 2, 50)]),
            snap("t"),
        );
        h.record(
            11_000,
            &figs(&[("t", "", 7, 300), ("t", "c", 3, 70)]),
            snap("t"),
        );
        // nsqd restarted: the counter went back; no negative rate.
        h.record(
            21_000,
            &figs(&[("t", "", 0, 10), ("t", "c", 0, 0)]),
            snap("t"),
        );
        let t = h.series("t", "");
        assert_eq!(
            t.iter().map(|p| p.rate).collect::<Vec<_>>(),
            [0.0, 20.0, 0.0]
        );
        assert_eq!(t[1].depth, 7);
        let c = h.series("t", "c");
        assert_eq!(c[1].rate, 2.0);
        assert!(h.series("t", "nope").is_empty());
        let s = h.snapshot();
        assert_eq!((s.ts, s.interval_ms), (21_000, 10_000));
        assert_eq!(s.topics[0].rate, 0.0);
    }

    #[test]
    fn keeps_one_hour() {
        let h = History::new(Duration::from_secs(60));
        let hour = WINDOW.as_millis() as i64;
        h.record(0, &figs(&[("old", "", 1, 1), ("t", "", 1, 1)]), snap("t"));
        h.record(hour / 2, &figs(&[("t", "", 1, 1)]), snap("t"));
        h.record(hour + 1, &figs(&[("t", "", 1, 1)]), snap("t"));
        assert_eq!(h.series("t", "").len(), 2, "the first point aged out");
        assert!(
            h.series("old", "").is_empty(),
            "a series with no points left goes"
        );
    }

    #[test]
    fn health_names_each_daemons_failure() {
        let addrs = ["a:1".to_string(), "b:2".to_string()];
        let warnings = ["GET http://b:2/nodes: connection refused".to_string()];
        let h = health_of(addrs.iter(), &warnings);
        assert!(h[0].reachable && h[0].error.is_empty());
        assert!(!h[1].reachable);
        assert_eq!(h[1].error, warnings[0]);
    }

    #[test]
    fn snapshot_rate_is_the_topics_latest() {
        let h = History::new(Duration::from_secs(1));
        h.record(0, &figs(&[("t", "", 0, 0)]), snap("t"));
        h.record(500, &figs(&[("t", "", 0, 100)]), snap("t"));
        assert_eq!(h.snapshot().topics[0].rate, 200.0);
    }
}
