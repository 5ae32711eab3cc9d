//! nsqd's command-line flags and config keys, with upstream's names and
//! defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use nsq_app::duration::GoDuration;
use nsq_app::logging::LogLevel;

/// Config-file keys whose flag name is not the key with `_` turned into `-`.
pub const CONFIG_KEYS: &[(&str, &str)] = &[
    ("nsqlookupd_tcp_addresses", "lookupd-tcp-address"),
    ("id", "node-id"),
    (
        "e2e_processing_latency_percentiles",
        "e2e-processing-latency-percentile",
    ),
    ("auth_http_addresses", "auth-http-address"),
];

/// Every nsqd flag. Field docs are the `-h` text.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "nsqd",
    about = "NSQ daemon: receives, queues and delivers messages to clients.",
    disable_version_flag = true
)]
pub struct Options {
    /// <addr>:<port> to listen on for TCP clients
    #[arg(long, default_value = "0.0.0.0:4150")]
    pub tcp_address: String,
    /// <addr>:<port> to listen on for HTTP clients ("" disables HTTP)
    #[arg(long, default_value = "0.0.0.0:4151")]
    pub http_address: String,
    /// <addr>:<port> to listen on for HTTPS clients
    #[arg(long, default_value = "0.0.0.0:4152")]
    pub https_address: String,
    #[command(flatten)]
    pub http_timeout_flags: nsq_app::http_timeouts::HttpTimeoutFlags,
    /// address that will be registered with lookupd (defaults to the OS hostname)
    #[arg(long, default_value = "")]
    pub broadcast_address: String,
    /// TCP port that will be registered with lookupd (0 = the port listened on)
    #[arg(long, default_value_t = 0)]
    pub broadcast_tcp_port: u16,
    /// HTTP port that will be registered with lookupd (0 = the port listened on)
    #[arg(long, default_value_t = 0)]
    pub broadcast_http_port: u16,
    /// lookupd TCP address (may be given multiple times)
    #[arg(long)]
    pub lookupd_tcp_address: Vec<String>,
    /// path to store disk-backed messages
    #[arg(long, default_value = "")]
    pub data_path: String,
    /// number of messages to keep in memory (per topic/channel)
    #[arg(long, default_value_t = 10000)]
    pub mem_queue_size: i64,
    /// number of bytes per diskqueue file before rolling
    #[arg(long, default_value_t = 104857600)]
    pub max_bytes_per_file: i64,
    /// number of messages per diskqueue fsync
    #[arg(long, default_value_t = 2500)]
    pub sync_every: i64,
    /// duration of time per diskqueue fsync
    #[arg(long, default_value = "2s")]
    pub sync_timeout: GoDuration,
    /// max concurrency for checking in-flight and deferred message timeouts
    #[arg(long, default_value_t = 4)]
    pub queue_scan_worker_pool_max: i64,
    /// number of channels to check per cycle (every 100ms) for in-flight and deferred timeouts
    #[arg(long, default_value_t = 20)]
    pub queue_scan_selection_count: i64,
    /// default duration to wait before auto-requeing a message
    #[arg(long, default_value = "60s")]
    pub msg_timeout: GoDuration,
    /// maximum duration before a message will timeout
    #[arg(long, default_value = "15m")]
    pub max_msg_timeout: GoDuration,
    /// maximum size of a single message in bytes
    #[arg(long, default_value_t = 1048576)]
    pub max_msg_size: i64,
    /// maximum size of a single command body
    #[arg(long, default_value_t = 5242880)]
    pub max_body_size: i64,
    /// maximum requeuing timeout for a message
    #[arg(long, default_value = "1h")]
    pub max_req_timeout: GoDuration,
    /// maximum client configurable duration of time between client heartbeats
    #[arg(long, default_value = "60s")]
    pub max_heartbeat_interval: GoDuration,
    /// maximum RDY count for a client
    #[arg(long, default_value_t = 2500)]
    pub max_rdy_count: i64,
    /// maximum client configurable size (in bytes) for a client output buffer
    #[arg(long, default_value_t = 65536)]
    pub max_output_buffer_size: i64,
    /// maximum client configurable duration of time between flushing to a client
    #[arg(long, default_value = "30s")]
    pub max_output_buffer_timeout: GoDuration,
    /// minimum client configurable duration of time between flushing to a client
    #[arg(long, default_value = "25ms")]
    pub min_output_buffer_timeout: GoDuration,
    /// default duration of time between flushing data to clients
    #[arg(long, default_value = "250ms")]
    pub output_buffer_timeout: GoDuration,
    /// maximum channel consumer connection count per nsqd instance (0 = unlimited)
    #[arg(long, default_value_t = 0)]
    pub max_channel_consumers: i64,
    /// after start, job channels hold dispatch this long unless --job-min-workers workers joined first (ours)
    #[arg(long, default_value = "0s")]
    pub job_settle_time: GoDuration,
    /// workers (clients that declared a capacity) whose joining ends a job channel's settle window early (ours; 0 = wait the whole window)
    #[arg(long, default_value_t = 0)]
    pub job_min_workers: i64,
    /// threads serving disk queues (ours; 0 = one per CPU the process may use)
    #[arg(long, default_value_t = 0)]
    pub disk_io_threads: i64,
    /// unique part for message IDs, (int) in range [0,1024) (default is hash of hostname)
    #[arg(long)]
    pub node_id: Option<i64>,
    /// [deprecated] ignored
    #[arg(long)]
    pub worker_id: bool,
    /// UDP <addr>:<port> of a statsd daemon for pushing stats
    #[arg(long, default_value = "")]
    pub statsd_address: String,
    /// prefix used for keys sent to statsd (%s for host replacement)
    #[arg(long, default_value = "nsq.%s")]
    pub statsd_prefix: String,
    /// duration between pushing to statsd
    #[arg(long, default_value = "60s")]
    pub statsd_interval: GoDuration,
    /// toggle sending memory and GC stats to statsd
    #[arg(long, default_value_t = true)]
    pub statsd_mem_stats: bool,
    /// the size in bytes of statsd UDP packets
    #[arg(long, default_value_t = 508)]
    pub statsd_udp_packet_size: i64,
    /// skip ephemeral topics and channels when sending stats to statsd
    #[arg(long)]
    pub statsd_exclude_ephemeral: bool,
    /// message processing time percentiles (as float (0, 1.0]) to track (can be given multiple times or comma separated)
    #[arg(long)]
    pub e2e_processing_latency_percentile: Vec<String>,
    /// calculate end to end latency quantiles for this duration of time
    #[arg(long, default_value = "10m")]
    pub e2e_processing_latency_window_time: GoDuration,
    /// path to certificate file
    #[arg(long, default_value = "")]
    pub tls_cert: String,
    /// path to key file
    #[arg(long, default_value = "")]
    pub tls_key: String,
    /// client certificate auth policy ('require' or 'require-verify')
    #[arg(long, default_value = "")]
    pub tls_client_auth_policy: String,
    /// path to certificate authority file
    #[arg(long, default_value = "")]
    pub tls_root_ca_file: String,
    /// require TLS for client connections (true, false, tcp-https)
    #[arg(long, default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub tls_required: String,
    /// minimum SSL/TLS version acceptable ('ssl3.0', 'tls1.0', 'tls1.1', 'tls1.2' or 'tls1.3')
    #[arg(long, default_value = "tls1.0")]
    pub tls_min_version: String,
    /// <addr>:<port> or a full url to query auth server (may be given multiple times)
    #[arg(long)]
    pub auth_http_address: Vec<String>,
    /// HTTP method to use for auth server requests ('get' or 'post')
    #[arg(long, default_value = "get")]
    pub auth_http_request_method: String,
    /// timeout for HTTP connect
    #[arg(long, default_value = "2s")]
    pub http_client_connect_timeout: GoDuration,
    /// timeout for HTTP request
    #[arg(long, default_value = "5s")]
    pub http_client_request_timeout: GoDuration,
    /// enable deflate feature negotiation (client compression)
    #[arg(long, default_value_t = true)]
    pub deflate: bool,
    /// max deflate compression level a client can negotiate (> values == > nsqd CPU usage)
    #[arg(long, default_value_t = 6)]
    pub max_deflate_level: i64,
    /// enable snappy feature negotiation (client compression)
    #[arg(long, default_value_t = true)]
    pub snappy: bool,
    /// name of the region this nsqd runs in
    #[arg(long, default_value = "")]
    pub topology_region: String,
    /// name of the zone this nsqd runs in
    #[arg(long, default_value = "")]
    pub topology_zone: String,
    /// enable experimental feature (may be given multiple times)
    #[arg(long)]
    pub enable_experiment: Vec<String>,
    /// set log level: debug, info, warn, error, or fatal
    #[arg(long, default_value = "info")]
    pub log_level: LogLevel,
    /// log message prefix
    #[arg(long, default_value = "[nsqd] ")]
    pub log_prefix: String,
    /// log format: text (upstream's lines) or json (ours: one object per line)
    #[arg(long, default_value = "text")]
    pub log_format: nsq_app::LogFormat,
    /// [deprecated] has no effect, use --log-level
    #[arg(long)]
    pub verbose: bool,
    /// /metrics: also one series per connected client (ours; adds series per connection)
    #[arg(long)]
    pub metrics_per_client: bool,
    /// write every message to disk and fsync before acknowledging a publish
    #[arg(long)]
    pub durable: bool,
    /// <addr>:<port> to listen on for replication peers; also this node's name towards them ("" disables replication)
    #[arg(long, default_value = "")]
    pub replication_address: String,
    /// a peer's --replication-address to replicate to and take over from (may be given multiple times)
    #[arg(long)]
    pub replica: Vec<String>,
    /// how long a publish waits for a peer's acknowledgement before that peer is out of sync
    #[arg(long, default_value = "2s")]
    pub replica_timeout: GoDuration,
    /// how long a peer must be unreachable before this node delivers its messages
    #[arg(long, default_value = "10s")]
    pub replica_takeover_after: GoDuration,
    /// refuse publishes while fewer peers than this are in sync
    #[arg(long, default_value_t = 0)]
    pub replica_min_acks: i64,
    /// file holding a secret (16 to 4096 bytes) that replication peers must prove they know, both ways ("" leaves the peer link unauthenticated)
    #[arg(long, default_value = "")]
    pub replication_secret_file: String,
    #[command(flatten)]
    pub standard: nsq_app::StandardFlags,
}

