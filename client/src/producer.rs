//! `Producer`: publishes over one pipelined connection to an nsqd, made on
//! first use and remade on the next publish after it drops; given several
//! nsqd addresses, it moves on to the next when one fails.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nsq_protocol::{Command, TopicName, OK};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::conn::{Conn, Event};
use crate::{Config, Error, Result};

type Reply = oneshot::Sender<Result<()>>;

/// Publishes waiting for their reply, oldest first. nsqd answers every
/// PUB/MPUB/DPUB exactly once and in order, so the front entry owns the next
/// OK or error frame. Locked by publishers (push) and the reply task (pop);
/// never held across an `.await`.
#[derive(Default)]
struct Pending {
    /// Set once the connection is gone; nothing may be queued after that,
    /// since no reply would ever come.
    closed: bool,
    queue: VecDeque<(&'static str, Reply)>,
}

struct Live {
    conn: Conn,
    pending: Arc<Mutex<Pending>>,
}

/// A publisher to one nsqd, or to the first of several that works.
///
/// Publishes may run concurrently; they share the connection and are
/// pipelined. Each call resolves when its own reply arrives.
///
/// With several addresses ([`Producer::with_addresses`]) the producer talks
/// to one nsqd at a time. When that nsqd cannot be reached, or its
/// connection drops before a publish is answered, the publish is retried on
/// the next address, each address at most once per publish; the producer
/// then stays on the nsqd that worked. A publish cut off by a dying nsqd may
/// have been queued there anyway, so a retried publish can arrive twice: the
/// at-least-once delivery NSQ promises everywhere else too. An error frame
/// (`E_BAD_TOPIC`, `E_PUB_FAILED`, ...) is nsqd's answer and is returned,
/// not retried.
pub struct Producer {
    addrs: Vec<String>,
    /// Index into `addrs` of the nsqd in use; only moved while `live` is locked.
    current: AtomicUsize,
    config: Config,
    /// The current connection. An async mutex because connecting happens
    /// under it: concurrent publishes after a drop make one connection, not many.
    live: tokio::sync::Mutex<Option<Live>>,
    stopped: AtomicBool,
}

impl Producer {
    /// A producer for the nsqd at `addr` (TCP `host:port`). Nothing connects
    /// until the first publish or [`Producer::ping`].
    pub fn new(addr: impl Into<String>, config: Config) -> Producer {
        Producer::with_addresses([addr], config)
    }

    /// A producer for several nsqds (TCP `host:port` each), used in order:
    /// the first until it fails, then the next, wrapping around. Nothing
    /// connects until the first publish.
    ///
    /// # Panics
    /// If `addrs` is empty.
    pub fn with_addresses<A: Into<String>>(
        addrs: impl IntoIterator<Item = A>,
        config: Config,
    ) -> Producer {
        let addrs: Vec<String> = addrs.into_iter().map(Into::into).collect();
        assert!(
            !addrs.is_empty(),
            "a producer needs at least one nsqd address"
        );
        Producer {
            addrs,
            current: 0.into(),
            config,
            live: tokio::sync::Mutex::new(None),
            stopped: false.into(),
        }
    }

    /// The address of the nsqd in use (or to be used by the next publish).
    pub fn addr(&self) -> &str {
        &self.addrs[self.current.load(Ordering::Relaxed)]
    }

    /// Every address this producer may publish to, in the order tried.
    pub fn addresses(&self) -> &[String] {
        &self.addrs
    }

    /// PUB one message.
    pub async fn publish(&self, topic: &str, body: impl Into<Bytes>) -> Result<()> {
        let topic = topic_name(topic)?;
        self.send(Command::Pub {
            topic,
            body: body.into(),
        })
        .await
    }

    /// MPUB several messages atomically: all are queued or none is.
    pub async fn multi_publish<B: Into<Bytes>>(
        &self,
        topic: &str,
        bodies: impl IntoIterator<Item = B>,
    ) -> Result<()> {
        let topic = topic_name(topic)?;
        self.send(Command::Mpub {
            topic,
            bodies: bodies.into_iter().map(Into::into).collect(),
        })
        .await
    }

    /// DPUB: the message becomes visible to consumers after `delay`
    /// (millisecond resolution, at most nsqd's `--max-req-timeout`).
    pub async fn deferred_publish(
        &self,
        topic: &str,
        delay: Duration,
        body: impl Into<Bytes>,
    ) -> Result<()> {
        let topic = topic_name(topic)?;
        self.send(Command::Dpub {
            topic,
            defer_ms: delay.as_millis() as u64,
            body: body.into(),
        })
        .await
    }

    /// Connect if not connected and report whether the connection is up.
    /// NOP has no reply in the V2 protocol, so a true round trip would need
    /// a publish; this checks what can be checked without one.
    pub async fn ping(&self) -> Result<()> {
        let mut live = self.live.lock().await;
        self.ensure_connected(&mut live).await.map(|_| ())
    }

