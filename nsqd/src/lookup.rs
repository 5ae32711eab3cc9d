//! Registration with nsqlookupd: one long-lived connection per
//! `--lookupd-tcp-address`, a full REGISTER of every topic and channel on each
//! connect, incremental REGISTER/UNREGISTER as they come and go, and a PING
//! every 15 s.
//!
//! Upstream notices a lost lookupd only when its next command fails (up to a
//! PING interval later); here each peer keeps a read pending on its socket, so
//! a lookupd that restarts is seen at once and re-registered within the
//! reconnect backoff (at most [`MAX_BACKOFF`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use nsq_protocol::lookup::{LookupCommand, LookupReply, LookupdInfo, PeerIdentity, ReplyDecoder};
use nsq_protocol::{ChannelName, TopicName, MAGIC_V1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

/// What registration reads of nsqd: a narrow view, so this module does not
/// depend on the server (nsqd implements it).
pub trait Registry: Send + Sync + 'static {
    /// Who we are, for IDENTIFY.
    fn identity(&self) -> PeerIdentity;
    /// Every topic with its channels, for a full REGISTER.
    fn registrations(&self) -> Vec<(TopicName, Vec<ChannelName>)>;
    /// The largest reply body to accept.
    fn max_body_size(&self) -> u64;
    /// Cancelled at shutdown; peers stop with it.
    fn cancel(&self) -> &CancellationToken;
    /// Where peer tasks are tracked for shutdown.
    fn tracker(&self) -> &TaskTracker;
}

/// Upstream's keep-alive interval; lookupd judges liveness by it.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Dial and per-command deadline, as upstream.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Registration changes buffered per peer before it falls back to a full sync.
const EVENT_BUFFER: usize = 4096;

struct Peer {
    stop: CancellationToken,
    /// `broadcast_address:http_port` from the lookupd's IDENTIFY reply, once
    /// connected: where to ask for a new topic's channels.
    http_addr: Arc<Mutex<Option<String>>>,
}

/// The set of lookupd peers. The map is behind a std Mutex taken only to add,
/// remove or list peers.
pub struct Lookup {
    events: broadcast::Sender<LookupCommand>,
    peers: Mutex<BTreeMap<String, Peer>>,
}

