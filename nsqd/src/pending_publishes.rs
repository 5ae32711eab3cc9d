//! The publishes of one TCP connection that are in their topic but not yet
//! safe (disk writes, replicas' acknowledgements): the connection reads and
//! starts the next ones meanwhile, and answers them in order. Without this
//! a connection waits a whole replica round trip per MPUB.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

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

    /// The oldest publish's answer if it has one now, without waiting. An
    /// acknowledgement completes several publishes at once: after the
    /// first answer, the others it completed are taken from here, so one
    /// write answers them all (and wakes the client once).
    pub fn ready(&mut self) -> Option<Result<(), ProtocolError>> {
        let head = self.queue.front_mut()?;
        // The waker is never needed: a publish still waiting is polled
        // again by `next` (with the task's own waker) before it parks.
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(r) = head.as_mut().poll(&mut cx) else {
            return None;
        };
        self.queue.pop_front();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nsq_protocol::ErrorCode;
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// A publish that is safe once its sender says so, with that answer.
    fn publish() -> (oneshot::Sender<Result<(), ProtocolError>>, Pending) {
        let (tx, rx) = oneshot::channel();
        (tx, Box::pin(async move { rx.await.expect("answer sent") }))
    }

    fn refused(n: u8) -> ProtocolError {
        ProtocolError::new(ErrorCode::PubFailed, format!("refused {n}"))
    }

    #[tokio::test]
    async fn publishes_completed_together_are_all_taken_at_once_and_in_order() {
        let mut pending = PendingPublishes::default();
        let mut senders = Vec::new();
        for _ in 0..5 {
            let (tx, p) = publish();
            pending.push(p);
            senders.push(Some(tx));
        }
        let mut answer = |i: usize, r| {
            let tx: Option<oneshot::Sender<_>> = senders[i].take();
            tx.unwrap().send(r).unwrap();
        };
        // One ack makes the first three safe (the second refused), and the
        // fifth: it must still wait behind the fourth.
        answer(0, Ok(()));
        answer(1, Err(refused(1)));
        answer(2, Ok(()));
        answer(4, Ok(()));
        let first = tokio::time::timeout(Duration::from_secs(5), pending.next()).await;
        assert_eq!(first.expect("the oldest was answered"), Ok(()));
        // Taken without waiting: the ones the same ack completed.
        assert_eq!(pending.ready(), Some(Err(refused(1))));
        assert_eq!(pending.ready(), Some(Ok(())));
        // The fourth is not safe: nothing behind it is answered before it.
        assert_eq!(pending.ready(), None);
        assert_eq!(pending.ready(), None);
        assert!(!pending.is_empty());
        answer(3, Err(refused(3)));
        assert_eq!(pending.ready(), Some(Err(refused(3))));
        assert_eq!(pending.ready(), Some(Ok(())));
        assert_eq!(pending.ready(), None);
        assert!(pending.is_empty());
    }

    #[tokio::test]
    async fn a_publish_first_seen_waiting_is_still_answered_when_it_completes() {
        let mut pending = PendingPublishes::default();
        let (tx, p) = publish();
        pending.push(p);
        // Looked at before it completed (with a waker that wakes nothing):
        // `next` still learns of its completion.
        assert_eq!(pending.ready(), None);
        let next = tokio::spawn(async move {
            let r = pending.next().await;
            (r, pending.is_empty())
        });
        tx.send(Ok(())).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), next).await;
        assert_eq!(got.expect("answered").unwrap(), (Ok(()), true));
    }
}
