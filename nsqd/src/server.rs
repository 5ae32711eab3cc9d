//! Starting and stopping nsqd: binding the listeners, the background loops
//! (accept, timer scan, metadata writer, statsd), and the shutdown order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tracing::{error, info, warn};

use crate::nsqd::{Error, Listeners, Nsqd, Result};
use crate::options::{Options, OptionsError};
use crate::replication::Replication;

/// How often in-flight timeouts and deferred messages are checked (upstream's
/// queue scan interval).
pub const QUEUE_SCAN_INTERVAL: Duration = Duration::from_millis(100);
/// How long shutdown waits for connections to finish before giving up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// After a failed `nsqd.dat` write, the next attempt comes this much later.
const METADATA_RETRY: Duration = Duration::from_secs(1);

/// A bound, not yet running nsqd. Binding happens here so a caller that
/// asked for port 0 can read the real addresses before `run`.
pub struct Server {
    nsqd: Arc<Nsqd>,
    /// Replicated pairs (`--replication-address`): started by `run`.
    replication: Option<Arc<Replication>>,
    tcp: TcpListener,
    http: Option<TcpListener>,
    https: Option<TcpListener>,
}

/// Bind `addr` without listening yet: the port is taken (and known, for
/// port 0) while nsqd restores its topics, but connections are refused
/// until it can serve them, instead of being accepted and left hanging.
async fn bind(addr: &str) -> Result<Bound> {
    let err = |source| {
        Error::Listen(nsq_app::net::ListenError {
            addr: addr.to_string(),
            source,
        })
    };
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await.map_err(err)? {
        let socket = match a {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(err)?;
        // As `TcpListener::bind` does: a restart may reuse the port at once.
        socket.set_reuseaddr(true).map_err(err)?;
        match socket.bind(a) {
            Ok(()) => return Ok(Bound(socket)),
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    })))
}

/// A bound socket, not yet listening.
struct Bound(TcpSocket);

impl Bound {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn listen(self) -> std::io::Result<TcpListener> {
        self.0.listen(LISTEN_BACKLOG)
    }
}

/// The accept queue's length (Go asks the kernel's maximum; 1024 is
/// tokio's `TcpListener::bind` choice).
const LISTEN_BACKLOG: u32 = 1024;

impl Server {
    pub async fn bind(opts: Options) -> Result<Server> {
        opts.validate()?;
        for flag in opts.unsupported() {
            warn!("{flag} is accepted but not supported by this build yet; it has no effect");
        }
        let tls = crate::tls::server_config(&opts)
            .map_err(|e| OptionsError(format!("failed to build TLS config - {e}")))?;
        let tcp = bind(&opts.tcp_address).await?;
        let http = if opts.http_address.is_empty() {
            None
        } else {
            Some(bind(&opts.http_address).await?)
        };
        // Upstream opens HTTPS only when it has a certificate.
        let https = if tls.is_some() && !opts.https_address.is_empty() {
            Some(bind(&opts.https_address).await?)
        } else {
            None
        };
        let listeners = Listeners {
            tcp_addr: tcp.local_addr()?,
            http_addr: http.as_ref().map(|l| l.local_addr()).transpose()?,
            https_addr: https.as_ref().map(|l| l.local_addr()).transpose()?,
            tls,
        };
        // Replication plugs into nsqd through its hooks.
        let replication = Replication::open(&opts).await?;
        let hooks = replication
            .clone()
            .map(|r| r as Arc<dyn crate::replica_hooks::ReplicaHooks>);
        let nsqd = Nsqd::open(opts, listeners, hooks).await?;
        // Ready: only now do connections get in.
        Ok(Server {
            nsqd,
            replication,
            tcp: tcp.listen()?,
            http: http.map(Bound::listen).transpose()?,
            https: https.map(Bound::listen).transpose()?,
        })
    }

    pub fn nsqd(&self) -> Arc<Nsqd> {
        self.nsqd.clone()
    }

