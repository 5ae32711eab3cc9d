//! nsqadmin's HTTP side (port 4171): serves connections and dispatches each
//! request (see `routes.rs`) to its handler: `assets` (pages), `api`
//! (upstream's `/api/*`, ours: live overview and charts), `config`, `jobs`.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use nsq_app::http_server::ServeConfig;

use crate::api;
use crate::assets;
use crate::context::Context;
use crate::notify::Requester;
use crate::routes::{parse_query, route, segments_below, Endpoint, Reply, Req, Routed, MAX_BODY};

async fn handle(ctx: &Context, req: Request<Incoming>, remote: SocketAddr) -> Reply {
    let path = req.uri().path().to_owned();
    let Some(segments) = segments_below(&ctx.base, &path) else {
        return Reply::error(StatusCode::NOT_FOUND, "NOT_FOUND");
    };
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let endpoint = match route(req.method().as_str(), &segs) {
        Routed::Handle(e) => e,
        Routed::NotFound => return Reply::error(StatusCode::NOT_FOUND, "NOT_FOUND"),
        Routed::MethodNotAllowed(allow) => return Reply::MethodNotAllowed(allow),
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or(path);
    let query = parse_query(req.uri().query());
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_BIG"),
    };
    if method != Method::GET && method != Method::HEAD {
        if let Err(refused) = crate::csrf::check(&method, &headers, !body.is_empty()) {
            return Reply::error(refused.status(), refused.message());
        }
    }
    let who = Requester::from_request(&headers, &path_and_query, &remote.to_string());
    let req = Req {
        method,
        segments,
        query,
        headers,
        body,
        who,
    };
    match endpoint {
        Endpoint::Ping => Reply::Text("OK"),
        Endpoint::Metrics => Reply::Metrics(crate::metrics::render(ctx.cluster.counters())),
        Endpoint::Page => assets::index(ctx, ctx.is_admin(&req.headers)),
        Endpoint::Asset => assets::asset(&req.segments[1]),
        Endpoint::Live => api::live(ctx),
        Endpoint::History => api::history(ctx, &req),
        Endpoint::Config => crate::config::handle(ctx, &req, remote.ip()),
        Endpoint::Jobs => crate::jobs::list(ctx, &req).await,
        e if req.method == Method::GET => api::read(ctx, e, &req).await,
        e => {
            if !ctx.is_admin(&req.headers) {
                return Reply::error(StatusCode::FORBIDDEN, "FORBIDDEN");
            }
            let reply = api::act(ctx, e, &req).await;
            let ok = !matches!(reply, Reply::Error(..) | Reply::MethodNotAllowed(_));
            ctx.cluster.counters().action(action_name(e, &req.body), ok);
            reply
        }
    }
}

/// The `action` label of an action endpoint: a fixed set, whatever the
/// body says, so a client cannot mint series.
fn action_name(e: Endpoint, body: &[u8]) -> &'static str {
    let verb = || {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        match v.get("action").and_then(|a| a.as_str()) {
            Some("pause") => "pause",
            Some("unpause") => "unpause",
            Some("empty") => "empty",
            _ => "other",
        }
    };
    match e {
        Endpoint::CreateTopicChannel => "create",
        Endpoint::TopicAction | Endpoint::ChannelAction => verb(),
        Endpoint::DeleteTopic => "delete_topic",
        Endpoint::DeleteChannel => "delete_channel",
        Endpoint::TombstoneTopicProducer => "tombstone",
        Endpoint::JobAction => "job_action",
        _ => "other",
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let config = ServeConfig {
        log_requests: true,
        timeouts: ctx.opts.http_timeouts(),
        ..ServeConfig::default()
    };
    nsq_app::http_server::serve(listener, cancel, tracker, config, move |req, remote| {
        let ctx = Arc::clone(&ctx);
        async move { handle(&ctx, req, remote).await.into_response() }
    })
    .await;
}
