//! nsqd: a drop-in replacement for NSQ's daemon. Topics fan messages out to
//! channels; channels hand them to competing clients over TCP protocol V2;
//! HTTP serves publishing and information.
//!
//! The binary is a thin wrapper: [`Server::bind`] binds the listeners (port 0
//! works, read the addresses back), [`Server::run`] serves until a shutdown
//! future resolves.

pub mod auth;
pub mod backlog;
pub mod channel;
pub mod client;
/// Compressed streams, shared with the `nsq` client.
pub use nsq_wire::compress;
pub mod config;
pub mod disk_io;
pub mod disk_latency;
pub mod disk_queue;
pub mod e2e;
pub mod http;
pub mod id_map;
pub mod lookup;
pub mod message;
pub mod metadata;
pub mod metrics;
pub mod nsqd;
pub mod options;
pub mod pending_publishes;
pub mod prefault;
pub mod process;
pub mod protocol_v2;
pub mod replica_hooks;
pub mod replication;
pub mod server;
pub(crate) mod spin;
pub mod stats;
pub mod statsd;
pub mod tls;
pub mod topic;
pub mod upstream_import;

pub use crate::nsqd::{Error, Nsqd, PublishError, Result};
pub use crate::server::Server;
pub use options::Options;
