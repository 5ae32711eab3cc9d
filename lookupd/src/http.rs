//! The HTTP API (port 4161): discovery for consumers and nsqadmin, and
//! manual edits of the registration DB, with upstream's status codes, error
//! names, headers and JSON shapes. Routing lives in `router`.

use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, LOCATION};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nsq_app::http_timeouts::HttpTimeouts;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use nsq_protocol::names::is_valid_name;

use crate::json;
use crate::query::Query;
use crate::registration_db::{PeerInfo, Registration, Stamp};
use crate::router::{route, Endpoint, Routed};
use crate::server::Context;

const JSON_TYPE: &str = "application/json; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";
const HTML_TYPE: &str = "text/html; charset=utf-8";
const NSQ_CONTENT_TYPE: &str = "x-nsq-content-type";
const NSQ_V1: &str = "nsq; version=1.0";

/// What a handler answers, before it becomes a response.
#[derive(Debug)]
enum Reply {
    /// Upstream's PlainText decorator: no V1 header.
    Text(&'static str),
    /// `/metrics`: the Prometheus text format.
    Metrics(String),
    /// V1: bare JSON.
    Json(Vec<u8>),
    /// V1: 200 with an empty body.
    Empty,
    /// V1: `{"message":"<NAME>"}` with this status.
    Error(StatusCode, &'static str),
}

fn response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp
}

fn set(resp: &mut Response<Full<Bytes>>, name: impl hyper::header::IntoHeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

impl Reply {
    fn into_response(self) -> Response<Full<Bytes>> {
        let (mut resp, content_type) = match self {
            Reply::Text(s) => {
                let mut resp = response(StatusCode::OK, s);
                set(&mut resp, CONTENT_TYPE, TEXT_TYPE);
                return resp;
            }
            Reply::Metrics(text) => {
                let mut resp = response(StatusCode::OK, text);
                set(&mut resp, CONTENT_TYPE, nsq_app::prometheus::CONTENT_TYPE);
                return resp;
            }
            Reply::Json(body) => (response(StatusCode::OK, body), Some(JSON_TYPE)),
            Reply::Empty => (response(StatusCode::OK, Bytes::new()), None),
            Reply::Error(code, name) => (
                response(code, format!("{{\"message\":\"{name}\"}}")),
                Some(JSON_TYPE),
            ),
        };
        if let Some(ct) = content_type {
            set(&mut resp, CONTENT_TYPE, ct);
        }
        set(&mut resp, NSQ_CONTENT_TYPE, NSQ_V1);
        resp
    }
}

fn bad_request(name: &'static str) -> Reply {
    Reply::Error(StatusCode::BAD_REQUEST, name)
}

/// Turn a request into a response. Everything here is synchronous (short
/// DB sections), which lets a panic be caught and answered with 500.
fn handle(
    ctx: &Context,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    match route(method.as_str(), path) {
        Routed::Handle(endpoint) => {
            let reply = catch_unwind(AssertUnwindSafe(|| endpoint_reply(ctx, endpoint, query)))
                .unwrap_or_else(|_| {
                    tracing::error!("panic in HTTP handler for {path}");
                    Reply::Error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
                });
            reply.into_response()
        }
        Routed::Redirect(to) => {
            let is_get = *method == Method::GET;
            let (code, text) = if is_get {
                (StatusCode::MOVED_PERMANENTLY, "Moved Permanently")
            } else {
                (StatusCode::TEMPORARY_REDIRECT, "Temporary Redirect")
            };
            let location = match query {
                Some(q) if !q.is_empty() => format!("{to}?{q}"),
                _ => to.to_owned(),
            };
            let body = if is_get {
                format!("<a href=\"{}\">{text}</a>.\n\n", html_escape(&location))
            } else {
                String::new()
            };
            let mut resp = response(code, body);
            set(&mut resp, LOCATION, &location);
            if is_get || *method == Method::HEAD {
                set(&mut resp, CONTENT_TYPE, HTML_TYPE);
            }
            resp
        }
        Routed::Options(allow) => {
            let mut resp = response(StatusCode::OK, Bytes::new());
            set(&mut resp, ALLOW, &allow);
            resp
        }
        Routed::MethodNotAllowed(allow) => {
            let mut resp =
                Reply::Error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED").into_response();
            set(&mut resp, ALLOW, &allow);
            resp
        }
        Routed::NotFound => Reply::Error(StatusCode::NOT_FOUND, "NOT_FOUND").into_response(),
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Serialize)]
struct Info {
    version: &'static str,
}

#[derive(Serialize)]
struct Topics {
    topics: Vec<String>,
}

#[derive(Serialize)]
struct Channels {
    channels: Vec<String>,
}

#[derive(Serialize)]
struct LookupBody<'a> {
    channels: Vec<String>,
    producers: Vec<&'a PeerInfo>,
}

/// A /nodes entry: the peer fields, then `tombstones` and `topics`, which
/// are parallel arrays (nsqadmin indexes one by the other).
#[derive(Serialize)]
struct NodeBody<'a> {
    #[serde(flatten)]
    info: &'a PeerInfo,
    tombstones: Vec<bool>,
    topics: Vec<String>,
}

