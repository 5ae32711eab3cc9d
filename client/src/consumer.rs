//! `Consumer`: one topic/channel subscription over any number of nsqd
//! connections, with RDY spread over them, backoff, max attempts and a
//! graceful stop.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nsq_protocol::message::MessageFrame;
use nsq_protocol::{ChannelName, Command, TopicName, CLOSE_WAIT, OK};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::conn::{Conn, ConnTx, Event};
use crate::message::{Handler, Message};
use crate::producer::topic_name;
use crate::rdy::{per_connection_rdy, Backoff, BackoffAction};
use crate::{Config, Error, Result};

/// What a consumer has done so far (go-nsq's `Consumer.Stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    pub received: u64,
    /// FIN sent, including for messages given up on.
    pub finished: u64,
    pub requeued: u64,
    /// Delivered more than `max_attempts` times and FINished unhandled.
    pub given_up: u64,
    pub connections: usize,
}

/// Counters behind [`ConsumerStats`]; atomics, bumped by connection and handler tasks.
#[derive(Default)]
struct Counters {
    received: AtomicU64,
    finished: AtomicU64,
    requeued: AtomicU64,
    given_up: AtomicU64,
}

/// How a connection came to be, which decides what happens when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `connect_to_nsqd`: retried every `lookupd_poll_interval` after a drop.
    Direct,
    /// Found through lookupd: the next poll decides whether to reconnect.
    Lookupd,
}

struct ConnEntry {
    addr: Arc<str>,
    origin: Origin,
    tx: ConnTx,
    max_rdy: u64,
    /// The RDY last sent, so RDY goes out only on change.
    rdy: u64,
    /// CLS sent: it takes no new messages and no share of max_in_flight.
    closing: bool,
}

/// Connections and flow control. Locked briefly by connection tasks,
/// handler tasks, the backoff timer, discovery and `stop`; never across an
/// `.await`, and nothing else is locked while it is held.
struct State {
    conns: HashMap<u64, ConnEntry>,
    /// Addresses being connected to, so two polls cannot both connect.
    connecting: HashSet<String>,
    backoff: Backoff,
    /// While backing off (level > 0, timer over): the one connection at RDY 1.
    testing: Option<u64>,
    stopping: bool,
}

pub(crate) struct Inner {
    topic: TopicName,
    channel: ChannelName,
    pub(crate) config: Config,
    handler: OnceLock<Arc<dyn Handler>>,
    state: Mutex<State>,
    /// Cancelled by `stop`: discovery, reconnects and backoff timers end.
    pub(crate) stopping: CancellationToken,
    /// Cancelled when the stop deadline passes: connections close at once.
    hard_stop: CancellationToken,
    /// Every task the consumer starts, so `stop` can wait for all of them.
    pub(crate) tasks: TaskTracker,
    next_id: AtomicU64,
    counters: Counters,
    /// Wakes discovery early when a lookupd-found connection ends (go-nsq
    /// also re-queries right after a close).
    pub(crate) lookup_wake: Notify,
}

/// A subscriber to one channel of one topic.
///
/// ```no_run
/// # async fn demo() -> nsq::Result<()> {
/// use nsq::{handler_fn, Config, Consumer};
/// let consumer = Consumer::new("topic", "channel", Config::default())?;
/// consumer.add_handler(handler_fn(|msg| async move {
///     println!("{:?}", msg.body);
///     Ok(())
/// }));
/// consumer.connect_to_nsqd("127.0.0.1:4150").await?;
/// // ...
/// consumer.stop().await;
/// # Ok(()) }
/// ```
pub struct Consumer {
    pub(crate) inner: Arc<Inner>,
}

impl Consumer {
    pub fn new(topic: &str, channel: &str, config: Config) -> Result<Consumer> {
        let topic = topic_name(topic)?;
        let channel = ChannelName::new(channel.as_bytes())
            .ok_or_else(|| Error::BadChannel(channel.to_owned()))?;
        let backoff = Backoff::new(config.backoff_multiplier, config.max_backoff_duration);
        Ok(Consumer {
            inner: Arc::new(Inner {
                topic,
                channel,
                config,
                handler: OnceLock::new(),
                state: Mutex::new(State {
                    conns: HashMap::new(),
                    connecting: HashSet::new(),
                    backoff,
                    testing: None,
                    stopping: false,
                }),
                stopping: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                next_id: AtomicU64::new(1),
                counters: Counters::default(),
                lookup_wake: Notify::new(),
            }),
        })
    }