    /// Hand over the process's log filter so `PUT /config/log_level`
    /// changes what is logged.
    pub fn set_log_handle(&self, handle: nsq_app::logging::LogHandle) {
        self.nsqd.live.attach_log(handle);
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.nsqd.tcp_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.nsqd.http_addr
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.nsqd.https_addr
    }

    /// Serve until `shutdown` resolves, then stop in order: stop accepting,
    /// close client connections (their in-flight messages go back to their
    /// channels), and wait for the tasks, at most [`SHUTDOWN_GRACE`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Server {
            nsqd,
            replication,
            tcp,
            http,
            https,
        } = self;
        info!("{}", nsq_app::flags::version_string("nsqd"));
        info!("ID: {}", nsqd.node_id());
        if let Some(r) = &replication {
            // Before consumers arrive: learn what peers took over.
            r.start(&nsqd).await?;
        }
        info!("TCP: listening on {}", nsqd.tcp_addr);
        nsqd.tracker.spawn(accept_tcp(nsqd.clone(), tcp));
        if let Some(http) = http {
            info!(
                "HTTP: listening on {}",
                nsqd.http_addr.map_or(String::new(), |a| a.to_string())
            );
            nsqd.tracker
                .spawn(crate::http::serve(nsqd.clone(), http, None));
        }
        if let (Some(https), Some(tls)) = (https, nsqd.tls.clone()) {
            info!(
                "HTTPS: listening on {}",
                nsqd.https_addr.map_or(String::new(), |a| a.to_string())
            );
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            nsqd.tracker
                .spawn(crate::http::serve(nsqd.clone(), https, Some(acceptor)));
        }
        nsqd.tracker.spawn(queue_scan_loop(nsqd.clone()));
        nsqd.tracker.spawn(metadata_loop(nsqd.clone()));
        if !nsqd.opts.statsd_address.is_empty() {
            nsqd.tracker.spawn(crate::statsd::statsd_loop(nsqd.clone()));
        }
        nsqd.lookup
            .set_addresses(nsqd.clone(), &nsqd.opts.lookupd_tcp_address);
        tokio::select! {
            _ = shutdown => {}
            _ = nsqd.cancel.cancelled() => {}
        }
        nsqd.cancel.cancel();
        nsqd.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, nsqd.tracker.wait())
            .await
            .is_err()
        {
            error!("tasks still running after {SHUTDOWN_GRACE:?}; exiting anyway");
        }
        nsqd.write_metadata();
        if let Some(r) = &replication {
            // What this node holds for its peers, for its next start.
            r.save().await;
        }
        info!("NSQ: closing topics");
        nsqd.flush_to_disk().await?;
        info!("NSQ: bye");
        Ok(())
    }
}

async fn accept_tcp(nsqd: Arc<Nsqd>, listener: TcpListener) {
    nsq_app::net::accept_loop(&listener, &nsqd.cancel, "TCP", |stream, addr| {
        nsqd.tracker
            .spawn(crate::protocol_v2::serve(nsqd.clone(), stream, addr));
    })
    .await;
}

/// Save the metadata after changes, off the async workers (it fsyncs).
async fn metadata_loop(nsqd: Arc<Nsqd>) {
    loop {
        tokio::select! {
            _ = nsqd.cancel.cancelled() => return,
            _ = nsqd.metadata_dirty.notified() => {
                let n = nsqd.clone();
                let saved = tokio::task::spawn_blocking(move || n.write_metadata()).await;
                if !matches!(saved, Ok(true)) {
                    // Try again shortly (a full disk may have room by then);
                    // durable publishes wait for it.
                    tokio::time::sleep(METADATA_RETRY).await;
                    nsqd.metadata_dirty.notify_one();
                }
            }
        }
    }
}

async fn queue_scan_loop(nsqd: Arc<Nsqd>) {
    let mut tick = tokio::time::interval(QUEUE_SCAN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = nsqd.cancel.cancelled() => return,
            _ = tick.tick() => nsqd.scan_queues(),
        }
    }
}
