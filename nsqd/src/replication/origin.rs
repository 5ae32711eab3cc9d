//! The origin's side of a link: connecting to a peer, the Hello exchange,
//! the full copy, the record stream and its acknowledgements, and the
//! link's state (`down` / `catching_up` / `in_sync`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use nsq_protocol::{ChannelName, TopicName};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{info, warn};

use super::wire::{Frame, FrameReader, MetaOp, WireError, WireMessage, VERSION};
use super::Replication;
use crate::message::unix_nanos;
use crate::nsqd::Nsqd;

/// FINs are gathered this long before they go to the peer as one record.
const FINISH_FLUSH: Duration = Duration::from_millis(25);
/// A link whose unsent or unacknowledged records pass this is dropped (the
/// peer cannot keep up); it gets a full copy when it reconnects.
const MAX_BACKLOG_BYTES: u64 = 512 * 1024 * 1024;
/// Messages per Append of a full copy.
const COPY_BATCH: usize = 1024;
/// Wait between connection attempts.
const RECONNECT: Duration = Duration::from_millis(250);

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
struct Outbox {
    status: LinkStatus,
    /// Connection generation: a publish waits for an ack on the connection
    /// it was sent on.
    conn: u64,
    seq: u64,
    /// `catching_up` ends once the peer acknowledged this.
    catch_target: u64,
    frames: VecDeque<Frame>,
    /// (seq, messages, bytes) of records not yet acknowledged.
    unacked: VecDeque<(u64, u64, u64)>,
    lag_messages: u64,
    lag_bytes: u64,
    finishes: HashMap<(TopicName, ChannelName), Vec<u64>>,
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
    wake: Notify,
    /// (connection, highest sequence acknowledged on it).
    acked: watch::Sender<(u64, u64)>,
    /// Becomes true after the first Hello exchange (or failed attempt).
    first: watch::Sender<bool>,
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
                frames: VecDeque::new(),
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

    fn lock(&self) -> MutexGuard<'_, Outbox> {
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

