//! Client settings, with go-nsq's defaults where go-nsq has one.

use std::path::PathBuf;
use std::time::Duration;

/// Settings shared by [`crate::Producer`] and [`crate::Consumer`].
///
/// Build from [`Config::default`] and change fields:
/// `Config { max_in_flight: 100, ..Config::default() }`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shown by nsqd in /stats; defaults to the short hostname, as go-nsq does.
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    /// How often nsqd sends `_heartbeat_`; 1 s ..= 60 s.
    pub heartbeat_interval: Duration,
    /// Per-connection message timeout; `None` takes nsqd's `--msg-timeout`.
    pub msg_timeout: Option<Duration>,
    /// Bound on TCP connect and on each handshake reply (IDENTIFY, SUB).
    pub dial_timeout: Duration,
    /// Messages a consumer may hold at once, over all its connections.
    pub max_in_flight: u64,
    /// A message delivered more often than this is given up (FIN + hook)
    /// without calling the handler; 0 disables the check.
    pub max_attempts: u16,
    /// A failed message is requeued for this × its attempts ...
    pub default_requeue_delay: Duration,
    /// ... but never longer than this.
    pub max_requeue_delay: Duration,
    /// Backoff after a failure lasts this × 2^(level − 1); zero disables backoff.
    pub backoff_multiplier: Duration,
    pub max_backoff_duration: Duration,
    /// While connections outnumber the messages allowed in flight (fewer
    /// `max_in_flight` than nsqds, or backoff letting one message through),
    /// RDY 1 takes turns between them: this often a connection that has
    /// had it too long or to no use gives it up to one that waited longest.
    pub rdy_redistribute_interval: Duration,
    /// In that state, a connection that receives nothing for this long
    /// gives its RDY up ...
    pub low_rdy_idle_timeout: Duration,
    /// ... and a busy one after holding it this long, so that every nsqd
    /// is served.
    pub low_rdy_timeout: Duration,
    /// How often lookupds are asked for the topic's producers, and how often
    /// a lost direct connection is retried.
    pub lookupd_poll_interval: Duration,
    /// Each wait between lookupd polls is lengthened by a random fraction,
    /// up to this share of the interval, so consumers started together do
    /// not poll together.
    pub lookupd_poll_jitter: f64,
    /// How long a graceful consumer stop waits for in-flight handlers before
    /// it closes the connections anyway (go-nsq's hard exit is 30 s).
    pub stop_timeout: Duration,
    /// Job-mode extension: the load this consumer can hold at once, sent in
    /// IDENTIFY as `capacity` (nsqd then hands it shards by load). `None`
    /// for an ordinary consumer.
    pub job_capacity: Option<u64>,
    /// Ask nsqd for TLS; a connection it refuses TLS to fails.
    pub tls_v1: bool,
    /// PEM file of the authorities that sign nsqd's certificate; `None`
    /// takes the system's.
    pub tls_root_ca_file: Option<PathBuf>,
    /// Accept any server certificate (tests, self-signed setups).
    pub tls_insecure_skip_verify: bool,
    /// PEM client certificate and its key, for nsqds that require one.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Compress the connection with Snappy ...
    pub snappy: bool,
    /// ... or with DEFLATE at `deflate_level` (1 fastest ..= 9 smallest;
    /// nsqd caps it at its `--max-deflate-level`).
    pub deflate: bool,
    pub deflate_level: u32,
    /// Have nsqd deliver this percentage (1..=99) of the channel's messages
    /// to this connection; 0 delivers all.
    pub sample_rate: u8,
    /// Sent with AUTH to nsqds that run with `--auth-http-address`.
    pub auth_secret: Option<String>,
    /// nsqd's write buffer for this connection in bytes (`None`: nsqd's
    /// default; -1 disables buffering) ...
    pub output_buffer_size: Option<i64>,
    /// ... and how long it may hold data before flushing.
    pub output_buffer_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let short = hostname.split('.').next().unwrap_or_default().to_owned();
        Config {
            client_id: short,
            hostname,
            user_agent: format!("nsq-rs/{}", env!("CARGO_PKG_VERSION")),
            heartbeat_interval: Duration::from_secs(30),
            msg_timeout: None,
            dial_timeout: Duration::from_secs(1),
            max_in_flight: 1,
            max_attempts: 5,
            default_requeue_delay: Duration::from_secs(90),
            max_requeue_delay: Duration::from_secs(15 * 60),
            backoff_multiplier: Duration::from_secs(1),
            max_backoff_duration: Duration::from_secs(2 * 60),
            rdy_redistribute_interval: Duration::from_secs(5),
            low_rdy_idle_timeout: Duration::from_secs(10),
            low_rdy_timeout: Duration::from_secs(30),
            lookupd_poll_interval: Duration::from_secs(60),
            lookupd_poll_jitter: 0.3,
            stop_timeout: Duration::from_secs(30),
            job_capacity: None,
            tls_v1: false,
            tls_root_ca_file: None,
            tls_insecure_skip_verify: false,
            tls_cert: None,
            tls_key: None,
            snappy: false,
            deflate: false,
            deflate_level: 6,
            sample_rate: 0,
            auth_secret: None,
            output_buffer_size: None,
            output_buffer_timeout: None,
        }
    }
}

