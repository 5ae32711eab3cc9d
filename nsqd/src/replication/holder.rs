//! The holder's side of a link: the replication listener, the Hello
//! exchange (telling a returning origin what was taken over), applying the
//! origin's records to its shadow, and acknowledging them.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{info, warn};

use super::codec::{FrameReader, ReadError};
use super::journal_writer::{SyncError, Waiter};
use super::origin_state::{apply, OriginState};
use super::peer_auth::{self, Claim, Role};
use super::state::Replication;
use super::wire::{Frame, WireError, HELLO_MAX, MAX_COUNT, VERSION};
use crate::nsqd::Nsqd;

pub async fn accept(repl: Arc<Replication>, nsqd: Arc<Nsqd>, listener: TcpListener) {
    nsq_app::net::accept_loop(&listener, &nsqd.cancel, "REPLICATION", |stream, addr| {
        let repl = repl.clone();
        let n = nsqd.clone();
        nsqd.tracker.spawn(async move {
            if let Err(e) = serve(&repl, &n, stream, addr).await {
                warn!("REPLICATION: link from {addr} closed - {e}");
            }
        });
    })
    .await;
}

#[derive(Debug, thiserror::Error)]
enum HolderError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("expected Hello")]
    NoHello,
    #[error("unknown origin {0:?} (not a --replica of this node)")]
    Unknown(String),
    #[error("origin {0:?} failed authentication (--replication-secret-file)")]
    Unauthenticated(String),
    #[error("protocol version {0} not supported")]
    Version(u16),
    #[error("unexpected frame")]
    Unexpected,
    #[error("replaced by a newer link")]
    Replaced,
    #[error(transparent)]
    Shadow(#[from] super::shadow::ShadowError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Journal(#[from] SyncError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn serve(
    repl: &Arc<Replication>,
    nsqd: &Arc<Nsqd>,
    stream: TcpStream,
    addr: SocketAddr,
) -> Result<(), HolderError> {
    let timeout = repl.cfg.timeout;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut frames = FrameReader::new(read);
    // Until the peer proved who it is, nothing larger than a Hello.
    frames.set_limit(HELLO_MAX);
    let mut buf = BytesMut::new();
    let challenge = peer_auth::nonce();
    Frame::Auth {
        nonce: challenge,
        proof: [0; 32],
    }
    .encode(&mut buf);
    write.write_all(&buf).await?;
    buf.clear();
    let Frame::Hello {
        version,
        origin,
        incarnation,
    } = frames.next_within(timeout).await?
    else {
        return Err(HolderError::NoHello);
    };
    if version != VERSION {
        return Err(HolderError::Version(version));
    }
    let Some(state) = repl.origins.iter().find(|o| o.addr == origin).cloned() else {
        return Err(HolderError::Unknown(origin));
    };
    let Frame::Auth { nonce, proof } = frames.next_within(timeout).await? else {
        return Err(HolderError::Unexpected);
    };
    let secret = repl.secret.as_ref();
    let claim = |role, nonce| Claim {
        role,
        nonce,
        origin: &origin,
        incarnation,
    };
    if !peer_auth::accepted(secret, &claim(Role::Origin, &challenge), &proof) {
        return Err(HolderError::Unauthenticated(origin));
    }
    Frame::Auth {
        nonce: [0; 32],
        proof: peer_auth::answer(secret, &claim(Role::Holder, &nonce)),
    }
    .encode(&mut buf);
    write.write_all(&buf).await?;
    buf.clear();
    let hello = Frame::Hello {
        version,
        origin: origin.clone(),
        incarnation,
    };
    frames.set_limit(super::wire::MAX_FRAME);
    frames.set_chunk(super::codec::RECORDS_CHUNK);
    let (conn, restarted, synced) = {
        let mut i = state.lock();
        i.conn += 1;
        i.connected = true;
        i.last_seen = Instant::now();
        let restarted = i.incarnation != 0 && i.incarnation != incarnation;
        i.incarnation = incarnation;
        let synced = i.journal.as_mut().map(|j| {
            j.record(&hello);
            (j.waiter(), j.submit())
        });
        i.hello = Some(hello);
        (i.conn, restarted, synced)
    };
    if let Some((mut waiter, ticket)) = synced {
        waiter.wait(ticket).await?;
    }
    if restarted && state.status().1 > 0 {
        // The origin restarted: what it held in memory is gone, and what
        // it kept on disk it will drop once told. Deliver it from here.
        super::takeover::take_over(nsqd, repl, &state, "origin restarted");
    }
    let taken = {
        let mut i = state.lock();
        if i.taken_over {
            info!(peer = %state.addr, "REPLICA {}: back (from {addr}); telling it what was taken over", state.addr);
        }
        i.taken_over = false;
        (
            std::mem::take(&mut i.taken),
            std::mem::take(&mut i.taken_messages),
        )
    };
    let (taken, taken_messages) = taken;
    for (topic, ids) in taken {
        let ids: Vec<u64> = ids.into_iter().collect();
        for chunk in ids.chunks(MAX_COUNT / 16) {
            Frame::TakenOver {
                topic: topic.clone(),
                ids: chunk.to_vec(),
            }
            .encode(&mut buf);
            write.write_all(&buf).await?;
            buf.clear();
        }
    }
    Frame::Welcome {
        taken_over: taken_messages,
    }
    .encode(&mut buf);
    write.write_all(&buf).await?;
    buf.clear();
    info!(peer = %state.addr, "REPLICA {}: link from origin up", state.addr);
    let result = apply_loop(&state, conn, &mut frames, &mut write, timeout).await;
    {
        let mut i = state.lock();
        if i.conn == conn {
            i.connected = false;
            i.last_seen = Instant::now();
        }
    }
    warn!(peer = %state.addr, "REPLICA {}: link from origin down", state.addr);
    result
}

