//! `Consumer`: one topic/channel subscription over any number of nsqd
//! connections, with handlers run in arrival order (or n at once), RDY
//! spread over the connections, backoff, max attempts and a graceful stop.

mod flow;
mod workers;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nsq_protocol::{ChannelName, Command, TopicName, CLOSE_WAIT, OK};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use self::flow::{rebalance, redistribute};
use self::workers::ConnOutcome;
use crate::conn::{Conn, ConnTx, Event};
use crate::message::{Handler, Message};
use crate::producer::topic_name;
use crate::rdy::{Backoff, BackoffAction};
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
    /// When RDY last went from 0 to more (ms on the consumer's clock).
    granted_at: u64,
    /// When RDY last went back to 0; `None` if it never had any. When RDY
    /// is scarce, who waited longest gets the next turn.
    released_at: Option<u64>,
    /// Kept up to date by the connection's task.
    activity: Arc<Activity>,
    /// CLS sent: it takes no new messages and no share of max_in_flight.
    closing: bool,
}

/// What a connection's task reports for RDY turn-taking.
#[derive(Default)]
struct Activity {
    /// When the last message arrived (ms on the consumer's clock).
    last_message: AtomicU64,
    /// Messages handed to handlers and not yet answered.
    in_flight: AtomicU64,
}

/// Connections and flow control. Locked briefly by connection tasks,
/// handler tasks, the backoff timer, discovery and `stop`; never across an
/// `.await`, and nothing else is locked while it is held.
struct State {
    conns: HashMap<u64, ConnEntry>,
    /// Addresses being connected to, so two polls cannot both connect.
    connecting: HashSet<String>,
    backoff: Backoff,
    /// The RDY turn-taking task runs (started with the first connection).
    redistributing: bool,
    stopping: bool,
    /// Messages the connections together may hold; starts as the config's,
    /// changed by [`Consumer::change_max_in_flight`].
    max_in_flight: u64,
    /// Where connections hand messages to the handler workers. Each
    /// connection task holds a clone; `stop` drops this one, so the workers
    /// end once the last connection has handed over its last message.
    work: Option<mpsc::UnboundedSender<Message>>,
    /// The handler workers run (started with the first connection).
    workers_started: bool,
}

pub(crate) struct Inner {
    pub(crate) topic: TopicName,
    pub(crate) channel: ChannelName,
    pub(crate) config: Config,
    /// The handler and how many messages it may handle at once.
    handler: OnceLock<(Arc<dyn Handler>, usize)>,
    /// The workers' end of `State::work`, taken when they start.
    work_rx: Mutex<Option<mpsc::UnboundedReceiver<Message>>>,
    state: Mutex<State>,
    /// Cancelled by `stop`: discovery, reconnects and backoff timers end.
    pub(crate) stopping: CancellationToken,
    /// Cancelled when the stop deadline passes: connections close at once.
    hard_stop: CancellationToken,
    /// Every task the consumer starts, so `stop` can wait for all of them.
    pub(crate) tasks: TaskTracker,
    next_id: AtomicU64,
    counters: Counters,
    /// Zero of the consumer's millisecond clock (see [`Inner::now_ms`]).
    epoch: Instant,
    /// Wakes discovery early when a lookupd-found connection ends (go-nsq
    /// also re-queries right after a close).
    pub(crate) lookup_wake: Notify,
}

