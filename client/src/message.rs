//! What a consumer's handler sees: [`Message`] and its responses (FIN, REQ,
//! TOUCH), the [`Handler`] trait, its result type, and [`handler_fn`] for
//! closures.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nsq_protocol::message::MessageFrame;
use nsq_protocol::{Command, MessageId};

use crate::conn::ConnTx;
use crate::Result;

/// What the consumer does when a message is answered: counts, backoff, the
/// connection's in-flight count. Implemented by the consumer; a seam so a
/// message need not know the consumer's insides.
pub(crate) trait Outcome: Send + Sync + 'static {
    /// FIN went out (`given_up`: without the handler, past max attempts).
    fn finished(&self, given_up: bool);
    /// About to send REQ; `backoff` says whether it counts as a failure
    /// for backoff (RDY 0 must go out before the REQ).
    fn requeuing(&self, backoff: bool);
    /// The message no longer counts against its connection's in-flight.
    fn done(&self);
    /// The REQ delay when the handler names none.
    fn requeue_delay(&self, attempts: u16) -> Duration;
}

/// The answering side of one delivery, shared by a message's clones.
struct Responder {
    tx: ConnTx,
    outcome: Arc<dyn Outcome>,
    /// FIN or REQ was sent; later answers are ignored, as nsqd would
    /// refuse them.
    responded: AtomicBool,
    /// The handler answers itself ([`Message::disable_auto_response`]).
    manual: AtomicBool,
    id: MessageId,
}

impl Drop for Responder {
    fn drop(&mut self) {
        // Every clone is gone without an answer: nsqd redelivers after its
        // timeout; the consumer stops waiting for it.
        if !self.responded.load(Ordering::SeqCst) {
            tracing::debug!(id = %self.id, "message dropped without FIN or REQ");
            self.outcome.done();
        }
    }
}

/// One delivered message. Cloning is cheap (the body and the responder are
/// shared).
///
/// By default the consumer answers for the handler: FIN when it returns
/// `Ok`, REQ when it fails. A handler that wants to answer later (after a
/// batch is written, say) calls [`Message::disable_auto_response`], keeps a
/// clone, and calls [`Message::finish`] or [`Message::requeue`] when ready;
/// until then the message counts against max-in-flight.
#[derive(Clone)]
pub struct Message {
    pub id: MessageId,
    /// Nanoseconds since the Unix epoch, set by nsqd at publish.
    pub timestamp: i64,
    /// The delivery count; 1 on the first delivery.
    pub attempts: u16,
    pub body: Bytes,
    nsqd: Arc<str>,
    responder: Arc<Responder>,
}

impl Message {
    pub(crate) fn new(
        frame: MessageFrame,
        nsqd: Arc<str>,
        tx: ConnTx,
        outcome: Arc<dyn Outcome>,
    ) -> Message {
        Message {
            id: frame.id,
            timestamp: frame.timestamp,
            attempts: frame.attempts,
            body: frame.body,
            nsqd,
            responder: Arc::new(Responder {
                tx,
                outcome,
                responded: AtomicBool::new(false),
                manual: AtomicBool::new(false),
                id: frame.id,
            }),
        }
    }

    /// Reset nsqd's timeout for this message, for handlers that run longer
    /// than the connection's msg_timeout. nsqd does not answer TOUCH.
    pub fn touch(&self) -> Result<()> {
        self.responder.tx.send(Command::Touch(self.id))
    }

    /// The address of the nsqd that delivered this message.
    pub fn nsqd_address(&self) -> &str {
        &self.nsqd
    }

    /// The handler's return value no longer answers this message: it must
    /// be answered with [`Message::finish`] or [`Message::requeue`] (or
    /// left to time out at nsqd). go-nsq's `DisableAutoResponse`.
    pub fn disable_auto_response(&self) {
        self.responder.manual.store(true, Ordering::SeqCst);
    }

    /// Whether [`Message::disable_auto_response`] was called.
    pub fn is_auto_response_disabled(&self) -> bool {
        self.responder.manual.load(Ordering::SeqCst)
    }

    /// Whether FIN or REQ has been sent for this message.
    pub fn has_responded(&self) -> bool {
        self.responder.responded.load(Ordering::SeqCst)
    }

    /// FIN: the message is done. Returns false (and sends nothing) if the
    /// message was already answered.
    pub fn finish(&self) -> bool {
        self.respond_fin(false)
    }

