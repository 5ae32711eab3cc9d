//! The holder's side of a link: the replication listener, the Hello
//! exchange (telling a returning origin what was taken over), applying the
//! origin's records to its shadow, and acknowledging them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use nsq_protocol::TopicName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{info, warn};

use super::shadow::Shadow;
use super::wire::{Frame, FrameReader, WireError, MAX_COUNT, VERSION};
use super::{Replication, SHADOW_MAX_BYTES};
use crate::nsqd::Nsqd;

/// Largest frame accepted before the origin identified itself.
const HELLO_MAX: usize = 1024;

/// Per-origin state; locked by that origin's link task (to apply records),
/// the takeover timer and `/stats`. Never held across an `.await`.
pub(crate) struct Inner {
    pub shadow: Shadow,
    /// Connection generation, so a replaced connection stops applying.
    pub conn: u64,
    pub connected: bool,
    /// When the origin was last heard from (or this node started).
    pub last_seen: Instant,
    /// The origin's process, from its Hello; 0 before the first.
    pub incarnation: u64,
    /// Taken over and not yet back.
    pub taken_over: bool,
    pub takeovers: u64,
    /// Original ids of what was taken over (and of what the origin had
    /// finished lately), to tell the origin on return.
    pub taken: BTreeMap<TopicName, BTreeSet<u64>>,
    /// Messages taken over since the origin was last told.
    pub taken_messages: u64,
    /// `--durable`: every record applied is journaled and fsynced first.
    pub journal: Option<super::journal::Journal>,
    /// The origin's last Hello (kept in the journal's snapshots).
    pub hello: Option<Frame>,
}

impl Inner {
    /// After a takeover emptied the shadow: the journal follows.
    pub fn journal_emptied(&mut self) {
        if let Some(j) = &mut self.journal {
            if let Err(e) = j.compact(&self.shadow, self.hello.as_ref()) {
                tracing::error!("replication journal: cannot rewrite - {e}");
            }
        }
    }
}

pub struct OriginState {
    pub addr: String,
    inner: Mutex<Inner>,
}

impl OriginState {
    /// The state of origin `addr`; with `journal_dir` (`--durable`) its
    /// shadow is journaled there, and what the journal holds is replayed.
    pub fn new(addr: String, journal_dir: Option<&std::path::Path>) -> std::io::Result<Self> {
        let mut inner = Self::empty();
        if let Some(dir) = journal_dir {
            let (journal, frames) = super::journal::Journal::open(dir, &addr)?;
            for f in frames {
                match &f {
                    Frame::Hello { incarnation, .. } => {
                        inner.incarnation = *incarnation;
                        inner.hello = Some(f.clone());
                    }
                    _ => {
                        // Already acknowledged once; a shadow over its bound
                        // keeps what it has.
                        let _ = apply(&mut inner.shadow, &f);
                    }
                }
            }
            if inner.shadow.depth() > 0 {
                info!(peer = %addr, messages = inner.shadow.depth(), "REPLICA {addr}: shadow replayed from the journal");
            }
            inner.journal = Some(journal);
        }
        Ok(OriginState {
            addr,
            inner: Mutex::new(inner),
        })
    }

    fn empty() -> Inner {
        Inner {
            shadow: Shadow::default(),
            conn: 0,
            connected: false,
            last_seen: Instant::now(),
            incarnation: 0,
            taken_over: false,
            takeovers: 0,
            taken: BTreeMap::new(),
            taken_messages: 0,
            journal: None,
            hello: None,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken over, shadow depth, takeovers.
    pub fn status(&self) -> (bool, u64, u64) {
        let i = self.lock();
        (i.taken_over, i.shadow.depth(), i.takeovers)
    }
}

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
    #[error("no frame within the replica timeout")]
    Timeout,
    #[error("closed by the origin")]
    Closed,
    #[error("expected Hello")]
    NoHello,
    #[error("unknown origin {0:?} (not a --replica of this node)")]
    Unknown(String),
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
    // Until the peer said who it is, nothing larger than a Hello.
    frames.set_limit(HELLO_MAX);
    let next = |f: Option<Result<Frame, WireError>>| -> Result<Frame, HolderError> {
        Ok(f.ok_or(HolderError::Closed)??)
    };
    let hello = tokio::time::timeout(timeout, frames.next())
        .await
        .map_err(|_| HolderError::Timeout)?;
    let Frame::Hello {
        version,
        origin,
        incarnation,
    } = next(hello)?
    else {
        return Err(HolderError::NoHello);
    };
    if version != VERSION {
        return Err(HolderError::Version(version));
    }
    let Some(state) = repl.origins.iter().find(|o| o.addr == origin).cloned() else {
        return Err(HolderError::Unknown(origin));
    };
    let hello = Frame::Hello {
        version,
        origin: origin.clone(),
        incarnation,
    };
    frames.set_limit(super::wire::MAX_FRAME);
    let (conn, restarted) = {
        let mut i = state.lock();
        i.conn += 1;
        i.connected = true;
        i.last_seen = Instant::now();
        let restarted = i.incarnation != 0 && i.incarnation != incarnation;
        i.incarnation = incarnation;
        if let Some(j) = &mut i.journal {
            j.record(&hello);
            tokio::task::block_in_place(|| j.commit())?;
        }
        i.hello = Some(hello);
        (i.conn, restarted)
    };
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
    let mut buf = BytesMut::new();
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

async fn apply_loop(
    state: &OriginState,
    conn: u64,
    frames: &mut FrameReader<tokio::net::tcp::OwnedReadHalf>,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    timeout: std::time::Duration,
) -> Result<(), HolderError> {
    let mut buf = BytesMut::new();
    let mut last = 0u64;
    loop {
        let f = tokio::time::timeout(timeout, frames.next())
            .await
            .map_err(|_| HolderError::Timeout)?
            .ok_or(HolderError::Closed)??;
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
        // One ack covers every record read in one go; a durable holder
        // fsyncs them first.
        if !frames.has_frame() {
            {
                let mut i = state.lock();
                let i = &mut *i;
                if let Some(j) = &mut i.journal {
                    tokio::task::block_in_place(|| j.commit())?;
                    if j.wants_compaction(&i.shadow) {
                        tokio::task::block_in_place(|| j.compact(&i.shadow, i.hello.as_ref()))?;
                    }
                }
            }
            Frame::Ack { seq: last }.encode(&mut buf);
            write.write_all(&buf).await?;
            buf.clear();
        }
    }
}

/// Apply one of the origin's records to its shadow.
fn apply(shadow: &mut Shadow, f: &Frame) -> Result<(), super::shadow::ShadowError> {
    match f {
        Frame::Reset { .. } => shadow.reset(),
        Frame::Append {
            topic,
            channel,
            due,
            msgs,
            ..
        } => shadow.append(topic, channel.as_ref(), *due, msgs, SHADOW_MAX_BYTES)?,
        Frame::Finish {
            topic,
            channel,
            ids,
            ..
        } => shadow.finish(topic, channel, ids),
        Frame::Meta {
            op, topic, channel, ..
        } => shadow.meta(*op, topic, channel.as_ref()),
        _ => {}
    }
    Ok(())
}
