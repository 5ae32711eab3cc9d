//! Notifications of admin actions: with `--notification-http-endpoint`,
//! each action is POSTed there as JSON in upstream's shape, in the
//! background (a slow or dead endpoint never delays the action).

use base64::Engine;
use bytes::Bytes;
use hyper::header::{AUTHORIZATION, HOST, USER_AGENT};
use hyper::{HeaderMap, Method};
use serde::Serialize;
use tokio_util::task::TaskTracker;

use nsq_app::http_client::HttpClient;

/// One admin action, as upstream's `AdminAction` serialises it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdminAction {
    pub action: String,
    pub topic: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
    pub timestamp: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    pub remote_ip: String,
    pub user_agent: String,
    pub url: String,
    pub via: String,
}

/// What of the request an action notification records.
#[derive(Debug, Clone)]
pub struct Requester {
    pub remote_addr: String,
    pub user: String,
    pub user_agent: String,
    pub url: String,
}

impl Requester {
    /// From the request: the Basic-auth user, the user agent, and the URL
    /// as the browser saw it (https when a proxy says `X-Scheme: https`).
    pub fn from_request(headers: &HeaderMap, path_and_query: &str, remote_addr: &str) -> Self {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let scheme = if headers
            .get("x-scheme")
            .is_some_and(|v| v.as_bytes() == b"https")
        {
            "https"
        } else {
            "http"
        };
        Requester {
            remote_addr: remote_addr.to_owned(),
            user: basic_auth_user(&text(AUTHORIZATION)),
            user_agent: text(USER_AGENT),
            url: format!("{scheme}://{}{path_and_query}", text(HOST)),
        }
    }
}

/// The user name of a `Basic` Authorization header, or empty.
fn basic_auth_user(header: &str) -> String {
    let Some(encoded) = header.strip_prefix("Basic ") else {
        return String::new();
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&raw);
    match text.split_once(':') {
        Some((user, _)) => user.to_owned(),
        None => String::new(),
    }
}

/// Sends notifications; without an endpoint it does nothing.
#[derive(Debug, Clone)]
pub struct Notifier {
    endpoint: String,
    client: HttpClient,
    via: String,
    tracker: TaskTracker,
}

impl Notifier {
    pub fn new(endpoint: String, client: HttpClient, tracker: TaskTracker) -> Self {
        Notifier {
            endpoint,
            client,
            via: nsq_app::os_hostname(),
            tracker,
        }
    }

    /// Notify of `action` on `topic` (and `channel`, `node` when not empty).
    pub fn notify(&self, action: &str, topic: &str, channel: &str, node: &str, who: &Requester) {
        if self.endpoint.is_empty() {
            return;
        }
        let a = AdminAction {
            action: action.to_owned(),
            topic: topic.to_owned(),
            channel: channel.to_owned(),
            node: node.to_owned(),
            timestamp: crate::history::now_ms() / 1000,
            user: who.user.clone(),
            remote_ip: who.remote_addr.clone(),
            user_agent: who.user_agent.clone(),
            url: who.url.clone(),
            via: self.via.clone(),
        };
        let body = match serde_json::to_vec(&a) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!("notification: cannot encode {a:?}: {e}");
                return;
            }
        };
        let client = self.client.clone();
        let endpoint = self.endpoint.clone();
        self.tracker.spawn(async move {
            match client
                .request(Method::POST, &endpoint, Some("application/json"), body)
                .await
            {
                Ok((status, _)) if (200..300).contains(&status) => {}
                Ok((status, body)) => tracing::error!(
                    "notification to {endpoint} answered {status}: {}",
                    String::from_utf8_lossy(&body).trim()
                ),
                Err(e) => tracing::error!("notification failed: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_users() {
        // "alice:secret"
        assert_eq!(basic_auth_user("Basic YWxpY2U6c2VjcmV0"), "alice");
        assert_eq!(basic_auth_user("Bearer abc"), "");
        assert_eq!(basic_auth_user("Basic !!!"), "");
    }

    #[test]
    fn empty_fields_are_left_out() {
        let a = AdminAction {
            action: "pause_topic".into(),
            topic: "t".into(),
            channel: String::new(),
            node: String::new(),
            timestamp: 1,
            user: String::new(),
            remote_ip: "127.0.0.1:5".into(),
            user_agent: "ua".into(),
            url: "http://h/api/topics/t".into(),
            via: "box".into(),
        };
        let v = serde_json::to_value(&a).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "action",
                "remote_ip",
                "timestamp",
                "topic",
                "url",
                "user_agent",
                "via"
            ]
        );
    }

    #[test]
    fn requester_from_headers() {
        let mut h = HeaderMap::new();
        h.insert(HOST, "admin.example:4171".parse().unwrap());
        h.insert("x-scheme", "https".parse().unwrap());
        h.insert(USER_AGENT, "curl/8".parse().unwrap());
        let r = Requester::from_request(&h, "/api/topics/t", "10.0.0.1:5555");
        assert_eq!(r.url, "https://admin.example:4171/api/topics/t");
        assert_eq!(r.user_agent, "curl/8");
        assert_eq!(r.remote_addr, "10.0.0.1:5555");
    }
}
