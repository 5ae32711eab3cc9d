//! `Consumer`: one topic/channel subscription over any number of nsqd
//! connections, with RDY spread over them, backoff, max attempts and a
//! graceful stop.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nsq_protocol::message::MessageFrame;
use nsq_protocol::{ChannelName, Command, TopicName, CLOSE_WAIT, OK};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
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
    /// Zero of the consumer's millisecond clock (see [`Inner::now_ms`]).
    epoch: Instant,
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
                    redistributing: false,
                    stopping: false,
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
                    rebalance(&self.config, &mut st, self.now_ms());
                    if !st.redistributing {
                        st.redistributing = true;
                        self.tasks.spawn(self.clone().redistribute_loop());
                    }
                    let span = tracing::info_span!("consumer", nsqd = addr);
                    self.tasks.spawn(
                        self.clone()
                            .conn_loop(id, conn, events, activity)
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
        activity: Arc<Activity>,
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
                        activity.last_message.store(self.now_ms(), Ordering::Relaxed);
                        activity.in_flight.store(in_flight as u64, Ordering::Relaxed);
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
            rebalance(&self.config, &mut st, self.now_ms());
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
            let ok = match run.await {
                Ok(Ok(())) => {
                    let _ = tx.send(Command::Fin(msg.id));
                    inner.counters.finished.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Ok(Err(e)) => {
                    let delay = e
                        .requeue_delay
                        .unwrap_or_else(|| inner.config.requeue_delay(msg.attempts));
                    debug!(id = %msg.id, error = %e, ?delay, "handler failed; requeueing");
                    inner.counters.requeued.fetch_add(1, Ordering::Relaxed);
                    if e.backoff {
                        // RDY 0 goes out before the REQ, so nsqd cannot
                        // hand the message straight back during the pause.
                        inner.record(false);
                    }
                    let _ = tx.send(Command::Req {
                        id: msg.id,
                        timeout_ms: delay.as_millis() as u64,
                    });
                    false
                }
                Err(panic) => {
                    warn!(id = %msg.id, error = %panic, "handler panicked; requeueing");
                    let delay = inner.config.requeue_delay(msg.attempts);
                    inner.counters.requeued.fetch_add(1, Ordering::Relaxed);
                    inner.record(false);
                    let _ = tx.send(Command::Req {
                        id: msg.id,
                        timeout_ms: delay.as_millis() as u64,
                    });
                    false
                }
            };
            if ok {
                inner.record(true);
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
                    rebalance(&inner.config, &mut st, inner.now_ms());
                });
            }
        }
        rebalance(&self.config, &mut st, self.now_ms());
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
        rebalance(&self.config, &mut st, self.now_ms());
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

/// How many messages the connections together may be offered now.
fn budget(config: &Config, st: &State) -> u64 {
    if st.stopping || st.backoff.is_paused() {
        0
    } else if st.backoff.level() > 0 {
        // Backing off: one message at a time tests the water.
        1
    } else {
        config.max_in_flight
    }
}

/// Send every connection the RDY it should have now (`now`: the
/// consumer's ms clock), where that changed. With at least as much budget
/// as connections, each gets an even share. With less, RDY 1 goes to
/// `budget` of them: those that hold it keep it, then those that never had
/// it, then the others by how long ago they gave it up; [`redistribute`]
/// makes holders give it up.
fn rebalance(config: &Config, st: &mut State, now: u64) {
    let budget = budget(config, st);
    let mut open: Vec<u64> = st
        .conns
        .iter()
        .filter(|(_, c)| !c.closing)
        .map(|(id, _)| *id)
        .collect();
    let share = if open.len() as u64 <= budget {
        None
    } else {
        open.sort_by_key(|id| {
            let c = &st.conns[id];
            (c.rdy == 0, c.released_at, *id)
        });
        Some(usize::try_from(budget).unwrap_or(usize::MAX))
    };
    let n = open.len();
    for (rank, id) in open.into_iter().enumerate() {
        let c = st.conns.get_mut(&id).expect("listed above");
        let target = match share {
            None => per_connection_rdy(budget, n, c.max_rdy),
            Some(turns) => u64::from(rank < turns).min(c.max_rdy),
        };
        set_rdy(c, target, now);
    }
    // A closing connection's RDY is already 0 at nsqd (CLS sets it).
    for c in st.conns.values_mut().filter(|c| c.closing) {
        c.rdy = 0;
    }
}

