//! nsqd's HTTP API: routing, upstream's response conventions, and the
//! publishing, info, stats and metrics endpoints. Topic, channel and config
//! administration live in `http/admin.rs`.

mod admin;
mod config;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use nsq_app::http_server::{serve_connection, ServeConfig};
use nsq_protocol::{parse_mpub_body, ErrorCode, TopicName};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error};

use crate::nsqd::{Nsqd, PublishError};
use crate::options::TlsRequired;
use crate::stats::{StatsFilter, StatsRequest};
use crate::topic::PutError;

pub type HttpResponse = Response<Full<Bytes>>;

const JSON: &str = "application/json; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
/// go-nsq reads a bare JSON body only when it sees this header; otherwise it
/// expects the pre-1.0 wrapped format.
const NSQ_CONTENT_TYPE: &str = "X-NSQ-Content-Type";
const NSQ_V1: &str = "nsq; version=1.0";

/// How long an HTTPS client may take over its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(5);

/// Accept HTTP connections (HTTPS with `tls`) until nsqd shuts down.
pub(crate) async fn serve(nsqd: Arc<Nsqd>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let what = if tls.is_some() { "HTTPS" } else { "HTTP" };
    let config = ServeConfig {
        what,
        log_requests: true,
        timeouts: nsqd.opts.http_timeouts(),
    };
    nsq_app::net::accept_loop(&listener, &nsqd.cancel, what, |stream, remote| {
        let (tls, config, cancel) = (tls.clone(), config.clone(), nsqd.cancel.clone());
        let for_handler = nsqd.clone();
        let handler = move |secure| {
            let nsqd = for_handler.clone();
            move |req, _| handle_guarded(nsqd.clone(), req, secure)
        };
        nsqd.tracker.spawn(async move {
            match tls {
                None => serve_connection(stream, remote, cancel, config, handler(false)).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, remote, cancel, config, handler(true)).await
                        }
                        Ok(Err(e)) => debug!("HTTPS handshake: {e}"),
                        Err(_) => debug!("HTTPS handshake timed out"),
                    }
                }
            }
        });
    })
    .await;
}

/// What a handler returns: a response, or an error status and name.
pub type Reply = Result<HttpResponse, (StatusCode, &'static str)>;

/// A route: the methods it answers and its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Ping,
    Info,
    Pub,
    Mpub,
    Stats,
    Metrics,
    TopicCreate,
    TopicDelete,
    TopicEmpty,
    TopicPause,
    TopicUnpause,
    ChannelCreate,
    ChannelDelete,
    ChannelEmpty,
    ChannelPause,
    ChannelUnpause,
    /// Ours: server-side max attempts and the dead-letter topic.
    ChannelMaxAttempts,
    /// Ours: job channels' dispatch status.
    JobStatus,
    /// Ours: take over a replication peer's messages now.
    ReplicaTakeover,
    /// `/config/:opt`; the option is read from the path by the handler.
    Config,
}

fn route(path: &str) -> Option<(Route, &'static [Method])> {
    const GET: &[Method] = &[Method::GET];
    const POST: &[Method] = &[Method::POST];
    const GET_PUT: &[Method] = &[Method::GET, Method::PUT];
    Some(match path {
        "/ping" => (Route::Ping, GET),
        "/info" => (Route::Info, GET),
        "/pub" => (Route::Pub, POST),
        "/mpub" => (Route::Mpub, POST),
        "/stats" => (Route::Stats, GET),
        "/metrics" => (Route::Metrics, GET),
        "/topic/create" => (Route::TopicCreate, POST),
        "/topic/delete" => (Route::TopicDelete, POST),
        "/topic/empty" => (Route::TopicEmpty, POST),
        "/topic/pause" => (Route::TopicPause, POST),
        "/topic/unpause" => (Route::TopicUnpause, POST),
        "/channel/create" => (Route::ChannelCreate, POST),
        "/channel/delete" => (Route::ChannelDelete, POST),
        "/channel/empty" => (Route::ChannelEmpty, POST),
        "/channel/pause" => (Route::ChannelPause, POST),
        "/channel/unpause" => (Route::ChannelUnpause, POST),
        "/channel/max_attempts" => (Route::ChannelMaxAttempts, POST),
        "/job/status" => (Route::JobStatus, GET),
        "/replica/takeover" => (Route::ReplicaTakeover, POST),
        // httprouter's `:opt` matches one non-empty path segment.
        p if config_option(p).is_some() => (Route::Config, GET_PUT),
        _ => return None,
    })
}

/// The `:opt` of `/config/:opt`.
fn config_option(path: &str) -> Option<&str> {
    path.strip_prefix("/config/")
        .filter(|o| !o.is_empty() && !o.contains('/'))
}