    /// Close the connection after the queued commands are written. Publishes
    /// already sent still get their replies; later ones fail with `Stopped`.
    pub async fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(live) = self.live.lock().await.take() {
            live.conn.close().await;
        }
    }

    /// Send `cmd` on the current nsqd; on a connection failure, try the
    /// next address, each at most once.
    async fn send(&self, cmd: Command) -> Result<()> {
        let mut last = None;
        for _ in 0..self.addrs.len() {
            let (index, result) = self.send_once(cmd.clone()).await;
            match result {
                Err(e) if is_connection_failure(&e) && self.addrs.len() > 1 => {
                    warn!(addr = %self.addrs[index], error = %e, "nsqd failed; trying the next");
                    self.move_on_from(index).await;
                    last = Some(e);
                }
                result => return result,
            }
        }
        Err(last.unwrap_or(Error::Closed))
    }

    /// Leave the nsqd at `index` for the next address, unless another
    /// publish already did.
    async fn move_on_from(&self, index: usize) {
        let mut live = self.live.lock().await;
        let current = self.current.load(Ordering::Relaxed);
        if current != index {
            return;
        }
        if let Some(old) = live.take() {
            old.conn.tx.close();
        }
        self.current
            .store((index + 1) % self.addrs.len(), Ordering::Relaxed);
    }

    /// Send `cmd` to the nsqd in use and wait for its reply; also says
    /// which address that was.
    async fn send_once(&self, cmd: Command) -> (usize, Result<()>) {
        let mut live = self.live.lock().await;
        let index = self.current.load(Ordering::Relaxed);
        let rx = self.queue(&mut live, cmd).await;
        drop(live);
        let result = match rx {
            Ok(rx) => rx.await.map_err(|_| Error::Closed).and_then(|r| r),
            Err(e) => Err(e),
        };
        (index, result)
    }

    /// Connect if need be and hand `cmd` to the writer, with its reply slot.
    async fn queue(
        &self,
        live: &mut Option<Live>,
        cmd: Command,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let name = cmd.name();
        let live = self.ensure_connected(live).await?;
        let (tx, rx) = oneshot::channel();
        let mut pending = live.pending.lock().expect("pending lock");
        if pending.closed {
            // Dropped between the liveness check and now; the next
            // publish reconnects.
            return Err(Error::Closed);
        }
        // Queue the reply slot and the command under one lock, so the
        // queue order is the order the writer sends in.
        live.conn.tx.send(cmd)?;
        pending.queue.push_back((name, tx));
        Ok(rx)
    }

    async fn ensure_connected<'a>(&self, slot: &'a mut Option<Live>) -> Result<&'a Live> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        let alive = slot
            .as_ref()
            .is_some_and(|l| !l.pending.lock().expect("pending lock").closed);
        if !alive {
            let addr = self.addr();
            if slot.is_some() {
                debug!(addr, "reconnecting");
            }
            let (events_tx, events) = mpsc::unbounded_channel();
            let conn = Conn::connect(addr, &self.config, events_tx).await?;
            debug!(addr = %conn.addr, negotiated = ?conn.negotiated, "producer connected");
            let pending = Arc::new(Mutex::new(Pending::default()));
            tokio::spawn(replies(events, pending.clone()));
            *slot = Some(Live { conn, pending });
        }
        Ok(slot.as_ref().expect("just connected"))
    }
}

/// Hand each reply to the oldest waiting publish; fail the rest when the
/// connection ends.
async fn replies(mut events: mpsc::UnboundedReceiver<Event>, pending: Arc<Mutex<Pending>>) {
    while let Some(event) = events.recv().await {
        let result = match event {
            Event::Response(data) if data == OK => Ok(()),
            Event::Response(data) => {
                debug!(reply = ?data, "ignored response");
                continue;
            }
            Event::Error(text) => Err(text),
            Event::Message(m) => {
                warn!(id = %m.id, "message on a producer connection");
                continue;
            }
            Event::Closed(reason) => {
                debug!(?reason, "producer connection closed");
                break;
            }
        };
        let front = pending.lock().expect("pending lock").queue.pop_front();
        match front {
            Some((_, reply)) if result.is_ok() => {
                let _ = reply.send(Ok(()));
            }
            Some((command, reply)) => {
                let text = result.err().unwrap_or_default();
                let _ = reply.send(Err(Error::Server { command, text }));
            }
            None => warn!(?result, "reply with no publish waiting"),
        }
    }
    let mut pending = pending.lock().expect("pending lock");
    pending.closed = true;
    for (_, reply) in pending.queue.drain(..) {
        let _ = reply.send(Err(Error::Closed));
    }
}

/// Whether `e` says the nsqd is unreachable or went away (try another),
/// rather than that it refused the publish (its answer stands).
fn is_connection_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Connect { .. } | Error::Io(_) | Error::Closed | Error::Timeout(_)
    )
}

pub(crate) fn topic_name(topic: &str) -> Result<TopicName> {
    TopicName::new(topic.as_bytes()).ok_or_else(|| Error::BadTopic(topic.to_owned()))
}
