//! One running nsqlookupd: binds both listeners in its constructor (so
//! callers can use port 0 and read the bound addresses), serves them, and
//! shuts down in a fixed order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::registration_db::RegistrationDb;
use crate::{http, protocol_v1, Options};

/// How long shutdown waits for connections to finish before giving up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    next_conn: AtomicU64,
    /// What `/metrics` counts (lookups answered).
    pub(crate) metrics: crate::metrics::Counters,
}

impl Context {
    /// A number unique to one TCP connection for this process's lifetime.
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running nsqlookupd. Dropping it stops it without waiting; call
/// [`Lookupd::shutdown`] to wait for connections to close.
#[derive(Debug)]
pub struct Lookupd {
    ctx: Arc<Context>,
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Bind `addr` (Go syntax, see `nsq_app::net::listen`), naming it in the error.
async fn listen(addr: &str) -> Result<TcpListener> {
    nsq_app::net::listen(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_owned(),
            source,
        })
}

impl Lookupd {
    /// Bind `--tcp-address` and `--http-address` and start serving both.
    pub async fn new(opts: Options) -> Result<Self> {
        let tcp = listen(&opts.tcp_address).await?;
        let http = listen(&opts.http_address).await?;
        let tcp_addr = tcp.local_addr().map_err(|source| Error::Listen {
            addr: opts.tcp_address.clone(),
            source,
        })?;
        let http_addr = http.local_addr().map_err(|source| Error::Listen {
            addr: opts.http_address.clone(),
            source,
        })?;
        let hostname = nsq_app::os_hostname();
        let ctx = Arc::new(Context {
            db: RegistrationDb::new(opts.inactive_producer_timeout(), opts.tombstone_lifetime()),
            broadcast_address: opts
                .broadcast_address
                .clone()
                .unwrap_or_else(|| hostname.clone()),
            hostname,
            tcp_port: tcp_addr.port(),
            http_port: http_addr.port(),
            next_conn: AtomicU64::new(1),
            metrics: Default::default(),
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracing::info!("TCP: listening on {tcp_addr}");
        tracker.spawn(protocol_v1::serve(
            tcp,
            Arc::clone(&ctx),
            cancel.clone(),
            tracker.clone(),
        ));
        tracing::info!("HTTP: listening on {http_addr}");
        tracker.spawn(http::serve(
            http,
            Arc::clone(&ctx),
            cancel.clone(),
            tracker.clone(),
            opts.http_timeouts(),
        ));
        Ok(Lookupd {
            ctx,
            tcp_addr,
            http_addr,
            cancel,
            tracker,
        })
    }

    /// The bound TCP (protocol V1) address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The registration DB, for inspection.
    pub fn db(&self) -> &RegistrationDb {
        &self.ctx.db
    }

    /// Serve until `signal` resolves, then shut down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }

    /// Stop accepting, close every connection (each nsqd's registrations go
    /// with it, as on any disconnect), and wait for the tasks to end, at
    /// most [`SHUTDOWN_GRACE`]. All state is in memory, so nothing is saved.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: connections still open after {SHUTDOWN_GRACE:?}");
        }
    }
}

impl Drop for Lookupd {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
