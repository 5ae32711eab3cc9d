//! Outgoing HTTP from nsqd (lookupd queries, the auth server), with upstream's
//! connect and request timeouts.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A shared client; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
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
        self.request(Request::get(url), url, Bytes::new()).await
    }

    /// POST `body` as JSON to `url` and return the status and body.
    pub async fn post_json(&self, url: &str, body: Bytes) -> Result<(u16, Bytes), String> {
        let req = Request::post(url).header("Content-Type", "application/json");
        self.request(req, url, body).await
    }

    async fn request(
        &self,
        req: hyper::http::request::Builder,
        url: &str,
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let method = req.method_ref().cloned().unwrap_or_default();
        let req = req
            .header("Accept", "application/vnd.nsq; version=1.0")
            .body(Full::new(body))
            .map_err(|e| format!("bad request {url}: {e}"))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.request_timeout, fut)
            .await
            .map_err(|_| format!("{method} {url}: timed out"))?
    }
}
