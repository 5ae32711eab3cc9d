//! The HTTP serving every daemon shares: accept connections until
//! cancelled, serve each on its own task with hyper's HTTP/1 (header names
//! in canonical case, as Go writes them: some tools compare them), and on
//! shutdown let each connection finish the request in progress.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http_timeouts::HttpTimeouts;

/// How a daemon's HTTP side is served.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `HTTP` or `HTTPS`, for log lines.
    pub what: &'static str,
    /// Log every request (see `request_log.rs`), as upstream's nsqlookupd
    /// and nsqadmin do.
    pub log_requests: bool,
    /// Header-read and idle limits (see `http_timeouts.rs`).
    pub timeouts: HttpTimeouts,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            what: "HTTP",
            log_requests: false,
            timeouts: HttpTimeouts::default(),
        }
    }
}

/// Accept connections on `listener` until `cancel` fires, each served by
/// `handler` on a task of `tracker`.
pub async fn serve<H, F>(
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: TaskTracker,
    config: ServeConfig,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    crate::net::accept_loop(&listener, &cancel, config.what, |stream, remote| {
        let conn = serve_connection(
            stream,
            remote,
            cancel.clone(),
            config.clone(),
            handler.clone(),
        );
        tracker.spawn(conn);
    })
    .await;
}

/// Serve one connection (plain, or already through TLS) until it closes, or
/// until `cancel` fires and its request in progress is answered.
pub async fn serve_connection<S, H, F>(
    stream: S,
    remote: SocketAddr,
    cancel: CancellationToken,
    config: ServeConfig,
    handler: H,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let log = config.log_requests;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        async move {
            let start = Instant::now();
            let (method, uri) = (req.method().clone(), req.uri().clone());
            let resp = handler(req, remote).await;
            if log {
                let status = resp.status().as_u16();
                crate::request_log::log_request(status, &method, &uri, remote, start.elapsed());
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let (stream, idle) = config.timeouts.watch(stream);
    let conn = (config.timeouts.builder())
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = idle.expired() => Ok(()),
    };
    if let Err(e) = result {
        tracing::debug!("{}: connection from {remote}: {e}", config.what);
    }
}
