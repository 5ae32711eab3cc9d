//! The origin's link to one peer as publishers, channels and the link
//! task share it: the queue of records to send, their sequence numbers and
//! acknowledgements, the lag, and the state (`down` / `catching_up` /
//! `in_sync`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};
use nsq_protocol::{ChannelName, TopicName};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use super::wire::{AppendHead, Frame, MetaOp, WireMessage};
use crate::backlog::Packed;

/// FINs are gathered this long before they go to the peer as one record.
pub(super) const FINISH_FLUSH: Duration = Duration::from_millis(25);
/// A link whose unsent or unacknowledged records pass this is dropped (the
/// peer cannot keep up); it gets a full copy when it reconnects.
const MAX_BACKLOG_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    Down,
    CatchingUp,
    InSync,
}

impl LinkStatus {
    pub fn name(self) -> &'static str {
        match self {
            LinkStatus::Down => "down",
            LinkStatus::CatchingUp => "catching_up",
            LinkStatus::InSync => "in_sync",
        }
    }
}

/// What the link task and publishers share. Locked by publishers (to
/// enqueue a record, under which its sequence number is assigned so the
/// stream keeps their order), channels' FIN path, the link's writer and
/// reader. Never held across an `.await`; topics and channels are locked
/// inside it only by the full copy (lock order: link, topic, channel).
pub(super) struct Outbox {
    pub(super) status: LinkStatus,
    /// Connection generation: a publish waits for an ack on the connection
    /// it was sent on.
    pub(super) conn: u64,
    pub(super) seq: u64,
    /// `catching_up` ends once the peer acknowledged this.
    pub(super) catch_target: u64,
    /// Records queued and not yet written.
    pub(super) out: Outgoing,
    /// (seq, messages, bytes) of records not yet acknowledged.
    pub(super) unacked: VecDeque<(u64, u64, u64)>,
    pub(super) lag_messages: u64,
    pub(super) lag_bytes: u64,
    pub(super) finishes: HashMap<(TopicName, ChannelName), Vec<u64>>,
}

/// Records to write: encoded bytes, with publishes' bodies (shared with
/// the queues, never copied here) to go between them.
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    pub(super) bytes: BytesMut,
    /// Bodies to write after the first `.0` bytes of `bytes`, in order.
    pub(super) pieces: Vec<(usize, Bytes)>,
}

impl Outgoing {
    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.pieces.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.pieces.clear();
    }

    /// Everything, in order, as slices for one vectored write.
    pub(super) fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut v = Vec::with_capacity(2 * self.pieces.len() + 1);
        let mut at = 0;
        for (until, piece) in &self.pieces {
            if *until > at {
                v.push(IoSlice::new(&self.bytes[at..*until]));
            }
            v.push(IoSlice::new(piece));
            at = *until;
        }
        if self.bytes.len() > at {
            v.push(IoSlice::new(&self.bytes[at..]));
        }
        v
    }
}

/// A publish waiting for a peer's acknowledgement.
#[derive(Debug, Clone, Copy)]
pub struct AckWait {
    conn: u64,
    seq: u64,
    /// The peer was in sync when the record was sent.
    pub counts: bool,
}

/// The link to one peer, as origin.
pub struct PeerLink {
    pub addr: String,
    out: Mutex<Outbox>,
    pub(super) wake: Notify,
    /// (connection, highest sequence acknowledged on it).
    acked: watch::Sender<(u64, u64)>,
    /// Becomes true after the first Hello exchange (or failed attempt).
    pub(super) first: watch::Sender<bool>,
}

/// Most message bytes one Append of a copy carries (well under the
/// holder's frame limit whatever the message size).
const COPY_FRAME_BYTES: usize = super::wire::MAX_FRAME / 4;
/// Most messages one Append of a copy carries.
const COPY_BATCH: usize = 1024;

impl Outbox {
    /// Queue a record of the stream under the next sequence number.
    pub(super) fn push_record(&mut self, record: impl FnOnce(u64) -> Frame) -> u64 {
        self.seq += 1;
        record(self.seq).encode(&mut self.out.bytes);
        self.seq
    }

    /// Forget what was queued (a new connection starts from nothing).
    pub(super) fn clear(&mut self) {
        self.out.clear();
        self.unacked.clear();
        self.finishes.clear();
    }

