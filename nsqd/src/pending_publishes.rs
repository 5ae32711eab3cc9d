//! The publishes of one TCP connection that are in their topic but not yet
//! safe (disk writes, replicas' acknowledgements): the connection reads and
//! starts the next ones meanwhile, and answers them in order. Without this
//! a connection waits a whole replica round trip per MPUB.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use nsq_protocol::ProtocolError;

/// Most publishes one connection may have waiting; the next waits for the
/// oldest, so a client cannot make a connection hold without bound.
pub const MAX_PENDING: usize = 64;

/// One publish's wait, resolving to its answer (`OK` or the error).
pub type Pending = Pin<Box<dyn Future<Output = Result<(), ProtocolError>> + Send>>;

/// Waiting publishes, oldest first. Owned by the connection's reader task.
#[derive(Default)]
pub struct PendingPublishes {
    queue: VecDeque<Pending>,
}

impl PendingPublishes {
    pub fn push(&mut self, p: Pending) {
        self.queue.push_back(p);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.queue.len() >= MAX_PENDING
    }

    /// The oldest publish's answer, once it has one; never resolves when
    /// none waits (so it can sit in a `select!` beside the socket read).
    /// Cancel-safe: the oldest stays queued until it resolved.
    pub async fn next(&mut self) -> Result<(), ProtocolError> {
        let Some(head) = self.queue.front_mut() else {
            return std::future::pending().await;
        };
        let r = head.as_mut().await;
        self.queue.pop_front();
        r
    }
}
