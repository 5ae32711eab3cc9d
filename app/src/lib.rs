//! Shared glue for the nsqd, nsqlookupd and nsqadmin binaries: Go-style flags and TOML config, Go durations, upstream-format logging, shutdown signals, listeners and HTTP serving, the URL codec.

pub mod calendar;
#[cfg(feature = "cli")]
pub mod docs;
pub mod duration;
#[cfg(feature = "cli")]
pub mod flags;
#[cfg(feature = "cli")]
pub mod http_client;
#[cfg(feature = "cli")]
pub mod http_server;
#[cfg(feature = "cli")]
pub mod http_timeouts;
#[cfg(feature = "cli")]
pub mod lifecycle;
#[cfg(feature = "cli")]
pub mod logging;
#[cfg(feature = "cli")]
pub mod net;
#[cfg(feature = "cli")]
pub mod prometheus;
#[cfg(feature = "cli")]
pub mod request_log;
#[cfg(feature = "cli")]
pub mod signal;
pub mod url;

pub use duration::{parse_go_duration, DurationError, GoDuration};
#[cfg(feature = "cli")]
pub use flags::{parse_options, try_parse_options, FlagError, StandardFlags};
#[cfg(feature = "cli")]
pub use logging::{LogFormat, LogHandle, LogLevel};

/// The upstream release whose flags, protocol and HTTP API we match; what
/// `--version` reports, so tools that check the version treat us as it.
pub const VERSION: &str = "1.3.0";

/// What every binary's `--version` prints: the upstream version it speaks,
/// then ours, e.g. `nsqd v1.3.0 (nsq-rs 0.1.0 abc1234, built w/rustc 1.95.0)`.
pub fn version_string(prog: &str) -> String {
    format!(
        "{prog} v{VERSION} (nsq-rs {} {}, built w/rustc {})",
        env!("CARGO_PKG_VERSION"),
        env!("NSQ_RS_GIT_COMMIT"),
        env!("NSQ_RS_RUSTC_VERSION"),
    )
}

/// The machine's hostname, upstream's default for `--broadcast-address` and
/// the input to the default `--node-id`.
pub fn os_hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostname_is_not_empty() {
        assert!(!super::os_hostname().is_empty());
    }
}
