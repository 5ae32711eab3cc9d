//! Helpers for the in-process tests: a lookupd on loopback port 0, a raw V1
//! client, a raw HTTP/1.1 client (so header spelling is visible), polling
//! with a deadline, and the golden upstream samples.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nsqlookupd::{Lookupd, Options};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any single step; generous so slow CI machines pass.
pub const STEP: Duration = Duration::from_secs(10);

/// Run a whole test body under a timeout, so a hang fails instead of
/// blocking the suite.
pub async fn with_timeout<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out");
}

pub async fn start(opts: Options) -> Lookupd {
    tokio::time::timeout(STEP, Lookupd::new(opts))
        .await
        .expect("start timed out")
        .expect("lookupd starts")
}

pub async fn start_default() -> Lookupd {
    start(Options::for_tests()).await
}

/// Poll `check` until it returns `Some`, failing after [`STEP`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw protocol V1 connection, as nsqd opens one.
pub struct V1 {
    pub stream: TcpStream,
}

impl V1 {
    /// Connect and send the magic.
    pub async fn connect(lookupd: &Lookupd) -> V1 {
        let mut v1 = V1::connect_raw(lookupd.tcp_addr()).await;
        v1.send(b"  V1").await;
        v1
    }

    pub async fn connect_raw(addr: SocketAddr) -> V1 {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        V1 { stream }
    }

    pub fn local_addr(&self) -> String {
        self.stream.local_addr().unwrap().to_string()
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(STEP, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// Read one `[u32 size][data]` reply.
    pub async fn reply(&mut self) -> Vec<u8> {
        let read = async {
            let size = self.stream.read_u32().await.expect("reply size");
            let mut data = vec![0; size as usize];
            self.stream.read_exact(&mut data).await.expect("reply data");
            data
        };
        tokio::time::timeout(STEP, read)
            .await
            .expect("reply timed out")
    }

    pub async fn reply_text(&mut self) -> String {
        String::from_utf8(self.reply().await).expect("UTF-8 reply")
    }

    /// Send `cmd` and return the reply as text.
    pub async fn command(&mut self, cmd: &[u8]) -> String {
        self.send(cmd).await;
        self.reply_text().await
    }

    /// The server closed the connection: EOF with nothing more to read.
    pub async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(STEP, self.stream.read_to_end(&mut rest))
            .await
            .expect("close timed out");
        // A reset is as good as a close.
        if read.is_ok() {
            assert!(rest.is_empty(), "unexpected bytes before close: {rest:?}");
        }
    }

    /// IDENTIFY as an nsqd with these ports; returns the reply JSON.
    pub async fn identify(&mut self, tcp_port: u16, http_port: u16) -> Value {
        let body = identify_body(tcp_port, http_port);
        let reply = self.command(&identify_cmd(&body)).await;
        serde_json::from_str(&reply).unwrap_or_else(|_| panic!("IDENTIFY reply {reply:?}"))
    }
}

/// The body nsqd 1.3.0 sends (as in the golden samples' setup).
pub fn identify_body(tcp_port: u16, http_port: u16) -> Vec<u8> {
    format!(
        r#"{{"broadcast_address":"127.0.0.1","hostname":"vm","http_port":{http_port},"tcp_port":{tcp_port},"topology_region":"","topology_zone":"","version":"1.3.0"}}"#
    )
    .into_bytes()
}

pub fn identify_cmd(body: &[u8]) -> Vec<u8> {
    let mut cmd = b"IDENTIFY\n".to_vec();
    cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
    cmd.extend_from_slice(body);
    cmd
}

/// A response as it came off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status_line: String,
    pub status: u16,
    /// Header names exactly as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request over a fresh keep-alive connection (as curl sends
/// it, so the response headers are the ones the samples show); the body is
/// read by its Content-Length.
pub async fn http(lookupd: &Lookupd, method: &str, target: &str) -> HttpResponse {
    http_with(lookupd, method, target, &[]).await
}

pub async fn http_with(
    lookupd: &Lookupd,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let fut = async {
        let mut stream = TcpStream::connect(lookupd.http_addr())
            .await
            .expect("connect");
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: lookupd\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "POST" {
            req.push_str("Content-Length: 0\r\n");
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .expect("write request");
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let mut resp = parse_response(&raw[..end + 4]);
                let len: usize = match resp.header("Content-Length") {
                    Some(n) if method != "HEAD" => n.parse().expect("Content-Length"),
                    _ => 0,
                };
                while raw.len() < end + 4 + len {
                    let n = stream.read(&mut chunk).await.expect("read body");
                    assert!(n > 0, "connection closed inside the body");
                    raw.extend_from_slice(&chunk[..n]);
                }
                resp.body = raw[end + 4..end + 4 + len].to_vec();
                return resp;
            }
            let n = stream.read(&mut chunk).await.expect("read response");
            assert!(n > 0, "connection closed inside the headers");
            raw.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(STEP, fut)
        .await
        .expect("HTTP request timed out")
}

pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&raw[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_owned();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").expect("header line");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    HttpResponse {
        status_line,
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/samples")
}

/// A golden upstream sample: the `.headers` file parsed (status line and
/// headers) and the `.json` file's bytes.
pub fn sample(name: &str) -> HttpResponse {
    let dir = samples_dir();
    let head = std::fs::read_to_string(dir.join(format!("{name}.headers")))
        .unwrap_or_else(|e| panic!("golden sample {name}.headers in {} - {e}", dir.display()));
    let body = std::fs::read(dir.join(format!("{name}.json"))).expect("golden sample body");
    let mut raw = head
        .replace("\r\n", "\n")
        .trim_end()
        .replace('\n', "\r\n")
        .into_bytes();
    raw.extend_from_slice(b"\r\n\r\n");
    let mut resp = parse_response(&raw);
    resp.body = body.strip_suffix(b"\n").unwrap_or(&body).to_vec();
    resp
}

/// The structure of a JSON value: object keys with the structure of their
/// values, the structure of array elements, scalar type names.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(items) => Value::Array(items.first().map(shape).into_iter().collect()),
        Value::String(_) => "string".into(),
        Value::Number(n) if n.is_f64() => "float".into(),
        Value::Number(_) => "int".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

/// Compare a response with a golden sample: status line, the header names
/// and values that carry meaning (Date and Content-Length vary), and the
/// JSON shape of the body.
pub fn assert_like_sample(got: &HttpResponse, name: &str) {
    let want = sample(name);
    assert_eq!(got.status_line, want.status_line, "{name}: status line");
    let names = |r: &HttpResponse| {
        let mut n: Vec<String> = r.headers.iter().map(|(k, _)| k.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(got), names(&want), "{name}: header names");
    for (k, v) in &want.headers {
        if k != "Date" && k != "Content-Length" {
            assert_eq!(got.header(k), Some(v.as_str()), "{name}: header {k}");
        }
    }
    if want.header("Content-Type") == Some("application/json; charset=utf-8") {
        assert_eq!(
            shape(&got.json()),
            shape(&want.json()),
            "{name}: JSON shape"
        );
    } else {
        assert_eq!(got.body, want.body, "{name}: body");
    }
}

impl V1 {
    /// Read only a reply's size field.
    pub async fn reply_size(&mut self) -> u32 {
        tokio::time::timeout(STEP, self.stream.read_u32())
            .await
            .expect("read timed out")
            .expect("reply size")
    }
}