    pub(super) fn push_meta(
        &mut self,
        op: MetaOp,
        topic: &TopicName,
        channel: Option<&ChannelName>,
    ) {
        self.push_record(|seq| Frame::Meta {
            seq,
            op,
            topic: topic.clone(),
            channel: channel.cloned(),
        });
    }

    /// Queue copied messages of one due time as Appends bounded in count
    /// and bytes.
    pub(super) fn push_copy(
        &mut self,
        topic: &TopicName,
        channel: Option<&ChannelName>,
        due: i64,
        msgs: Vec<WireMessage>,
    ) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut msgs = msgs.into_iter().peekable();
        while let Some(m) = msgs.next() {
            bytes += m.body.len();
            batch.push(m);
            let full = batch.len() >= COPY_BATCH
                || msgs
                    .peek()
                    .is_some_and(|n| bytes + n.body.len() > COPY_FRAME_BYTES);
            if full || msgs.peek().is_none() {
                let msgs = std::mem::take(&mut batch);
                bytes = 0;
                self.push_record(|seq| Frame::Append {
                    seq,
                    topic: topic.clone(),
                    channel: channel.cloned(),
                    due,
                    msgs,
                });
            }
        }
    }
}

impl PeerLink {
    pub fn new(addr: String) -> Self {
        PeerLink {
            addr,
            out: Mutex::new(Outbox {
                status: LinkStatus::Down,
                conn: 0,
                seq: 0,
                catch_target: 0,
                out: Outgoing::default(),
                unacked: VecDeque::new(),
                lag_messages: 0,
                lag_bytes: 0,
                finishes: HashMap::new(),
            }),
            wake: Notify::new(),
            acked: watch::channel((0, 0)).0,
            first: watch::channel(false).0,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_in_sync(&self) -> bool {
        self.lock().status == LinkStatus::InSync
    }

    /// State, lag in records and in bytes.
    pub fn status(&self) -> (LinkStatus, u64, u64) {
        let o = self.lock();
        (o.status, o.lag_messages, o.lag_bytes)
    }

    /// Wait until the peer acknowledged `seq` on connection `conn`; false
    /// when that connection is gone.
    pub(super) async fn acked_through(&self, conn: u64, seq: u64) -> bool {
        let mut rx = self.acked.subscribe();
        let got = rx.wait_for(|(c, s)| *c != conn || *s >= seq).await;
        got.is_ok_and(|v| v.0 == conn)
    }

    pub async fn first_exchange(&self) {
        let mut rx = self.first.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Queue a publish (one record per batch; their bodies are shared,
    /// not copied); `None` while the link is down.
    pub fn append(&self, topic: &TopicName, due: i64, batches: &[Packed]) -> Option<AckWait> {
        let mut o = self.lock();
        if o.status == LinkStatus::Down {
            return None;
        }
        let mut seq = o.seq;
        for batch in batches {
            seq += 1;
            let head = AppendHead {
                seq,
                topic,
                channel: None,
                due,
            };
            let out = &mut o.out;
            let bodies = head.encode(&mut out.bytes, batch);
            let bytes = (bodies.len() - 4 * batch.len()) as u64;
            out.pieces.push((out.bytes.len(), bodies));
            o.unacked.push_back((seq, batch.len() as u64, bytes));
            o.lag_messages += batch.len() as u64;
            o.lag_bytes += bytes;
        }
        o.seq = seq;
        let wait = AckWait {
            conn: o.conn,
            seq,
            counts: o.status == LinkStatus::InSync,
        };
        drop(o);
        self.wake.notify_one();
        Some(wait)
    }

    /// Wait until the peer acknowledged `w`; false when it did not within
    /// `timeout` (the peer is then out of sync) or the link dropped.
    pub async fn wait_ack(&self, w: AckWait, timeout: Duration) -> bool {
        let mut rx = self.acked.subscribe();
        // Most publishes are first looked at once an ack covering them came
        // (one ack answers several): no timer for those.
        let now = *rx.borrow_and_update();
        if now.0 != w.conn || now.1 >= w.seq {
            return now.0 == w.conn;
        }
        let got =
            tokio::time::timeout(timeout, rx.wait_for(|(c, s)| *c != w.conn || *s >= w.seq)).await;
        match got {
            Ok(Ok(v)) => v.0 == w.conn && v.1 >= w.seq,
            _ => {
                let mut o = self.lock();
                if o.conn == w.conn && o.status == LinkStatus::InSync {
                    o.status = LinkStatus::CatchingUp;
                    o.catch_target = o.seq;
                    warn!(peer = %self.addr, lag = o.lag_messages, "REPLICA {}: no ack within {timeout:?}; out of sync, catching up", self.addr);
                }
                false
            }
        }
    }

    pub fn meta(&self, op: MetaOp, topic: &TopicName, channel: Option<&ChannelName>) {
        let mut o = self.lock();
        if o.status == LinkStatus::Down {
            return;
        }
        // Channel creations go out before the channel exists, so no record
        // of a message it received can precede it on the link.
        o.push_meta(op, topic, channel);
        drop(o);
        self.wake.notify_one();
    }

    pub fn finished(&self, topic: &TopicName, channel: &ChannelName, ids: &[u64]) {
        let mut o = self.lock();
        if o.status == LinkStatus::Down {
            return;
        }
        o.finishes
            .entry((topic.clone(), channel.clone()))
            .or_default()
            .extend_from_slice(ids);
    }

    pub(super) fn acked(&self, conn: u64, seq: u64) {
        let mut o = self.lock();
        if o.conn != conn {
            return;
        }
        while o.unacked.front().is_some_and(|u| u.0 <= seq) {
            if let Some((_, n, b)) = o.unacked.pop_front() {
                o.lag_messages = o.lag_messages.saturating_sub(n);
                o.lag_bytes = o.lag_bytes.saturating_sub(b);
            }
        }
        if o.status == LinkStatus::CatchingUp && seq >= o.catch_target {
            o.status = LinkStatus::InSync;
            info!(peer = %self.addr, "REPLICA {}: in sync", self.addr);
        }
        drop(o);
        self.acked.send_replace((conn, seq));
    }

    /// Everything queued, to write (into `buf`, which is empty:
    /// the two buffers trade places, so neither is copied nor reallocated);
    /// gathered FINs become records. `Err` when the backlog passed its
    /// bound.
    /// Returns the sequence number every record up to which is now in
    /// `buf` or already written (what a Ping may claim: taken under the
    /// same lock, so a record queued just after is never covered by it).
    pub(super) fn drain(&self, conn: u64, buf: &mut Outgoing) -> Result<u64, &'static str> {
        let mut o = self.lock();
        if o.conn != conn {
            return Err("replaced");
        }
        if o.lag_bytes > MAX_BACKLOG_BYTES {
            return Err("peer too far behind");
        }
        for ((topic, channel), ids) in std::mem::take(&mut o.finishes) {
            for chunk in ids.chunks(super::wire::MAX_COUNT) {
                o.push_record(|seq| Frame::Finish {
                    seq,
                    topic: topic.clone(),
                    channel: channel.clone(),
                    ids: chunk.to_vec(),
                });
            }
        }
        std::mem::swap(&mut o.out, buf);
        Ok(o.seq)
    }

    pub(super) fn down(&self, conn: u64, why: &str) {
        let mut o = self.lock();
        if o.conn != conn {
            return;
        }
        let was = o.status;
        o.conn += 1;
        o.status = LinkStatus::Down;
        o.clear();
        o.lag_messages = 0;
        o.lag_bytes = 0;
        let now = o.conn;
        drop(o);
        self.acked.send_replace((now, 0));
        if was != LinkStatus::Down {
            warn!(peer = %self.addr, "REPLICA {}: down - {why}", self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn decode_all(o: Outgoing) -> Vec<Frame> {
        let mut b = BytesMut::new();
        for s in o.slices() {
            b.extend_from_slice(&s);
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let frame = b.split_to(4 + size).freeze().slice(4..);
            out.push(Frame::decode(frame).unwrap());
        }
        out
    }

    /// A link on connection 1, in sync.
    fn in_sync_link() -> PeerLink {
        let link = PeerLink::new("peer".into());
        let mut o = link.lock();
        o.conn = 1;
        o.status = LinkStatus::InSync;
        drop(o);
        link
    }

    #[test]
    fn drain_hands_over_every_record_up_to_the_sequence_it_returns() {
        let link = in_sync_link();
        let topic: TopicName = "t".parse().unwrap();
        let channel: ChannelName = "c".parse().unwrap();
        let batch = Packed::pack(&[Bytes::from_static(b"x")], 7, 1);
        let wait = link.append(&topic, 0, &[batch]).unwrap();
        link.finished(&topic, &channel, &[7]);
        let mut buf = Outgoing::default();
        let seq = link.drain(1, &mut buf).unwrap();
        // The Append and the FIN record made from what was gathered: a
        // Ping claiming `seq` follows them on the link.
        let frames = decode_all(std::mem::take(&mut buf));
        assert_eq!(
            frames.iter().filter_map(Frame::seq).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(seq, 2);
        assert!(wait.counts);
        // Queued after the drain: not covered by what it returned.
        link.meta(MetaOp::ChannelPause, &topic, Some(&channel));
        assert_eq!(link.drain(1, &mut buf).unwrap(), 3);
        assert_eq!(decode_all(buf).len(), 1);
        assert_eq!(link.drain(2, &mut Outgoing::default()), Err("replaced"));
    }

    #[test]
    fn a_publish_goes_out_as_queued_its_bodies_shared_not_copied() {
        let link = in_sync_link();
        let topic: TopicName = "t".parse().unwrap();
        let bodies = [Bytes::from_static(b"one"), Bytes::from_static(b"")];
        let a = Packed::pack(&bodies, 41, 5);
        let b = Packed::pack(&[Bytes::from_static(b"three")], 90, 6);
        let wait = link.append(&topic, 0, &[a.clone(), b]).unwrap();
        assert_eq!(wait.seq, 2);
        assert_eq!(link.status(), (LinkStatus::InSync, 3, 8));
        let mut buf = Outgoing::default();
        link.drain(1, &mut buf).unwrap();
        // The queued buffer itself goes on the link.
        assert_eq!(buf.pieces[0].1.as_ptr(), a.parts().0.as_ptr());
        let frames = decode_all(buf);
        let Frame::Append { seq: 1, msgs, .. } = &frames[0] else {
            panic!("{frames:?}");
        };
        let got: Vec<_> = msgs
            .iter()
            .map(|m| (m.id, m.timestamp, m.attempts, m.body.clone()))
            .collect();
        let want: Vec<_> = a
            .messages()
            .map(|m| (m.id, m.timestamp, 0, m.body))
            .collect();
        assert_eq!(got, want);
        let Frame::Append { seq: 2, msgs, .. } = &frames[1] else {
            panic!("{frames:?}");
        };
        assert_eq!((msgs[0].id, &msgs[0].body[..]), (90, &b"three"[..]));
    }

    #[tokio::test]
    async fn a_publish_is_acknowledged_only_by_an_ack_on_its_own_connection() {
        let link = in_sync_link();
        let topic: TopicName = "t".parse().unwrap();
        let batch = || Packed::pack(&[Bytes::from_static(b"x")], 7, 1);
        let first = link.append(&topic, 0, &[batch()]).unwrap();
        let second = link.append(&topic, 0, &[batch()]).unwrap();
        // Acked before anyone waits (one ack covering several publishes).
        link.acked(1, first.seq);
        let patience = Duration::from_secs(5);
        assert!(link.wait_ack(first, patience).await);
        // Not covered: times out, and the peer falls out of sync.
        assert!(!link.wait_ack(second, Duration::from_millis(20)).await);
        assert_eq!(link.status().0, LinkStatus::CatchingUp);
        // Covered by an ack after the wait began.
        let third = link.append(&topic, 0, &[batch()]).unwrap();
        let wait = link.wait_ack(third, patience);
        let ack = async { link.acked(1, third.seq) };
        let (got, ()) = tokio::join!(wait, ack);
        assert!(got);
        // The connection it was sent on is gone: never acknowledged, even
        // by a higher sequence number on the next one.
        let fourth = link.append(&topic, 0, &[batch()]).unwrap();
        link.down(1, "test");
        assert!(!link.wait_ack(fourth, patience).await);
    }
}
