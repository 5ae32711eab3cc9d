//! `Producer`: publishes to one nsqd over one pipelined connection, made on
//! first use and remade on the next publish after it drops.

use std::collections::VecDeque;
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

/// A publisher to a single nsqd.
///
/// Publishes may run concurrently; they share the connection and are
/// pipelined. Each call resolves when its own reply arrives.
pub struct Producer {
    addr: String,
    config: Config,
    /// The current connection. An async mutex because connecting happens
    /// under it: concurrent publishes after a drop make one connection, not many.
    live: tokio::sync::Mutex<Option<Live>>,
    stopped: std::sync::atomic::AtomicBool,
}

impl Producer {
    /// A producer for the nsqd at `addr` (TCP `host:port`). Nothing connects
    /// until the first publish or [`Producer::ping`].
    pub fn new(addr: impl Into<String>, config: Config) -> Producer {
        Producer {
            addr: addr.into(),
            config,
            live: tokio::sync::Mutex::new(None),
            stopped: false.into(),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
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
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(live) = self.live.lock().await.take() {
            live.conn.close().await;
        }
    }

    async fn send(&self, cmd: Command) -> Result<()> {
        let name = cmd.name();
        let rx = {
            let mut live = self.live.lock().await;
            let live = self.ensure_connected(&mut live).await?;
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
            rx
        };
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn ensure_connected<'a>(&self, slot: &'a mut Option<Live>) -> Result<&'a Live> {
        if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        let alive = slot
            .as_ref()
            .is_some_and(|l| !l.pending.lock().expect("pending lock").closed);
        if !alive {
            if slot.is_some() {
                debug!(addr = %self.addr, "reconnecting");
            }
            let (events_tx, events) = mpsc::unbounded_channel();
            let conn = Conn::connect(&self.addr, &self.config, events_tx).await?;
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

pub(crate) fn topic_name(topic: &str) -> Result<TopicName> {
    TopicName::new(topic.as_bytes()).ok_or_else(|| Error::BadTopic(topic.to_owned()))
}
