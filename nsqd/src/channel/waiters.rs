//! The clients whose writers found nothing to send and wait for the next
//! message: registered under the channel lock, so no wake-up is lost.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::client::Client;

/// Idle clients of one channel. A client's `waiting` flag says whether it is
/// already registered, so a publisher wakes each idle client once.
#[derive(Default)]
pub(super) struct Waiters(Vec<Arc<Client>>);

impl Waiters {
    /// Register `client` to be woken, unless it already is.
    pub(super) fn park(&mut self, client: &Arc<Client>) {
        if !client.waiting.swap(true, Ordering::AcqRel) {
            self.0.push(client.clone());
        }
    }

    /// Forget a client that left.
    pub(super) fn remove(&mut self, client_id: u64) {
        self.0.retain(|w| w.id != client_id);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Wake every registered client and forget them.
    pub(super) fn wake_all(&mut self) {
        for w in self.0.drain(..) {
            w.waiting.store(false, Ordering::Release);
            w.wake.notify_one();
        }
    }
}