/// A subscriber to one channel of one topic.
///
/// As in go-nsq, the handler added with [`Consumer::add_handler`] handles
/// one message at a time, in the order they arrive (over all connections);
/// [`Consumer::add_concurrent_handlers`] lets it handle up to n at once.
/// Messages received beyond those wait their turn, up to `max_in_flight`.
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
        let (work, work_rx) = mpsc::unbounded_channel();
        let max_in_flight = config.max_in_flight;
        Ok(Consumer {
            inner: Arc::new(Inner {
                topic,
                channel,
                config,
                handler: OnceLock::new(),
                work_rx: Mutex::new(Some(work_rx)),
                state: Mutex::new(State {
                    conns: HashMap::new(),
                    connecting: HashSet::new(),
                    backoff,
                    redistributing: false,
                    stopping: false,
                    max_in_flight,
                    work: Some(work),
                    workers_started: false,
                }),
                stopping: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                next_id: AtomicU64::new(1),
                counters: Counters::default(),
                epoch: Instant::now(),
                lookup_wake: Notify::new(),
            }),
        })
    }

    /// Set the handler, which handles one message at a time in arrival
    /// order; must happen before connecting. A second handler is ignored.
    pub fn add_handler(&self, handler: impl Handler) {
        self.add_concurrent_handlers(handler, 1);
    }

    /// Set the handler and let it handle up to `concurrency` messages at
    /// once (at least 1); go-nsq's `AddConcurrentHandlers`. Order is then
    /// only the order handling starts in.
    pub fn add_concurrent_handlers(&self, handler: impl Handler, concurrency: usize) {
        let entry = (Arc::new(handler) as Arc<dyn Handler>, concurrency.max(1));
        if self.inner.handler.set(entry).is_err() {
            warn!("a handler was already added; keeping the first");
        }
    }

    /// Change how many messages may be in flight at once, over all
    /// connections; RDY follows at once. go-nsq's `ChangeMaxInFlight`.
    pub fn change_max_in_flight(&self, max_in_flight: u64) {
        let mut st = self.inner.lock();
        st.max_in_flight = max_in_flight;
        rebalance(&mut st, self.inner.now_ms());
    }

    /// The max-in-flight in force.
    pub fn max_in_flight(&self) -> u64 {
        self.inner.lock().max_in_flight
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
            st.work = None;
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

    /// Milliseconds since the consumer was made: the clock of RDY turns.
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
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
                    let activity = Arc::new(Activity::default());
                    st.conns.insert(
                        id,
                        ConnEntry {
                            addr: addr.into(),
                            origin,
                            tx: conn.tx.clone(),
                            max_rdy: conn.negotiated.max_rdy_count,
                            rdy: 0,
                            granted_at: 0,
                            released_at: None,
                            activity: activity.clone(),
                            closing: false,
                        },
                    );
                    rebalance(&mut st, self.now_ms());
                    if !st.redistributing {
                        st.redistributing = true;
                        self.tasks.spawn(self.clone().redistribute_loop());
                    }
                    if !st.workers_started {
                        st.workers_started = true;
                        self.start_workers();
                    }
                    let work = st.work.clone().expect("not stopping");
                    let span = tracing::info_span!("consumer", nsqd = addr);
                    self.tasks.spawn(
                        self.clone()
                            .conn_loop(id, conn, events, work, activity)
                            .instrument(span),
                    );
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
        work: mpsc::UnboundedSender<Message>,
        activity: Arc<Activity>,
    ) {
        let addr: Arc<str> = conn.addr.as_str().into();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
        let outcome = Arc::new(ConnOutcome {
            inner: self.clone(),
            done: done_tx,
        });
        let mut in_flight = 0usize;
        let mut close_wait = false;
        let mut lost = false;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Message(frame)) => {
                        in_flight += 1;
                        activity.last_message.store(self.now_ms(), Ordering::Relaxed);
                        activity.in_flight.store(in_flight as u64, Ordering::Relaxed);
                        self.counters.received.fetch_add(1, Ordering::Relaxed);
                        let msg = Message::new(frame, addr.clone(), conn.tx.clone(), outcome.clone());
                        // The workers outlive every connection task (see
                        // `State::work`), so this cannot fail but at a hard stop.
                        let _ = work.send(msg);
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
                Some(()) = done_rx.recv() => {
                    in_flight -= 1;
                    activity.in_flight.store(in_flight as u64, Ordering::Relaxed);
                }
                () = self.hard_stop.cancelled() => break,
            }
            if close_wait && in_flight == 0 {
                break;
            }
        }
        let origin = {
            let mut st = self.lock();
            let entry = st.conns.remove(&id);
            rebalance(&mut st, self.now_ms());
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

    /// While connections outnumber the messages allowed in flight, every
    /// `rdy_redistribute_interval` let RDY 1 move on from connections that
    /// had it too long or to no use (go-nsq's `rdyLoop`).
    async fn redistribute_loop(self: Arc<Self>) {
        let every = self
            .config
            .rdy_redistribute_interval
            .max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.stopping.cancelled() => return,
            }
            let mut st = self.lock();
            redistribute(&self.config, &mut st, self.now_ms());
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
                    rebalance(&mut st, inner.now_ms());
                });
            }
        }
        rebalance(&mut st, self.now_ms());
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
        rebalance(&mut st, self.now_ms());
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
