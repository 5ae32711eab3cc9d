//! Why a request to a lookupd or nsqd brought no usable answer.

use nsq_app::http_client::HttpError;

/// One daemon's failure, or (for a question every daemon failed) all of them.
/// Its text is what the user sees, in the `UPSTREAM_ERROR` or the warning.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The daemon answered with another status than 200.
    #[error("{method} {url}: {status}{}", spaced(.body))]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("GET {url}: bad JSON: {source}")]
    Json {
        url: String,
        source: serde_json::Error,
    },
    #[error("request task failed")]
    TaskFailed,
    /// Every daemon asked failed.
    #[error("{}", join(.0))]
    AllFailed(Vec<NodeError>),
}

impl NodeError {
    /// A non-200 answer; the body is shown trimmed.
    pub fn status(method: &'static str, url: &str, status: u16, body: &[u8]) -> Self {
        NodeError::Status {
            method,
            url: url.to_owned(),
            status,
            body: String::from_utf8_lossy(body).trim().to_owned(),
        }
    }

    /// The daemon answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, NodeError::Status { status: 404, .. })
    }
}

fn spaced(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(" {body}")
    }
}

fn join(errors: &[NodeError]) -> String {
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    texts.join("; ")
}