    /// REQ: nsqd redelivers the message after `delay` (`None`: the
    /// consumer's `default_requeue_delay` × attempts, capped). Counts as a
    /// failure for backoff. Returns false if already answered.
    pub fn requeue(&self, delay: Option<Duration>) -> bool {
        self.respond_req(delay, true)
    }

    /// REQ without counting towards backoff.
    pub fn requeue_without_backoff(&self, delay: Option<Duration>) -> bool {
        self.respond_req(delay, false)
    }

    pub(crate) fn respond_fin(&self, given_up: bool) -> bool {
        let r = &self.responder;
        if r.responded.swap(true, Ordering::SeqCst) {
            return false;
        }
        let _ = r.tx.send(Command::Fin(self.id));
        r.outcome.finished(given_up);
        r.outcome.done();
        true
    }

    pub(crate) fn respond_req(&self, delay: Option<Duration>, backoff: bool) -> bool {
        let r = &self.responder;
        if r.responded.swap(true, Ordering::SeqCst) {
            return false;
        }
        let delay = delay.unwrap_or_else(|| r.outcome.requeue_delay(self.attempts));
        r.outcome.requeuing(backoff);
        let _ = r.tx.send(Command::Req {
            id: self.id,
            timeout_ms: delay.as_millis().min(u128::from(u64::MAX)) as u64,
        });
        r.outcome.done();
        true
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("attempts", &self.attempts)
            .field("body_len", &self.body.len())
            .field("nsqd", &self.nsqd)
            .finish()
    }
}

/// Why a handler failed; the message is requeued (REQ).
///
/// Any `std::error::Error` converts into it, so handlers can use `?`.
#[derive(Debug)]
pub struct HandlerError {
    pub error: Box<dyn StdError + Send + Sync>,
    /// Requeue after this long instead of the configured
    /// `default_requeue_delay × attempts`.
    pub requeue_delay: Option<Duration>,
    /// Whether this failure counts towards backoff (default true).
    pub backoff: bool,
}

impl HandlerError {
    pub fn new(error: impl Into<Box<dyn StdError + Send + Sync>>) -> HandlerError {
        HandlerError {
            error: error.into(),
            requeue_delay: None,
            backoff: true,
        }
    }

    /// Requeue after exactly `delay`.
    pub fn requeue_after(mut self, delay: Duration) -> HandlerError {
        self.requeue_delay = Some(delay);
        self
    }

    /// Requeue without slowing the consumer down.
    pub fn without_backoff(mut self) -> HandlerError {
        self.backoff = false;
        self
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> HandlerError {
        HandlerError::new(e)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

/// `Ok` → FIN, `Err` → REQ.
pub type HandlerResult = std::result::Result<(), HandlerError>;

/// A boxed, sendable future, so [`Handler`] stays object safe without a macro.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Processes messages: one at a time in arrival order, or as many at once
/// as [`crate::Consumer::add_concurrent_handlers`] says.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, HandlerResult>;

    /// Called for a message delivered more than `max_attempts` times, which
    /// is FINished without reaching [`Handler::handle`] (go-nsq's
    /// `LogFailedMessage`, pynsq's `giving_up`).
    fn give_up(&self, msg: &Message) {
        let _ = msg;
    }
}

/// A [`Handler`] made of closures; see [`handler_fn`].
pub struct FnHandler<F, G = fn(&Message)> {
    handle: F,
    give_up: Option<G>,
}

/// Wrap an async closure taking the message by value:
/// `handler_fn(|msg| async move { println!("{:?}", msg.body); Ok(()) })`.
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    FnHandler {
        handle: f,
        give_up: None,
    }
}

impl<F> FnHandler<F> {
    /// Add a give-up hook; see [`Handler::give_up`].
    pub fn on_give_up<G>(self, g: G) -> FnHandler<F, G>
    where
        G: Fn(&Message) + Send + Sync + 'static,
    {
        FnHandler {
            handle: self.handle,
            give_up: Some(g),
        }
    }
}

impl<F, Fut, G> Handler for FnHandler<F, G>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
    G: Fn(&Message) + Send + Sync + 'static,
{
    fn handle<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, HandlerResult> {
        Box::pin((self.handle)(msg.clone()))
    }

    fn give_up(&self, msg: &Message) {
        if let Some(g) = &self.give_up {
            g(msg);
        }
    }
}
