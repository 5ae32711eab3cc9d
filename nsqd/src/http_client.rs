//! Outgoing HTTP from nsqd (lookupd queries; later auth), with upstream's
//! connect and request timeouts.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A shared client; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    request_timeout: Duration,
}

impl HttpClient {
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            request_timeout,
        }
    }

    /// GET `url` and return the status and body.
    pub async fn get(&self, url: &str) -> Result<(u16, Bytes), String> {
        let req = Request::get(url)
            .header("Accept", "application/vnd.nsq; version=1.0")
            .body(Empty::new())
            .map_err(|e| format!("bad request {url}: {e}"))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.request_timeout, fut)
            .await
            .map_err(|_| format!("GET {url}: timed out"))?
    }
}