/// Run the handler in its own task so a panic becomes upstream's 500
/// `INTERNAL_ERROR` instead of a dropped connection.
async fn handle_guarded(nsqd: Arc<Nsqd>, req: Request<Incoming>, secure: bool) -> HttpResponse {
    if !secure && nsqd.opts.tls_required() == TlsRequired::Yes {
        return tls_required(&nsqd);
    }
    match tokio::spawn(async move { handle(&nsqd, req).await }).await {
        Ok(resp) => resp,
        Err(e) => {
            // Cancelled only when the runtime shuts down; a panic is a bug.
            if e.is_panic() {
                error!("panic in HTTP handler - {e}");
            } else {
                debug!("HTTP handler cancelled - {e}");
            }
            error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
        }
    }
}

async fn handle(nsqd: &Arc<Nsqd>, req: Request<Incoming>) -> HttpResponse {
    let Some((route, methods)) = route(req.uri().path()) else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND");
    };
    if !methods.contains(req.method()) {
        let mut allowed: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
        allowed.push("OPTIONS");
        allowed.sort_unstable();
        let allow = allowed.join(", ");
        // httprouter answers OPTIONS itself: 200, an Allow header, nothing
        // else (no NSQ content-type header, no body).
        let mut resp = if req.method() == Method::OPTIONS {
            Response::new(Full::new(Bytes::new()))
        } else {
            error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
        };
        if let Ok(v) = HeaderValue::from_str(&allow) {
            resp.headers_mut().insert(ALLOW, v);
        }
        return resp;
    }
    let result = match route {
        Route::Ping => Ok(ping(nsqd)),
        Route::Info => Ok(info(nsqd)),
        Route::Pub => publish(nsqd, req).await,
        Route::Mpub => mpub(nsqd, req).await,
        Route::Stats => stats(nsqd, &req),
        Route::Metrics => Ok(metrics(nsqd)),
        Route::TopicCreate => admin::create_topic(nsqd, &req),
        Route::TopicDelete => admin::delete_topic(nsqd, &req),
        Route::TopicEmpty => admin::empty_topic(nsqd, &req),
        Route::TopicPause => admin::pause_topic(nsqd, &req, true),
        Route::TopicUnpause => admin::pause_topic(nsqd, &req, false),
        Route::ChannelCreate => admin::create_channel(nsqd, &req),
        Route::ChannelDelete => admin::delete_channel(nsqd, &req),
        Route::ChannelEmpty => admin::empty_channel(nsqd, &req),
        Route::ChannelPause => admin::pause_channel(nsqd, &req, true),
        Route::ChannelUnpause => admin::pause_channel(nsqd, &req, false),
        Route::ChannelMaxAttempts => admin::channel_max_attempts(nsqd, &req),
        Route::JobStatus => job_status(nsqd, &req),
        Route::ReplicaTakeover => admin::replica_takeover(nsqd, &req),
        Route::Config => {
            let opt = config_option(req.uri().path())
                .unwrap_or_default()
                .to_string();
            config::config(nsqd, req, &opt).await
        }
    };
    result.unwrap_or_else(|(status, name)| error(status, name))
}

