//! What nsqlookupd's TCP and HTTP sides share.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::registration_db::RegistrationDb;

/// State shared by the TCP and HTTP sides. The DB locks itself; the rest is
/// fixed at startup.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) db: RegistrationDb,
    /// `--broadcast-address`, told to nsqd in the IDENTIFY reply.
    pub(crate) broadcast_address: String,
    /// The OS hostname, also in the IDENTIFY reply.
    pub(crate) hostname: String,
    /// The ports actually bound, which upstream reports (not the flags).
    pub(crate) tcp_port: u16,
    pub(crate) http_port: u16,
    pub(crate) next_conn: AtomicU64,
    /// What `/metrics` counts (lookups answered).
    pub(crate) metrics: crate::metrics::Counters,
}

impl Context {
    /// A number unique to one TCP connection for this process's lifetime.
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}
