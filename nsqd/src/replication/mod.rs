//! Replicated nsqd pairs: every message a node accepts is also held by its
//! peers (`--replica`), so losing a whole machine loses nothing that was
//! acknowledged. Primary-backup with timeouts, no consensus.
//!
//! # Roles
//! Each node is the *origin* of the messages published to it and the
//! *holder* of a shadow copy of each peer's. A pair is `A --replica=B` plus
//! `B --replica=A`: two links, one per direction, each opened by the origin
//! to the holder's `--replication-address`. Only the origin delivers.
//!
//! # The link (see `wire.rs` for the bytes)
//! The origin sends `Hello` (its replication address as identity, and an
//! incarnation drawn at process start). The holder refuses origins it does
//! not list in `--replica`, then tells the origin which of its messages it
//! *took over* (`TakenOver` frames) and sends `Welcome`. The origin then
//! sends `Reset` and a full copy of what it holds in memory (channels
//! created, paused; each channel's queued, in-flight and deferred messages),
//! followed by the live stream of records, each with a sequence number:
//! `Append` (a publish), `Finish` (ids FINished on a channel, batched every
//! 25 ms), `Meta` (channel created/deleted/emptied/paused, topic
//! deleted/emptied/paused). The holder applies each record to its shadow of
//! that origin and answers `Ack` with the highest sequence applied. The
//! origin sends `Ping` when idle; either side drops the link after
//! `--replica-timeout` without hearing from the other.
//!
//! # States (per peer, as the origin sees it)
//! * `down`: no link. Publishes do not wait for it.
//! * `catching_up`: linked, but the peer has not yet acknowledged everything
//!   up to the point where it fell behind (the end of the full copy, or the
//!   last record sent when an ack took longer than `--replica-timeout`). It
//!   receives every record but publishes do not wait for it.
//! * `in_sync`: a publish (PUB, MPUB, DPUB, HTTP /pub, /mpub) is answered
//!   only once every in-sync peer acknowledged it; one that does not within
//!   `--replica-timeout` becomes `catching_up`. With `--replica-min-acks=N`
//!   a publish is refused (E_PUB_FAILED / HTTP 503) when fewer than N peers
//!   are in sync or fewer than N acknowledged it.
//! * `taken_over`: this node took over the peer's shadow (below).
//!
//! # Failures
//! * Origin dies (or is cut off) for `--replica-takeover-after`, or
//!   `POST /replica/takeover?peer=ADDR`: the holder *takes over*: every
//!   unfinished shadow message goes into this node's topic and channel of
//!   the same name (created, hence registered with nsqlookupd) under a fresh
//!   id, and is delivered to this node's consumers. The holder remembers the
//!   original ids.
//! * Origin returns (same process after a partition, or restarted with its
//!   data or an empty disk): in its `Hello` exchange the holder first takes
//!   over whatever it still holds if the origin restarted (a restart lost
//!   the origin's memory), then sends the ids it took over; the origin drops
//!   those messages when they come up for delivery (FINishing them), and
//!   only then starts replicating again with a full copy. A restarted node
//!   waits (at most `--replica-timeout` per peer) for this exchange before
//!   it accepts TCP consumers.
//! * Holder dies: the origin's link goes `down`; when the holder returns
//!   (empty), the origin sends a full copy.
//! * Partition while both serve: after `--replica-takeover-after` each side
//!   takes over the other's shadow and delivers it — messages the other side
//!   also delivers are then duplicated. When the link heals each side drops
//!   what the other took over. Duplicates, never losses: a copy is dropped
//!   only once its origin reported it finished.
//!
//! What may be delivered twice: messages in flight (or finished and not yet
//! reported, at most ~25 ms of FINs) when a node died; after a partition,
//! what both sides delivered during it.
//!
//! # Durable holders
//! A holder running `--durable` journals every record it applies
//! (`journal.rs`, under `<data-path>/replication/`) and fsyncs before it
//! acknowledges, so a copy survives the holder's own crash: restarted, it
//! replays the journal, and takes the shadow over if the origin does not
//! return within `--replica-takeover-after` (both machines lost power). An
//! origin that does return sends `Reset` and a full copy as usual.
//!
//! # Limits of this version
//! * Shadows live in memory (a durable holder's also on disk, but in memory
//!   too), bounded by [`SHADOW_MAX_BYTES`] per origin: a holder past it
//!   drops the link and the origin sees the peer `down`. A non-durable
//!   holder's shadow does not survive its restart (the origin sends a full
//!   copy again when it reconnects).
//! * The full copy covers what the origin holds in memory; messages that
//!   spilled to the origin's disk queue while the peer was out of sync are
//!   not copied.
//! * The link is plain TCP without authentication beyond the `--replica`
//!   list: run it on a trusted network.