nsq_app::defaults_from_flags!(Options, "nsqd");

/// `--tls-required`: which listeners refuse clients that have not upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRequired {
    No,
    /// `tcp-https`: TCP clients must upgrade; plain HTTP stays open.
    ExceptHttp,
    /// TCP clients must upgrade and the plain HTTP port answers 403.
    Yes,
}

/// A startup error in the options, reported before anything starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionsError(pub String);

impl Options {
    /// `--http-header-timeout` and `--http-idle-timeout` for the HTTP server.
    pub fn http_timeouts(&self) -> nsq_app::http_timeouts::HttpTimeouts {
        self.http_timeout_flags.timeouts()
    }

    /// Check what clap's types cannot, with upstream's messages.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let err = |m: String| Err(OptionsError(m));
        if let Some(id) = self.node_id {
            if !(0..1024).contains(&id) {
                return err(format!("--node-id must be [0,1024), got {id}"));
            }
        }
        if !self.replica.is_empty() && self.replication_address.is_empty() {
            return err("--replica needs --replication-address".into());
        }
        if self.replica_min_acks < 0 || self.replica_min_acks as usize > self.replica.len() {
            return err(format!(
                "--replica-min-acks must be [0,{}] (the number of --replica), got {}",
                self.replica.len(),
                self.replica_min_acks
            ));
        }
        if self.replica_timeout.is_zero() || self.replica_takeover_after.is_zero() {
            return err("--replica-timeout and --replica-takeover-after must be positive".into());
        }
        if !(1..=9).contains(&self.max_deflate_level) {
            return err("--max-deflate-level must be [1,9]".into());
        }
        if !matches!(self.auth_http_request_method.as_str(), "get" | "post") {
            return err("--auth-http-request-method must be 'get' or 'post'".into());
        }
        if !matches!(
            self.tls_required.as_str(),
            "true" | "false" | "tcp-https" | "1" | "0"
        ) {
            return err(format!(
                "--tls-required: invalid value {:?}",
                self.tls_required
            ));
        }
        if !matches!(
            self.tls_client_auth_policy.as_str(),
            "" | "require" | "require-verify"
        ) {
            return err(format!(
                "--tls-client-auth-policy must be 'require' or 'require-verify', got {:?}",
                self.tls_client_auth_policy
            ));
        }
        // "" keeps the default, as Go's flag value does (upstream's example
        // config says `tls_min_version = ""`).
        if !matches!(
            self.tls_min_version.as_str(),
            "" | "ssl3.0" | "tls1.0" | "tls1.1" | "tls1.2" | "tls1.3"
        ) {
            return err(format!(
                "unknown tlsVersionOption {:?}",
                self.tls_min_version
            ));
        }
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return err("--tls-cert and --tls-key must be given together".into());
        }
        if self.tls_cert.is_empty() && self.tls_required() != TlsRequired::No {
            return err("cannot require TLS client connections without TLS key and cert".into());
        }
        if self.tls_client_auth_policy == "require-verify" && self.tls_root_ca_file.is_empty() {
            // Go would fall back to the system's roots; we ask for the CA.
            return err("--tls-client-auth-policy=require-verify needs --tls-root-ca-file".into());
        }
        for p in self.e2e_percentiles()? {
            if !(p > 0.0 && p <= 1.0) {
                return err(format!("invalid E2E processing latency percentile: {p}"));
            }
        }
        for (name, v) in [
            ("--mem-queue-size", self.mem_queue_size),
            ("--max-msg-size", self.max_msg_size),
            ("--max-body-size", self.max_body_size),
            ("--max-rdy-count", self.max_rdy_count),
            ("--max-channel-consumers", self.max_channel_consumers),
            ("--job-min-workers", self.job_min_workers),
            ("--disk-io-threads", self.disk_io_threads),
        ] {
            if v < 0 {
                return err(format!("{name} must not be negative"));
            }
        }
        if self.max_rdy_count > i64::from(u16::MAX) {
            return err(
                "--max-rdy-count must be at most 65535 (clients read it as 16 bits)".into(),
            );
        }
        Ok(())
    }

    /// Threads serving disk queues: `--disk-io-threads`, or one per CPU
    /// this process may use (the queues' work is mostly memory copies into
    /// the page cache, so more threads than CPUs buys nothing).
    pub fn disk_io_threads(&self) -> usize {
        match self.disk_io_threads {
            n if n > 0 => n as usize,
            _ => std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }

    /// The e2e percentiles, from repeated and comma-separated flags, highest first.
    pub fn e2e_percentiles(&self) -> Result<Vec<f64>, OptionsError> {
        let mut out = Vec::new();
        for raw in &self.e2e_processing_latency_percentile {
            for part in raw.split(',').filter(|p| !p.trim().is_empty()) {
                let p: f64 = part.trim().parse().map_err(|_| {
                    OptionsError(format!("invalid E2E processing latency percentile: {part}"))
                })?;
                out.push(p);
            }
        }
        out.sort_by(|a, b| b.total_cmp(a));
        Ok(out)
    }

    /// The node ID for message IDs: the flag, or a hash of the hostname.
    pub fn effective_node_id(&self) -> u16 {
        use md5::{Digest, Md5};
        match self.node_id {
            Some(id) => id as u16,
            None => {
                let digest = Md5::digest(nsq_app::os_hostname().as_bytes());
                (crc32fast::hash(&digest) % 1024) as u16
            }
        }
    }

    pub fn broadcast_address(&self) -> String {
        if self.broadcast_address.is_empty() {
            nsq_app::os_hostname()
        } else {
            self.broadcast_address.clone()
        }
    }

    pub fn data_path(&self) -> PathBuf {
        if self.data_path.is_empty() {
            PathBuf::from(".")
        } else {
            PathBuf::from(&self.data_path)
        }
    }

    /// Flags of features this build does not implement yet: accepted, and
    /// named in a warning at startup rather than silently ignored.
    pub fn unsupported(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut note = |set: bool, name: &'static str| {
            if set {
                out.push(name);
            }
        };
        note(!self.enable_experiment.is_empty(), "--enable-experiment");
        out
    }

    /// Where TLS is required. A client certificate policy raises "not
    /// required" to "required everywhere", as upstream does.
    pub fn tls_required(&self) -> TlsRequired {
        match self.tls_required.as_str() {
            "tcp-https" => TlsRequired::ExceptHttp,
            "true" | "1" => TlsRequired::Yes,
            _ if !self.tls_client_auth_policy.is_empty() => TlsRequired::Yes,
            _ => TlsRequired::No,
        }
    }

    /// Whether AUTH is on: any `--auth-http-address`.
    pub fn auth_enabled(&self) -> bool {
        !self.auth_http_address.is_empty()
    }

    pub fn limits(&self) -> nsq_protocol::Limits {
        nsq_protocol::Limits {
            max_msg_size: self.max_msg_size as u64,
            max_body_size: self.max_body_size as u64,
            max_req_timeout_ms: self.max_req_timeout.as_millis() as u64,
        }
    }

    /// The default heartbeat interval: half of upstream's fixed 60 s client timeout.
    pub fn default_heartbeat(&self) -> Duration {
        Duration::from_secs(30)
    }
}
