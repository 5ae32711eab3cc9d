//! `https://` auth servers: one request per query over a rustls client
//! connection, trusting `--tls-root-ca-file` as upstream does (or, without
//! it, the system's CA bundle). The answer's size is capped: an auth server
//! is an outside source like any other.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::AuthError;
use crate::options::Options;

/// Largest auth server answer read: a grant is a few hundred bytes.
const MAX_ANSWER: usize = 1024 * 1024;

/// Where the system keeps its CA bundle (Debian/Ubuntu, then Fedora/RHEL).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

fn client_config(opts: &Options) -> Result<Arc<ClientConfig>, AuthError> {
    let mut roots = RootCertStore::empty();
    let files: Vec<&str> = if opts.tls_root_ca_file.is_empty() {
        SYSTEM_BUNDLES.to_vec()
    } else {
        vec![opts.tls_root_ca_file.as_str()]
    };
    for file in files {
        let Ok(pem) = std::fs::read(file) else {
            continue;
        };
        for cert in rustls_pemfile::certs(&mut &pem[..]).flatten() {
            // A bundle may hold certificates rustls cannot use; skip those.
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        return Err(AuthError::NoRoots);
    }
    let config = ClientConfig::builder_with_provider(nsq_wire::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Send one request to an `https://` URL and return the status and body,
/// within nsqd's HTTP client connect and request timeouts.
pub(super) async fn request(
    opts: &Options,
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<(u16, Bytes), AuthError> {
    let bad_url = |reason: String| AuthError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = (url.parse::<Uri>()).map_err(|e| bad_url(e.to_string()))?;
    let host = uri.host().ok_or_else(|| bad_url("no host".into()))?;
    let port = uri.port_u16().unwrap_or(443);
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| bad_url(format!("bad host: {e}")))?;
    let failed = |cause: String| AuthError::Https {
        method: method.clone(),
        url: url.to_owned(),
        cause,
    };
    let config = client_config(opts)?;
    let connect = async {
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| failed(format!("TLS: {e}")))
    };
    let tls = timeout(*opts.http_client_connect_timeout, connect)
        .await
        .map_err(|_| failed("connect timed out".into()))??;
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("Host", uri.authority().map_or(host, |a| a.as_str()))
            .header("Accept", nsq_app::http_client::ACCEPT_V1);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| failed(format!("bad request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    };
    timeout(*opts.http_client_request_timeout, exchange)
        .await
        .map_err(|_| failed("timed out".into()))?
}