/// Options go-nsq has that this client does not implement yet; setting one
/// is an error rather than silently ignored.
const NOT_YET: &[&str] = &["read_timeout", "write_timeout", "tls_min_version"];

/// Go's `strconv.ParseBool`, which go-nsq's options use.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Why [`Config::set`] refused an option, in go-nsq's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("failed to coerce option {option} ({value}) - {reason}")]
    Coerce {
        option: String,
        value: String,
        reason: String,
    },
    /// The value is out of the option's bounds.
    #[error("invalid {option} ! {detail}")]
    Invalid { option: String, detail: String },
    #[error("option {0} is not supported by this client yet")]
    NotYet(String),
    #[error("invalid option {0}")]
    Unknown(String),
}

impl Config {
    /// Set one option by its go-nsq name (`max_attempts`,
    /// `backoff_multiplier`, ...; `-` may stand for `_`) from text, within
    /// go-nsq's bounds: what upstream's tools take as `--consumer-opt` and
    /// `--producer-opt`. Durations are Go durations (`1.5s`, `250ms`).
    pub fn set(&mut self, option: &str, value: &str) -> Result<(), OptionError> {
        let option = option.replace('-', "_");
        let secs = Duration::from_secs;
        let coerce = |reason: &dyn std::fmt::Display| OptionError::Coerce {
            option: option.clone(),
            value: value.to_owned(),
            reason: reason.to_string(),
        };
        let invalid = |detail: String| OptionError::Invalid {
            option: option.clone(),
            detail,
        };
        let bounded = |lo: Duration, hi: Duration| -> Result<Duration, OptionError> {
            let d = nsq_app::parse_go_duration(value).map_err(|e| coerce(&e))?;
            if d < lo {
                return Err(invalid(format!("{value} < {lo:?}")));
            }
            if d > hi {
                return Err(invalid(format!("{value} > {hi:?}")));
            }
            Ok(d)
        };
        let positive = || bounded(Duration::from_nanos(1), Duration::MAX);
        let number = || value.parse::<u64>().map_err(|e| coerce(&e));
        let flag = || parse_bool(value).ok_or_else(|| coerce(&"invalid syntax"));
        let in_range = |lo: u64, hi: u64| -> Result<u64, OptionError> {
            let n = number()?;
            if n < lo {
                return Err(invalid(format!("{n} < {lo}")));
            }
            if n > hi {
                return Err(invalid(format!("{n} > {hi}")));
            }
            Ok(n)
        };
        let path = || (!value.is_empty()).then(|| PathBuf::from(value));
        match option.as_str() {
            "client_id" => self.client_id = value.to_owned(),
            "hostname" => self.hostname = value.to_owned(),
            "user_agent" => self.user_agent = value.to_owned(),
            "heartbeat_interval" => self.heartbeat_interval = positive()?,
            "dial_timeout" => self.dial_timeout = positive()?,
            "msg_timeout" => {
                let d = bounded(Duration::ZERO, Duration::MAX)?;
                self.msg_timeout = (!d.is_zero()).then_some(d);
            }
            "max_in_flight" => self.max_in_flight = number()?,
            "max_attempts" => {
                self.max_attempts =
                    u16::try_from(number()?).map_err(|_| invalid(format!("{value} > 65535")))?
            }
            "default_requeue_delay" => {
                self.default_requeue_delay = bounded(Duration::ZERO, secs(3600))?
            }
            "max_requeue_delay" => self.max_requeue_delay = bounded(Duration::ZERO, secs(3600))?,
            "backoff_multiplier" => self.backoff_multiplier = bounded(Duration::ZERO, secs(3600))?,
            "max_backoff_duration" => {
                self.max_backoff_duration = bounded(Duration::ZERO, secs(3600))?
            }
            "lookupd_poll_interval" => self.lookupd_poll_interval = bounded(secs(5), secs(300))?,
            "lookupd_poll_jitter" => {
                let j: f64 = value.parse().map_err(|e| coerce(&e))?;
                if !(0.0..=1.0).contains(&j) {
                    return Err(invalid(format!("{value} outside 0..1")));
                }
                self.lookupd_poll_jitter = j;
            }
            "low_rdy_idle_timeout" => self.low_rdy_idle_timeout = bounded(secs(1), secs(300))?,
            "low_rdy_timeout" => self.low_rdy_timeout = bounded(secs(1), secs(300))?,
            "rdy_redistribute_interval" => {
                self.rdy_redistribute_interval = bounded(Duration::from_millis(1), secs(5))?
            }
            "tls_v1" => self.tls_v1 = flag()?,
            "tls_root_ca_file" => self.tls_root_ca_file = path(),
            "tls_insecure_skip_verify" => self.tls_insecure_skip_verify = flag()?,
            "tls_cert" => self.tls_cert = path(),
            "tls_key" => self.tls_key = path(),
            "snappy" => self.snappy = flag()?,
            "deflate" => self.deflate = flag()?,
            "deflate_level" => self.deflate_level = in_range(1, 9)? as u32,
            "sample_rate" => self.sample_rate = in_range(0, 99)? as u8,
            "auth_secret" => {
                self.auth_secret = (!value.is_empty()).then(|| value.to_owned());
            }
            "output_buffer_size" => {
                let n: i64 = value.parse().map_err(|e| coerce(&e))?;
                self.output_buffer_size = Some(n);
            }
            "output_buffer_timeout" => {
                self.output_buffer_timeout = Some(bounded(Duration::ZERO, Duration::MAX)?);
            }
            o if NOT_YET.contains(&o) => return Err(OptionError::NotYet(o.to_owned())),
            o => return Err(OptionError::Unknown(o.to_owned())),
        }
        Ok(())
    }