/// Most records one acknowledgement waits for.
const ACK_EVERY: usize = 8;

async fn apply_loop(
    state: &OriginState,
    conn: u64,
    frames: &mut FrameReader<tokio::net::tcp::OwnedReadHalf>,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    timeout: std::time::Duration,
) -> Result<(), HolderError> {
    let mut buf = BytesMut::new();
    let mut last = 0u64;
    let mut unacked = 0;
    // A durable holder acknowledges what its journal writer has fsynced:
    // records go on being read and applied while it writes, and the next
    // group starts as soon as one is on disk.
    let mut waiter = state.lock().journal.as_ref().map(|j| j.waiter());
    // The journal ticket being written and the last sequence it covers.
    let mut syncing: Option<(u64, u64)> = None;
    // Records applied since the last group was handed to the writer.
    let mut unsubmitted = false;
    frames.set_spin(super::RECORD_SPIN);
    loop {
        // The next record of a lone publish comes soon: try for it before
        // parking (not while a journal group is being fsynced).
        if syncing.is_none() {
            frames.spin(|| false)?;
        }
        let f = tokio::select! {
            r = wait_synced(&mut waiter, syncing) => {
                r?;
                let (_, seq) = syncing.take().unwrap_or_default();
                if unsubmitted {
                    syncing = submit(state, conn, last)?;
                    unsubmitted = false;
                }
                Frame::Ack { seq }.encode(&mut buf);
                write.write_all(&buf).await?;
                buf.clear();
                continue;
            }
            f = frames.next_within(timeout) => f?,
        };
        {
            let mut i = state.lock();
            if i.conn != conn {
                return Err(HolderError::Replaced);
            }
            i.last_seen = Instant::now();
            if let Some(seq) = f.seq() {
                last = last.max(seq);
            }
            match f {
                Frame::Ping { .. } => {}
                Frame::Reset { .. }
                | Frame::Append { .. }
                | Frame::Finish { .. }
                | Frame::Meta { .. } => {
                    apply(&mut i.shadow, &f)?;
                    if let Some(j) = &mut i.journal {
                        j.record(&f);
                    }
                }
                _ => return Err(HolderError::Unexpected),
            }
        }
        // One ack covers the records that arrived together, at most
        // ACK_EVERY of them (so the origin's publishes keep flowing).
        unacked += 1;
        if unacked < ACK_EVERY && frames.more_ready() {
            continue;
        }
        unacked = 0;
        if waiter.is_none() {
            Frame::Ack { seq: last }.encode(&mut buf);
            write.write_all(&buf).await?;
            buf.clear();
        } else if syncing.is_none() {
            syncing = submit(state, conn, last)?;
        } else {
            unsubmitted = true;
        }
    }
}

/// Hand a durable holder's recorded records to its journal writer (and
/// compact the journal when it has grown well past the shadow): the
/// ticket to wait for and `last`, the sequence it covers.
fn submit(state: &OriginState, conn: u64, last: u64) -> Result<Option<(u64, u64)>, HolderError> {
    let mut i = state.lock();
    if i.conn != conn {
        return Err(HolderError::Replaced);
    }
    let i = &mut *i;
    Ok(i.journal.as_mut().map(|j| {
        let ticket = if j.wants_compaction(&i.shadow) {
            j.compact(&mut i.shadow, i.hello.as_ref())
        } else {
            j.submit()
        };
        (ticket, last)
    }))
}

/// Until the journal group being written is on disk (forever when none is).
async fn wait_synced(
    waiter: &mut Option<Waiter>,
    syncing: Option<(u64, u64)>,
) -> Result<(), SyncError> {
    match (waiter, syncing) {
        (Some(w), Some((ticket, _))) => w.wait(ticket).await,
        _ => std::future::pending().await,
    }
}
