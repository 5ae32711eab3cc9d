//! The state of one TCP client that the connection's reader and writer tasks,
//! its channel and the stats share.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Client states as upstream numbers them in `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    Init = 0,
    Subscribed = 3,
    Closing = 4,
}

/// Per-connection settings fixed by IDENTIFY (or the server defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// `None` when the client disabled heartbeats.
    pub heartbeat_interval: Option<Duration>,
    pub output_buffer_size: usize,
    /// `None` when the client disabled timed flushes.
    pub output_buffer_timeout: Option<Duration>,
    pub msg_timeout: Duration,
    pub sample_rate: u8,
}

/// What a client told us about itself, for `/stats`.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub tls: bool,
    /// The TLS session, once upgraded.
    pub tls_info: crate::tls::TlsInfo,
    pub snappy: bool,
    pub deflate: bool,
    pub topology_region: String,
    pub topology_zone: String,
    pub identified: bool,
    /// IDENTIFY's `sample_rate`, for `/stats`.
    pub sample_rate: u8,
    /// AUTH succeeded with at least one authorization.
    pub authed: bool,
    pub auth_identity: String,
    pub auth_identity_url: String,
}

/// Shared by the reader task (commands), the writer task (delivery), the
/// channel (in-flight accounting, wake-ups) and stats. Counters are atomics so
/// the hot path takes no lock here; `info` is a Mutex read only by stats and
/// written once by IDENTIFY.
#[derive(Debug)]
pub struct Client {
    pub id: u64,
    pub remote_addr: SocketAddr,
    /// Unix seconds.
    pub connect_ts: i64,
    state: AtomicU8,
    ready_count: AtomicU64,
    in_flight: AtomicU64,
    pub message_count: AtomicU64,
    pub finish_count: AtomicU64,
    pub requeue_count: AtomicU64,
    /// Wakes the writer: new messages, more room (FIN, RDY), control frames.
    pub wake: Notify,
    /// Set under the channel lock while this client waits for messages, so a
    /// publisher wakes each idle client once.
    pub(crate) waiting: AtomicBool,
    pub info: Mutex<ClientInfo>,
    /// Cancelled to close the connection (channel deleted, shutdown).
    pub(crate) stop: CancellationToken,
    /// Messages published per topic over this connection, for `/stats`.
    pub_counts: Mutex<BTreeMap<String, u64>>,
    /// Set at IDENTIFY when the client declared a job capacity.
    job: OnceLock<JobWorker>,
}

impl Client {
    pub fn new(id: u64, remote_addr: SocketAddr, connect_ts: i64) -> Self {
        Self::with_stop(id, remote_addr, connect_ts, CancellationToken::new())
    }

    /// A client whose connection stops when `stop` is cancelled.
    pub fn with_stop(
        id: u64,
        remote_addr: SocketAddr,
        connect_ts: i64,
        stop: CancellationToken,
    ) -> Self {
        Client {
            id,
            remote_addr,
            connect_ts,
            state: AtomicU8::new(ClientState::Init as u8),
            ready_count: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            message_count: AtomicU64::new(0),
            finish_count: AtomicU64::new(0),
            requeue_count: AtomicU64::new(0),
            wake: Notify::new(),
            waiting: AtomicBool::new(false),
            info: Mutex::new(ClientInfo {
                client_id: remote_addr.ip().to_string(),
                hostname: remote_addr.ip().to_string(),
                ..ClientInfo::default()
            }),
            stop,
            pub_counts: Mutex::new(BTreeMap::new()),
            job: OnceLock::new(),
        }
    }

    /// Close this client's connection.
    pub fn close(&self) {
        self.stop.cancel();
    }

    pub(crate) fn count_publish(&self, topic: &str, n: u64) {
        let mut counts = self.pub_counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(topic) {
            Some(c) => *c += n,
            None => {
                counts.insert(topic.to_string(), n);
            }
        }
    }

    /// Messages published per topic; empty for a client that only consumes.
    pub fn pub_counts(&self) -> Vec<(String, u64)> {
        let counts = self.pub_counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(t, n)| (t.clone(), *n)).collect()
    }

    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Acquire) {
            3 => ClientState::Subscribed,
            4 => ClientState::Closing,
            _ => ClientState::Init,
        }
    }

    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Ordering::Release);
    }

    pub fn ready_count(&self) -> u64 {
        self.ready_count.load(Ordering::Acquire)
    }

    pub fn set_ready_count(&self, n: u64) {
        self.ready_count.store(n, Ordering::Release);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn add_in_flight(&self, n: u64) {
        self.in_flight.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn sub_in_flight(&self, n: u64) {
        // Saturating: an emptied channel resets counts that FINs then race with.
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
    }

    pub(crate) fn reset_in_flight(&self) {
        self.in_flight.store(0, Ordering::Release);
    }

    /// How many more messages this client may hold now: RDY is a cap on
    /// in-flight messages, not a credit that counts down.
    pub fn capacity(&self) -> u64 {
        if self.state() != ClientState::Subscribed {
            return 0;
        }
        self.ready_count().saturating_sub(self.in_flight())
    }

    /// The job worker this client declared itself, if any.
    pub fn job(&self) -> Option<&JobWorker> {
        self.job.get()
    }

    pub(crate) fn set_job(&self, worker: JobWorker) {
        let _ = self.job.set(worker);
    }
}

/// What a worker declared at IDENTIFY, shared by its connection.
#[derive(Debug)]
pub struct JobWorker {
    /// Load units this connection may hold at once.
    pub capacity: u64,
    /// The worker's name (IDENTIFY `client_id`); connections with the same
    /// name share `total`.
    pub name: String,
    /// In-flight load of this worker over all its job channels on this nsqd.
    pub total: Arc<AtomicU64>,
}
