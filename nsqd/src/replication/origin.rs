//! The origin's side of a link: connecting to a peer, the Hello exchange,
//! the full copy, and the task that writes records and reads acks (the
//! shared state is `link.rs`).

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{info, warn};

use super::codec::{FrameReader, ReadError};
use super::full_copy::{copy_disk, copy_memory, CopyError};
use super::link::{LinkStatus, Outgoing, PeerLink, FINISH_FLUSH};
use super::peer_auth::{self, Claim, Role};
use super::state::Replication;
use super::wire::{Frame, WireError, HELLO_MAX, MAX_FRAME, VERSION};
use crate::nsqd::Nsqd;

/// Wait between connection attempts.
const RECONNECT: Duration = Duration::from_millis(250);
/// Most slices one vectored write is given (Linux's IOV_MAX).
const MAX_SLICES: usize = 1024;
/// Most capacity the link's write buffer keeps between writes.
const KEEP_CAPACITY: usize = 8 * 1024 * 1024;

/// A new connection: Reset and a copy of what this node holds in memory,
/// queued ahead of anything published from now on. The peer is not in
/// sync before the rest of the copy (`finish_copy`) is acknowledged.
fn connected(link: &PeerLink, nsqd: &Nsqd, repl: &Replication) -> u64 {
    let mut o = link.lock();
    o.conn += 1;
    o.status = LinkStatus::CatchingUp;
    o.clear();
    o.push_record(|seq| Frame::Reset { seq });
    let copied = copy_memory(nsqd, &repl.filter, &mut o);
    o.catch_target = u64::MAX;
    let conn = o.conn;
    drop(o);
    info!(peer = %link.addr, messages = copied, "REPLICA {}: connected, catching up", link.addr);
    link.wake.notify_one();
    conn
}

/// The rest of a full copy: the disk queues, then memory again (what was
/// read from disk meanwhile); the peer is in sync once it acknowledged it.
async fn finish_copy(
    link: &PeerLink,
    nsqd: &Nsqd,
    repl: &Replication,
    conn: u64,
) -> Result<(), SessionError> {
    let from_disk = copy_disk(nsqd, &repl.filter, link, conn).await?;
    let mut o = link.lock();
    if o.conn != conn {
        return Err(CopyError::Replaced.into());
    }
    copy_memory(nsqd, &repl.filter, &mut o);
    o.catch_target = o.seq;
    drop(o);
    if from_disk > 0 {
        info!(peer = %link.addr, messages = from_disk, "REPLICA {}: copied what spilled to disk", link.addr);
    }
    link.wake.notify_one();
    Ok(())
}

/// Keep a link to `link`'s peer up for the life of the server.
pub async fn run(repl: Arc<Replication>, nsqd: Arc<Nsqd>, link: Arc<PeerLink>) {
    let mut last = String::new();
    loop {
        let why = tokio::select! {
            _ = nsqd.cancel.cancelled() => return,
            r = session(&repl, &nsqd, &link) => match r {
                Ok(()) => "closed".to_string(),
                Err(e) => e.to_string(),
            },
        };
        link.first.send_replace(true);
        // Each new reason once at warn (a refused secret, say), then quietly.
        if why != last {
            warn!(peer = %link.addr, "REPLICA {}: link not up - {why}", link.addr);
            last = why;
        } else {
            tracing::debug!(peer = %link.addr, "replication link: {why}");
        }
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
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error("unexpected frame from the peer")]
    Unexpected,
    #[error("the peer failed authentication (--replication-secret-file)")]
    Unauthenticated,
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

/// Write every slice, as few system calls as the socket takes.
async fn write_all_vectored(
    write: &mut (impl AsyncWriteExt + Unpin),
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !slices.is_empty() {
        // At most IOV_MAX slices per call; the rest in the next.
        let n = slices.len().min(MAX_SLICES);
        let written = write.write_vectored(&slices[..n]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
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
    // Until the peer proved who it is, nothing larger than an Auth.
    frames.set_limit(HELLO_MAX);
    let Frame::Auth {
        nonce: challenge, ..
    } = frames.next_within(timeout).await?
    else {
        return Err(SessionError::Unexpected);
    };
    let (identity, incarnation) = (&repl.cfg.identity, repl.incarnation);
    let secret = repl.secret.as_ref();
    let mine = peer_auth::nonce();
    let claim = |role, nonce| Claim {
        role,
        nonce,
        origin: identity,
        incarnation,
    };
    let mut buf = BytesMut::new();
    Frame::Hello {
        version: VERSION,
        origin: identity.clone(),
        incarnation,
    }
    .encode(&mut buf);
    Frame::Auth {
        nonce: mine,
        proof: peer_auth::answer(secret, &claim(Role::Origin, &challenge)),
    }
    .encode(&mut buf);
    write.write_all(&buf).await?;
    buf.clear();
    let Frame::Auth { proof, .. } = frames.next_within(timeout).await? else {
        return Err(SessionError::Unexpected);
    };
    if !peer_auth::accepted(secret, &claim(Role::Holder, &mine), &proof) {
        return Err(SessionError::Unauthenticated);
    }
    frames.set_limit(MAX_FRAME);
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
    let mut buf = Outgoing {
        bytes: buf,
        ..Outgoing::default()
    };
    let writer = async {
        let mut last_write = Instant::now();
        // One timer for the life of the link (not one per wake-up): FINs
        // and pings go out at least this often.
        let tick = tokio::time::sleep(FINISH_FLUSH);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                _ = link.wake.notified() => {}
                _ = &mut tick => tick.as_mut().reset(Instant::now() + FINISH_FLUSH),
            }
            let seq = link.drain(conn, &mut buf).map_err(SessionError::Backlog)?;
            if buf.is_empty() && last_write.elapsed() >= timeout / 4 {
                Frame::Ping { seq }.encode(&mut buf.bytes);
            }
            if !buf.is_empty() {
                write_all_vectored(&mut write, &mut buf.slices()).await?;
                buf.clear();
                if buf.bytes.capacity() > KEEP_CAPACITY {
                    // A full copy's burst: do not hold on to it.
                    buf.bytes = BytesMut::new();
                }
                last_write = Instant::now();
            }
        }
    };
    let reader = async {
        loop {
            let f = frames.next_within(timeout).await?;
            match f {
                Frame::Ack { mut seq } => {
                    // Acks read together complete their publishes together:
                    // the publishers are woken once for all of them.
                    while frames.has_frame() {
                        match frames.next_within(timeout).await? {
                            Frame::Ack { seq: s } => seq = seq.max(s),
                            _ => return Err(SessionError::Unexpected),
                        }
                    }
                    link.acked(conn, seq)
                }
                _ => return Err(SessionError::Unexpected),
            }
        }
    };
    let copy = async {
        finish_copy(link, nsqd, repl, conn).await?;
        std::future::pending::<Result<(), SessionError>>().await
    };
    let r: Result<(), SessionError> = tokio::select! {
        r = writer => r,
        r = reader => r,
        r = copy => r,
    };
    link.down(
        conn,
        &r.as_ref().err().map_or("closed".into(), |e| e.to_string()),
    );
    r
}