    /// Set the handler; must happen before connecting. A second handler is
    /// ignored (one handler runs for every message, concurrently).
    pub fn add_handler(&self, handler: impl Handler) {
        if self.inner.handler.set(Arc::new(handler)).is_err() {
            warn!("add_handler called twice; keeping the first handler");
        }
    }

    /// Connect and subscribe to the nsqd at `addr` (TCP `host:port`). May
    /// be called for several nsqds; a second call for the same address is
    /// refused. If the connection later drops, it is retried every
    /// `lookupd_poll_interval` until `stop`.
    pub async fn connect_to_nsqd(&self, addr: &str) -> Result<()> {
        self.inner.connect(addr, Origin::Direct).await
    }

    pub(crate) fn inner_topic(&self) -> String {
        self.inner.topic.to_string()
    }

    /// Message counts since the consumer was made, and open connections.
    pub fn stats(&self) -> ConsumerStats {
        let c = &self.inner.counters;
        ConsumerStats {
            received: c.received.load(Ordering::Relaxed),
            finished: c.finished.load(Ordering::Relaxed),
            requeued: c.requeued.load(Ordering::Relaxed),
            given_up: c.given_up.load(Ordering::Relaxed),
            connections: self.connected_nsqds().len(),
        }
    }

    /// Addresses of the nsqds currently connected (and not closing).
    pub fn connected_nsqds(&self) -> Vec<String> {
        let st = self.inner.lock();
        let mut v: Vec<String> = st
            .conns
            .values()
            .filter(|c| !c.closing)
            .map(|c| c.addr.to_string())
            .collect();
        v.sort();
        v
    }

    /// Graceful stop: CLS on every connection, wait until every message in
    /// flight has been handled and answered (FIN/REQ), then close. After
    /// `stop_timeout` the connections are closed regardless.
    pub async fn stop(&self) {
        let inner = &self.inner;
        {
            let mut st = inner.lock();
            st.stopping = true;
            for c in st.conns.values_mut() {
                c.closing = true;
                let _ = c.tx.send(Command::Cls);
            }
        }
        inner.stopping.cancel();
        inner.tasks.close();
        if tokio::time::timeout(inner.config.stop_timeout, inner.tasks.wait())
            .await
            .is_err()
        {
            warn!("stop timed out waiting for in-flight messages; closing anyway");
            inner.hard_stop.cancel();
            inner.tasks.wait().await;
        }
        info!(topic = %inner.topic, channel = %inner.channel, "consumer stopped");
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Without a stop, end the background tasks rather than leak them.
        self.inner.stopping.cancel();
        self.inner.hard_stop.cancel();
    }
}

