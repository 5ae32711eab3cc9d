//! nsqadmin's command-line flags and config-file keys (upstream's names and
//! defaults, plus `--history-interval` for the in-memory charts), parsed
//! with Go `flag` syntax by `nsq_app::flags`.

use std::time::Duration;

use clap::Parser;
use nsq_app::{GoDuration, LogLevel};

/// Config-file keys whose names are not the flag's with `-` → `_`.
pub const CONFIG_KEYS: &[(&str, &str)] = &[
    ("nsqlookupd_http_addresses", "lookupd-http-address"),
    ("nsqd_http_addresses", "nsqd-http-address"),
    ("admin_users", "admin-user"),
];

/// Everything that configures one nsqadmin.
#[derive(Debug, Clone, Parser)]
#[command(name = "nsqadmin", about = "NSQ web dashboard")]
pub struct Options {
    /// Log verbosity: debug, info, warn, error or fatal.
    #[arg(long, default_value = "info")]
    pub log_level: LogLevel,
    /// Prefix of every log line.
    #[arg(long, default_value = "[nsqadmin] ")]
    pub log_prefix: String,
    /// log format: text (upstream's lines) or json (ours: one object per line)
    #[arg(long, default_value = "text")]
    pub log_format: nsq_app::LogFormat,
    /// Deprecated: use --log-level=debug. Accepted, has no effect.
    #[arg(long)]
    pub verbose: bool,

    /// <addr>:<port> to listen on for HTTP clients.
    #[arg(long, default_value = "0.0.0.0:4171")]
    pub http_address: String,
    /// URL base path: every page and API path lives under it.
    #[arg(long, default_value = "/")]
    pub base_path: String,
    #[command(flatten)]
    pub http_timeout_flags: nsq_app::http_timeouts::HttpTimeoutFlags,

    /// lookupd HTTP address (may be given multiple times).
    #[arg(long)]
    pub lookupd_http_address: Vec<String>,
    /// nsqd HTTP address (may be given multiple times).
    #[arg(long)]
    pub nsqd_http_address: Vec<String>,

    /// HTTP endpoint (fully qualified) to which POST notifications of admin
    /// actions will be sent.
    #[arg(long, default_value = "")]
    pub notification_http_endpoint: String,
    /// Admin user (may be given multiple times); when set, only requests whose
    /// --acl-http-header names one of them may change anything.
    #[arg(long)]
    pub admin_user: Vec<String>,
    /// HTTP header naming the authenticated user.
    #[arg(long, default_value = "X-Forwarded-User")]
    pub acl_http_header: String,
    /// A CIDR from which to allow HTTP requests to the /config endpoint.
    #[arg(long, default_value = "127.0.0.1/8")]
    pub allow_config_from_cidr: String,

    /// Timeout for connecting to lookupd and nsqd.
    #[arg(long, default_value = "2s")]
    pub http_client_connect_timeout: GoDuration,
    /// Timeout for one request to lookupd or nsqd.
    #[arg(long, default_value = "5s")]
    pub http_client_request_timeout: GoDuration,
    /// Ours: the largest answer read from a lookupd or nsqd, in bytes; a
    /// node answering more is reported as failing (default 64 MiB).
    #[arg(long, default_value_t = nsq_app::http_client::DEFAULT_MAX_BODY)]
    pub http_client_max_body_size: usize,

    /// Graphite HTTP address (not supported: charts come from --history-interval samples).
    #[arg(long, default_value = "")]
    pub graphite_url: String,
    /// Proxy HTTP requests to graphite (not supported).
    #[arg(long)]
    pub proxy_graphite: bool,
    /// statsd counter key format (only used with graphite; not supported).
    #[arg(long, default_value = "stats.counters.%s.count")]
    pub statsd_counter_format: String,
    /// statsd gauge key format (only used with graphite; not supported).
    #[arg(long, default_value = "stats.gauges.%s")]
    pub statsd_gauge_format: String,
    /// statsd key prefix (only used with graphite; not supported).
    #[arg(long, default_value = "nsq.%s")]
    pub statsd_prefix: String,
    /// Interval nsqd pushes to statsd (only used with graphite; not supported).
    #[arg(long, default_value = "1m0s")]
    pub statsd_interval: GoDuration,

