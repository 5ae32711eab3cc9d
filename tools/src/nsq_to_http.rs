//! `nsq_to_http`: consume a topic and send every message to HTTP endpoints,
//! as a GET with the body in the URL or as a POST body, spreading requests
//! over the endpoints round-robin or by health (hostpool).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nsq::{handler_fn, Consumer, HandlerError, Message};
use nsq_app::GoDuration;
use tokio::time::Instant;
use tracing::info;

use crate::source::SourceOptions;
use crate::targets::{Mode, Targets};
use crate::{Result, ToolError};

/// Upstream's `nsq_to_http` flags.
#[derive(Parser, Debug, Clone)]
#[command(about = "Send the messages of an NSQ topic to HTTP endpoints.")]
pub struct ToHttpOptions {
    /// nsq topic
    #[arg(long, default_value = "")]
    pub topic: String,
    /// nsq channel
    #[arg(long, default_value = "nsq_to_http")]
    pub channel: String,
    /// Where messages are read from.
    #[command(flatten)]
    pub source: SourceOptions,
    /// HTTP address to make a GET request to; '%s' in it is replaced by the URL-escaped message body (may be given multiple times)
    #[arg(long)]
    pub get: Vec<String>,
    /// HTTP address to POST each message body to (may be given multiple times)
    #[arg(long)]
    pub post: Vec<String>,
    /// custom header for HTTP requests, as 'name:value' (may be given multiple times)
    #[arg(long)]
    pub header: Vec<String>,
    /// the Content-Type used for POST requests
    #[arg(long, default_value = "application/octet-stream")]
    pub content_type: String,
    /// how requests are spread over the addresses: round-robin, or hostpool (skips an address that failed for a while; epsilon-greedy is taken as hostpool)
    #[arg(long, default_value = "hostpool")]
    pub mode: String,
    /// number of concurrent publishers
    #[arg(long = "n", default_value_t = 100)]
    pub n: usize,
    /// fraction of messages to send, between 0 and 1 (the rest are finished unsent)
    #[arg(long, default_value_t = 1.0)]
    pub sample: f64,
    /// timeout for HTTP connect
    #[arg(long, default_value = "2s")]
    pub http_client_connect_timeout: GoDuration,
    /// timeout for a whole HTTP request
    #[arg(long, default_value = "20s")]
    pub http_client_request_timeout: GoDuration,
    /// the number of requests between status lines in the log; 0 disables
    #[arg(long, default_value_t = 250)]
    pub status_every: u64,
}

impl ToHttpOptions {
    /// Upstream's checks, in its order.
    fn validate(&self) -> Result<(Mode, Vec<(HeaderName, HeaderValue)>)> {
        let fail = |m: &str| Err(ToolError::Config(m.into()));
        if self.topic.is_empty() || self.channel.is_empty() {
            return fail("--topic and --channel are required");
        }
        if self.content_type != "application/octet-stream" {
            if self.post.is_empty() {
                return fail("--content-type only used with --post");
            }
            if self.content_type.is_empty() {
                return fail("--content-type requires a value when used");
            }
        }
        self.source.check()?;
        match (self.get.is_empty(), self.post.is_empty()) {
            (true, true) => return fail("--get or --post required"),
            (false, false) => return fail("use --get or --post not both"),
            _ => {}
        }
        if self.get.iter().any(|g| g.matches("%s").count() != 1) {
            return fail("invalid GET address - must be a printf string");
        }
        let mode = Mode::parse(&self.mode)?;
        if !(0.0..=1.0).contains(&self.sample) {
            return fail("--sample must be between 0.0 and 1.0");
        }
        let mut headers = Vec::new();
        for h in &self.header {
            let parsed = h.split_once(':').and_then(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                    HeaderValue::from_str(value.trim()).ok()?,
                ))
            });
            match parsed {
                Some(pair) => headers.push(pair),
                None => return fail("--header value format should be 'name:value'"),
            }
        }
        Ok((mode, headers))
    }
}

/// Requests sent and their total time since the last status line.
#[derive(Default)]
struct Status {
    count: AtomicU64,
    micros: AtomicU64,
}

/// Everything a handler needs to send one message.
struct Sender {
    client: Client<HttpConnector, Full<Bytes>>,
    targets: Targets,
    post: bool,
    content_type: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    user_agent: String,
    timeout: Duration,
    sample: f64,
    status_every: u64,
    status: Status,
}

/// Why a request failed; the message is requeued.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Http(String),
    #[error("got status code {0}")]
    Status(u16),
}