type BoxedUnit<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("consumer state lock")
    }

    /// Boxed because connection tasks reconnect, which makes this future
    /// contain itself.
    pub(crate) fn connect<'a>(self: &'a Arc<Self>, addr: &'a str, origin: Origin) -> BoxedUnit<'a> {
        Box::pin(async move {
            if self.handler.get().is_none() {
                return Err(Error::NoHandler);
            }
            {
                let mut st = self.lock();
                if st.stopping {
                    return Err(Error::Stopped);
                }
                if st.connecting.contains(addr) || st.conns.values().any(|c| &*c.addr == addr) {
                    return Err(Error::AlreadyConnected(addr.to_owned()));
                }
                st.connecting.insert(addr.to_owned());
            }
            let result = self.subscribe(addr).await;
            // Registered and spawned under the lock, so `stop` either sees
            // this connection (and sends it CLS, and waits for its task) or
            // has already begun, and the connection is closed here.
            let too_late = {
                let mut st = self.lock();
                st.connecting.remove(addr);
                let (conn, events) = result?;
                if st.stopping {
                    Some(conn)
                } else {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    st.conns.insert(
                        id,
                        ConnEntry {
                            addr: addr.into(),
                            origin,
                            tx: conn.tx.clone(),
                            max_rdy: conn.negotiated.max_rdy_count,
                            rdy: 0,
                            closing: false,
                        },
                    );
                    rebalance(&self.config, &mut st);
                    let span = tracing::info_span!("consumer", nsqd = addr);
                    self.tasks
                        .spawn(self.clone().conn_loop(id, conn, events).instrument(span));
                    None
                }
            };
            if let Some(conn) = too_late {
                conn.close().await;
                return Err(Error::Stopped);
            }
            info!(addr, topic = %self.topic, channel = %self.channel, "subscribed");
            Ok(())
        })
    }

    async fn subscribe(&self, addr: &str) -> Result<(Conn, mpsc::UnboundedReceiver<Event>)> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let conn = Conn::connect(addr, &self.config, events_tx).await?;
        conn.tx.send(Command::Sub {
            topic: self.topic.clone(),
            channel: self.channel.clone(),
        })?;
        let reply = tokio::time::timeout(self.config.dial_timeout, events.recv())
            .await
            .map_err(|_| Error::Timeout("the SUB reply"))?;
        match reply {
            Some(Event::Response(data)) if data == OK => Ok((conn, events)),
            Some(Event::Error(text)) => Err(Error::Server {
                command: "SUB",
                text,
            }),
            Some(Event::Closed(Some(e))) => Err(e),
            None | Some(Event::Closed(None)) => Err(Error::Closed),
            Some(other) => Err(Error::Unexpected {
                command: "SUB",
                reply: format!("{other:?}"),
            }),
        }
    }

    /// Owns one connection: hands messages to handlers, counts them back,
    /// and closes once CLS is acknowledged and nothing is in flight.
    async fn conn_loop(
        self: Arc<Self>,
        id: u64,
        conn: Conn,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let addr: Arc<str> = conn.addr.as_str().into();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
        let mut in_flight = 0usize;
        let mut close_wait = false;
        let mut lost = false;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Message(frame)) => {
                        in_flight += 1;
                        self.counters.received.fetch_add(1, Ordering::Relaxed);
                        self.dispatch(frame, addr.clone(), conn.tx.clone(), done_tx.clone());
                    }
                    Some(Event::Response(data)) if data == CLOSE_WAIT => close_wait = true,
                    Some(Event::Response(data)) => debug!(reply = ?data, "ignored response"),
                    // Only E_FIN_FAILED/E_REQ_FAILED/E_TOUCH_FAILED keep the
                    // connection open; the others are followed by a close.
                    Some(Event::Error(text)) => warn!(%text, "nsqd error"),
                    Some(Event::Closed(reason)) => {
                        if !close_wait {
                            warn!(?reason, "connection lost");
                            lost = true;
                        }
                        break;
                    }
                    None => break,
                },
                Some(()) = done_rx.recv() => in_flight -= 1,
                () = self.hard_stop.cancelled() => break,
            }
            if close_wait && in_flight == 0 {
                break;
            }
        }
        let origin = {
            let mut st = self.lock();
            let entry = st.conns.remove(&id);
            if st.testing == Some(id) {
                st.testing = None;
            }
            rebalance(&self.config, &mut st);
            entry.map(|e| e.origin)
        };
        conn.close().await;
        debug!("connection closed");
        if lost && !self.stopping.is_cancelled() {
            match origin {
                Some(Origin::Direct) => {
                    self.tasks.spawn(self.clone().reconnect(addr.to_string()));
                }
                _ => self.lookup_wake.notify_one(),
            }
        }
    }

    /// Retry a lost direct connection every poll interval until it is back.
    async fn reconnect(self: Arc<Self>, addr: String) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.lookupd_poll_interval) => {}
                () = self.stopping.cancelled() => return,
            }
            match self.connect(&addr, Origin::Direct).await {
                Ok(()) | Err(Error::AlreadyConnected(_)) | Err(Error::Stopped) => return,
                Err(e) => warn!(%addr, error = %e, "reconnect failed"),
            }
        }
    }

    fn dispatch(
        self: &Arc<Self>,
        frame: MessageFrame,
        addr: Arc<str>,
        tx: ConnTx,
        done: mpsc::UnboundedSender<()>,
    ) {
        let handler = self
            .handler
            .get()
            .expect("connected only with a handler")
            .clone();
        let msg = Message::new(frame, addr, tx.clone());
        let max = self.config.max_attempts;
        if max > 0 && msg.attempts > max {
            warn!(id = %msg.id, attempts = msg.attempts, "giving up on message");
            handler.give_up(&msg);
            let _ = tx.send(Command::Fin(msg.id));
            self.counters.given_up.fetch_add(1, Ordering::Relaxed);
            self.counters.finished.fetch_add(1, Ordering::Relaxed);
            let _ = done.send(());
            return;
        }
        let inner = self.clone();
        self.tasks.spawn(async move {
            // The handler runs in its own task so a panic is a failure of
            // this message, not a lost in-flight count.
            let run = {
                let msg = msg.clone();
                tokio::spawn(async move { handler.handle(&msg).await })
            };
            let (ok, backoff) = match run.await {
                Ok(Ok(())) => {
                    let _ = tx.send(Command::Fin(msg.id));
                    inner.counters.finished.fetch_add(1, Ordering::Relaxed);
                    (true, false)
                }
                Ok(Err(e)) => {
                    let delay = e
                        .requeue_delay
                        .unwrap_or_else(|| inner.config.requeue_delay(msg.attempts));
                    debug!(id = %msg.id, error = %e, ?delay, "handler failed; requeueing");
                    inner.counters.requeued.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(Command::Req {
                        id: msg.id,
                        timeout_ms: delay.as_millis() as u64,
                    });
                    (false, e.backoff)
                }
                Err(panic) => {
                    warn!(id = %msg.id, error = %panic, "handler panicked; requeueing");
                    let delay = inner.config.requeue_delay(msg.attempts);
                    inner.counters.requeued.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(Command::Req {
                        id: msg.id,
                        timeout_ms: delay.as_millis() as u64,
                    });
                    (false, true)
                }
            };
            if ok || backoff {
                inner.record(ok);
            }
            let _ = done.send(());
        });
    }

    /// Feed a handler result to backoff and apply what it decides.
    fn record(self: &Arc<Self>, ok: bool) {
        let mut st = self.lock();
        let action = if ok {
            st.backoff.on_success()
        } else {
            st.backoff.on_failure()
        };
        match action {
            BackoffAction::None => return,
            BackoffAction::Resume => debug!("backoff over"),
            BackoffAction::Pause(d) => {
                debug!(level = st.backoff.level(), pause = ?d, "backing off");
                let inner = self.clone();
                self.tasks.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = inner.stopping.cancelled() => return,
                    }
                    let mut st = inner.lock();
                    st.backoff.timer_fired();
                    st.testing = None;
                    rebalance(&inner.config, &mut st);
                });
            }
        }
        st.testing = None;
        rebalance(&self.config, &mut st);
    }

    /// Mark the connection to `addr` closing and send CLS; it closes once
    /// its in-flight messages are answered. Used when lookupd stops listing it.
    pub(crate) fn drop_nsqd(&self, addr: &str) {
        let mut st = self.lock();
        for c in st.conns.values_mut() {
            if &*c.addr == addr && !c.closing {
                info!(addr, "nsqd no longer listed; closing");
                c.closing = true;
                let _ = c.tx.send(Command::Cls);
            }
        }
        rebalance(&self.config, &mut st);
    }

    /// Addresses of the connections discovery made and has not dropped.
    pub(crate) fn lookupd_conns(&self) -> Vec<String> {
        let st = self.lock();
        st.conns
            .values()
            .filter(|c| c.origin == Origin::Lookupd && !c.closing)
            .map(|c| c.addr.to_string())
            .collect()
    }

    pub(crate) fn is_connected(&self, addr: &str) -> bool {
        let st = self.lock();
        st.connecting.contains(addr) || st.conns.values().any(|c| &*c.addr == addr)
    }
}

