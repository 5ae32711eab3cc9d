//! lookupd discovery: poll `GET /lookup?topic=` on every lookupd, merge the
//! producers they list, connect to new nsqds and let go of vanished ones.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::consumer::{Inner, Origin};
use crate::{Consumer, Error, Result};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A lookupd poll that takes longer than this counts as failed, so one
/// hanging lookupd cannot hold up the answers of the others.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

impl Consumer {
    /// Discover the topic's nsqds through these lookupds (`host:port` or an
    /// `http://` URL; the path defaults to `/lookup`). The first query runs
    /// before this returns; later ones run every `lookupd_poll_interval` plus
    /// jitter until `stop`. A lookupd that is down is skipped, and an nsqd is
    /// let go only when the lookupds that answered no longer list it.
    /// Call once, with every lookupd.
    pub async fn connect_to_lookupds<S: AsRef<str>>(
        &self,
        addrs: impl IntoIterator<Item = S>,
    ) -> Result<()> {
        let topic = self.inner_topic();
        let uris = addrs
            .into_iter()
            .map(|a| {
                let a = a.as_ref();
                lookup_uri(a, &topic).map(|u| (a.to_owned(), u))
            })
            .collect::<Result<Vec<_>>>()?;
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let inner = self.inner.clone();
        poll_once(&inner, &client, &uris).await;
        self.inner.tasks.spawn(poll_loop(inner, client, uris));
        Ok(())
    }

    /// Shorthand for [`Consumer::connect_to_lookupds`] with one lookupd.
    pub async fn connect_to_lookupd(&self, addr: &str) -> Result<()> {
        self.connect_to_lookupds([addr]).await
    }
}

async fn poll_loop(inner: Arc<Inner>, client: HttpClient, uris: Vec<(String, Uri)>) {
    let interval = inner.config.lookupd_poll_interval;
    let jitter = inner.config.lookupd_poll_jitter.clamp(0.0, 1.0);
    loop {
        let wait = interval + interval.mul_f64(rand::random::<f64>() * jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = inner.lookup_wake.notified() => debug!("re-querying after a lost connection"),
            () = inner.stopping.cancelled() => return,
        }
        poll_once(&inner, &client, &uris).await;
    }
}

async fn poll_once(inner: &Arc<Inner>, client: &HttpClient, uris: &[(String, Uri)]) {
    let mut queries = JoinSet::new();
    let label: Arc<str> = format!("[{}/{}]", inner.topic, inner.channel).into();
    for (addr, uri) in uris {
        let (client, addr, uri, label) = (client.clone(), addr.clone(), uri.clone(), label.clone());
        queries.spawn(async move { (query(&client, &uri, &label).await, addr) });
    }
    let mut found = BTreeSet::new();
    let mut answered = 0;
    while let Some(joined) = queries.join_next().await {
        match joined {
            Ok((Ok(producers), _)) => {
                answered += 1;
                found.extend(producers);
            }
            Ok((Err(_), _)) => {}
            Err(e) => warn!(error = %e, "lookupd query task failed"),
        }
    }
    // With no answer at all we know nothing, so nothing is dropped.
    if answered == 0 || inner.stopping.is_cancelled() {
        return;
    }
    for addr in inner.lookupd_conns() {
        if !found.contains(&addr) {
            inner.drop_nsqd(&addr);
        }
    }
    let mut connects = JoinSet::new();
    for addr in found {
        if inner.is_connected(&addr) {
            continue;
        }
        let inner = inner.clone();
        connects.spawn(async move {
            match inner.connect(&addr, Origin::Lookupd).await {
                Ok(()) | Err(Error::AlreadyConnected(_)) | Err(Error::Stopped) => {}
                Err(e) => warn!(%addr, error = %e, "cannot connect to discovered nsqd"),
            }
        });
    }
    while connects.join_next().await.is_some() {}
}