    pub async fn first_exchange(&self) {
        let mut rx = self.first.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Queue a publish; `None` while the link is down.
    pub fn append(&self, topic: &TopicName, due: i64, msgs: &[WireMessage]) -> Option<AckWait> {
        let mut o = self.lock();
        if o.status == LinkStatus::Down {
            return None;
        }
        let bytes: u64 = msgs.iter().map(|m| m.body.len() as u64).sum();
        o.seq += 1;
        let seq = o.seq;
        o.frames.push_back(Frame::Append {
            seq,
            topic: topic.clone(),
            channel: None,
            due,
            msgs: msgs.to_vec(),
        });
        o.unacked.push_back((seq, msgs.len() as u64, bytes));
        o.lag_messages += msgs.len() as u64;
        o.lag_bytes += bytes;
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
        o.seq += 1;
        let seq = o.seq;
        o.frames.push_back(Frame::Meta {
            seq,
            op,
            topic: topic.clone(),
            channel: channel.cloned(),
        });
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

    fn acked(&self, conn: u64, seq: u64) {
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

    /// Everything queued, as bytes to write; gathered FINs become records.
    /// `Err` when the backlog passed its bound.
    fn drain(&self, conn: u64, buf: &mut BytesMut) -> Result<(), &'static str> {
        let mut o = self.lock();
        if o.conn != conn {
            return Err("replaced");
        }
        if o.lag_bytes > MAX_BACKLOG_BYTES {
            return Err("peer too far behind");
        }
        for ((topic, channel), ids) in std::mem::take(&mut o.finishes) {
            for chunk in ids.chunks(super::wire::MAX_COUNT) {
                o.seq += 1;
                let seq = o.seq;
                o.frames.push_back(Frame::Finish {
                    seq,
                    topic: topic.clone(),
                    channel: channel.clone(),
                    ids: chunk.to_vec(),
                });
            }
        }
        for f in o.frames.drain(..) {
            f.encode(buf);
        }
        Ok(())
    }

    fn down(&self, conn: u64, why: &str) {
        let mut o = self.lock();
        if o.conn != conn {
            return;
        }
        let was = o.status;
        o.conn += 1;
        o.status = LinkStatus::Down;
        o.frames.clear();
        o.unacked.clear();
        o.finishes.clear();
        o.lag_messages = 0;
        o.lag_bytes = 0;
        let now = o.conn;
        drop(o);
        self.acked.send_replace((now, 0));
        if was != LinkStatus::Down {
            warn!(peer = %self.addr, "REPLICA {}: down - {why}", self.addr);
        }
    }

    /// A new connection: Reset and a full copy of what this node holds,
    /// queued ahead of anything published from now on.
    fn connected(&self, nsqd: &Nsqd, repl: &Replication) -> u64 {
        let mut o = self.lock();
        o.conn += 1;
        o.status = LinkStatus::CatchingUp;
        o.frames.clear();
        o.unacked.clear();
        o.finishes.clear();
        o.seq += 1;
        let seq = o.seq;
        o.frames.push_back(Frame::Reset { seq });
        let copied = full_copy(nsqd, repl, &mut o);
        o.catch_target = o.seq;
        let conn = o.conn;
        drop(o);
        info!(peer = %self.addr, messages = copied, "REPLICA {}: connected, catching up", self.addr);
        self.wake.notify_one();
        conn
    }
}

/// A message with its due time (`None`: now).
type Timed = (crate::message::Message, Option<Instant>);

/// Queue the records that rebuild this node's state on a peer: topics'
/// pause state, channels, and every message held in memory.
fn full_copy(nsqd: &Nsqd, repl: &Replication, o: &mut Outbox) -> u64 {
    let now = Instant::now();
    let wall = unix_nanos();
    let due_of = |at: Option<Instant>| {
        at.map_or(0, |at| {
            wall.saturating_add(at.saturating_duration_since(now).as_nanos() as i64)
        })
    };
    let mut copied = 0u64;
    let push = |o: &mut Outbox, f: Frame| {
        o.seq += 1;
        let f = match f {
            Frame::Append {
                topic,
                channel,
                due,
                msgs,
                ..
            } => Frame::Append {
                seq: o.seq,
                topic,
                channel,
                due,
                msgs,
            },
            Frame::Meta {
                op, topic, channel, ..
            } => Frame::Meta {
                seq: o.seq,
                op,
                topic,
                channel,
            },
            other => other,
        };
        o.frames.push_back(f);
    };
    for topic in nsqd.topics_snapshot() {
        if topic.is_ephemeral() {
            continue;
        }
        let name = topic.name.clone();
        let meta = |op, channel: Option<ChannelName>| Frame::Meta {
            seq: 0,
            op,
            topic: name.clone(),
            channel,
        };
        if topic.is_paused() {
            push(o, meta(MetaOp::TopicPause, None));
        }
        let channels: Vec<_> = topic
            .channels()
            .into_iter()
            .filter(|c| !c.is_ephemeral())
            .collect();
        for c in &channels {
            push(o, meta(MetaOp::ChannelCreate, Some(c.name.clone())));
            if c.is_paused() {
                push(o, meta(MetaOp::ChannelPause, Some(c.name.clone())));
            }
        }
        let mut groups: Vec<(Option<ChannelName>, Vec<Timed>)> =
            vec![(None, topic.held_in_memory())];
        for c in &channels {
            groups.push((Some(c.name.clone()), c.messages_in_memory()));
        }
        for (channel, msgs) in groups {
            let msgs: Vec<_> = msgs
                .into_iter()
                .filter(|(m, _)| !repl.filter.contains(&name, m.id))
                .collect();
            copied += msgs.len() as u64;
            // One Append per due time, in batches.
            let mut by_due: std::collections::BTreeMap<i64, Vec<WireMessage>> = Default::default();
            for (m, at) in &msgs {
                by_due
                    .entry(due_of(*at))
                    .or_default()
                    .push(WireMessage::from(m));
            }
            for (due, ms) in by_due {
                for chunk in ms.chunks(COPY_BATCH) {
                    push(
                        o,
                        Frame::Append {
                            seq: 0,
                            topic: name.clone(),
                            channel: channel.clone(),
                            due,
                            msgs: chunk.to_vec(),
                        },
                    );
                }
            }
        }
    }
    copied
}

/// Keep a link to `link`'s peer up for the life of the server.
pub async fn run(repl: Arc<Replication>, nsqd: Arc<Nsqd>, link: Arc<PeerLink>) {
    loop {
        let why = tokio::select! {
            _ = nsqd.cancel.cancelled() => return,
            r = session(&repl, &nsqd, &link) => match r {
                Ok(()) => "closed".to_string(),
                Err(e) => e.to_string(),
            },
        };
        link.first.send_replace(true);
        tracing::debug!(peer = %link.addr, "replication link: {why}");
        tokio::select! {
            _ = nsqd.cancel.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect failed - {0}")]
    Connect(std::io::Error),
    #[error("no answer within the replica timeout")]
    Timeout,
    #[error("peer closed the link")]
    Closed,
    #[error("unexpected frame from the peer")]
    Unexpected,
    #[error("{0}")]
    Backlog(&'static str),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Connect from this node's replication address (its IP, any port), so
/// the link leaves from the interface peers know this node by.
async fn connect(identity: &str, peer: &str) -> std::io::Result<TcpStream> {
    let peer_addr = tokio::net::lookup_host(peer)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{peer}: no address")))?;
    let local: Option<std::net::SocketAddr> = identity.parse().ok();
    let socket = if peer_addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(mut l) =
        local.filter(|l| l.is_ipv4() == peer_addr.is_ipv4() && !l.ip().is_unspecified())
    {
        l.set_port(0);
        socket.bind(l)?;
    }
    socket.connect(peer_addr).await
}

async fn session(
    repl: &Arc<Replication>,
    nsqd: &Arc<Nsqd>,
    link: &Arc<PeerLink>,
) -> Result<(), SessionError> {
    let timeout = repl.cfg.timeout;
    let stream = tokio::time::timeout(timeout, connect(&repl.cfg.identity, &link.addr))
        .await
        .map_err(|_| SessionError::Timeout)?
        .map_err(SessionError::Connect)?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut frames = FrameReader::new(read);
    let mut buf = BytesMut::new();
    Frame::Hello {
        version: VERSION,
        origin: repl.cfg.identity.clone(),
        incarnation: repl.incarnation,
    }
    .encode(&mut buf);
    write.write_all(&buf).await?;
    buf.clear();
    // What the peer took over comes first: it must not be delivered here.
    loop {
        let f = tokio::time::timeout(timeout, frames.next())
            .await
            .map_err(|_| SessionError::Timeout)?
            .ok_or(SessionError::Closed)??;
        match f {
            Frame::TakenOver { topic, ids } => repl.filter.add(&topic, &ids),
            Frame::Welcome { taken_over } => {
                if taken_over > 0 {
                    warn!(peer = %link.addr, messages = taken_over, "REPLICA {}: took over {taken_over} of our messages while we were away; they will not be delivered here", link.addr);
                }
                break;
            }
            _ => return Err(SessionError::Unexpected),
        }
    }
    let conn = link.connected(nsqd, repl);
    link.first.send_replace(true);
    let writer = async {
        let mut last_write = Instant::now();
        loop {
            tokio::select! {
                _ = link.wake.notified() => {}
                _ = tokio::time::sleep(FINISH_FLUSH) => {}
            }
            link.drain(conn, &mut buf).map_err(SessionError::Backlog)?;
            if buf.is_empty() && last_write.elapsed() >= timeout / 4 {
                let seq = link.lock().seq;
                Frame::Ping { seq }.encode(&mut buf);
            }
            if !buf.is_empty() {
                write.write_all(&buf).await?;
                buf.clear();
                last_write = Instant::now();
            }
        }
    };
    let reader = async {
        loop {
            let f = tokio::time::timeout(timeout, frames.next())
                .await
                .map_err(|_| SessionError::Timeout)?
                .ok_or(SessionError::Closed)??;
            match f {
                Frame::Ack { seq } => link.acked(conn, seq),
                _ => return Err(SessionError::Unexpected),
            }
        }
    };
    let r: Result<(), SessionError> = tokio::select! {
        r = writer => r,
        r = reader => r,
    };
    link.down(
        conn,
        &r.as_ref().err().map_or("closed".into(), |e| e.to_string()),
    );
    r
}
