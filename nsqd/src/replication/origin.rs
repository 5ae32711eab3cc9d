//! The origin's side of a link: connecting to a peer, the Hello exchange,
//! the full copy, and the task that writes records and reads acks (the
//! shared state is `link.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nsq_protocol::ChannelName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{info, warn};

use super::codec::{FrameReader, ReadError};
use super::link::{LinkStatus, Outbox, PeerLink, FINISH_FLUSH};
use super::state::Replication;
use super::wire::{Frame, MetaOp, WireError, WireMessage, VERSION};
use crate::message::unix_nanos;
use crate::nsqd::Nsqd;

/// Messages per Append of a full copy.
const COPY_BATCH: usize = 1024;
/// Wait between connection attempts.
const RECONNECT: Duration = Duration::from_millis(250);

/// A new connection: Reset and a full copy of what this node holds,
/// queued ahead of anything published from now on.
fn connected(link: &PeerLink, nsqd: &Nsqd, repl: &Replication) -> u64 {
    let mut o = link.lock();
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
    info!(peer = %link.addr, messages = copied, "REPLICA {}: connected, catching up", link.addr);
    link.wake.notify_one();
    conn
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
    #[error(transparent)]
    Read(#[from] ReadError),
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
        let f = frames.next_within(timeout).await?;
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
    let conn = connected(link, nsqd, repl);
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
            let f = frames.next_within(timeout).await?;
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
