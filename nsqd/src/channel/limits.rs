//! What a channel is allowed: the limits it takes from the server options,
//! and the error a client meets when it may not join.

use std::time::Duration;

use super::{Events, JobLimits};

/// Why a client could not join a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("consumers for {topic}:{channel} exceeds limit of {limit}")]
    TooManyConsumers {
        topic: String,
        channel: String,
        limit: usize,
    },
    #[error("channel is exiting")]
    Exiting,
}

/// What a channel needs from the server options.
#[derive(Debug, Clone, Default)]
pub struct ChannelLimits {
    pub mem_queue_size: usize,
    pub max_msg_timeout: Duration,
    pub max_channel_consumers: usize,
    /// `--e2e-processing-latency-window-time`, when percentiles are
    /// configured; `None` keeps no latency stream.
    pub e2e_window: Option<Duration>,
    /// `--durable`: every message goes through the disk queue and stays
    /// there until it is finished.
    pub durable: bool,
    /// Settle window of job channels (see `jobs.rs`).
    pub jobs: JobLimits,
    /// Who hears about channel events (see `events.rs`).
    pub events: Events,
}
