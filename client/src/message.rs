//! What a consumer's handler sees: [`Message`], the [`Handler`] trait, its
//! result type, and [`handler_fn`] for closures.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use nsq_protocol::message::MessageFrame;
use nsq_protocol::{Command, MessageId};

use crate::conn::ConnTx;
use crate::Result;

/// One delivered message. Cloning is cheap (the body is shared).
#[derive(Clone)]
pub struct Message {
    pub id: MessageId,
    /// Nanoseconds since the Unix epoch, set by nsqd at publish.
    pub timestamp: i64,
    /// The delivery count; 1 on the first delivery.
    pub attempts: u16,
    pub body: Bytes,
    nsqd: std::sync::Arc<str>,
    tx: ConnTx,
}

impl Message {
    pub(crate) fn new(frame: MessageFrame, nsqd: std::sync::Arc<str>, tx: ConnTx) -> Message {
        Message {
            id: frame.id,
            timestamp: frame.timestamp,
            attempts: frame.attempts,
            body: frame.body,
            nsqd,
            tx,
        }
    }

    /// Reset nsqd's timeout for this message, for handlers that run longer
    /// than the connection's msg_timeout. nsqd does not answer TOUCH.
    pub fn touch(&self) -> Result<()> {
        self.tx.send(Command::Touch(self.id))
    }

    /// The address of the nsqd that delivered this message.
    pub fn nsqd_address(&self) -> &str {
        &self.nsqd
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

/// Processes messages. Runs concurrently, up to max_in_flight at once.
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
