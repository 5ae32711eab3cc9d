//! What the daemons answer, as far as nsqadmin reads it: nsqd's
//! `/stats?format=json` and `/info`, lookupd's producer entries (V1 shapes,
//! the same from upstream's daemons and ours). Fields nsqadmin does not show
//! are skipped; missing ones default.

use serde::Deserialize;

/// nsqd's `/stats` body; fields we do not show are skipped.
#[derive(Debug, Clone, Deserialize)]
pub struct NsqdStats {
    #[serde(default)]
    pub topics: Vec<NsqdTopic>,
    /// Ours: an nsqd in a replicated pair lists its peers.
    #[serde(default)]
    pub replicas: Option<Vec<NsqdReplica>>,
}

/// One replication peer of an nsqd, as its `/stats` reports it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct NsqdReplica {
    pub peer: String,
    pub state: String,
    #[serde(default)]
    pub lag_messages: u64,
    #[serde(default)]
    pub lag_bytes: u64,
    #[serde(default)]
    pub shadow_depth: u64,
    #[serde(default)]
    pub takeovers: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NsqdTopic {
    pub topic_name: String,
    #[serde(default)]
    pub channels: Vec<NsqdChannel>,
    #[serde(default)]
    pub depth: i64,
    #[serde(default)]
    pub backend_depth: i64,
    #[serde(default)]
    pub message_count: i64,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub e2e_processing_latency: NsqdLatency,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NsqdChannel {
    pub channel_name: String,
    #[serde(default)]
    pub depth: i64,
    #[serde(default)]
    pub backend_depth: i64,
    #[serde(default)]
    pub in_flight_count: i64,
    #[serde(default)]
    pub deferred_count: i64,
    #[serde(default)]
    pub message_count: i64,
    #[serde(default)]
    pub requeue_count: i64,
    #[serde(default)]
    pub timeout_count: i64,
    #[serde(default)]
    pub client_count: i64,
    /// Absent with `include_clients=false`.
    #[serde(default)]
    pub clients: Option<Vec<NsqdClient>>,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub e2e_processing_latency: NsqdLatency,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NsqdClient {
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub remote_address: String,
    #[serde(default)]
    pub ready_count: i64,
    #[serde(default)]
    pub in_flight_count: i64,
    #[serde(default)]
    pub message_count: i64,
    #[serde(default)]
    pub finish_count: i64,
    #[serde(default)]
    pub requeue_count: i64,
    #[serde(default)]
    pub connect_ts: i64,
    #[serde(default)]
    pub sample_rate: i64,
    #[serde(default)]
    pub deflate: bool,
    #[serde(default)]
    pub snappy: bool,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub authed: bool,
    #[serde(default)]
    pub auth_identity: String,
    #[serde(default)]
    pub auth_identity_url: String,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub tls_cipher_suite: String,
    #[serde(default)]
    pub tls_version: String,
    #[serde(default)]
    pub tls_negotiated_protocol: String,
    #[serde(default)]
    pub tls_negotiated_protocol_is_mutual: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NsqdLatency {
    #[serde(default)]
    pub count: i64,
    #[serde(default)]
    pub percentiles: Option<Vec<NsqdPercentile>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NsqdPercentile {
    pub quantile: f64,
    pub value: f64,
}

/// One producer entry of lookupd's `/nodes` or `/lookup`.
#[derive(Debug, Clone, Deserialize)]
pub struct LookupdProducer {
    #[serde(default)]
    pub remote_address: String,
    #[serde(default)]
    pub hostname: String,
    pub broadcast_address: String,
    #[serde(default)]
    pub tcp_port: u16,
    pub http_port: u16,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub tombstones: Vec<bool>,
    #[serde(default)]
    pub topics: Vec<String>,
}

/// nsqd's `/info`.
#[derive(Debug, Clone, Deserialize)]
pub struct NsqdInfo {
    #[serde(default)]
    pub version: String,
    pub broadcast_address: String,
    #[serde(default)]
    pub hostname: String,
    pub http_port: u16,
    #[serde(default)]
    pub tcp_port: u16,
}
