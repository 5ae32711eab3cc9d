//! The handler workers: `concurrency` tasks that take messages from the
//! connections in arrival order, run the handler on each, and answer it
//! (FIN or REQ) unless the handler answers itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::Inner;
use crate::message::{Handler, Message, Outcome};

/// What a message's answer does to the consumer and to the connection it
/// came on. One per connection.
pub(super) struct ConnOutcome {
    pub(super) inner: Arc<Inner>,
    /// The connection task counts its messages in flight down on this.
    pub(super) done: mpsc::UnboundedSender<()>,
}

impl Outcome for ConnOutcome {
    fn finished(&self, given_up: bool) {
        let c = &self.inner.counters;
        c.finished.fetch_add(1, Ordering::Relaxed);
        if given_up {
            c.given_up.fetch_add(1, Ordering::Relaxed);
        } else {
            self.inner.record(true);
        }
    }

    fn requeuing(&self, backoff: bool) {
        self.inner.counters.requeued.fetch_add(1, Ordering::Relaxed);
        if backoff {
            self.inner.record(false);
        }
    }

    fn done(&self) {
        let _ = self.done.send(());
    }

    fn requeue_delay(&self, attempts: u16) -> Duration {
        self.inner.config.requeue_delay(attempts)
    }
}

impl Inner {
    /// Start the workers on the queue the connections feed. Called once,
    /// with the first connection (so inside a runtime).
    pub(super) fn start_workers(self: &Arc<Self>) {
        let Some(rx) = self.work_rx.lock().expect("work_rx lock").take() else {
            return;
        };
        let (handler, concurrency) = self.handler.get().expect("connected only with a handler");
        // One receiver shared by all workers: whichever is free takes the
        // oldest message, so with one worker the order is arrival order.
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..*concurrency {
            let inner = self.clone();
            let (handler, rx) = (handler.clone(), rx.clone());
            self.tasks
                .spawn(async move { inner.work_loop(handler, rx).await });
        }
    }

    async fn work_loop(
        self: Arc<Self>,
        handler: Arc<dyn Handler>,
        rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>>,
    ) {
        loop {
            let next = {
                let mut rx = rx.lock().await;
                tokio::select! {
                    biased;
                    () = self.hard_stop.cancelled() => None,
                    msg = rx.recv() => msg,
                }
            };
            let Some(msg) = next else { return };
            self.handle(&handler, msg).await;
        }
    }

    /// Run the handler on one message and answer it as the result says.
    async fn handle(&self, handler: &Arc<dyn Handler>, msg: Message) {
        let max = self.config.max_attempts;
        if max > 0 && msg.attempts > max {
            warn!(id = %msg.id, attempts = msg.attempts, "giving up on message");
            handler.give_up(&msg);
            msg.respond_fin(true);
            return;
        }
        // The handler runs in its own task so a panic is a failure of this
        // message, not a dead worker.
        let mut run = {
            let (handler, msg) = (handler.clone(), msg.clone());
            tokio::spawn(async move { handler.handle(&msg).await })
        };
        let result = tokio::select! {
            r = &mut run => r,
            () = self.hard_stop.cancelled() => {
                run.abort();
                return;
            }
        };
        match result {
            Err(panic) => {
                warn!(id = %msg.id, error = %panic, "handler panicked; requeueing");
                msg.respond_req(None, true);
            }
            _ if msg.is_auto_response_disabled() => {}
            Ok(Ok(())) => {
                msg.respond_fin(false);
            }
            Ok(Err(e)) => {
                debug!(id = %msg.id, error = %e, "handler failed; requeueing");
                msg.respond_req(e.requeue_delay, e.backoff);
            }
        }
    }
}
