//! The seam through which replication plugs into the core: what nsqd tells
//! it (publishes, FINs, topic and channel changes, deliveries) and what it
//! reads back (may a publish go on, was it acknowledged, `/stats`). nsqd
//! holds an `Option<Arc<dyn ReplicaHooks>>` and never names the
//! replication module; the server wires the two together at start.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use nsq_protocol::{ChannelName, TopicName};
use serde::Serialize;

use crate::backlog::Packed;
use crate::channel::{Channel, ChannelEvents};
use crate::message::Message;
use crate::topic::Topic;

/// A change to topics and channels that peers mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaOp {
    ChannelCreate = 1,
    ChannelDelete = 2,
    ChannelEmpty = 3,
    ChannelPause = 4,
    ChannelUnpause = 5,
    TopicDelete = 6,
    TopicEmpty = 7,
    TopicPause = 8,
    TopicUnpause = 9,
}

/// Why replication refused or did not confirm a publish (fewer peers in
/// sync or acknowledging than `--replica-min-acks`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReplicaRefused(pub String);

/// Why replication could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("replication listen ({addr}) failed - {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("replication journal - {0}")]
    Journal(std::io::Error),
    #[error("replication secret - {0}")]
    Secret(Box<dyn std::error::Error + Send + Sync>),
}

/// One peer in `/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaReport {
    pub peer: String,
    pub state: &'static str,
    pub lag_messages: u64,
    pub lag_bytes: u64,
    pub shadow_depth: u64,
    pub takeovers: u64,
}

/// Resolves once the peers acknowledged a publish as the flags require.
pub type Acked = Pin<Box<dyn Future<Output = Result<(), ReplicaRefused>> + Send + 'static>>;

/// What the core calls. FINs, pauses and emptyings come through the
/// channel seam instead ([`Self::channel_events`]).
pub trait ReplicaHooks: Send + Sync {
    /// The observer the channels are given.
    fn channel_events(self: Arc<Self>) -> Arc<dyn ChannelEvents>;
    /// Before a publish: `Err` when fewer peers are in sync than required;
    /// `Ok(true)` when the messages must be kept for [`Self::replicate`].
    fn before_put(&self, topic: &Topic) -> Result<bool, ReplicaRefused>;
    /// After a publish put `msgs` into `topic`: send them to the peers
    /// (packed as queued, so their bodies go out without another copy).
    fn replicate(&self, topic: &Topic, msgs: &[Packed], defer: Option<Duration>) -> Acked;
    /// A channel finished messages outside a client's FIN (dead letters).
    fn finished_ids(&self, channel: &Channel, ids: &[u64]);
    /// A topic or channel change to mirror (creations before the channel
    /// exists, so no record of its messages precedes it).
    fn changed(&self, op: MetaOp, topic: &TopicName, channel: Option<&ChannelName>);
    /// Before messages go to a consumer: drop (FINish) what a peer took
    /// over while this node was away.
    fn filter_delivery(&self, channel: &Channel, client_id: u64, batch: &mut Vec<Message>);
    /// The `replicas` list of `/stats`.
    fn report(&self) -> Vec<ReplicaReport>;
    /// The `nsq_replica_*` series of `/metrics`.
    fn render_metrics(&self, out: &mut String);
    /// `POST /replica/takeover?peer=ADDR`: how many messages were taken
    /// over, `None` for an unknown peer.
    fn take_over(&self, peer: &str) -> Option<u64>;
}
