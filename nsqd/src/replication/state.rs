//! The state of one node's replication: its settings, its links to peers
//! (as origin), its per-origin shadows (as holder), the filter of what
//! peers took over, and the id generator for taken-over messages.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use nsq_protocol::{ChannelName, TopicName};
use tokio::net::TcpListener;

use super::link::PeerLink;
use super::origin_state::OriginState;
use super::peer_auth::PeerSecret;
use super::return_filter::ReturnFilter;
use super::wire::MetaOp;
use crate::message::IdGenerator;
use crate::nsqd::Nsqd;
use crate::replica_hooks::{ReplicaReport, ReplicationError};

/// How often a non-durable holder saves what refers to its spill queues.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);

/// Replication settings, from the flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's identity towards its peers: `--replication-address`.
    pub identity: String,
    pub peers: Vec<String>,
    pub timeout: Duration,
    pub takeover_after: Duration,
    pub min_acks: usize,
    /// `--durable`: where what this node holds for its peers is journaled.
    pub journal_dir: Option<std::path::PathBuf>,
    /// Where what this node holds for its peers is found after a restart
    /// (`<data-path>/replication`: journals, or snapshots of a clean stop).
    pub dir: std::path::PathBuf,
}

/// Replication of one nsqd: its links to peers (as origin), its shadows of
/// them (as holder), and the filter of what peers took over.
pub struct Replication {
    pub cfg: Config,
    /// Taken by `start`.
    pub(super) listener: Mutex<Option<TcpListener>>,
    pub(crate) links: Vec<Arc<PeerLink>>,
    pub(crate) origins: Vec<Arc<OriginState>>,
    pub(crate) filter: ReturnFilter,
    pub(super) incarnation: u64,
    /// Ids for taken-over messages: a node id of our own that no topic
    /// here uses, so they cannot collide with this node's ids (the peer may
    /// share our node id); one generator for every takeover, so two in the
    /// same millisecond do not repeat ids.
    pub(crate) ids: Mutex<IdGenerator>,
    /// The node, once started (weak: the node holds this).
    pub(super) node: OnceLock<Weak<Nsqd>>,
    /// `--replication-secret-file`: peers must prove they know it.
    pub(super) secret: Option<PeerSecret>,
}

impl Replication {
    /// Bind the replication listener; `None` when replication is off.
    /// Nothing is read from disk until `start` (the data path is not
    /// locked yet).
    pub async fn open(opts: &crate::Options) -> Result<Option<Arc<Self>>, ReplicationError> {
        if opts.replication_address.is_empty() {
            return Ok(None);
        }
        let secret = match opts.replication_secret_file.as_str() {
            "" => None,
            path => Some(
                PeerSecret::load(std::path::Path::new(path))
                    .map_err(|e| ReplicationError::Secret(e.into()))?,
            ),
        };
        if secret.is_none() {
            tracing::warn!("REPLICATION: no --replication-secret-file; anyone who reaches {} and names a --replica can act as that peer", opts.replication_address);
        }
        let listener = TcpListener::bind(&opts.replication_address)
            .await
            .map_err(|source| ReplicationError::Listen {
                addr: opts.replication_address.clone(),
                source,
            })?;
        let cfg = Config {
            identity: opts.replication_address.clone(),
            peers: opts.replica.clone(),
            timeout: *opts.replica_timeout,
            takeover_after: *opts.replica_takeover_after,
            min_acks: opts.replica_min_acks.max(0) as usize,
            journal_dir: opts.durable.then(|| opts.data_path().join("replication")),
            dir: opts.data_path().join("replication"),
        };
        Ok(Some(Arc::new(Replication {
            links: cfg
                .peers
                .iter()
                .map(|p| Arc::new(PeerLink::new(p.clone())))
                .collect(),
            origins: cfg
                .peers
                .iter()
                .map(|p| Arc::new(OriginState::new(p.clone())))
                .collect(),
            cfg,
            listener: Mutex::new(Some(listener)),
            filter: ReturnFilter::default(),
            incarnation: rand::random::<u64>() | 1,
            ids: Mutex::new(IdGenerator::new(opts.effective_node_id() ^ 0x200)),
            node: OnceLock::new(),
            secret,
        })))
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        let l = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        l.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Enqueue messages for every linked peer; the future resolves once the
    /// in-sync ones acknowledged (or timed out), with how many did.
    pub(super) fn send(
        &self,
        topic: &TopicName,
        due: i64,
        msgs: &[crate::backlog::Packed],
    ) -> impl std::future::Future<Output = usize> + Send + 'static {
        let waits: Vec<_> = self
            .links
            .iter()
            .filter_map(|l| {
                l.append(topic, due, msgs)
                    .filter(|w| w.counts)
                    .map(|w| (l.clone(), w))
            })
            .collect();
        let timeout = self.cfg.timeout;
        async move {
            let mut acked = 0;
            for (link, w) in waits {
                if link.wait_ack(w, timeout).await {
                    acked += 1;
                }
            }
            acked
        }
    }

    pub(super) fn in_sync(&self) -> usize {
        self.links.iter().filter(|l| l.is_in_sync()).count()
    }

    pub(super) fn meta(&self, op: MetaOp, topic: &TopicName, channel: Option<&ChannelName>) {
        if topic.is_ephemeral() || channel.is_some_and(|c| c.is_ephemeral()) {
            return;
        }
        for l in &self.links {
            l.meta(op, topic, channel);
        }
    }

    pub(super) fn finished(&self, topic: &TopicName, channel: &ChannelName, ids: &[u64]) {
        if topic.is_ephemeral() || channel.is_ephemeral() {
            return;
        }
        for l in &self.links {
            l.finished(topic, channel, ids);
        }
    }

    /// At a clean stop, once the links are down: keep what this node holds
    /// for its peers for the next start (see [`OriginState::save`]).
    pub async fn save(&self) {
        for o in &self.origins {
            if let Err(e) = o.save(&self.cfg.dir, true).await {
                tracing::error!(peer = %o.addr, "REPLICA {}: shadow not saved; the next start begins without it - {e}", o.addr);
            }
        }
    }

    /// A non-durable holder, while it runs: every [`SAVE_EVERY`], save what
    /// refers to its spill queues (see [`OriginState::save`]).
    pub async fn keep_saved(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            for o in &self.origins {
                if let Err(e) = o.save(&self.cfg.dir, false).await {
                    tracing::warn!(peer = %o.addr, "REPLICA {}: spill queues not saved - {e}", o.addr);
                }
            }
        }
    }

    /// The `replicas` list of `/stats`.
    pub fn report(&self) -> Vec<ReplicaReport> {
        self.links
            .iter()
            .zip(&self.origins)
            .map(|(l, o)| {
                let (status, lag_messages, lag_bytes) = l.status();
                let (taken, shadow_depth, takeovers) = o.status();
                ReplicaReport {
                    peer: l.addr.clone(),
                    state: if taken { "taken_over" } else { status.name() },
                    lag_messages,
                    lag_bytes,
                    shadow_depth,
                    takeovers,
                }
            })
            .collect()
    }
}