    /// The delay for requeueing a failed message on its `attempts`-th
    /// delivery: linear in attempts, capped (go-nsq and pynsq alike).
    pub fn requeue_delay(&self, attempts: u16) -> Duration {
        self.default_requeue_delay
            .saturating_mul(u32::from(attempts.max(1)))
            .min(self.max_requeue_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_delay_grows_with_attempts_and_is_capped() {
        let c = Config::default();
        assert_eq!(c.requeue_delay(1), Duration::from_secs(90));
        assert_eq!(c.requeue_delay(3), Duration::from_secs(270));
        assert_eq!(c.requeue_delay(100), Duration::from_secs(900));
        assert_eq!(c.requeue_delay(0), Duration::from_secs(90));
        assert!(c.user_agent.starts_with("nsq-rs/"));
    }

    #[test]
    fn options_are_set_by_go_nsq_names_within_go_nsq_bounds() {
        let mut c = Config::default();
        c.set("max_attempts", "10").unwrap();
        c.set("backoff-multiplier", "1.5s").unwrap();
        c.set("msg_timeout", "0").unwrap();
        c.set("lookupd_poll_jitter", "0.5").unwrap();
        c.set("client_id", "me").unwrap();
        assert_eq!(c.max_attempts, 10);
        assert_eq!(c.backoff_multiplier, Duration::from_millis(1500));
        assert_eq!(c.msg_timeout, None);
        assert_eq!(c.lookupd_poll_jitter, 0.5);
        assert_eq!(c.client_id, "me");
        c.set("msg_timeout", "90s").unwrap();
        assert_eq!(c.msg_timeout, Some(Duration::from_secs(90)));

        let err = |o: &str, v: &str| Config::default().set(o, v).unwrap_err().to_string();
        assert_eq!(err("nope", "1"), "invalid option nope");
        assert!(err("max_attempts", "70000").contains("invalid max_attempts"));
        assert!(err("max_attempts", "true").starts_with("failed to coerce option max_attempts"));
        assert!(
            err("lookupd_poll_interval", "1s").starts_with("invalid lookupd_poll_interval ! 1s <")
        );
        assert!(err("backoff_multiplier", "2h").starts_with("invalid backoff_multiplier ! 2h >"));
        assert!(err("heartbeat_interval", "5").contains("failed to coerce"));
        assert!(err("lookupd_poll_jitter", "2").contains("outside 0..1"));
        assert_eq!(
            err("read_timeout", "1s"),
            "option read_timeout is not supported by this client yet"
        );

        // TLS, compression, sampling and auth, as the tools pass them.
        let mut c = Config::default();
        for (o, v) in [
            ("tls_v1", "true"),
            ("tls_root_ca_file", "/ca.pem"),
            ("tls-insecure-skip-verify", "1"),
            ("tls_cert", "/c.pem"),
            ("tls_key", "/k.pem"),
            ("snappy", "T"),
            ("deflate", "false"),
            ("deflate_level", "9"),
            ("sample_rate", "25"),
            ("auth_secret", "s3cret"),
        ] {
            c.set(o, v).unwrap();
        }
        assert!(c.tls_v1 && c.tls_insecure_skip_verify && c.snappy && !c.deflate);
        assert_eq!(
            c.tls_root_ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert_eq!((c.deflate_level, c.sample_rate), (9, 25));
        assert_eq!(c.auth_secret.as_deref(), Some("s3cret"));
        assert_eq!(err("deflate_level", "10"), "invalid deflate_level ! 10 > 9");
        assert_eq!(err("sample_rate", "100"), "invalid sample_rate ! 100 > 99");
        assert!(err("tls_v1", "yes").starts_with("failed to coerce option tls_v1"));
    }
}
