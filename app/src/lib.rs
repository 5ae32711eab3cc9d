//! Shared glue for the nsqd, nsqlookupd and nsqadmin binaries: Go-style flags and TOML config, Go durations, upstream-format logging, shutdown signals.

pub mod docs;
pub mod duration;
pub mod flags;
pub mod http_client;
pub mod http_timeouts;
pub mod logging;
pub mod net;
pub mod prometheus;
pub mod request_log;
pub mod signal;

pub use duration::{parse_go_duration, GoDuration};
pub use flags::{parse_options, try_parse_options, FlagError};
pub use logging::{LogFormat, LogHandle, LogLevel};

/// The upstream release whose flags, protocol and HTTP API we match; what
/// `--version` reports, so tools that check the version treat us as it.
pub const VERSION: &str = "1.3.0";

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