/// Send `RDY target` to an open connection if that is news to it.
fn set_rdy(c: &mut ConnEntry, target: u64, now: u64) {
    if target == c.rdy {
        return;
    }
    if c.rdy == 0 {
        c.granted_at = now;
    } else if target == 0 {
        c.released_at = Some(now);
    }
    c.rdy = target;
    let _ = c.tx.send(Command::Rdy(target));
}

/// The periodic turn when connections outnumber the budget: a connection
/// that has nothing in flight and received nothing for
/// `low_rdy_idle_timeout` since its turn began, or has had its turn for
/// `low_rdy_timeout`, gives RDY up, and [`rebalance`] hands it to those
/// that waited longest. (go-nsq also takes RDY from a connection whose
/// slow handler still holds its message, letting one more in flight.)
fn redistribute(config: &Config, st: &mut State, now: u64) {
    let budget = budget(config, st);
    let open = st.conns.values().filter(|c| !c.closing).count() as u64;
    if budget == 0 || open <= budget {
        return;
    }
    let idle = config.low_rdy_idle_timeout.as_millis() as u64;
    let held = config.low_rdy_timeout.as_millis() as u64;
    for c in st.conns.values_mut() {
        if c.closing || c.rdy == 0 {
            continue;
        }
        let busy = c.activity.in_flight.load(Ordering::Relaxed) > 0;
        let active = c
            .activity
            .last_message
            .load(Ordering::Relaxed)
            .max(c.granted_at);
        let idle_too_long = !busy && now.saturating_sub(active) >= idle;
        if idle_too_long || now.saturating_sub(c.granted_at) >= held {
            debug!(addr = %c.addr, "RDY moves on to another nsqd");
            set_rdy(c, 0, now);
        }
    }
    rebalance(config, st, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::SentCommands;

    fn state(conns: &[u64]) -> (State, Vec<SentCommands>) {
        let mut st = State {
            conns: HashMap::new(),
            connecting: HashSet::new(),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            redistributing: false,
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
                    granted_at: 0,
                    released_at: None,
                    activity: Arc::default(),
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

    /// Each connection's RDY as the consumer last set it, by index.
    fn rdys(st: &State) -> Vec<u64> {
        (0..st.conns.len() as u64)
            .map(|i| st.conns[&i].rdy)
            .collect()
    }

    #[test]
    fn rdy_is_spread_capped_and_sent_only_on_change() {
        let (mut st, mut sinks) = state(&[2500, 2500, 10]);
        rebalance(&config(90), &mut st, 0);
        assert_eq!(sinks[0].take(), ["RDY 30"]);
        assert_eq!(sinks[1].take(), ["RDY 30"]);
        // The server's max_rdy_count wins over the even share.
        assert_eq!(sinks[2].take(), ["RDY 10"]);
        rebalance(&config(90), &mut st, 0);
        assert!(sinks.iter_mut().all(|s| s.take().is_empty()));

        // A closing connection leaves its share to the others and gets no RDY
        // (CLS already set it to 0 at nsqd).
        st.conns.get_mut(&2).unwrap().closing = true;
        rebalance(&config(90), &mut st, 0);
        assert_eq!(sinks[0].take(), ["RDY 45"]);
        assert_eq!(sinks[1].take(), ["RDY 45"]);
        assert!(sinks[2].take().is_empty());
    }

    #[test]
    fn fewer_max_in_flight_than_connections_takes_turns() {
        let (mut st, mut sinks) = state(&[2500, 2500, 2500]);
        let c = Config {
            low_rdy_idle_timeout: Duration::from_millis(100),
            low_rdy_timeout: Duration::from_millis(1000),
            ..config(2)
        };
        // Never more RDY than max_in_flight: two connections get 1, one waits.
        rebalance(&c, &mut st, 0);
        assert_eq!(rdys(&st), [1, 1, 0]);
        assert_eq!(sinks[0].take(), ["RDY 1"]);
        assert_eq!(sinks[2].take(), Vec::<String>::new());

        // Both are busy and have not held RDY for long: nothing moves.
        st.conns[&0]
            .activity
            .last_message
            .store(90, Ordering::Relaxed);
        st.conns[&1]
            .activity
            .last_message
            .store(90, Ordering::Relaxed);
        redistribute(&c, &mut st, 150);
        assert_eq!(rdys(&st), [1, 1, 0]);

        // #1 goes idle: its RDY goes to #2, which never had a turn.
        st.conns[&0]
            .activity
            .last_message
            .store(200, Ordering::Relaxed);
        redistribute(&c, &mut st, 200);
        assert_eq!(rdys(&st), [1, 0, 1]);
        assert_eq!(sinks[1].take(), ["RDY 1", "RDY 0"]);
        assert_eq!(sinks[2].take(), ["RDY 1"]);

        // #0 is busy, but after low_rdy_timeout it gives way to #1, which
        // waited longest; busy #2 has had its turn for less long.
        st.conns[&0]
            .activity
            .last_message
            .store(1000, Ordering::Relaxed);
        st.conns[&2]
            .activity
            .last_message
            .store(1000, Ordering::Relaxed);
        redistribute(&c, &mut st, 1000);
        assert_eq!(rdys(&st), [0, 1, 1]);
        redistribute(&c, &mut st, 1050);
        assert_eq!(rdys(&st), [0, 1, 1]);

        // #2 goes idle: back to #0, which waited longer than #2 will.
        st.conns[&1]
            .activity
            .last_message
            .store(1090, Ordering::Relaxed);
        redistribute(&c, &mut st, 1100);
        assert_eq!(rdys(&st), [1, 1, 0]);

        // A connection closing hands its turn over at once.
        st.conns.get_mut(&1).unwrap().closing = true;
        rebalance(&c, &mut st, 1101);
        assert_eq!(rdys(&st), [1, 0, 1]);

        // Enough budget for everyone again: even shares.
        let (mut st, _sinks) = state(&[2500, 2500, 2500]);
        rebalance(&c, &mut st, 0);
        assert_eq!(rdys(&st), [1, 1, 0]);
        rebalance(&config(30), &mut st, 10);
        assert_eq!(rdys(&st), [10, 10, 10]);
        // And back: the first two keep RDY, now 1.
        rebalance(&c, &mut st, 20);
        assert_eq!(rdys(&st), [1, 1, 0]);

        // A slow handler's message keeps its connection's turn, though
        // nothing arrives, until low_rdy_timeout.
        let (mut st, _sinks) = state(&[2500, 2500]);
        let one = Config {
            max_in_flight: 1,
            ..c
        };
        rebalance(&one, &mut st, 0);
        assert_eq!(rdys(&st), [1, 0]);
        st.conns[&0].activity.in_flight.store(1, Ordering::Relaxed);
        redistribute(&one, &mut st, 500);
        assert_eq!(rdys(&st), [1, 0]);
        redistribute(&one, &mut st, 1000);
        assert_eq!(rdys(&st), [0, 1]);
    }

    #[test]
    fn backoff_pauses_everyone_then_probes_with_one_connection() {
        let (mut st, mut sinks) = state(&[2500, 2500]);
        let c = config(10);
        rebalance(&c, &mut st, 0);
        assert_eq!(sinks[0].take(), ["RDY 5"]);
        assert_eq!(sinks[1].take(), ["RDY 5"]);

        assert!(matches!(st.backoff.on_failure(), BackoffAction::Pause(_)));
        rebalance(&c, &mut st, 1);
        assert_eq!(sinks[0].take(), ["RDY 0"]);
        assert_eq!(sinks[1].take(), ["RDY 0"]);

        st.backoff.timer_fired();
        rebalance(&c, &mut st, 2);
        let probe = rdys(&st).iter().position(|&r| r == 1).expect("a probe");
        assert_eq!(rdys(&st).iter().sum::<u64>(), 1);
        assert_eq!(sinks[probe].take(), ["RDY 1"]);
        assert!(sinks[1 - probe].take().is_empty());

        // A probe that gets nothing hands RDY 1 to the other connection.
        let idle = c.low_rdy_idle_timeout.as_millis() as u64;
        redistribute(&c, &mut st, 2 + idle);
        assert_eq!(sinks[probe].take(), ["RDY 0"]);
        assert_eq!(sinks[1 - probe].take(), ["RDY 1"]);

        assert_eq!(st.backoff.on_success(), BackoffAction::Resume);
        rebalance(&c, &mut st, 3 + idle);
        assert_eq!(sinks[probe].take(), ["RDY 5"]);
        assert_eq!(sinks[1 - probe].take(), ["RDY 5"]);
    }
}
