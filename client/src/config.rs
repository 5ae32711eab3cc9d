//! Client settings, with go-nsq's defaults where go-nsq has one.

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
}

impl Default for Config {
    fn default() -> Self {
        let hostname = nsq_app::os_hostname();
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
            lookupd_poll_interval: Duration::from_secs(60),
            lookupd_poll_jitter: 0.3,
            stop_timeout: Duration::from_secs(30),
            job_capacity: None,
        }
    }
}

impl Config {
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
}
