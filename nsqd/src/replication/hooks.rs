//! How replication plugs into nsqd: the hooks the core calls (the
//! `ReplicaHooks` and `ChannelEvents` seams) and the start of its tasks.

use std::sync::Arc;
use std::time::Duration;

use nsq_protocol::{ChannelName, TopicName};

use super::state::Replication;
use super::{holder, origin, spill, takeover};
use crate::backlog::Packed;
use crate::channel::{Channel, ChannelEvents};
use crate::message::{unix_nanos, Message};
use crate::nsqd::Nsqd;
use crate::replica_hooks::{
    Acked, MetaOp, ReplicaHooks, ReplicaRefused, ReplicaReport, ReplicationError,
};
use crate::topic::Topic;

impl Replication {
    /// Load the journals (`--durable`; the data path is locked by now),
    /// start the listener, the links and the takeover timer; wait (at most
    /// `--replica-timeout`) until every link had its first exchange, so a
    /// returning node learns what was taken over before it delivers.
    pub async fn start(self: &Arc<Self>, nsqd: &Arc<Nsqd>) -> Result<(), ReplicationError> {
        let _ = self.node.set(Arc::downgrade(nsqd));
        // Memory bounded like any queue: past --mem-queue-size a shadow
        // channel (or what a topic holds) spills to disk. What the holder
        // kept across its restart is loaded (the journal with --durable,
        // else the snapshot of its last clean stop).
        let limit = nsqd.opts.mem_queue_size.max(0) as usize;
        let (data, dir) = (nsqd.opts.data_path(), &self.cfg.dir);
        for o in &self.origins {
            let to = spill::SpillTo::new(nsqd.disk_io.clone(), limit, &o.addr);
            let (checks, rx) = tokio::sync::mpsc::unbounded_channel();
            {
                let mut i = o.lock();
                i.shadow.set_spill(to);
                i.shadow.set_drain_checks(checks);
            }
            nsqd.tracker
                .spawn(o.clone().check_drains(rx, nsqd.cancel.clone()));
            o.load(dir, &data, self.cfg.journal_dir.is_some())
                .map_err(ReplicationError::Journal)?;
        }
        if self.cfg.journal_dir.is_none() {
            nsqd.tracker
                .spawn(self.clone().keep_saved(nsqd.cancel.clone()));
        }
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
        Ok(())
    }
}

impl ReplicaHooks for Replication {
    fn channel_events(self: Arc<Self>) -> Arc<dyn ChannelEvents> {
        self
    }

    fn before_put(&self, topic: &Topic) -> Result<bool, ReplicaRefused> {
        if topic.is_ephemeral() {
            return Ok(false);
        }
        let n = self.in_sync();
        if n < self.cfg.min_acks {
            return Err(ReplicaRefused(format!(
                "{n} of {} required replicas in sync",
                self.cfg.min_acks
            )));
        }
        Ok(true)
    }

    fn replicate(&self, topic: &Topic, msgs: &[Packed], defer: Option<Duration>) -> Acked {
        let due = defer
            .filter(|d| !d.is_zero())
            .map_or(0, |d| unix_nanos().saturating_add(d.as_nanos() as i64));
        let min = self.cfg.min_acks;
        let acks = self.send(&topic.name, due, msgs);
        Box::pin(async move {
            let n = acks.await;
            if n < min {
                return Err(ReplicaRefused(format!(
                    "{n} of {min} required replicas acknowledged"
                )));
            }
            Ok(())
        })
    }

    fn finished_ids(&self, channel: &Channel, ids: &[u64]) {
        self.finished(&channel.topic_name, &channel.name, ids);
    }

    fn changed(&self, op: MetaOp, topic: &TopicName, channel: Option<&ChannelName>) {
        self.meta(op, topic, channel);
    }

    fn filter_delivery(&self, channel: &Channel, client_id: u64, batch: &mut Vec<Message>) {
        // FINished there, so the peers hear of it through the channel's
        // observer like any FIN.
        self.filter.apply(channel, client_id, batch);
    }

    fn report(&self) -> Vec<ReplicaReport> {
        Replication::report(self)
    }

    fn render_metrics(&self, out: &mut String) {
        super::metrics::render(&self.report(), out);
    }

    fn take_over(&self, peer: &str) -> Option<u64> {
        let nsqd = self.node.get()?.upgrade()?;
        let origin = self.origins.iter().find(|o| o.addr == peer)?;
        Some(takeover::take_over(
            &nsqd,
            self,
            origin,
            "requested over HTTP",
        ))
    }
}

/// The channel seam (`channel/events.rs`): FINs, pauses and emptyings.
/// Creation and deletion are sent by nsqd itself, creation before the
/// channel exists so no record of a message it got can precede it.
impl ChannelEvents for Replication {
    fn finished(&self, topic: &TopicName, channel: &ChannelName, msg: &Message) {
        Replication::finished(self, topic, channel, &[msg.id]);
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