pub mod holder;
pub mod journal;
pub mod origin;
pub mod shadow;
pub mod takeover;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use nsq_protocol::{ChannelName, TopicName};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::channel::Channel;
use crate::message::{unix_nanos, Message};
use crate::nsqd::{Nsqd, PublishError};
use crate::topic::Topic;
use wire::{MetaOp, WireMessage};

/// Most bytes of message bodies one origin's shadow may hold.
pub const SHADOW_MAX_BYTES: u64 = 1 << 30;

/// Replication settings, from the flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's identity towards its peers: `--replication-address`.
    pub identity: String,
    pub peers: Vec<String>,
    pub timeout: Duration,
    pub takeover_after: Duration,
    pub min_acks: usize,
}

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
}

/// Replication of one nsqd: its links to peers (as origin), its shadows of
/// them (as holder), and the filter of what peers took over.
pub struct Replication {
    pub cfg: Config,
    listener: std::sync::Mutex<Option<TcpListener>>,
    pub(crate) links: Vec<Arc<origin::PeerLink>>,
    pub(crate) origins: Vec<Arc<holder::OriginState>>,
    pub(crate) filter: takeover::ReturnFilter,
    incarnation: u64,
    /// Ids for taken-over messages: a node id of our own that no topic
    /// here uses, so they cannot collide with this node's ids (the peer may
    /// share our node id); one generator for every takeover, so two in the
    /// same millisecond do not repeat ids.
    pub(crate) ids: std::sync::Mutex<crate::message::IdGenerator>,
}

