//! One running nsqlookupd: binds both listeners in its constructor (so
//! callers can use port 0 and read the bound addresses), serves them, and
//! shuts down in a fixed order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use nsq_app::lifecycle::Tasks;

use crate::context::Context;
use crate::error::Result;
use crate::registration_db::RegistrationDb;
use crate::{http, protocol_v1, Options};

/// How long shutdown waits for connections to finish before giving up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running nsqlookupd. Dropping it stops it without waiting; call
/// [`Lookupd::shutdown`] to wait for connections to close.
#[derive(Debug)]
pub struct Lookupd {
    ctx: Arc<Context>,
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    tasks: Tasks,
}

impl Lookupd {
    /// Bind `--tcp-address` and `--http-address` and start serving both.
    pub async fn new(opts: Options) -> Result<Self> {
        let (tcp, tcp_addr) = nsq_app::net::bind(&opts.tcp_address).await?;
        let (http, http_addr) = nsq_app::net::bind(&opts.http_address).await?;
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
        let tasks = Tasks::default();
        tracing::info!("TCP: listening on {tcp_addr}");
        tasks.spawn(|cancel, tracker| protocol_v1::serve(tcp, Arc::clone(&ctx), cancel, tracker));
        tracing::info!("HTTP: listening on {http_addr}");
        let timeouts = opts.http_timeouts();
        tasks.spawn(|cancel, tracker| {
            http::serve(http, Arc::clone(&ctx), cancel, tracker, timeouts)
        });
        Ok(Lookupd {
            ctx,
            tcp_addr,
            http_addr,
            tasks,
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
        self.tasks.stop(SHUTDOWN_GRACE, "connections").await;
    }
}
