//! One running nsqadmin: binds its listener in the constructor (so callers
//! can use port 0 and read the bound address), serves HTTP, samples the
//! cluster for the charts, and shuts down in a fixed order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nsq_app::lifecycle::Tasks;

use nsq_app::http_client::HttpClient;

use crate::cluster::Cluster;
use crate::context::Context;
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
    #[error(transparent)]
    Listen(#[from] nsq_app::net::ListenError),
}

/// A running nsqadmin. Dropping it stops it without waiting; call
/// [`NsqAdmin::shutdown`] to wait for requests to finish.
#[derive(Debug)]
pub struct NsqAdmin {
    ctx: Arc<Context>,
    http_addr: SocketAddr,
    tasks: Tasks,
}

impl NsqAdmin {
    /// Check the options, bind `--http-address`, and start serving and
    /// sampling.
    pub async fn new(opts: Options) -> Result<Self, Error> {
        opts.validate()?;
        for flag in opts.unsupported() {
            tracing::warn!("{flag} is accepted but not supported by this build; it has no effect");
        }
        let (listener, http_addr) = nsq_app::net::bind(&opts.http_address).await?;
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
        let tasks = Tasks::default();
        let history = Arc::new(History::new(opts.history_interval.0));
        let ctx = Arc::new(Context {
            cluster: cluster.clone(),
            history: Arc::clone(&history),
            notifier: Notifier::new(
                opts.notification_http_endpoint.clone(),
                client,
                tasks.tracker.clone(),
            ),
            base: opts.base_prefix(),
            log_level: nsq_app::logging::LiveLogLevel::new(opts.log_level),
            opts,
        });
        tracing::info!("HTTP: listening on {http_addr}");
        tasks.spawn(|cancel, tracker| http::serve(listener, Arc::clone(&ctx), cancel, tracker));
        tasks.spawn(|cancel, _| history::run_sampler(cluster, history, cancel));
        Ok(NsqAdmin {
            ctx,
            http_addr,
            tasks,
        })
    }

    /// Hand over the process's log filter so `PUT /config/log_level`
    /// changes what is logged.
    pub fn set_log_handle(&self, handle: nsq_app::logging::LogHandle) {
        self.ctx.log_level.attach(handle);
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
        self.tasks.stop(SHUTDOWN_GRACE, "requests").await;
    }
}