impl Replication {
    /// Bind the replication listener; `None` when replication is off.
    pub async fn open(opts: &crate::Options) -> Result<Option<Arc<Self>>, ReplicationError> {
        if opts.replication_address.is_empty() {
            return Ok(None);
        }
        let listener = TcpListener::bind(&opts.replication_address)
            .await
            .map_err(|source| ReplicationError::Listen {
                addr: opts.replication_address.clone(),
                source,
            })?;
        // --durable: what this node holds for its peers is journaled.
        let journal_dir = opts.durable.then(|| opts.data_path().join("replication"));
        let cfg = Config {
            identity: opts.replication_address.clone(),
            peers: opts.replica.clone(),
            timeout: *opts.replica_timeout,
            takeover_after: *opts.replica_takeover_after,
            min_acks: opts.replica_min_acks.max(0) as usize,
        };
        Ok(Some(Arc::new(Replication {
            links: cfg
                .peers
                .iter()
                .map(|p| Arc::new(origin::PeerLink::new(p.clone())))
                .collect(),
            origins: cfg
                .peers
                .iter()
                .map(|p| holder::OriginState::new(p.clone(), journal_dir.as_deref()).map(Arc::new))
                .collect::<Result<_, _>>()
                .map_err(ReplicationError::Journal)?,
            cfg,
            listener: std::sync::Mutex::new(Some(listener)),
            filter: takeover::ReturnFilter::default(),
            incarnation: rand::random::<u64>() | 1,
            ids: std::sync::Mutex::new(crate::message::IdGenerator::new(
                opts.effective_node_id() ^ 0x200,
            )),
        })))
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        let l = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        l.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Start the listener, the links and the takeover timer; wait (at most
    /// `--replica-timeout`) until every link had its first exchange, so a
    /// returning node learns what was taken over before it delivers.
    pub async fn start(self: &Arc<Self>, nsqd: &Arc<Nsqd>) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(l) = listener {
            tracing::info!("REPLICATION: listening on {}", self.cfg.identity);
            nsqd.tracker
                .spawn(holder::accept(self.clone(), nsqd.clone(), l));
        }
        for link in &self.links {
            nsqd.tracker
                .spawn(origin::run(self.clone(), nsqd.clone(), link.clone()));
        }
        nsqd.tracker
            .spawn(takeover::timer(self.clone(), nsqd.clone()));
        let first = async {
            for link in &self.links {
                link.first_exchange().await;
            }
        };
        let _ = tokio::time::timeout(self.cfg.timeout + Duration::from_millis(500), first).await;
    }

    /// Enqueue messages for every linked peer; the future resolves once the
    /// in-sync ones acknowledged (or timed out), with how many did.
    fn send(
        &self,
        topic: &TopicName,
        due: i64,
        msgs: &[Message],
    ) -> impl std::future::Future<Output = usize> + 'static {
        let wire: Vec<WireMessage> = msgs.iter().map(WireMessage::from).collect();
        let waits: Vec<_> = self
            .links
            .iter()
            .filter_map(|l| {
                l.append(topic, due, &wire)
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

    fn in_sync(&self) -> usize {
        self.links.iter().filter(|l| l.is_in_sync()).count()
    }

    fn meta(&self, op: MetaOp, topic: &TopicName, channel: Option<&ChannelName>) {
        if topic.is_ephemeral() || channel.is_some_and(|c| c.is_ephemeral()) {
            return;
        }
        for l in &self.links {
            l.meta(op, topic, channel);
        }
    }

    fn finished_ids(&self, channel: &Channel, ids: &[u64]) {
        if channel.is_ephemeral() || channel.topic_name.is_ephemeral() {
            return;
        }
        for l in &self.links {
            l.finished(&channel.topic_name, &channel.name, ids);
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

/// The channel seam (`channel/events.rs`): FINs, pauses and emptyings.
/// Creation and deletion are sent by nsqd itself, creation before the
/// channel exists so no record of a message it got can precede it.
impl crate::channel::ChannelEvents for Replication {
    fn finished(&self, topic: &TopicName, channel: &ChannelName, msg: &Message) {
        if topic.is_ephemeral() || channel.is_ephemeral() {
            return;
        }
        for l in &self.links {
            l.finished(topic, channel, &[msg.id]);
        }
    }

    fn paused(&self, topic: &TopicName, channel: &ChannelName, paused: bool) {
        let op = if paused {
            MetaOp::ChannelPause
        } else {
            MetaOp::ChannelUnpause
        };
        self.meta(op, topic, Some(channel));
    }

    fn emptied(&self, topic: &TopicName, channel: &ChannelName) {
        self.meta(MetaOp::ChannelEmpty, topic, Some(channel));
    }
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

// ---- The hooks the core calls. Each is a no-op without replication. ----

/// Before a publish: refuse it when fewer peers are in sync than
/// `--replica-min-acks` requires. Returns whether messages must be kept
/// for replication.
pub(crate) fn before_put(nsqd: &Nsqd, topic: &Topic) -> Result<bool, PublishError> {
    let Some(r) = &nsqd.replication else {
        return Ok(false);
    };
    if topic.is_ephemeral() {
        return Ok(false);
    }
    let n = r.in_sync();
    if n < r.cfg.min_acks {
        return Err(PublishError::Replica(format!(
            "{n} of {} required replicas in sync",
            r.cfg.min_acks
        )));
    }
    Ok(true)
}

/// After a publish put `msgs` into `topic`: send them to the peers; the
/// future resolves once they are acknowledged as the flags require.
pub(crate) fn replicate(
    nsqd: &Nsqd,
    topic: &Topic,
    msgs: &[Message],
    defer: Option<Duration>,
) -> impl std::future::Future<Output = Result<(), PublishError>> + 'static {
    let sent = nsqd
        .replication
        .as_ref()
        .filter(|_| !msgs.is_empty())
        .map(|r| {
            let due = defer
                .filter(|d| !d.is_zero())
                .map_or(0, |d| unix_nanos().saturating_add(d.as_nanos() as i64));
            (r.cfg.min_acks, r.send(&topic.name, due, msgs))
        });
    async move {
        let Some((min, acks)) = sent else {
            return Ok(());
        };
        let n = acks.await;
        if n < min {
            return Err(PublishError::Replica(format!(
                "{n} of {min} required replicas acknowledged"
            )));
        }
        Ok(())
    }
}

/// A channel finished messages (FIN, or moved to the dead-letter topic).
pub(crate) fn finished(nsqd: &Nsqd, channel: &Channel, ids: &[u64]) {
    if let Some(r) = &nsqd.replication {
        r.finished_ids(channel, ids);
    }
}

/// A topic or channel change to mirror on the peers.
pub(crate) fn changed(nsqd: &Nsqd, op: MetaOp, topic: &TopicName, channel: Option<&ChannelName>) {
    if let Some(r) = &nsqd.replication {
        r.meta(op, topic, channel);
    }
}

/// Before messages go to a consumer: drop (FINish) those a peer took over
/// while this node was away, so they are not delivered twice.
pub(crate) fn filter_delivery(
    replication: Option<&Arc<Replication>>,
    channel: &Channel,
    client_id: u64,
    batch: &mut Vec<Message>,
) {
    if let Some(r) = replication {
        // FINished there, so the peers hear of it through the channel's
        // observer like any FIN.
        r.filter.apply(channel, client_id, batch);
    }
}

/// `POST /replica/takeover?peer=ADDR`: take over that peer's messages now.
/// Returns how many messages were taken over, or `None` for an unknown peer.
pub fn takeover_now(nsqd: &Arc<Nsqd>, peer: &str) -> Option<u64> {
    let r = nsqd.replication.as_ref()?;
    let origin = r.origins.iter().find(|o| o.addr == peer)?;
    Some(takeover::take_over(nsqd, r, origin, "requested over HTTP"))
}

/// The `nsq_replica_*` series for `/metrics`.
pub fn render_metrics(nsqd: &Nsqd, out: &mut String) {
    use std::fmt::Write;
    let Some(r) = &nsqd.replication else { return };
    let report = r.report();
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ReplicaReport) -> f64,
    );
    let families: [Family; 6] = [
        (
            "nsq_replica_state",
            "gauge",
            "State of the link to the peer: 0 down, 1 catching_up, 2 in_sync, 3 taken_over.",
            |p| match p.state {
                "catching_up" => 1.0,
                "in_sync" => 2.0,
                "taken_over" => 3.0,
                _ => 0.0,
            },
        ),
        (
            "nsq_replica_in_sync",
            "gauge",
            "1 while the peer is in sync (publishes wait for it).",
            |p| f64::from(u8::from(p.state == "in_sync")),
        ),
        (
            "nsq_replica_lag_messages",
            "gauge",
            "Records sent to the peer and not yet acknowledged.",
            |p| p.lag_messages as f64,
        ),
        (
            "nsq_replica_lag_bytes",
            "gauge",
            "Message bytes sent to the peer and not yet acknowledged.",
            |p| p.lag_bytes as f64,
        ),
        (
            "nsq_replica_shadow_depth",
            "gauge",
            "Messages of the peer this node holds as its shadow copy.",
            |p| p.shadow_depth as f64,
        ),
        (
            "nsq_replica_takeovers_total",
            "counter",
            "Times this node took over the peer's messages.",
            |p| p.takeovers as f64,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &report {
            let peer = p.peer.replace('\\', "\\\\").replace('"', "\\\"");
            // The state also as a label, for dashboards' legends.
            let state = if name == "nsq_replica_state" {
                format!(",state=\"{}\"", p.state)
            } else {
                String::new()
            };
            let _ = writeln!(out, "{name}{{peer=\"{peer}\"{state}}} {}", value(p));
        }
    }
}