impl Default for Lookup {
    fn default() -> Self {
        Lookup {
            events: broadcast::channel(EVENT_BUFFER).0,
            peers: Mutex::new(BTreeMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lookup {
    pub fn register(&self, topic: &TopicName, channel: Option<&ChannelName>) {
        let _ = self.events.send(LookupCommand::Register {
            topic: topic.clone(),
            channel: channel.cloned(),
        });
    }

    pub fn unregister(&self, topic: &TopicName, channel: Option<&ChannelName>) {
        let _ = self.events.send(LookupCommand::Unregister {
            topic: topic.clone(),
            channel: channel.cloned(),
        });
    }

    /// The configured lookupd TCP addresses.
    pub fn addresses(&self) -> Vec<String> {
        lock(&self.peers).keys().cloned().collect()
    }

    /// HTTP addresses of the lookupds connected so far.
    pub fn http_addresses(&self) -> Vec<String> {
        lock(&self.peers)
            .values()
            .filter_map(|p| lock(&p.http_addr).clone())
            .collect()
    }

    /// Connect to these lookupds and to no others.
    pub fn set_addresses(&self, nsqd: Arc<dyn Registry>, addresses: &[String]) {
        let mut peers = lock(&self.peers);
        peers.retain(|addr, peer| {
            let keep = addresses.contains(addr);
            if !keep {
                info!("LOOKUP({addr}): removing peer");
                peer.stop.cancel();
            }
            keep
        });
        for addr in addresses {
            if peers.contains_key(addr) {
                continue;
            }
            info!("LOOKUP({addr}): adding peer");
            let peer = Peer {
                stop: nsqd.cancel().child_token(),
                http_addr: Arc::new(Mutex::new(None)),
            };
            let span = tracing::info_span!("lookupd", addr = %addr);
            nsqd.tracker().spawn(
                peer_loop(
                    nsqd.clone(),
                    self.events.clone(),
                    addr.clone(),
                    peer.stop.clone(),
                    peer.http_addr.clone(),
                )
                .instrument(span),
            );
            peers.insert(addr.clone(), peer);
        }
    }
}

async fn peer_loop(
    nsqd: Arc<dyn Registry>,
    changes: broadcast::Sender<LookupCommand>,
    addr: String,
    stop: CancellationToken,
    http_addr: Arc<Mutex<Option<String>>>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        // Subscribe before the full sync so no change made during it is missed
        // (a REGISTER sent twice is harmless).
        let events = changes.subscribe();
        let started = tokio::time::Instant::now();
        match session(&*nsqd, &addr, events, &stop, &http_addr).await {
            Ok(()) => return,
            Err(e) => {
                *lock(&http_addr) = None;
                if started.elapsed() > MAX_BACKOFF * 2 {
                    backoff = MIN_BACKOFF;
                }
                warn!("LOOKUPD({addr}): {e}; reconnecting in {backoff:?}");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Why a session with a lookupd ended; the peer reconnects after a backoff.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("{0} write timed out")]
    WriteTimeout(&'static str),
    #[error("{0} write failed: {1}")]
    Write(&'static str, std::io::Error),
    #[error("no reply to {0} within {COMMAND_TIMEOUT:?}")]
    NoReply(&'static str),
    #[error("{name} refused: {code} {text}")]
    Refused {
        name: &'static str,
        code: String,
        text: String,
    },
    #[error(transparent)]
    TooBig(#[from] nsq_protocol::lookup::ReplyTooBig),
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("lookupd closed the connection")]
    Closed,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    decoder: ReplyDecoder,
}

impl Conn {
    async fn send(&mut self, cmd: &LookupCommand) -> Result<bytes::Bytes, SessionError> {
        self.out.clear();
        cmd.encode(&mut self.out);
        let name = cmd.name();
        timeout(COMMAND_TIMEOUT, self.stream.write_all(&self.out))
            .await
            .map_err(|_| SessionError::WriteTimeout(name))?
            .map_err(|e| SessionError::Write(name, e))?;
        let reply = timeout(COMMAND_TIMEOUT, self.read_reply())
            .await
            .map_err(|_| SessionError::NoReply(name))??;
        match LookupReply::classify(reply.clone()) {
            LookupReply::Error { code, text } => Err(SessionError::Refused { name, code, text }),
            _ => Ok(reply),
        }
    }

    async fn read_reply(&mut self) -> Result<bytes::Bytes, SessionError> {
        loop {
            if let Some(r) = self.decoder.decode(&mut self.buf)? {
                return Ok(r);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(SessionError::Read)?;
            if n == 0 {
                return Err(SessionError::Closed);
            }
        }
    }
}

/// One connection's life: IDENTIFY, full sync, then changes and PINGs until
/// it fails (`Err`) or the peer is removed (`Ok`).
async fn session(
    nsqd: &dyn Registry,
    addr: &str,
    mut events: broadcast::Receiver<LookupCommand>,
    stop: &CancellationToken,
    http_addr: &Mutex<Option<String>>,
) -> Result<(), SessionError> {
    info!("LOOKUP connecting to {addr}");
    let stream = timeout(COMMAND_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| SessionError::ConnectTimeout)?
        .map_err(SessionError::Connect)?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(4096),
        out: BytesMut::with_capacity(256),
        decoder: ReplyDecoder::new(nsqd.max_body_size()),
    };
    conn.stream
        .write_all(MAGIC_V1)
        .await
        .map_err(|e| SessionError::Write("magic", e))?;
    let reply = conn
        .send(&LookupCommand::identify(&nsqd.identity()))
        .await?;
    if let Ok(info) = LookupdInfo::parse(&reply) {
        *lock(http_addr) = Some(format!("{}:{}", info.broadcast_address, info.http_port));
        info!(
            "LOOKUPD({addr}): peer info {{TCPPort:{} HTTPPort:{} Version:{} BroadcastAddress:{}}}",
            info.tcp_port, info.http_port, info.version, info.broadcast_address
        );
    }
    full_sync(nsqd, &mut conn).await?;
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ev = events.recv() => match ev {
                Ok(cmd) => {
                    match change_text(&cmd) {
                        Some(text) => info!("LOOKUPD({addr}): {text}"),
                        None => debug!("LOOKUPD({addr}): {} {cmd:?}", cmd.name()),
                    }
                    conn.send(&cmd).await?;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    debug!("LOOKUPD({addr}): {n} changes missed, registering everything again");
                    full_sync(nsqd, &mut conn).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = ping.tick() => {
                conn.send(&LookupCommand::Ping).await?;
            }
            // Nothing is expected between replies: this read returns only
            // when lookupd goes away (or misbehaves).
            r = conn.stream.read_buf(&mut conn.buf) => {
                match r {
                    Ok(0) => return Err(SessionError::Closed),
                    Ok(_) => conn.buf.clear(),
                    Err(e) => return Err(SessionError::Read(e)),
                }
            }
        }
    }
}

/// Register every topic and channel: `REGISTER topic` for a topic without
/// channels, else `REGISTER topic channel` per channel.
/// Upstream's words for a registration change: `topic REGISTER t`,
/// `channel UNREGISTER t c`.
fn change_text(cmd: &LookupCommand) -> Option<String> {
    let (verb, topic, channel) = match cmd {
        LookupCommand::Register { topic, channel } => ("REGISTER", topic, channel),
        LookupCommand::Unregister { topic, channel } => ("UNREGISTER", topic, channel),
        _ => return None,
    };
    Some(match channel {
        Some(c) => format!("channel {verb} {topic} {c}"),
        None => format!("topic {verb} {topic}"),
    })
}

async fn full_sync(nsqd: &dyn Registry, conn: &mut Conn) -> Result<(), SessionError> {
    for (topic, channels) in nsqd.registrations() {
        if channels.is_empty() {
            conn.send(&LookupCommand::Register {
                topic: topic.clone(),
                channel: None,
            })
            .await?;
        }
        for c in channels {
            conn.send(&LookupCommand::Register {
                topic: topic.clone(),
                channel: Some(c),
            })
            .await?;
        }
    }
    Ok(())
}
