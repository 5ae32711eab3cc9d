//! AUTH against `--auth-http-address` servers: the query upstream sends, the
//! authorizations it returns (topic and channel regular expressions with
//! `subscribe`/`publish` permissions), and their expiry.

use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use tokio::time::Instant;

use crate::nsqd::Nsqd;

mod error;
mod https;
pub use error::AuthError;

/// One entry of the auth server's `authorizations` list, compiled.
#[derive(Debug, Clone)]
struct Authorization {
    topic: Regex,
    channels: Vec<Regex>,
    subscribe: bool,
    publish: bool,
}

impl Authorization {
    /// Publishing asks with an empty channel, so a publish grant needs a
    /// channel pattern that matches "" (upstream's rule; grant `.*`).
    fn allows(&self, topic: &str, channel: &str) -> bool {
        let permitted = if channel.is_empty() {
            self.publish
        } else {
            self.subscribe
        };
        // Go's MatchString: unanchored.
        permitted && self.topic.is_match(topic) && self.channels.iter().any(|c| c.is_match(channel))
    }
}

/// What the auth server granted one connection, until `expires`.
#[derive(Debug, Clone)]
pub struct AuthState {
    pub identity: String,
    pub identity_url: String,
    authorizations: Vec<Authorization>,
    expires: Instant,
}

impl AuthState {
    pub fn has_authorizations(&self) -> bool {
        !self.authorizations.is_empty()
    }

    pub fn permission_count(&self) -> usize {
        self.authorizations.len()
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires <= now
    }