/// Upstream's answer on the plain HTTP port under `--tls-required`: every
/// path, 403, and where HTTPS listens (its body keeps Go's spacing).
fn tls_required(nsqd: &Nsqd) -> HttpResponse {
    let port = nsqd.https_addr.map_or(0, |a| a.port());
    let body = format!(r#"{{"message": "TLS_REQUIRED", "https_port": {port}}}"#);
    with_nsq_header(with_type(StatusCode::FORBIDDEN, JSON, Bytes::from(body)))
}

fn with_nsq_header(mut resp: HttpResponse) -> HttpResponse {
    resp.headers_mut()
        .insert(NSQ_CONTENT_TYPE, HeaderValue::from_static(NSQ_V1));
    resp
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> HttpResponse {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `{"message":"NAME"}` with the status, as upstream answers every error.
pub fn error(status: StatusCode, name: &str) -> HttpResponse {
    let body = serde_json::to_vec(&serde_json::json!({ "message": name })).unwrap_or_default();
    with_nsq_header(with_type(status, JSON, Bytes::from(body)))
}

/// A bare JSON body (no wrapper), status 200.
pub fn json<T: Serialize>(value: &T) -> HttpResponse {
    let body = serde_json::to_vec(value).unwrap_or_default();
    with_nsq_header(with_type(StatusCode::OK, JSON, Bytes::from(body)))
}

/// A plain-text body such as `OK`, status 200.
pub fn text(body: &'static str) -> HttpResponse {
    with_nsq_header(with_type(
        StatusCode::OK,
        TEXT,
        Bytes::from_static(body.as_bytes()),
    ))
}

/// Success with no data: 200, empty body, no content type.
pub fn empty() -> HttpResponse {
    with_nsq_header(Response::new(Full::new(Bytes::new())))
}

fn ping(nsqd: &Nsqd) -> HttpResponse {
    // /ping is the one endpoint without the NSQ content-type header, and it
    // answers in plain text even when unhealthy (upstream's PlainText).
    match nsqd.health() {
        Ok(()) => with_type(StatusCode::OK, TEXT, Bytes::from_static(b"OK")),
        Err(e) => with_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            Bytes::from(format!("NOK - {e}")),
        ),
    }
}

/// `include_clients`/`include_mem`: `true`/`1` and `false`/`0`; anything
/// else, or absent, means true.
fn bool_param(q: &Query, name: &str) -> bool {
    !matches!(q.get(name), Some("false") | Some("0"))
}

/// `GET /job/status[?job=NAME]`: `{"jobs":[...]}`, one entry per job
/// channel (see `channel/jobs.rs` for the fields).
fn job_status(nsqd: &Nsqd, req: &Request<Incoming>) -> Reply {
    let q = Query::parse(req)?;
    let job = q.get("job").filter(|j| !j.is_empty());
    Ok(json(&serde_json::json!({ "jobs": nsqd.job_status(job) })))
}

fn stats(nsqd: &Nsqd, req: &Request<Incoming>) -> Reply {
    let q = Query::parse(req)?;
    let r = StatsRequest {
        json: q.get("format") == Some("json"),
        filter: StatsFilter {
            topic: q.get("topic").unwrap_or_default().to_string(),
            channel: q.get("channel").unwrap_or_default().to_string(),
            include_clients: bool_param(&q, "include_clients"),
        },
        include_mem: bool_param(&q, "include_mem"),
    };
    if r.json {
        Ok(json(&crate::stats::to_json(nsqd, &r)))
    } else {
        Ok(with_nsq_header(with_type(
            StatusCode::OK,
            TEXT,
            Bytes::from(crate::stats::to_text(nsqd, &r)),
        )))
    }
}

fn metrics(nsqd: &Nsqd) -> HttpResponse {
    with_nsq_header(with_type(
        StatusCode::OK,
        crate::metrics::CONTENT_TYPE,
        Bytes::from(crate::metrics::render(nsqd)),
    ))
}

#[derive(Serialize)]
struct Info {
    version: &'static str,
    broadcast_address: String,
    hostname: String,
    http_port: i64,
    tcp_port: i64,
    start_time: i64,
    /// Go durations serialise as integer nanoseconds.
    max_heartbeat_interval: i64,
    max_output_buffer_size: i64,
    max_output_buffer_timeout: i64,
    max_deflate_level: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    topology_zone: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    topology_region: String,
}

fn info(nsqd: &Nsqd) -> HttpResponse {
    let o = &nsqd.opts;
    json(&Info {
        version: nsq_protocol::VERSION,
        broadcast_address: o.broadcast_address(),
        hostname: nsq_app::os_hostname(),
        http_port: nsqd.http_addr().map_or(-1, |a| i64::from(a.port())),
        tcp_port: i64::from(nsqd.tcp_addr().port()),
        start_time: nsqd.start_time,
        max_heartbeat_interval: o.max_heartbeat_interval.as_nanos_i64(),
        max_output_buffer_size: o.max_output_buffer_size,
        max_output_buffer_timeout: o.max_output_buffer_timeout.as_nanos_i64(),
        max_deflate_level: o.max_deflate_level,
        topology_zone: o.topology_zone.clone(),
        topology_region: o.topology_region.clone(),
    })
}

/// The query string's parameters; the first value of a name wins.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(req: &Request<Incoming>) -> Result<Query, (StatusCode, &'static str)> {
        parse_query(req.uri().query().unwrap_or(""))
            .map(Query)
            .ok_or((StatusCode::BAD_REQUEST, "INVALID_REQUEST"))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `topic`, present and valid, with upstream's error names.
    pub fn topic(&self) -> Result<TopicName, (StatusCode, &'static str)> {
        let raw = self
            .get("topic")
            .ok_or((StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC"))?;
        raw.parse()
            .map_err(|_| (StatusCode::BAD_REQUEST, "INVALID_TOPIC"))
    }
}

/// Parse `a=1&b=x%20y` like Go's `url.ParseQuery`; `None` on a bad escape
/// or a value that is not UTF-8.
pub fn parse_query(q: &str) -> Option<Vec<(String, String)>> {
    let utf8 = |b: Vec<u8>| String::from_utf8(b).ok();
    (nsq_app::url::parse_query(q)?.into_iter())
        .map(|(k, v)| Some((utf8(k)?, utf8(v)?)))
        .collect()
}

fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Read the body, refusing more than `max` bytes with `too_big`.
pub(crate) async fn read_body(
    req: Request<Incoming>,
    max: u64,
    too_big: &'static str,
) -> Result<Bytes, (StatusCode, &'static str)> {
    if declared_length(&req).is_some_and(|n| n > max) {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, too_big));
    }
    let limited = Limited::new(req.into_body(), max as usize + 1);
    let body = limited
        .collect()
        .await
        .map_err(|e| {
            // Past the limit is "too big" (upstream's LimitReader stops
            // there); anything else is a broken body.
            if e.downcast_ref::<LengthLimitError>().is_some() {
                (StatusCode::PAYLOAD_TOO_LARGE, too_big)
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
            }
        })?
        .to_bytes();
    if body.len() as u64 > max {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, too_big));
    }
    Ok(body)
}

