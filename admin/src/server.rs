//! One running nsqadmin: binds its listener in the constructor (so callers
//! can use port 0 and read the bound address), serves HTTP, samples the
//! cluster for the charts, and shuts down in a fixed order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::HeaderMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use nsq_app::http_client::HttpClient;

use crate::cluster::{Cluster, Sources};
use crate::config::LiveOptions;
use crate::history::{self, History};
use crate::notify::Notifier;
use crate::options::OptionsError;
use crate::{http, Options};

/// How long shutdown waits for requests and notifications to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why nsqadmin could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error("listen ({addr}) failed - {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Everything a request handler needs; fixed at startup (the history locks
/// itself).
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) cluster: Cluster,
    pub(crate) history: Arc<History>,
    pub(crate) notifier: Notifier,
    /// `--base-path` as a prefix: empty, or `/name` without a trailing slash.
    pub(crate) base: String,
    /// The options as given (what `/config` reads; the lookupd list lives
    /// in `cluster`, the log level in `live`).
    pub(crate) opts: Options,
    pub(crate) live: LiveOptions,
}

impl Context {
    /// Upstream's rule: with no `--admin-user` everyone may act; otherwise
    /// only a request whose `--acl-http-header` names one of them.
    pub(crate) fn is_admin(&self, headers: &HeaderMap) -> bool {
        let users = &self.opts.admin_user;
        if users.is_empty() {
            return true;
        }
        headers
            .get(self.opts.acl_http_header.as_str())
            .and_then(|v| v.to_str().ok())
            .is_some_and(|user| users.iter().any(|u| u == user))
    }

    pub(crate) fn lookupd_mode(&self) -> bool {
        matches!(self.cluster.sources(), Sources::Lookupd(_))
    }
}

/// A running nsqadmin. Dropping it stops it without waiting; call
/// [`NsqAdmin::shutdown`] to wait for requests to finish.
#[derive(Debug)]
pub struct NsqAdmin {
    ctx: Arc<Context>,
    http_addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl NsqAdmin {
    /// Check the options, bind `--http-address`, and start serving and
    /// sampling.
    pub async fn new(opts: Options) -> Result<Self, Error> {
        opts.validate()?;
        for flag in opts.unsupported() {
            tracing::warn!("{flag} is accepted but not supported by this build; it has no effect");
        }
        let listener = nsq_app::net::listen(&opts.http_address)
            .await
            .map_err(|source| Error::Listen {
                addr: opts.http_address.clone(),
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: opts.http_address.clone(),
            source,
        })?;
        let client = HttpClient::new(
            opts.http_client_connect_timeout.0,
            opts.http_client_request_timeout.0,
        )
        .with_max_body(opts.http_client_max_body_size);
        let cluster = Cluster::new(
            client.clone(),
            opts.lookupd_http_address.clone(),
            opts.nsqd_http_address.clone(),
        );
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let history = Arc::new(History::new(opts.history_interval.0));
        let ctx = Arc::new(Context {
            cluster: cluster.clone(),
            history: Arc::clone(&history),
            notifier: Notifier::new(
                opts.notification_http_endpoint.clone(),
                client,
                tracker.clone(),
            ),
            base: opts.base_prefix(),
            live: LiveOptions::new(&opts),
            opts,
        });
        tracing::info!("HTTP: listening on {http_addr}");
        tracker.spawn(http::serve(
            listener,
            Arc::clone(&ctx),
            cancel.clone(),
            tracker.clone(),
        ));
        tracker.spawn(history::run_sampler(cluster, history, cancel.clone()));
        Ok(NsqAdmin {
            ctx,
            http_addr,
            cancel,
            tracker,
        })
    }

    /// Hand over the process's log filter so `PUT /config/log_level`
    /// changes what is logged.
    pub fn set_log_handle(&self, handle: nsq_app::logging::LogHandle) {
        self.ctx.live.attach_log(handle);
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serve until `signal` resolves, then shut down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }

    /// Stop accepting and sampling, let open requests and notifications
    /// finish (at most [`SHUTDOWN_GRACE`]). nsqadmin stores nothing.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: requests still open after {SHUTDOWN_GRACE:?}");
        }
    }
}

impl Drop for NsqAdmin {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