/// Send every connection the RDY it should have now, where that changed.
fn rebalance(config: &Config, st: &mut State) {
    let open = st.conns.values().filter(|c| !c.closing).count();
    let backing_off = st.backoff.level() > 0 && !st.backoff.is_paused();
    let testing_open = st
        .testing
        .and_then(|id| st.conns.get(&id))
        .is_some_and(|c| !c.closing);
    if backing_off && !testing_open {
        // One connection tests the water at RDY 1; which one matters little.
        st.testing = st.conns.iter().find(|(_, c)| !c.closing).map(|(id, _)| *id);
    }
    for (id, c) in st.conns.iter_mut() {
        let target = if st.stopping || c.closing || st.backoff.is_paused() {
            0
        } else if backing_off {
            u64::from(st.testing == Some(*id))
        } else {
            per_connection_rdy(config.max_in_flight, open, c.max_rdy)
        };
        // A closing connection's RDY is already 0 at nsqd (CLS sets it).
        if target != c.rdy {
            c.rdy = target;
            if !c.closing {
                let _ = c.tx.send(Command::Rdy(target));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::conn::SentCommands;

    fn state(conns: &[u64]) -> (State, Vec<SentCommands>) {
        let mut st = State {
            conns: HashMap::new(),
            connecting: HashSet::new(),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            testing: None,
            stopping: false,
        };
        let mut sinks = Vec::new();
        for (i, max_rdy) in conns.iter().enumerate() {
            let (tx, sink) = SentCommands::pair();
            st.conns.insert(
                i as u64,
                ConnEntry {
                    addr: format!("nsqd{i}:4150").into(),
                    origin: Origin::Direct,
                    tx,
                    max_rdy: *max_rdy,
                    rdy: 0,
                    closing: false,
                },
            );
            sinks.push(sink);
        }
        (st, sinks)
    }

    fn config(max_in_flight: u64) -> Config {
        Config {
            max_in_flight,
            ..Config::default()
        }
    }

    #[test]
    fn rdy_is_spread_capped_and_sent_only_on_change() {
        let (mut st, mut sinks) = state(&[2500, 2500, 10]);
        rebalance(&config(90), &mut st);
        assert_eq!(sinks[0].take(), ["RDY 30"]);
        assert_eq!(sinks[1].take(), ["RDY 30"]);
        // The server's max_rdy_count wins over the even share.
        assert_eq!(sinks[2].take(), ["RDY 10"]);
        rebalance(&config(90), &mut st);
        assert!(sinks.iter_mut().all(|s| s.take().is_empty()));

        // A closing connection leaves its share to the others and gets no RDY
        // (CLS already set it to 0 at nsqd).
        st.conns.get_mut(&2).unwrap().closing = true;
        rebalance(&config(90), &mut st);
        assert_eq!(sinks[0].take(), ["RDY 45"]);
        assert_eq!(sinks[1].take(), ["RDY 45"]);
        assert!(sinks[2].take().is_empty());
    }

    #[test]
    fn backoff_pauses_everyone_then_probes_with_one_connection() {
        let (mut st, mut sinks) = state(&[2500, 2500]);
        let c = config(10);
        rebalance(&c, &mut st);
        assert_eq!(sinks[0].take(), ["RDY 5"]);
        assert_eq!(sinks[1].take(), ["RDY 5"]);

        assert!(matches!(st.backoff.on_failure(), BackoffAction::Pause(_)));
        rebalance(&c, &mut st);
        assert_eq!(sinks[0].take(), ["RDY 0"]);
        assert_eq!(sinks[1].take(), ["RDY 0"]);

        st.backoff.timer_fired();
        rebalance(&c, &mut st);
        let probe = st.testing.expect("a probing connection") as usize;
        assert_eq!(sinks[probe].take(), ["RDY 1"]);
        assert!(sinks[1 - probe].take().is_empty());

        assert_eq!(st.backoff.on_success(), BackoffAction::Resume);
        st.testing = None;
        rebalance(&c, &mut st);
        assert_eq!(sinks[probe].take(), ["RDY 5"]);
        assert_eq!(sinks[1 - probe].take(), ["RDY 5"]);
    }
}