    /// Whether SUB (`channel` set) or a publish (`channel` empty) to `topic`
    /// is allowed.
    pub fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        self.authorizations.iter().any(|a| a.allows(topic, channel))
    }

    /// Parse and check an auth server's 200 reply.
    pub fn parse(body: &[u8], now: Instant) -> Result<AuthState, AuthError> {
        #[derive(Deserialize)]
        struct Reply {
            #[serde(default)]
            ttl: i64,
            #[serde(default)]
            identity: String,
            #[serde(default)]
            identity_url: String,
            #[serde(default)]
            authorizations: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            topic: String,
            #[serde(default)]
            channels: Vec<String>,
            #[serde(default)]
            permissions: Vec<String>,
        }
        let reply: Reply = serde_json::from_slice(body)?;
        let mut authorizations = Vec::with_capacity(reply.authorizations.len());
        for e in reply.authorizations {
            let (mut subscribe, mut publish) = (false, false);
            for p in &e.permissions {
                match p.as_str() {
                    "subscribe" => subscribe = true,
                    "publish" => publish = true,
                    other => return Err(AuthError::Permission(other.to_owned())),
                }
            }
            let topic = Regex::new(&e.topic).map_err(|source| AuthError::TopicPattern {
                pattern: e.topic.clone(),
                source,
            })?;
            let channels = e
                .channels
                .iter()
                .map(|c| {
                    Regex::new(c).map_err(|source| AuthError::ChannelPattern {
                        pattern: c.clone(),
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            authorizations.push(Authorization {
                topic,
                channels,
                subscribe,
                publish,
            });
        }
        if reply.ttl <= 0 {
            return Err(AuthError::Ttl(reply.ttl));
        }
        Ok(AuthState {
            identity: reply.identity,
            identity_url: reply.identity_url,
            authorizations,
            expires: saturating_deadline(now, reply.ttl as u64),
        })
    }
}

/// Longest grant kept: Go's largest `time.Duration` (about 292 years). The
/// auth server is an outside source; a TTL past what the clock can hold
/// saturates here instead of overflowing `Instant` (a panic).
const MAX_TTL: Duration = Duration::from_nanos(i64::MAX as u64);

fn saturating_deadline(now: Instant, ttl_secs: u64) -> Instant {
    let ttl = Duration::from_secs(ttl_secs).min(MAX_TTL);
    now.checked_add(ttl)
        .unwrap_or(now + Duration::from_secs(86_400 * 365))
}

/// What nsqd tells the auth server about a connection.
pub struct AuthQuery<'a> {
    pub remote_ip: String,
    pub tls: bool,
    pub common_name: &'a str,
    pub secret: &'a str,
}

impl AuthQuery<'_> {
    /// Upstream's parameters, keys sorted as Go's `url.Values` sorts them.
    fn params(&self) -> [(&'static str, &str); 4] {
        [
            ("common_name", self.common_name),
            ("remote_ip", &self.remote_ip),
            ("secret", self.secret),
            ("tls", if self.tls { "true" } else { "false" }),
        ]
    }

    fn query_string(&self) -> String {
        self.params()
            .iter()
            .map(|(k, v)| format!("{k}={}", nsq_app::url::query_escape(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The POST body: each parameter as a one-element array of strings.
    fn json_body(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .params()
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!([v])))
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// An address without a scheme means `http://<addr>/auth`; one with a
/// scheme is the whole endpoint.
fn endpoint(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}/auth")
    }
}

async fn query_one(nsqd: &Nsqd, addr: &str, q: &AuthQuery<'_>) -> Result<AuthState, AuthError> {
    let url = endpoint(addr);
    let https = url.starts_with("https://");
    let (status, body) = if https {
        let (method, target, body) = if nsqd.opts.auth_http_request_method == "post" {
            (hyper::Method::POST, url.clone(), q.json_body())
        } else {
            let sep = if url.contains('?') { '&' } else { '?' };
            let target = format!("{url}{sep}{}", q.query_string());
            (hyper::Method::GET, target, String::new())
        };
        let content_type = (method == hyper::Method::POST).then_some("application/json");
        https::request(&nsqd.opts, method, &target, content_type, body.into()).await?
    } else if nsqd.opts.auth_http_request_method == "post" {
        nsqd.http_client
            .request(
                hyper::Method::POST,
                &url,
                Some("application/json"),
                bytes::Bytes::from(q.json_body()),
            )
            .await?
    } else {
        let sep = if url.contains('?') { '&' } else { '?' };
        nsqd.http_client
            .get(&format!("{url}{sep}{}", q.query_string()))
            .await?
    };
    if status != 200 {
        return Err(AuthError::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    AuthState::parse(&body, Instant::now())
}

/// Ask the auth servers, starting at a random one, until one answers.
/// Every request is bounded by the HTTP client's timeouts, so an unreachable
/// server is an error after `--http-client-request-timeout`, never a hang.
pub async fn query(nsqd: &Nsqd, q: &AuthQuery<'_>) -> Result<AuthState, AuthError> {
    let addrs = &nsqd.opts.auth_http_address;
    let start = rand::random::<usize>() % addrs.len().max(1);
    let mut errors = Vec::new();
    for i in 0..addrs.len() {
        let addr = &addrs[(start + i) % addrs.len()];
        match query_one(nsqd, addr, q).await {
            Ok(state) => return Ok(state),
            Err(e) => errors.push((addr.clone(), e)),
        }
    }
    Err(AuthError::AllFailed(errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(json: &str) -> AuthState {
        AuthState::parse(json.as_bytes(), Instant::now()).unwrap()
    }

    #[test]
    fn patterns_are_unanchored_and_publish_needs_a_channel_matching_empty() {
        let s = state(
            r#"{"ttl":60,"identity":"me","authorizations":[
                {"topic":"^ord","channels":["web"],"permissions":["subscribe"]},
                {"topic":"logs","channels":[".*"],"permissions":["publish"]}]}"#,
        );
        assert_eq!(s.permission_count(), 2);
        assert!(s.is_allowed("orders", "webapp"));
        assert!(s.is_allowed("orders", "the-web"));
        assert!(!s.is_allowed("my-orders", "web"));
        assert!(
            !s.is_allowed("orders", ""),
            "subscribe grant is not publish"
        );
        assert!(s.is_allowed("app-logs", ""));
        assert!(
            !s.is_allowed("app-logs", "c"),
            "publish grant is not subscribe"
        );
        let only_named = state(
            r#"{"ttl":60,"authorizations":[{"topic":"t","channels":["c"],"permissions":["publish"]}]}"#,
        );
        assert!(!only_named.is_allowed("t", ""));
    }

    #[test]
    fn bad_replies_are_errors() {
        let parse = |j: &str| {
            AuthState::parse(j.as_bytes(), Instant::now())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            parse(r#"{"ttl":0,"authorizations":[]}"#),
            Err("invalid TTL 0 (must be >0)".into())
        );
        assert_eq!(
            parse(
                r#"{"ttl":1,"authorizations":[{"topic":"t","channels":[],"permissions":["read"]}]}"#
            ),
            Err("unknown permission read".into())
        );
        assert!(parse(
            r#"{"ttl":1,"authorizations":[{"topic":"(","channels":[],"permissions":[]}]}"#
        )
        .unwrap_err()
        .starts_with("unable to compile topic \"(\""));
        assert!(parse("not json").is_err());
    }

    #[test]
    fn expiry_follows_the_ttl() {
        let now = Instant::now();
        let s = AuthState::parse(br#"{"ttl":2,"authorizations":[]}"#, now).unwrap();
        assert!(!s.is_expired(now + Duration::from_secs(1)));
        assert!(s.is_expired(now + Duration::from_secs(2)));
        assert!(!s.has_authorizations());
    }

    #[test]
    fn query_matches_upstreams_encoding() {
        let q = AuthQuery {
            remote_ip: "127.0.0.1".into(),
            tls: false,
            common_name: "",
            secret: "a b&c/é",
        };
        assert_eq!(
            q.query_string(),
            "common_name=&remote_ip=127.0.0.1&secret=a+b%26c%2F%C3%A9&tls=false"
        );
        assert_eq!(
            q.json_body(),
            r#"{"common_name":[""],"remote_ip":["127.0.0.1"],"secret":["a b&c/é"],"tls":["false"]}"#
        );
        assert_eq!(endpoint("127.0.0.1:4181"), "http://127.0.0.1:4181/auth");
        assert_eq!(endpoint("http://h:1/x"), "http://h:1/x");
    }
}
