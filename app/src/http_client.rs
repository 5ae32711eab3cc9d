//! Outgoing HTTP to other NSQ daemons (nsqd's lookupd queries, nsqadmin's
//! fan-out to every lookupd and nsqd), with upstream's connect and request
//! timeouts and its `Accept: application/vnd.nsq; version=1.0` header.
//! An answer is read only up to a size limit: a rogue or broken daemon
//! streaming an endless body must fail its request, not exhaust our memory.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The media type NSQ daemons answer in their V1 (bare JSON) shape.
pub const ACCEPT_V1: &str = "application/vnd.nsq; version=1.0";

/// The largest answer read unless told otherwise: far above a `/stats` of
/// thousands of topics and clients, far below what hurts a small machine.
pub const DEFAULT_MAX_BODY: usize = 64 << 20;

/// A shared client; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    request_timeout: Duration,
    max_body: usize,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("request_timeout", &self.request_timeout)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            request_timeout,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Fail requests whose answer is longer than `bytes` (at least 1 KiB).
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes.max(1024);
        self
    }

    /// GET `url` and return the status and body.
    pub async fn get(&self, url: &str) -> Result<(u16, Bytes), HttpError> {
        self.request(Method::GET, url, None, Bytes::new()).await
    }

    /// Send `body` (typed `content_type` when given) to `url` with `method`
    /// and return the status and body. Errors (connect, timeout) name the
    /// method and URL, so callers can pass them on to a user as they are.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(u16, Bytes), HttpError> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(url)
            .header("Accept", ACCEPT_V1);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|source| HttpError::Request {
                method: method.clone(),
                url: url.to_owned(),
                source,
            })?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| HttpError::Failed {
                    method: method.clone(),
                    url: url.to_owned(),
                    cause: error_chain(&e),
                })?;
            let status = resp.status().as_u16();
            let max = self.max_body;
            let body = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| {
                    let (method, url) = (method.clone(), url.to_owned());
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpError::TooLarge { method, url, max }
                    } else {
                        let cause = e.to_string();
                        HttpError::Failed { method, url, cause }
                    }
                })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.request_timeout, fut)
            .await
            .map_err(|_| HttpError::TimedOut {
                method,
                url: url.to_owned(),
            })?
    }
}

/// Why a request got no answer. Each names the method and URL, so callers
/// can pass it on to a user as it is.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad request {method} {url}: {source}")]
    Request {
        method: Method,
        url: String,
        source: hyper::http::Error,
    },
    /// Connecting, sending, or reading the answer failed; the cause chain.
    #[error("{method} {url}: {cause}")]
    Failed {
        method: Method,
        url: String,
        cause: String,
    },
    #[error("{method} {url}: answer larger than {max} bytes, not read")]
    TooLarge {
        method: Method,
        url: String,
        max: usize,
    },
    #[error("{method} {url}: timed out")]
    TimedOut { method: Method, url: String },
}

/// hyper-util's error says only "client error (Connect)"; the cause (e.g.
/// "Connection refused") is what a user needs to see.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connection_names_the_cause() {
        // Bind then drop a listener to get a port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = HttpClient::new(Duration::from_secs(2), Duration::from_secs(5));
        let err = c
            .get(&format!("http://127.0.0.1:{port}/ping"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("GET http://127.0.0.1:"), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn an_answer_past_the_limit_fails_the_request() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                .await;
            let chunk = vec![b'x'; 4096];
            // Endless until the client hangs up.
            while s.write_all(&chunk).await.is_ok() {}
        });
        let c = HttpClient::new(Duration::from_secs(2), Duration::from_secs(30))
            .with_max_body(64 * 1024);
        let err = c.get(&format!("http://{addr}/stats")).await.unwrap_err();
        let err = err.to_string();
        assert!(err.contains("larger than 65536 bytes"), "{err}");
    }
}
