//! The `/stats` data model: a snapshot of every topic, channel and client
//! with upstream's field names, order and omissions, rendered as JSON or as
//! upstream's human-readable text. statsd and `/metrics` read the same
//! snapshot.

use std::fmt::Write as _;
use std::time::Duration;

use nsq_app::GoDuration;
use serde::Serialize;

use crate::client::Client;
use crate::e2e::{self, E2eResult};
use crate::message::unix_nanos;
use crate::nsqd::Nsqd;

/// Which part of the state a caller wants; empty names mean all.
#[derive(Debug, Clone, Default)]
pub struct StatsFilter {
    pub topic: String,
    pub channel: String,
    pub include_clients: bool,
}

/// Upstream's `Stats`: `topics` is `None` (JSON null) when the topic filter
/// names no topic; `producers` is `None` without clients or when empty.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub topics: Option<Vec<TopicReport>>,
    pub producers: Option<Vec<ClientReport>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicReport {
    pub topic_name: String,
    pub channels: Vec<ChannelReport>,
    pub depth: u64,
    pub backend_depth: u64,
    pub message_count: u64,
    pub message_bytes: u64,
    pub paused: bool,
    pub e2e_processing_latency: E2eResult,
    /// Ours, not upstream's: what the disk queue had to skip. Omitted while
    /// zero, so a healthy nsqd's `/stats` has exactly upstream's keys.
    #[serde(flatten)]
    pub disk: DiskHealth,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What the disk queue had to skip (ours, not upstream's): each omitted
/// while zero, so a healthy nsqd's `/stats` has exactly upstream's keys.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiskHealth {
    #[serde(skip_serializing_if = "is_zero")]
    pub disk_corrupt_records: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub disk_bad_segments: u64,
}

impl From<crate::disk_io::DiskDamage> for DiskHealth {
    fn from(d: crate::disk_io::DiskDamage) -> Self {
        DiskHealth {
            disk_corrupt_records: d.corrupt_records,
            disk_bad_segments: d.bad_segments,
        }
    }
}

/// Topology-aware delivery counters (experimental upstream): each omitted
/// while zero, which they always are until that experiment exists here.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Locality {
    #[serde(skip_serializing_if = "is_zero")]
    pub zone_local_msg_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub region_local_msg_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub global_msg_count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChannelReport {
    pub channel_name: String,
    pub depth: u64,
    pub backend_depth: u64,
    pub in_flight_count: u64,
    pub deferred_count: u64,
    pub message_count: u64,
    /// Topology-aware delivery counters (experimental upstream); omitted
    /// when zero, which they always are until that experiment exists here.
    #[serde(flatten)]
    pub locality: Locality,
    pub requeue_count: u64,
    pub timeout_count: u64,
    pub client_count: u64,
    pub clients: Option<Vec<ClientReport>>,
    pub paused: bool,
    pub e2e_processing_latency: E2eResult,
    /// As on [`TopicReport`]: ours, omitted while zero.
    #[serde(flatten)]
    pub disk: DiskHealth,
    /// Ours: server-side max attempts, only when set (so a default
    /// `/stats` has exactly upstream's keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Messages moved to the dead-letter topic; omitted while zero.
    #[serde(skip_serializing_if = "is_zero")]
    pub dead_count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PubCount {
    pub topic: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientReport {
    pub client_id: String,
    pub hostname: String,
    pub version: &'static str,
    pub remote_address: String,
    pub state: u8,
    pub ready_count: u64,
    pub in_flight_count: u64,
    pub message_count: u64,
    #[serde(flatten)]
    pub locality: Locality,
    pub finish_count: u64,
    pub requeue_count: u64,
    pub connect_ts: i64,
    pub sample_rate: u8,
    pub deflate: bool,
    pub snappy: bool,
    pub user_agent: String,
    #[serde(skip_serializing_if = "is_false")]
    pub authed: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_identity: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_identity_url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub topology_zone: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub topology_region: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pub_counts: Vec<PubCount>,
    pub tls: bool,
    pub tls_cipher_suite: String,
    pub tls_version: String,
    pub tls_negotiated_protocol: String,
    pub tls_negotiated_protocol_is_mutual: bool,
}

impl ClientReport {
    /// A client's numbers; `topic` (if not empty) narrows `pub_counts` to
    /// that topic. Upstream lists at most one entry (its loop breaks after
    /// the first map item); we keep that, picking the first by name.
    pub fn new(c: &Client, topic: &str) -> ClientReport {
        let info = c.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let pub_counts = c
            .pub_counts()
            .into_iter()
            .filter(|(t, _)| topic.is_empty() || t == topic)
            .take(1)
            .map(|(topic, count)| PubCount { topic, count })
            .collect();
        ClientReport {
            client_id: info.client_id,
            hostname: info.hostname,
            version: "V2",
            remote_address: c.remote_addr.to_string(),
            state: c.state() as u8,
            ready_count: c.ready_count(),
            in_flight_count: c.in_flight(),
            message_count: c.message_count.load(std::sync::atomic::Ordering::Relaxed),
            locality: Locality::default(),
            finish_count: c.finish_count.load(std::sync::atomic::Ordering::Relaxed),
            requeue_count: c.requeue_count.load(std::sync::atomic::Ordering::Relaxed),
            connect_ts: c.connect_ts,
            sample_rate: info.sample_rate,
            deflate: info.deflate,
            snappy: info.snappy,
            user_agent: info.user_agent,
            authed: info.authed,
            auth_identity: info.auth_identity,
            auth_identity_url: info.auth_identity_url,
            topology_zone: info.topology_zone,
            topology_region: info.topology_region,
            pub_counts,
            tls: info.tls,
            tls_cipher_suite: info.tls_info.cipher_suite,
            tls_version: info.tls_info.version,
            tls_negotiated_protocol: info.tls_info.negotiated_protocol,
            // Go reports this as always true for a TLS session.
            tls_negotiated_protocol_is_mutual: info.tls,
        }
    }

    /// Upstream's one-line text form: producers show what they published,
    /// consumers their delivery counters.
    pub fn line(&self, now_secs: i64) -> String {
        let connected = GoDuration(Duration::from_secs(
            now_secs.saturating_sub(self.connect_ts).max(0) as u64,
        ));
        let port = self.remote_address.rsplit_once(':').map_or("", |(_, p)| p);
        let id = format!("{}:{} {}", self.hostname, port, self.user_agent);
        if !self.pub_counts.is_empty() {
            let total: u64 = self.pub_counts.iter().map(|p| p.count).sum();
            let topics: Vec<String> = self
                .pub_counts
                .iter()
                .map(|p| format!("{}={}", p.topic, p.count))
                .collect();
            return format!(
                "[{} {:<21}] msgs: {:<8} topics: {} connected: {}",
                self.version,
                id,
                total,
                topics.join(","),
                connected
            );
        }
        format!(
            "[{} {:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {}",
            self.version,
            id,
            self.state,
            self.in_flight_count,
            self.ready_count,
            self.finish_count,
            self.requeue_count,
            self.message_count,
            connected
        )
    }
}

/// Gather the snapshot as upstream's `GetStats(topic, channel, includeClients)`.
pub fn collect(nsqd: &Nsqd, filter: &StatsFilter) -> Snapshot {
    let percentiles = nsqd.opts.e2e_percentiles().unwrap_or_default();
    let topics = if filter.topic.is_empty() {
        nsqd.topics_snapshot()
    } else {
        match nsqd.topic(&filter.topic) {
            Some(t) => vec![t],
            // Upstream returns an empty `Stats`: no topics, no producers.
            None => return Snapshot::default(),
        }
    };
    let mut reports = Vec::with_capacity(topics.len());
    for t in topics {
        let all = t.channels();
        let chosen: Vec<_> = if filter.channel.is_empty() {
            all.clone()
        } else {
            match all.iter().find(|c| c.name.as_str() == filter.channel) {
                Some(c) => vec![c.clone()],
                // A topic without the filtered channel is left out.
                None => continue,
            }
        };
        let channels = chosen
            .iter()
            .map(|c| {
                let s = c.stats();
                let dl = c.dead_letter_stats();
                let clients = filter.include_clients.then(|| {
                    let mut cl = c.clients();
                    cl.sort_by_key(|c| c.id);
                    cl.iter()
                        .map(|c| ClientReport::new(c, &filter.topic))
                        .collect()
                });
                ChannelReport {
                    channel_name: c.name.to_string(),
                    depth: s.depth,
                    backend_depth: s.backend_depth,
                    in_flight_count: s.in_flight_count,
                    deferred_count: s.deferred_count,
                    message_count: s.message_count,
                    locality: Locality::default(),
                    requeue_count: s.requeue_count,
                    timeout_count: s.timeout_count,
                    client_count: s.client_count as u64,
                    clients,
                    paused: s.paused,
                    e2e_processing_latency: e2e::channel_result(c.e2e(), &percentiles),
                    disk: s.disk_damage.into(),
                    max_attempts: (dl.options.max_attempts > 0).then_some(dl.options.max_attempts),
                    dead_letter_topic: (dl.options.max_attempts > 0)
                        .then(|| c.dead_letter_topic().to_string()),
                    dead_count: dl.dead_count,
                }
            })
            .collect();
        let (ts, _) = t.stats();
        reports.push(TopicReport {
            topic_name: t.name.to_string(),
            channels,
            depth: ts.depth,
            backend_depth: ts.backend_depth,
            message_count: ts.message_count,
            message_bytes: ts.message_bytes,
            paused: ts.paused,
            e2e_processing_latency: e2e::topic_result(
                all.iter().filter_map(|c| c.e2e()),
                &percentiles,
            ),
            disk: ts.disk_damage.into(),
        });
    }
    let producers = filter.include_clients.then(|| {
        nsqd.clients_snapshot()
            .iter()
            .filter(|c| !c.pub_counts().is_empty())
            .map(|c| ClientReport::new(c, &filter.topic))
            .collect::<Vec<_>>()
    });
    Snapshot {
        topics: Some(reports),
        // A nil Go slice when no producer: JSON null either way.
        producers: producers.filter(|p| !p.is_empty()),
    }
}

/// Upstream's `memStats`. Go runtime numbers have no Rust equivalent; the
/// keys stay, `heap_in_use_bytes` carries the resident set size (the closest
/// meaning), the rest are 0.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MemStats {
    pub heap_objects: u64,
    pub heap_idle_bytes: u64,
    pub heap_in_use_bytes: u64,
    pub heap_released_bytes: u64,
    pub gc_pause_usec_100: u64,
    pub gc_pause_usec_99: u64,
    pub gc_pause_usec_95: u64,
    pub next_gc_bytes: u64,
    pub gc_total_runs: u64,
}

impl MemStats {
    pub fn read() -> MemStats {
        MemStats {
            heap_in_use_bytes: crate::process::resident_bytes(),
            ..MemStats::default()
        }
    }

    fn fields(&self) -> [(&'static str, u64); 9] {
        [
            ("heap_objects", self.heap_objects),
            ("heap_idle_bytes", self.heap_idle_bytes),
            ("heap_in_use_bytes", self.heap_in_use_bytes),
            ("heap_released_bytes", self.heap_released_bytes),
            ("gc_pause_usec_100", self.gc_pause_usec_100),
            ("gc_pause_usec_99", self.gc_pause_usec_99),
            ("gc_pause_usec_95", self.gc_pause_usec_95),
            ("next_gc_bytes", self.next_gc_bytes),
            ("gc_total_runs", self.gc_total_runs),
        ]
    }
}

/// `/stats` query parameters.
#[derive(Debug, Clone, Default)]
pub struct StatsRequest {
    pub json: bool,
    pub filter: StatsFilter,
    pub include_mem: bool,
}

/// The `/stats` JSON document, fields in upstream's order (serialised
/// directly: a `serde_json::Value` would sort the keys).
#[derive(Serialize)]
pub struct StatsDoc {
    version: &'static str,
    health: String,
    start_time: i64,
    topics: Option<Vec<TopicReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<MemStats>,
    producers: Option<Vec<ClientReport>>,
    /// Ours, only with replication configured: each peer's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<Vec<crate::replica_hooks::ReplicaReport>>,
}

/// `OK`, or upstream's `NOK - <error>`.
pub fn health_text(nsqd: &Nsqd) -> String {
    match nsqd.health() {
        Ok(()) => "OK".to_string(),
        Err(e) => format!("NOK - {e}"),
    }
}

/// The JSON document of `GET /stats?format=json`.
pub fn to_json(nsqd: &Nsqd, req: &StatsRequest) -> StatsDoc {
    let snap = collect(nsqd, &req.filter);
    StatsDoc {
        version: nsq_protocol::VERSION,
        health: health_text(nsqd),
        start_time: nsqd.start_time,
        topics: snap.topics,
        memory: req.include_mem.then(MemStats::read),
        producers: snap.producers,
        replicas: nsqd.replicas.as_ref().map(|r| r.report()),
    }
}

/// The text form of `GET /stats` (any `format` but `json`), laid out as
/// upstream's `printStats`.
pub fn to_text(nsqd: &Nsqd, req: &StatsRequest) -> String {
    let snap = collect(nsqd, &req.filter);
    let now_nanos = unix_nanos();
    let now_secs = now_nanos / 1_000_000_000;
    let uptime = now_nanos.saturating_sub(nsqd.start_time.saturating_mul(1_000_000_000));
    let mut w = String::new();
    let _ = writeln!(w, "{}", nsq_app::flags::version_string("nsqd"));
    let _ = writeln!(w, "start_time {}", rfc3339_utc(nsqd.start_time));
    let _ = writeln!(
        w,
        "uptime {}",
        GoDuration(Duration::from_nanos(uptime.max(0) as u64))
    );
    let _ = writeln!(w, "\nHealth: {}", health_text(nsqd));
    if req.include_mem {
        w.push_str("\nMemory:\n");
        for (k, v) in MemStats::read().fields() {
            let _ = writeln!(w, "   {k:<25}\t{v}");
        }
    }
    let topics = snap.topics.unwrap_or_default();
    if topics.is_empty() {
        w.push_str("\nTopics: None\n");
    } else {
        w.push_str("\nTopics:");
    }
    for t in &topics {
        let paused = if t.paused { "*P " } else { "   " };
        let _ = writeln!(
            w,
            "\n{paused}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: {}",
            t.topic_name,
            t.depth,
            t.backend_depth,
            t.message_count,
            t.e2e_processing_latency.human()
        );
        for c in &t.channels {
            let paused = if c.paused { "   *P " } else { "      " };
            let _ = writeln!(
                w,
                "{paused}[{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: {}",
                c.channel_name,
                c.depth,
                c.backend_depth,
                c.in_flight_count,
                c.deferred_count,
                c.requeue_count,
                c.timeout_count,
                c.message_count,
                c.e2e_processing_latency.human()
            );
            for client in c.clients.iter().flatten() {
                let _ = writeln!(w, "        {}", client.line(now_secs));
            }
        }
    }
    match snap.producers.as_deref() {
        None | Some([]) => w.push_str("\nProducers: None\n"),
        Some(ps) => {
            w.push_str("\nProducers:\n");
            for p in ps {
                let _ = writeln!(w, "   {}", p.line(now_secs));
            }
        }
    }
    w
}

/// `2006-01-02T15:04:05Z` for Unix seconds (upstream prints its local zone;
/// servers run in UTC, and a fixed zone keeps the output stable).
pub fn rfc3339_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = nsq_app::calendar::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_314_094), "2026-11-22T02:21:34Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn client_lines_like_upstream() {
        let mut r = ClientReport {
            client_id: "c".into(),
            hostname: "host".into(),
            version: "V2",
            remote_address: "127.0.0.1:5000".into(),
            state: 3,
            ready_count: 1,
            in_flight_count: 1,
            message_count: 2,
            locality: Locality::default(),
            finish_count: 1,
            requeue_count: 0,
            connect_ts: 100,
            sample_rate: 0,
            deflate: false,
            snappy: false,
            user_agent: "ua/1".into(),
            authed: false,
            auth_identity: String::new(),
            auth_identity_url: String::new(),
            topology_zone: String::new(),
            topology_region: String::new(),
            pub_counts: vec![],
            tls: false,
            tls_cipher_suite: String::new(),
            tls_version: String::new(),
            tls_negotiated_protocol: String::new(),
            tls_negotiated_protocol_is_mutual: false,
        };
        assert_eq!(
            r.line(165),
            "[V2 host:5000 ua/1       ] state: 3 inflt: 1    rdy: 1    fin: 1        re-q: 0        msgs: 2        connected: 1m5s"
        );
        r.pub_counts = vec![PubCount {
            topic: "t".into(),
            count: 7,
        }];
        assert_eq!(
            r.line(100),
            "[V2 host:5000 ua/1       ] msgs: 7        topics: t=7 connected: 0s"
        );
    }
}
