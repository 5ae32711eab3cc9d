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
use nsq_protocol::lookup::{LookupCommand, LookupReply, LookupdInfo, ReplyDecoder};
use nsq_protocol::{ChannelName, TopicName, MAGIC_V1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::nsqd::Nsqd;

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
    pub fn set_addresses(&self, nsqd: &Arc<Nsqd>, addresses: &[String]) {
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
                stop: nsqd.cancel.child_token(),
                http_addr: Arc::new(Mutex::new(None)),
            };
            let span = tracing::info_span!("lookupd", addr = %addr);
            nsqd.tracker.spawn(
                peer_loop(
                    nsqd.clone(),
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
    nsqd: Arc<Nsqd>,
    addr: String,
    stop: CancellationToken,
    http_addr: Arc<Mutex<Option<String>>>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        // Subscribe before the full sync so no change made during it is missed
        // (a REGISTER sent twice is harmless).
        let events = nsqd.lookup.events.subscribe();
        let started = tokio::time::Instant::now();
        match session(&nsqd, &addr, events, &stop, &http_addr).await {
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

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    decoder: ReplyDecoder,
}

impl Conn {
    async fn send(&mut self, cmd: &LookupCommand) -> Result<bytes::Bytes, String> {
        self.out.clear();
        cmd.encode(&mut self.out);
        let name = cmd.name();
        timeout(COMMAND_TIMEOUT, self.stream.write_all(&self.out))
            .await
            .map_err(|_| format!("{name} write timed out"))?
            .map_err(|e| format!("{name} write failed: {e}"))?;
        let reply = timeout(COMMAND_TIMEOUT, self.read_reply())
            .await
            .map_err(|_| format!("no reply to {name} within {COMMAND_TIMEOUT:?}"))??;
        match LookupReply::classify(reply.clone()) {
            LookupReply::Error { code, text } => Err(format!("{name} refused: {code} {text}")),
            _ => Ok(reply),
        }
    }

    async fn read_reply(&mut self) -> Result<bytes::Bytes, String> {
        loop {
            if let Some(r) = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| e.to_string())?
            {
                return Ok(r);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                return Err("lookupd closed the connection".into());
            }
        }
    }
}

/// One connection's life: IDENTIFY, full sync, then changes and PINGs until
/// it fails (`Err`) or the peer is removed (`Ok`).
async fn session(
    nsqd: &Arc<Nsqd>,
    addr: &str,
    mut events: broadcast::Receiver<LookupCommand>,
    stop: &CancellationToken,
    http_addr: &Mutex<Option<String>>,
) -> Result<(), String> {
    info!("LOOKUP connecting to {addr}");
    let stream = timeout(COMMAND_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect failed: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(4096),
        out: BytesMut::with_capacity(256),
        decoder: ReplyDecoder::new(nsqd.opts.max_body_size as u64),
    };
    conn.stream
        .write_all(MAGIC_V1)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let reply = conn
        .send(&LookupCommand::identify(&nsqd.peer_identity()))
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
                    Ok(0) => return Err("lookupd closed the connection".into()),
                    Ok(_) => conn.buf.clear(),
                    Err(e) => return Err(format!("read failed: {e}")),
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

async fn full_sync(nsqd: &Nsqd, conn: &mut Conn) -> Result<(), String> {
    for topic in nsqd.topics_snapshot() {
        let channels = topic.channels();
        if channels.is_empty() {
            conn.send(&LookupCommand::Register {
                topic: topic.name.clone(),
                channel: None,
            })
            .await?;
        }
        for c in channels {
            conn.send(&LookupCommand::Register {
                topic: topic.name.clone(),
                channel: Some(c.name.clone()),
            })
            .await?;
        }
    }
    Ok(())
}
