//! nsqadmin's requests, replies and route table: what a handler is given
//! ([`Req`]), what it answers ([`Reply`]), and which [`Endpoint`] a method
//! and path reach under `--base-path`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Response, StatusCode};

use crate::notify::Requester;

const JSON_TYPE: &str = "application/json; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";
/// The largest request body accepted (upstream's limit for API bodies).
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// What a handler answers, before it becomes a response.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Upstream's PlainText decorator: no V1 header.
    Text(&'static str),
    /// V1: 200 with a JSON body.
    Json(Vec<u8>),
    /// V1: `{"message":"..."}` with this status.
    Error(StatusCode, String),
    /// A page: the dashboard's one HTML document.
    Html(String),
    /// An embedded file.
    Asset(&'static str, &'static [u8]),
    /// 405 with the path's methods in `Allow`.
    MethodNotAllowed(String),
    /// `/metrics`: the Prometheus text format.
    Metrics(String),
}

impl Reply {
    pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Reply {
        Reply::Error(status, message.into())
    }

    /// 502, as upstream answers when no daemon could be asked.
    pub(crate) fn upstream(err: impl std::fmt::Display) -> Reply {
        Reply::Error(StatusCode::BAD_GATEWAY, format!("UPSTREAM_ERROR: {err}"))
    }

    pub(crate) fn json<T: serde::Serialize>(value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply::Json(body),
            Err(e) => {
                tracing::error!("cannot encode a reply: {e}");
                Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
            }
        }
    }

    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let (status, body, content_type, v1) = match self {
            Reply::Text(s) => (
                StatusCode::OK,
                Bytes::from_static(s.as_bytes()),
                TEXT_TYPE,
                false,
            ),
            Reply::Json(b) => (StatusCode::OK, Bytes::from(b), JSON_TYPE, true),
            Reply::Error(status, message) => {
                let body = serde_json::json!({ "message": message }).to_string();
                (status, Bytes::from(body), JSON_TYPE, true)
            }
            Reply::Html(s) => (StatusCode::OK, Bytes::from(s), "text/html", false),
            Reply::Metrics(s) => (
                StatusCode::OK,
                Bytes::from(s),
                nsq_app::prometheus::CONTENT_TYPE,
                false,
            ),
            Reply::Asset(ct, b) => (StatusCode::OK, Bytes::from_static(b), ct, false),
            Reply::MethodNotAllowed(allow) => {
                let mut resp = Reply::error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
                    .into_response();
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    resp.headers_mut().insert(ALLOW, v);
                }
                return resp;
            }
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if v1 {
            h.insert(
                "x-nsq-content-type",
                HeaderValue::from_static("nsq; version=1.0"),
            );
        }
        resp
    }
}

/// A request as handlers see it: decoded path segments (below the base
/// path), query, headers, body.
#[derive(Debug)]
pub(crate) struct Req {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub who: Requester,
}

impl Req {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decode `%XX` escapes (and, in queries, `+` as space), leaving bad ones
/// as written; `None` when the result is not UTF-8.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    String::from_utf8(nsq_app::url::unescape(s, plus_is_space, false)?).ok()
}

pub(crate) fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// What a path is, by method: every endpoint the dashboard serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Ping,
    Page,
    Asset,
    Topics,
    CreateTopicChannel,
    Topic,
    TopicAction,
    DeleteTopic,
    Channel,
    ChannelAction,
    DeleteChannel,
    Nodes,
    Node,
    TombstoneTopicProducer,
    Counter,
    Live,
    History,
    Config,
    Jobs,
    JobAction,
    Metrics,
}