    /// Skip the HTTP client's certificate check (TLS to daemons: not supported).
    #[arg(long)]
    pub http_client_tls_insecure_skip_verify: bool,
    /// CA file for the HTTP client (TLS to daemons: not supported).
    #[arg(long, default_value = "")]
    pub http_client_tls_root_ca_file: String,
    /// Certificate file for the HTTP client (TLS to daemons: not supported).
    #[arg(long, default_value = "")]
    pub http_client_tls_cert: String,
    /// Key file for the HTTP client (TLS to daemons: not supported).
    #[arg(long, default_value = "")]
    pub http_client_tls_key: String,
    /// Skip DNS lookup of addresses on startup. Addresses are only ever
    /// resolved when used, so this is always the case here.
    #[arg(long)]
    pub skip_resolve_on_startup: bool,

    /// Ours: how often every nsqd's /stats is sampled for the rate and depth
    /// charts; the last hour of samples is kept in memory.
    #[arg(long, default_value = "10s")]
    pub history_interval: GoDuration,

    #[command(flatten)]
    pub standard: nsq_app::StandardFlags,
}

nsq_app::defaults_from_flags!(Options, "nsqadmin");

/// Options that cannot work together, reported as upstream words them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("--nsqd-http-address or --lookupd-http-address required")]
    NoSources,
    #[error("use --nsqd-http-address or --lookupd-http-address not both")]
    BothSources,
    #[error("--history-interval must be at least 10ms, got {0:?}")]
    HistoryInterval(Duration),
    #[error("invalid --notification-http-endpoint {0:?}: must be an http:// URL")]
    NotificationEndpoint(String),
}

impl Options {
    /// `--http-header-timeout` and `--http-idle-timeout` for the HTTP server.
    pub fn http_timeouts(&self) -> nsq_app::http_timeouts::HttpTimeouts {
        self.http_timeout_flags.timeouts()
    }

    /// Defaults for an in-process server on an ephemeral loopback port.
    pub fn for_tests() -> Self {
        Options {
            http_address: "127.0.0.1:0".into(),
            ..Options::default()
        }
    }

    pub fn validate(&self) -> Result<(), OptionsError> {
        match (
            self.lookupd_http_address.is_empty(),
            self.nsqd_http_address.is_empty(),
        ) {
            (true, true) => return Err(OptionsError::NoSources),
            (false, false) => return Err(OptionsError::BothSources),
            _ => {}
        }
        if self.history_interval.0 < Duration::from_millis(10) {
            return Err(OptionsError::HistoryInterval(self.history_interval.0));
        }
        let ep = &self.notification_http_endpoint;
        if !ep.is_empty() && !ep.starts_with("http://") {
            return Err(OptionsError::NotificationEndpoint(ep.clone()));
        }
        Ok(())
    }