impl Sender {
    async fn handle(&self, msg: &Message) -> std::result::Result<(), SendError> {
        if self.sample < 1.0 && rand::random::<f64>() > self.sample {
            return Ok(());
        }
        let i = self.targets.pick();
        let addr = self.targets.addr(i);
        let started = Instant::now();
        let result = self.send(addr, &msg.body).await;
        self.targets.mark(i, result.is_ok());
        if result.is_ok() {
            self.report(started.elapsed());
        }
        result
    }

    async fn send(&self, addr: &str, body: &Bytes) -> std::result::Result<(), SendError> {
        let (method, url, body) = if self.post {
            (Method::POST, addr.to_owned(), body.clone())
        } else {
            (
                Method::GET,
                addr.replacen("%s", &nsq_app::url::query_escape(body), 1),
                Bytes::new(),
            )
        };
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(hyper::header::USER_AGENT, &self.user_agent);
        if self.post {
            req = req.header(hyper::header::CONTENT_TYPE, &self.content_type);
        }
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| SendError::Http(format!("{url}: {e}")))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| SendError::Http(format!("{url}: {e}")))?;
            let status = resp.status().as_u16();
            // Read the answer to the end so the connection can be reused.
            let _ = resp.into_body().collect().await;
            Ok(status)
        };
        let status = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SendError::Http(format!("{url}: timed out")))??;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(SendError::Status(status))
        }
    }

    fn report(&self, took: Duration) {
        if self.status_every == 0 {
            return;
        }
        let micros = self
            .status
            .micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed)
            + took.as_micros() as u64;
        let count = self.status.count.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_multiple_of(self.status_every) {
            info!(
                "[aggregate]: {count} requests, {:.3}ms average",
                micros as f64 / count as f64 / 1000.0
            );
        }
    }
}

/// Consumes the topic until `shutdown` resolves, then stops gracefully.
pub async fn run(opts: ToHttpOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    let (mode, headers) = opts.validate()?;
    let config = opts.source.consumer_config("nsq_to_http")?;
    let post = !opts.post.is_empty();
    let addrs = if post {
        opts.post.clone()
    } else {
        opts.get.clone()
    };
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(*opts.http_client_connect_timeout));
    connector.set_nodelay(true);
    let sender = Arc::new(Sender {
        client: Client::builder(TokioExecutor::new()).build(connector),
        targets: Targets::new(addrs, mode),
        post,
        content_type: opts.content_type.clone(),
        headers,
        user_agent: config.user_agent.clone(),
        timeout: *opts.http_client_request_timeout,
        sample: opts.sample,
        status_every: opts.status_every,
        status: Status::default(),
    });
    let consumer = Consumer::new(&opts.topic, &opts.channel, config)?;
    consumer.add_concurrent_handlers(
        handler_fn(move |msg: Message| {
            let sender = sender.clone();
            async move { sender.handle(&msg).await.map_err(HandlerError::new) }
        }),
        opts.n.max(1),
    );
    let connected = opts.source.connect(&consumer).await;
    if connected.is_ok() {
        shutdown.await;
    }
    consumer.stop().await;
    Ok(connected?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> ToHttpOptions {
        let mut v = vec!["nsq_to_http"];
        v.extend_from_slice(args);
        ToHttpOptions::parse_from(v)
    }

    #[test]
    fn flags_are_checked_as_upstream_does() {
        let err = |args: &[&str]| opts(args).validate().unwrap_err().to_string();
        let base = ["--topic=t", "--nsqd-tcp-address=a:1"];
        assert_eq!(
            err(&["--topic=t"]),
            "--nsqd-tcp-address or --lookupd-http-address required"
        );
        assert_eq!(err(&base), "--get or --post required");
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            err(&v)
        };
        assert_eq!(
            with(&["--get=http://a/%s", "--post=http://b"]),
            "use --get or --post not both"
        );
        assert_eq!(
            with(&["--get=http://a/"]),
            "invalid GET address - must be a printf string"
        );
        assert_eq!(
            with(&["--get=http://a/%s", "--content-type=text/plain"]),
            "--content-type only used with --post"
        );
        assert_eq!(
            with(&["--post=http://a", "--sample=2"]),
            "--sample must be between 0.0 and 1.0"
        );
        assert_eq!(
            with(&["--post=http://a", "--header=bad"]),
            "--header value format should be 'name:value'"
        );
        assert!(with(&["--post=http://a", "--mode=x"]).starts_with("invalid --mode"));
        let ok = opts(&[
            "--topic=t",
            "--nsqd-tcp-address=a:1",
            "--post=http://a",
            "--header=X-A: 1",
        ]);
        let (mode, headers) = ok.validate().unwrap();
        assert_eq!(mode, Mode::HostPool);
        assert_eq!(headers[0].0, "x-a");
        assert_eq!(headers[0].1, "1");
    }
}