/// The methods and endpoints at a path (segments below the base path).
fn endpoints_at(segs: &[&str]) -> &'static [(&'static str, Endpoint)] {
    use Endpoint::*;
    match segs {
        ["ping"] => &[("GET", Ping)],
        ["metrics"] => &[("GET", Metrics)],
        []
        | ["topics"]
        | ["topics", _]
        | ["topics", _, _]
        | ["nodes"]
        | ["nodes", _]
        | ["counter"]
        | ["lookup"]
        | ["jobs"] => &[("GET", Page)],
        ["static", _] | ["fonts", _] => &[("GET", Asset)],
        ["api", "topics"] => &[("GET", Topics), ("POST", CreateTopicChannel)],
        ["api", "topics", _] => &[
            ("GET", Topic),
            ("POST", TopicAction),
            ("DELETE", DeleteTopic),
        ],
        ["api", "topics", _, _] => &[
            ("GET", Channel),
            ("POST", ChannelAction),
            ("DELETE", DeleteChannel),
        ],
        ["api", "nodes"] => &[("GET", Nodes)],
        ["api", "nodes", _] => &[("GET", Node), ("DELETE", TombstoneTopicProducer)],
        ["api", "counter"] => &[("GET", Counter)],
        ["config", _] => &[("GET", Config), ("PUT", Config)],
        ["api", "live"] => &[("GET", Live)],
        ["api", "jobs"] => &[("GET", Jobs)],
        ["api", "jobs", _] => &[("POST", JobAction)],
        ["api", "history", "topics", _] | ["api", "history", "topics", _, _] => &[("GET", History)],
        _ => &[],
    }
}

pub(crate) enum Routed {
    Handle(Endpoint),
    MethodNotAllowed(String),
    NotFound,
}

pub(crate) fn route(method: &str, segs: &[&str]) -> Routed {
    let at = endpoints_at(segs);
    if let Some((_, e)) = at.iter().find(|(m, _)| *m == method) {
        return Routed::Handle(*e);
    }
    if at.is_empty() {
        return Routed::NotFound;
    }
    let mut allow: Vec<&str> = at.iter().map(|(m, _)| *m).collect();
    allow.push("OPTIONS");
    allow.sort_unstable();
    Routed::MethodNotAllowed(allow.join(", "))
}

/// The path's segments below `base` (decoded), or `None` when the path is
/// not under it.
pub(crate) fn segments_below(base: &str, path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix(base)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    rest.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(method: &str, path: &str) -> Option<Endpoint> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match route(method, &segs) {
            Routed::Handle(e) => Some(e),
            _ => None,
        }
    }

    #[test]
    fn routes_upstreams_paths() {
        assert_eq!(routed("GET", "/"), Some(Endpoint::Page));
        assert_eq!(routed("GET", "/topics/t/c"), Some(Endpoint::Page));
        assert_eq!(routed("GET", "/lookup"), Some(Endpoint::Page));
        assert_eq!(routed("GET", "/static/app.js"), Some(Endpoint::Asset));
        assert_eq!(
            routed("POST", "/api/topics"),
            Some(Endpoint::CreateTopicChannel)
        );
        assert_eq!(
            routed("DELETE", "/api/topics/t/c"),
            Some(Endpoint::DeleteChannel)
        );
        assert_eq!(
            routed("DELETE", "/api/nodes/h:1"),
            Some(Endpoint::TombstoneTopicProducer)
        );
        assert_eq!(
            routed("GET", "/api/history/topics/t/c"),
            Some(Endpoint::History)
        );
        assert!(matches!(
            route("PUT", &["api", "topics"]),
            Routed::MethodNotAllowed(a) if a == "GET, OPTIONS, POST"
        ));
        assert_eq!(routed("GET", "/jobs"), Some(Endpoint::Page));
        assert_eq!(routed("GET", "/api/jobs"), Some(Endpoint::Jobs));
        assert_eq!(
            routed("POST", "/api/jobs/render"),
            Some(Endpoint::JobAction)
        );
        assert!(matches!(route("GET", &["nope"]), Routed::NotFound));
    }

    #[test]
    fn base_path_and_decoding() {
        assert_eq!(
            segments_below("/admin", "/admin/topics/c%23ephemeral"),
            Some(vec!["topics".to_string(), "c#ephemeral".to_string()])
        );
        assert_eq!(segments_below("/admin", "/admin"), Some(vec![]));
        assert_eq!(segments_below("/admin", "/adminx/topics"), None);
        assert_eq!(segments_below("", "/"), Some(vec![]));
        assert_eq!(percent_decode("a%2", false).as_deref(), Some("a%2"));
        assert_eq!(percent_decode("a+b%41", true).as_deref(), Some("a bA"));
        assert_eq!(percent_decode("%ff", false), None);
        assert_eq!(
            parse_query(Some("inactive=true&x=a%23b")),
            [
                ("inactive".to_string(), "true".to_string()),
                ("x".to_string(), "a#b".to_string())
            ]
        );
    }
}
