//! nsqlookupd's command-line flags and config-file keys (upstream's names
//! and defaults), parsed with Go `flag` syntax by `nsq_app::flags`.

use std::time::Duration;

use clap::Parser;
use nsq_app::{GoDuration, LogLevel};

/// Everything that configures one nsqlookupd.
#[derive(Debug, Clone, Parser)]
#[command(name = "nsqlookupd", about = "NSQ discovery daemon")]
pub struct Options {
    /// Log verbosity: debug, info, warn, error or fatal.
    #[arg(long, default_value = "info")]
    pub log_level: LogLevel,
    /// Prefix of every log line.
    #[arg(long, default_value = "[nsqlookupd] ")]
    pub log_prefix: String,
    /// log format: text (upstream's lines) or json (ours: one object per line)
    #[arg(long, default_value = "text")]
    pub log_format: nsq_app::LogFormat,
    /// Deprecated: use --log-level=debug. Accepted, has no effect.
    #[arg(long)]
    pub verbose: bool,

    /// <addr>:<port> to listen on for TCP clients (nsqd).
    #[arg(long, default_value = "0.0.0.0:4160")]
    pub tcp_address: String,
    /// <addr>:<port> to listen on for HTTP clients.
    #[arg(long, default_value = "0.0.0.0:4161")]
    pub http_address: String,
    #[command(flatten)]
    pub http_timeout_flags: nsq_app::http_timeouts::HttpTimeoutFlags,
    /// Address of this lookupd node, returned to nsqd in IDENTIFY (default:
    /// the OS hostname).
    #[arg(long)]
    pub broadcast_address: Option<String>,

    /// How long a producer stays in the active list after its last PING.
    #[arg(long, default_value = "5m0s")]
    pub inactive_producer_timeout: GoDuration,
    /// How long a producer stays tombstoned if its registration remains.
    #[arg(long, default_value = "45s")]
    pub tombstone_lifetime: GoDuration,

    #[command(flatten)]
    pub standard: nsq_app::StandardFlags,
}

nsq_app::defaults_from_flags!(Options, "nsqlookupd");

impl Options {
    /// `--http-header-timeout` and `--http-idle-timeout` for the HTTP server.
    pub fn http_timeouts(&self) -> nsq_app::http_timeouts::HttpTimeouts {
        self.http_timeout_flags.timeouts()
    }

    /// Defaults for an in-process server on ephemeral loopback ports.
    pub fn for_tests() -> Self {
        Options {
            tcp_address: "127.0.0.1:0".into(),
            http_address: "127.0.0.1:0".into(),
            broadcast_address: Some("127.0.0.1".into()),
            ..Options::default()
        }
    }

    pub fn inactive_producer_timeout(&self) -> Duration {
        self.inactive_producer_timeout.0
    }

    pub fn tombstone_lifetime(&self) -> Duration {
        self.tombstone_lifetime.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        let argv = std::iter::once("nsqlookupd").chain(args.iter().copied());
        nsq_app::try_parse_options::<Options>("nsqlookupd", argv.map(Into::into), &[])
            .expect("flags parse")
    }

    #[test]
    fn upstream_defaults() {
        let o = parse(&[]);
        assert_eq!(o.tcp_address, "0.0.0.0:4160");
        assert_eq!(o.http_address, "0.0.0.0:4161");
        assert_eq!(o.broadcast_address, None);
        assert_eq!(o.inactive_producer_timeout(), Duration::from_secs(300));
        assert_eq!(o.tombstone_lifetime(), Duration::from_secs(45));
        assert_eq!(o.log_level, LogLevel::Info);
        assert_eq!(o.log_prefix, "[nsqlookupd] ");
        assert!(!o.verbose);
    }

    #[test]
    fn go_style_flags() {
        let o = parse(&[
            "-tcp-address",
            "127.0.0.1:14160",
            "--http-address=:14161",
            "-broadcast-address=lookupd.example",
            "--inactive-producer-timeout=1m30s",
            "-tombstone-lifetime",
            "500ms",
            "-log-level=WARN",
            "--verbose",
        ]);
        assert_eq!(o.tcp_address, "127.0.0.1:14160");
        assert_eq!(o.http_address, ":14161");
        assert_eq!(o.broadcast_address.as_deref(), Some("lookupd.example"));
        assert_eq!(o.inactive_producer_timeout(), Duration::from_secs(90));
        assert_eq!(o.tombstone_lifetime(), Duration::from_millis(500));
        assert_eq!(o.log_level, LogLevel::Warn);
        assert!(o.verbose);
    }

    #[test]
    fn config_file_keys() {
        let dir = std::env::temp_dir().join(format!("nsqlookupd-opts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nsqlookupd.cfg");
        std::fs::write(
            &path,
            "tcp_address = \"127.0.0.1:1\"\ntombstone_lifetime = \"10s\"\nbroadcast_address = \"b\"\n",
        )
        .unwrap();
        let config = format!("--config={}", path.display());
        // The command line beats the file.
        let o = parse(&[&config, "--tcp-address=127.0.0.1:2"]);
        assert_eq!(o.tcp_address, "127.0.0.1:2");
        assert_eq!(o.tombstone_lifetime(), Duration::from_secs(10));
        assert_eq!(o.broadcast_address.as_deref(), Some("b"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let argv = ["nsqlookupd", "--tombstone-lifetime=soon"].map(Into::into);
        let err = nsq_app::try_parse_options::<Options>("nsqlookupd", argv, &[]).unwrap_err();
        assert_eq!(err.code, 2);
        let argv = ["nsqlookupd", "--version"].map(Into::into);
        let err = nsq_app::try_parse_options::<Options>("nsqlookupd", argv, &[]).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (
                0,
                format!("{}\n", nsq_app::version_string("nsqlookupd")).as_str()
            )
        );
    }
}