#[derive(Serialize)]
struct Nodes<'a> {
    producers: Vec<NodeBody<'a>>,
}

/// A /debug entry; keys in the sorted order of upstream's Go map.
#[derive(Serialize)]
struct DebugBody<'a> {
    broadcast_address: &'a str,
    hostname: &'a str,
    http_port: i64,
    id: &'a str,
    last_update: i64,
    tcp_port: i64,
    tombstoned: bool,
    tombstoned_at: i64,
    version: &'a str,
}

/// Upstream's `GetTopicChannelArgs`: both names present and valid.
fn topic_channel_args(q: &Query) -> Result<(String, String), Reply> {
    let topic = q.get("topic").ok_or(bad_request("MISSING_ARG_TOPIC"))?;
    if !is_valid_name(topic) {
        return Err(bad_request("INVALID_ARG_TOPIC"));
    }
    let channel = q.get("channel").ok_or(bad_request("MISSING_ARG_CHANNEL"))?;
    if !is_valid_name(channel) {
        return Err(bad_request("INVALID_ARG_CHANNEL"));
    }
    // Valid names are ASCII.
    Ok((lossy(topic), lossy(channel)))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn endpoint_reply(ctx: &Context, endpoint: Endpoint, raw_query: Option<&str>) -> Reply {
    let db = &ctx.db;
    // Only the handlers that read parameters parse the query, so only they
    // can answer INVALID_REQUEST, as upstream.
    let query =
        || Query::parse(raw_query.unwrap_or_default()).ok_or(bad_request("INVALID_REQUEST"));
    let result = (|| -> Result<Reply, Reply> {
        Ok(match endpoint {
            Endpoint::Ping => Reply::Text("OK"),
            Endpoint::Info => Reply::Json(json::to_vec(&Info {
                version: nsq_protocol::VERSION,
            })),
            Endpoint::Topics => Reply::Json(json::to_vec(&Topics {
                topics: db.topics(),
            })),
            Endpoint::Channels => {
                let q = query()?;
                let topic = q.get("topic").ok_or(bad_request("MISSING_ARG_TOPIC"))?;
                Reply::Json(json::to_vec(&Channels {
                    channels: db.channels(&lossy(topic)),
                }))
            }
            Endpoint::Lookup => {
                let q = query()?;
                let topic = q.get("topic").ok_or(bad_request("MISSING_ARG_TOPIC"))?;
                let found = db.lookup(&lossy(topic), Stamp::now());
                ctx.metrics.lookup(found.is_some());
                let found = found.ok_or(Reply::Error(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))?;
                Reply::Json(json::to_vec(&LookupBody {
                    channels: found.channels,
                    producers: found.producers.iter().map(|p| &**p).collect(),
                }))
            }
            Endpoint::Metrics => Reply::Metrics(crate::metrics::render(ctx)),
            Endpoint::Nodes => {
                let nodes = db.nodes(Stamp::now());
                Reply::Json(json::to_vec(&Nodes {
                    producers: nodes
                        .iter()
                        .map(|n| NodeBody {
                            info: &n.info,
                            tombstones: n.tombstones.clone(),
                            topics: n.topics.clone(),
                        })
                        .collect(),
                }))
            }
            Endpoint::Debug => {
                let debug = db.debug();
                let body: std::collections::BTreeMap<&str, Vec<DebugBody<'_>>> = debug
                    .iter()
                    .map(|(key, producers)| {
                        let list = producers
                            .iter()
                            .map(|p| DebugBody {
                                broadcast_address: &p.info.broadcast_address,
                                hostname: &p.info.hostname,
                                http_port: p.info.http_port,
                                id: &p.id,
                                last_update: p.last_update,
                                tcp_port: p.info.tcp_port,
                                tombstoned: p.tombstoned,
                                tombstoned_at: p.tombstoned_at,
                                version: &p.info.version,
                            })
                            .collect();
                        (key.as_str(), list)
                    })
                    .collect();
                Reply::Json(json::to_vec(&body))
            }
            Endpoint::TopicCreate => {
                let q = query()?;
                let topic = q.get("topic").ok_or(bad_request("MISSING_ARG_TOPIC"))?;
                if !is_valid_name(topic) {
                    return Err(bad_request("INVALID_ARG_TOPIC"));
                }
                let topic = lossy(topic);
                tracing::info!("DB: adding topic({topic})");
                db.add_registration(Registration::topic(&topic));
                Reply::Empty
            }
            Endpoint::TopicDelete => {
                let q = query()?;
                let topic = q.get("topic").ok_or(bad_request("MISSING_ARG_TOPIC"))?;
                // Not validated, as upstream: `*` deletes every topic.
                for reg in db.delete_topic(&lossy(topic)) {
                    if reg.category.as_str() == "channel" {
                        tracing::info!(
                            "DB: removing channel({}) from topic({})",
                            reg.subkey,
                            reg.key
                        );
                    } else {
                        tracing::info!("DB: removing topic({})", reg.key);
                    }
                }
                Reply::Empty
            }
            Endpoint::ChannelCreate => {
                let (topic, channel) = topic_channel_args(&query()?)?;
                tracing::info!("DB: adding channel({channel}) in topic({topic})");
                db.add_registration(Registration::channel(&topic, &channel));
                db.add_registration(Registration::topic(&topic));
                Reply::Empty
            }
            Endpoint::ChannelDelete => {
                let (topic, channel) = topic_channel_args(&query()?)?;
                if !db.delete_channel(&topic, &channel) {
                    return Err(Reply::Error(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"));
                }
                tracing::info!("DB: removing channel({channel}) from topic({topic})");
                Reply::Empty
            }
            Endpoint::TopicTombstone => {
                let q = query()?;
                let topic = q.get("topic").ok_or(bad_request("MISSING_ARG_TOPIC"))?;
                let node = q.get("node").ok_or(bad_request("MISSING_ARG_NODE"))?;
                let (topic, node) = (lossy(topic), lossy(node));
                tracing::info!("DB: setting tombstone for producer@{node} of topic({topic})");
                db.tombstone(&topic, &node, Stamp::now());
                Reply::Empty
            }
        })
    })();
    result.unwrap_or_else(|e| e)
}

/// Accept HTTP connections until cancelled; each connection is a task on
/// `tracker` and finishes its in-progress request on shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    timeouts: HttpTimeouts,
) {
    nsq_app::net::accept_loop(&listener, &cancel, "HTTP", |stream, remote| {
        let ctx = Arc::clone(&ctx);
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let ctx = Arc::clone(&ctx);
                async move {
                    let start = Instant::now();
                    let resp = handle(&ctx, req.method(), req.uri().path(), req.uri().query());
                    nsq_app::request_log::log_request(
                        resp.status().as_u16(),
                        req.method(),
                        req.uri(),
                        remote,
                        start.elapsed(),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let (stream, idle) = timeouts.watch(stream);
            // Title case puts `X-Nsq-Content-Type` on the wire as Go does.
            let conn = timeouts
                .builder()
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
                tracing::debug!("HTTP: connection from {remote}: {e}");
            }
        });
    })
    .await;
}