/// Upstream answers 503 EXITING when the topic is going away; a disk that
/// cannot take the messages is a 500, like any other internal failure.
fn put_error(e: PublishError) -> (StatusCode, &'static str) {
    match e {
        PublishError::Put(PutError::Exiting) => (StatusCode::SERVICE_UNAVAILABLE, "EXITING"),
        PublishError::Replica(_) => (StatusCode::SERVICE_UNAVAILABLE, "REPLICAS_UNAVAILABLE"),
        PublishError::Put(PutError::QueueFull) | PublishError::Disk(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
        }
    }
}

async fn publish(nsqd: &Arc<Nsqd>, req: Request<Incoming>) -> Reply {
    // Upstream reads and checks the body before it looks at the query.
    let query = Query::parse(&req);
    let max = nsqd.opts.max_msg_size as u64;
    let body = read_body(req, max, "MSG_TOO_BIG").await?;
    if body.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "MSG_EMPTY"));
    }
    let query = query?;
    let topic = nsqd.get_topic(&query.topic()?);
    let defer = match query.get("defer") {
        None => None,
        Some(raw) => {
            let ms: i64 = raw
                .parse()
                .map_err(|_| (StatusCode::BAD_REQUEST, "INVALID_DEFER"))?;
            let max_ms = nsqd.opts.max_req_timeout.as_millis() as i64;
            if !(0..=max_ms).contains(&ms) {
                return Err((StatusCode::BAD_REQUEST, "INVALID_DEFER"));
            }
            Some(Duration::from_millis(ms as u64))
        }
    };
    nsqd.publish(&topic, vec![body], defer)
        .await
        .map_err(put_error)?;
    Ok(text("OK"))
}

async fn mpub(nsqd: &Arc<Nsqd>, req: Request<Incoming>) -> Reply {
    // Upstream's order: the declared length, then the query and topic (which
    // is created), then the body as it is read.
    let limits = nsqd.opts.limits();
    if declared_length(&req).is_some_and(|n| n > limits.max_body_size) {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_BIG"));
    }
    let query = Query::parse(&req)?;
    let topic = nsqd.get_topic(&query.topic()?);
    let body = read_body(req, limits.max_body_size, "BODY_TOO_BIG").await?;
    // Upstream: true/1 binary, false/0 text, absent text, anything else binary.
    let binary = !matches!(query.get("binary"), None | Some("false") | Some("0"));
    let bodies = if binary {
        parse_mpub_body(&body, &limits).map_err(|e| {
            let name = match e.code {
                ErrorCode::BadBody => "BAD_BODY",
                _ => "BAD_MESSAGE",
            };
            (StatusCode::PAYLOAD_TOO_LARGE, name)
        })?
    } else {
        let mut bodies = Vec::new();
        let mut at = 0;
        for line in body.split(|&b| b == b'\n') {
            let start = at;
            at += line.len() + 1;
            if line.is_empty() {
                continue;
            }
            if line.len() as u64 > limits.max_msg_size {
                return Err((StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"));
            }
            bodies.push(body.slice(start..start + line.len()));
        }
        bodies.into()
    };
    if !bodies.is_empty() {
        nsqd.publish(&topic, bodies, None)
            .await
            .map_err(put_error)?;
    }
    Ok(text("OK"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_like_go() {
        assert_eq!(
            parse_query("topic=a&defer=10&topic=b").unwrap(),
            vec![
                ("topic".into(), "a".into()),
                ("defer".into(), "10".into()),
                ("topic".into(), "b".into())
            ]
        );
        assert_eq!(
            parse_query("a=x%20y+z").unwrap(),
            vec![("a".into(), "x y z".into())]
        );
        assert_eq!(
            parse_query("flag").unwrap(),
            vec![("flag".into(), "".into())]
        );
        assert!(parse_query("a=%zz").is_none());
        assert!(parse_query("a=%2").is_none());
        assert!(parse_query("a=1;b=2").is_none());
        assert!(parse_query("").unwrap().is_empty());
    }
}