    /// `--base-path` as a prefix: `/` becomes empty, anything else gains a
    /// leading slash and loses a trailing one (`admin/` → `/admin`).
    pub fn base_prefix(&self) -> String {
        let trimmed = self.base_path.trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        }
    }

    /// Flags of features this build does not implement: accepted, and named
    /// in a warning at startup rather than silently ignored.
    pub fn unsupported(&self) -> Vec<&'static str> {
        let defaults = Options::default();
        let mut out = Vec::new();
        let mut note = |set: bool, name: &'static str| {
            if set {
                out.push(name);
            }
        };
        note(!self.graphite_url.is_empty(), "--graphite-url");
        note(self.proxy_graphite, "--proxy-graphite");
        note(
            self.statsd_counter_format != defaults.statsd_counter_format,
            "--statsd-counter-format",
        );
        note(
            self.statsd_gauge_format != defaults.statsd_gauge_format,
            "--statsd-gauge-format",
        );
        note(
            self.statsd_prefix != defaults.statsd_prefix,
            "--statsd-prefix",
        );
        note(
            self.statsd_interval.0 != defaults.statsd_interval.0,
            "--statsd-interval",
        );
        note(
            self.http_client_tls_insecure_skip_verify,
            "--http-client-tls-insecure-skip-verify",
        );
        note(
            !self.http_client_tls_root_ca_file.is_empty(),
            "--http-client-tls-root-ca-file",
        );
        note(
            !self.http_client_tls_cert.is_empty(),
            "--http-client-tls-cert",
        );
        note(
            !self.http_client_tls_key.is_empty(),
            "--http-client-tls-key",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        let argv = std::iter::once("nsqadmin").chain(args.iter().copied());
        nsq_app::try_parse_options::<Options>("nsqadmin", argv.map(Into::into), CONFIG_KEYS)
            .expect("flags parse")
    }

    #[test]
    fn upstream_defaults() {
        let o = parse(&[]);
        assert_eq!(o.http_address, "0.0.0.0:4171");
        assert_eq!(o.base_path, "/");
        assert_eq!(o.acl_http_header, "X-Forwarded-User");
        assert_eq!(o.allow_config_from_cidr, "127.0.0.1/8");
        assert_eq!(o.http_client_connect_timeout.0, Duration::from_secs(2));
        assert_eq!(o.http_client_request_timeout.0, Duration::from_secs(5));
        assert_eq!(o.statsd_interval.0, Duration::from_secs(60));
        assert_eq!(o.statsd_prefix, "nsq.%s");
        assert_eq!(o.log_prefix, "[nsqadmin] ");
        assert!(o.unsupported().is_empty());
        assert_eq!(o.validate(), Err(OptionsError::NoSources));
    }

    #[test]
    fn repeatable_sources_and_users() {
        let o = parse(&[
            "--lookupd-http-address=127.0.0.1:4161",
            "-lookupd-http-address",
            "127.0.0.1:5161",
            "--admin-user=alice",
            "--admin-user=bob",
            "--base-path=/admin/",
        ]);
        assert_eq!(o.lookupd_http_address, ["127.0.0.1:4161", "127.0.0.1:5161"]);
        assert_eq!(o.admin_user, ["alice", "bob"]);
        assert_eq!(o.base_prefix(), "/admin");
        assert_eq!(o.validate(), Ok(()));

        let both = parse(&["--lookupd-http-address=a:1", "--nsqd-http-address=b:2"]);
        assert_eq!(both.validate(), Err(OptionsError::BothSources));
        assert_eq!(
            OptionsError::BothSources.to_string(),
            "use --nsqd-http-address or --lookupd-http-address not both"
        );
    }

    #[test]
    fn unsupported_flags_are_named() {
        let o = parse(&[
            "--nsqd-http-address=a:1",
            "--graphite-url=http://graphite",
            "--http-client-tls-cert=/c.pem",
        ]);
        assert_eq!(
            o.unsupported(),
            ["--graphite-url", "--http-client-tls-cert"]
        );
    }

    #[test]
    fn config_file_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nsqadmin.cfg");
        std::fs::write(
            &path,
            "nsqlookupd_http_addresses = [\"127.0.0.1:4161\", \"127.0.0.1:5161\"]\n\
             admin_users = [\"root\"]\nhttp_address = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let o = parse(&[&format!("--config={}", path.display())]);
        assert_eq!(o.lookupd_http_address, ["127.0.0.1:4161", "127.0.0.1:5161"]);
        assert_eq!(o.admin_user, ["root"]);
        assert_eq!(o.http_address, "127.0.0.1:1");
    }

    #[test]
    fn bad_values() {
        let o = parse(&["--nsqd-http-address=a:1", "--history-interval=1ms"]);
        assert!(matches!(
            o.validate(),
            Err(OptionsError::HistoryInterval(_))
        ));
        let o = parse(&[
            "--nsqd-http-address=a:1",
            "--notification-http-endpoint=ftp://x",
        ]);
        assert!(matches!(
            o.validate(),
            Err(OptionsError::NotificationEndpoint(_))
        ));
        let argv = ["nsqadmin", "--history-interval=soon"].map(Into::into);
        let err = nsq_app::try_parse_options::<Options>("nsqadmin", argv, CONFIG_KEYS).unwrap_err();
        assert_eq!(err.code, 2);
    }
}