/// One lookupd's producers of the topic. The query and a failed answer are
/// logged as upstream's consumers log them (`label` is `[topic/channel]`),
/// so a user waiting for a topic that lookupd does not know yet sees why.
async fn query(
    client: &HttpClient,
    uri: &Uri,
    label: &str,
) -> std::result::Result<Vec<String>, String> {
    info!("{label} querying nsqlookupd {uri}");
    match fetch_producers(client, uri).await {
        Ok(producers) => Ok(producers),
        // A topic lookupd has never heard of has no producers: an error
        // to the user, but an answer all the same.
        Err((reason, true)) => {
            error!("{label} error querying nsqlookupd ({uri}) - {reason}");
            Ok(Vec::new())
        }
        Err((reason, false)) => {
            error!("{label} error querying nsqlookupd ({uri}) - {reason}");
            Err(reason)
        }
    }
}

/// The producers lookupd lists, or why not and whether it said 404.
async fn fetch_producers(
    client: &HttpClient,
    uri: &Uri,
) -> std::result::Result<Vec<String>, (String, bool)> {
    let failed = |reason: String| (reason, false);
    let req = hyper::Request::get(uri.clone())
        // Asks old lookupds for the unwrapped format; newer ones ignore it.
        .header(hyper::header::ACCEPT, "application/vnd.nsq; version=1.0")
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let fetch = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(QUERY_TIMEOUT, fetch)
        .await
        .map_err(|_| failed("timed out".to_owned()))?
        .map_err(failed)?;
    if !status.is_success() {
        let shown = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
        let reason = format!("got response {status} {shown:?}");
        return Err((reason, status == hyper::StatusCode::NOT_FOUND));
    }
    parse_producers(&body).map_err(failed)
}

/// The `host:port` of every producer in a /lookup answer, in either the
/// current shape or the `{"data": ...}` one of lookupd before 1.0.
fn parse_producers(body: &[u8]) -> std::result::Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let list = v["producers"]
        .as_array()
        .or_else(|| v["data"]["producers"].as_array())
        .ok_or("no producers in the answer")?;
    Ok(list
        .iter()
        .filter_map(|p| {
            let host = p["broadcast_address"].as_str()?;
            let port = p["tcp_port"].as_u64()?;
            Some(if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            })
        })
        .collect())
}

/// The query URL for `addr`, which may be a bare `host:port` or an http URL
/// with or without a path and query.
fn lookup_uri(addr: &str, topic: &str) -> Result<Uri> {
    let bad = |reason: String| Error::Lookupd {
        addr: addr.to_owned(),
        reason,
    };
    let full = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let uri: Uri = full
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// lookupd addresses are supported".into()));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host".into()))?;
    let path = match uri.path() {
        "" | "/" => "/lookup",
        p => p,
    };
    // Topic names are [.a-zA-Z0-9_-] plus an optional "#ephemeral".
    let topic = topic.replace('#', "%23");
    let query = match uri.query() {
        Some(q) if !q.is_empty() => format!("{q}&topic={topic}"),
        _ => format!("topic={topic}"),
    };
    format!("http://{authority}{path}?{query}")
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_uris() {
        let u = |a| lookup_uri(a, "t#ephemeral").unwrap().to_string();
        assert_eq!(
            u("127.0.0.1:4161"),
            "http://127.0.0.1:4161/lookup?topic=t%23ephemeral"
        );
        assert_eq!(u("http://h:1/"), "http://h:1/lookup?topic=t%23ephemeral");
        assert_eq!(
            u("http://h:1/x/lookup?a=b"),
            "http://h:1/x/lookup?a=b&topic=t%23ephemeral"
        );
        assert!(lookup_uri("https://h:1", "t").is_err());
    }

    #[test]
    fn producers_in_both_shapes() {
        let new = br#"{"channels":[],"producers":[{"broadcast_address":"a","tcp_port":1},{"broadcast_address":"::1","tcp_port":2}]}"#;
        assert_eq!(parse_producers(new).unwrap(), ["a:1", "[::1]:2"]);
        let old =
            br#"{"status_code":200,"data":{"producers":[{"broadcast_address":"b","tcp_port":3}]}}"#;
        assert_eq!(parse_producers(old).unwrap(), ["b:3"]);
        assert!(parse_producers(b"{}").is_err());
    }
}
