//! What nsqd shows nsqlookupd: the topics and channels to register and this
//! node's identity, through the narrow `Registry` view.

use std::net::SocketAddr;

use nsq_protocol::{ChannelName, TopicName};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Nsqd;
use crate::lookup;

impl Nsqd {
    /// What this nsqd tells lookupd about itself.
    pub fn peer_identity(&self) -> nsq_protocol::lookup::PeerIdentity {
        lookup::Registry::identity(self)
    }
}

impl lookup::Registry for Nsqd {
    fn registrations(&self) -> Vec<(TopicName, Vec<ChannelName>)> {
        (self.topics_snapshot().iter())
            .map(|t| {
                (
                    t.name.clone(),
                    t.channels().iter().map(|c| c.name.clone()).collect(),
                )
            })
            .collect()
    }

    fn max_body_size(&self) -> u64 {
        self.opts.max_body_size as u64
    }

    fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    fn identity(&self) -> nsq_protocol::lookup::PeerIdentity {
        let o = &self.opts;
        let port = |broadcast: u16, actual: Option<SocketAddr>| {
            i64::from(if broadcast > 0 {
                broadcast
            } else {
                actual.map_or(0, |a| a.port())
            })
        };
        nsq_protocol::lookup::PeerIdentity {
            broadcast_address: o.broadcast_address(),
            hostname: nsq_app::os_hostname(),
            http_port: port(o.broadcast_http_port, self.http_addr),
            tcp_port: port(o.broadcast_tcp_port, Some(self.tcp_addr)),
            topology_region: Some(o.topology_region.clone()),
            topology_zone: Some(o.topology_zone.clone()),
            version: nsq_protocol::VERSION.to_string(),
        }
    }
}
