//! Why an auth server gave no usable grant. The text is what nsqd logs; the
//! client only ever sees `E_AUTH_FAILED`.

use nsq_app::http_client::HttpError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The `https://` exchange failed (TLS, connect, request, answer).
    #[error("{method} {url}: {cause}")]
    Https {
        method: hyper::Method,
        url: String,
        cause: String,
    },
    #[error("bad URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("no CA certificates to trust (set --tls-root-ca-file)")]
    NoRoots,
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("got response {status} {body}")]
    Status { status: u16, body: String },
    #[error("invalid JSON reply: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown permission {0}")]
    Permission(String),
    #[error("unable to compile topic {pattern:?} {source}")]
    TopicPattern {
        pattern: String,
        source: regex::Error,
    },
    #[error("unable to compile channel {pattern:?} {source}")]
    ChannelPattern {
        pattern: String,
        source: regex::Error,
    },
    #[error("invalid TTL {0} (must be >0)")]
    Ttl(i64),
    /// Every configured server failed; each says which it was.
    #[error("{}", join(.0))]
    AllFailed(Vec<(String, AuthError)>),
}

fn join(failures: &[(String, AuthError)]) -> String {
    let texts: Vec<String> = (failures.iter())
        .map(|(addr, e)| format!("failed to auth against {addr} - {e}"))
        .collect();
    texts.join("; ")
}
