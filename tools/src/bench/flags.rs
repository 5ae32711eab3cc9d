//! The flags every bench tool shares: where nsqd is, the topic, the message size and how long to run.
//!
//! Spelled as upstream's `bench_writer`/`bench_reader` spell them
//! (`--nsqd-tcp-address`, `--topic`, `--size`, `--runfor`), so a command line
//! written for upstream's tools runs ours unchanged.

use clap::Args;
use nsq_app::GoDuration;
use nsq_protocol::TopicName;

use super::parse_topic;

/// Flattened into each tool's options; a tool with another default topic
/// changes it with `mut_arg` (see `bench_latency`).
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// <addr>:<port> to connect to nsqd
    #[arg(
        long,
        visible_alias = "nsqd-tcp-address",
        default_value = "127.0.0.1:4150"
    )]
    pub tcp_address: String,
    /// topic to publish to or receive messages on
    #[arg(long, default_value = "sub_bench", value_parser = parse_topic)]
    pub topic: TopicName,
    /// size of messages (bytes)
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub size: u32,
    /// how long to run (0 = until --count)
    #[arg(long, default_value = "10s")]
    pub runfor: GoDuration,
}
