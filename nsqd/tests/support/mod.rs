//! Shared helpers for the HTTP tests: an in-process nsqd on port 0 with a
//! temporary data path, a raw HTTP/1.1 client that sees headers exactly as
//! sent, a minimal V2 TCP client, polling with a deadline, and the golden
//! upstream samples.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nsq_protocol::Command;
use nsqd::{Options, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

/// Longest wait for one step (a request, a frame).
pub const STEP: Duration = Duration::from_secs(10);
/// Longest a whole test may take.
pub const TEST: Duration = Duration::from_secs(60);

/// Run a test body under [`TEST`].
pub async fn within<F: Future>(f: F) -> F::Output {
    timeout(TEST, f).await.expect("test timed out")
}

/// Poll `f` until it yields `Some`, failing after [`STEP`].
pub async fn poll<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub struct Nsqd {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    pub inner: Arc<nsqd::Nsqd>,
    stop: CancellationToken,
    pub data: tempfile::TempDir,
}

impl Drop for Nsqd {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running nsqd on 127.0.0.1 port 0 (TCP and HTTP) with extra flags.
pub async fn start(args: &[&str]) -> Nsqd {
    start_with(args, |_| {}).await
}

/// As [`start`], with a hook on the bound server before it runs.
pub async fn start_with(args: &[&str], hook: impl FnOnce(&Server)) -> Nsqd {
    let data = tempfile::tempdir().unwrap();
    let data_arg = format!("--data-path={}", data.path().display());
    let mut argv = vec![
        "nsqd",
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        "--node-id=1",
        data_arg.as_str(),
    ];
    argv.extend_from_slice(args);
    let opts: Options =
        nsq_app::flags::try_parse_options("nsqd", argv.iter().map(Into::into), &[]).unwrap();
    let server = Server::bind(opts).await.unwrap();
    hook(&server);
    let tcp = server.tcp_addr();
    let http = server.http_addr().expect("HTTP listener");
    let inner = server.nsqd();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move { server.run(s.cancelled_owned()).await });
    Nsqd {
        tcp,
        http,
        inner,
        stop,
        data,
    }
}

#[derive(Debug, Clone)]
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

    /// `{"message":"NAME"}` with that status, as upstream answers errors.
    pub fn assert_error(&self, status: u16, name: &str) {
        assert_eq!(
            (self.status, self.json()),
            (status, serde_json::json!({ "message": name })),
            "{}",
            self.text()
        );
        assert_eq!(
            self.header("Content-Type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(self.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
    }

    /// 200 with an empty body, as upstream's admin endpoints answer.
    pub fn assert_empty_ok(&self) {
        assert_eq!((self.status, self.text()), (200, String::new()));
        assert_eq!(self.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
        assert_eq!(self.header("Content-Type"), None);
    }
}

/// One request over a fresh connection; POST and PUT always carry a
/// Content-Length (curl's behaviour, which the samples were taken with).
pub async fn http(nsqd: &Nsqd, method: &str, target: &str, body: &[u8]) -> HttpResponse {
    http_with(nsqd.http, method, target, &[], body).await
}

pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: nsqd\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if matches!(method, "POST" | "PUT") || !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    raw_request(addr, &raw, method == "HEAD").await
}

/// Send raw bytes and read one response by its Content-Length.
pub async fn raw_request(addr: SocketAddr, request: &[u8], head: bool) -> HttpResponse {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write request");
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let mut resp = parse_response(&raw[..end + 4]);
                let len: usize = match resp.header("Content-Length") {
                    Some(n) if !head => n.parse().expect("Content-Length"),
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
            assert!(n > 0, "connection closed inside the headers: {raw:?}");
            raw.extend_from_slice(&chunk[..n]);
        }
    };
    timeout(STEP, fut).await.expect("HTTP request timed out")
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

pub fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/samples")
}

/// A golden sample's body bytes (the trailing newline of the file removed).
pub fn sample_body(name: &str) -> Vec<u8> {
    let path = samples_dir().join(name);
    let body =
        std::fs::read(&path).unwrap_or_else(|e| panic!("golden sample {} - {e}", path.display()));
    body.strip_suffix(b"\n").unwrap_or(&body).to_vec()
}

/// A golden upstream sample: `<name>.headers` parsed and `<name>.json`.
pub fn sample(name: &str) -> HttpResponse {
    let path = samples_dir().join(format!("{name}.headers"));
    let head = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden sample {} - {e}", path.display()));
    let mut raw = head
        .replace("\r\n", "\n")
        .trim_end()
        .replace('\n', "\r\n")
        .into_bytes();
    raw.extend_from_slice(b"\r\n\r\n");
    let mut resp = parse_response(&raw);
    resp.body = sample_body(&format!("{name}.json"));
    resp
}

/// The structure of a JSON value: object keys with the structure of their
/// values, the structure of the first array element (the others must agree
/// with it), scalar type names.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(items) => {
            let shapes: Vec<Value> = items.iter().map(shape).collect();
            if let Some(first) = shapes.first() {
                assert!(
                    shapes.iter().all(|s| compatible(s, first)),
                    "array elements differ in shape: {shapes:?}"
                );
            }
            Value::Array(shapes.into_iter().take(1).collect())
        }
        Value::String(_) => "string".into(),
        Value::Number(n) if n.is_f64() => "float".into(),
        Value::Number(_) => "int".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

/// Every object key of a JSON text in document order, to check that
/// fields come in upstream's order (a parsed `Value` sorts them).
pub fn key_order(json: &[u8]) -> Vec<String> {
    let mut keys = Vec::new();
    let mut i = 0;
    while i < json.len() {
        if json[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        i += 1;
        while i < json.len() && json[i] != b'"' {
            i += if json[i] == b'\\' { 2 } else { 1 };
        }
        let s = String::from_utf8_lossy(&json[start..i.min(json.len())]).into_owned();
        i += 1;
        let mut j = i;
        while j < json.len() && json[j].is_ascii_whitespace() {
            j += 1;
        }
        if json.get(j) == Some(&b':') {
            keys.push(s);
        }
    }
    keys
}

/// Two shapes agree, an empty array agreeing with any array.
fn compatible(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => match (x.first(), y.first()) {
            (Some(x), Some(y)) => compatible(x, y),
            _ => true,
        },
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| compatible(v, w)))
        }
        _ => a == b,
    }
}

/// Compare a response with a golden sample: status line, header names as
/// sent and the values that carry meaning (Date and Content-Length vary), and
/// the JSON shape (or exact bytes) of the body.
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
        assert_eq!(got.text(), want.text(), "{name}: body");
    }
}

/// A V2 TCP connection speaking raw frames.
pub struct Conn(pub TcpStream);

impl Conn {
    pub async fn open(nsqd: &Nsqd) -> Conn {
        let mut s = TcpStream::connect(nsqd.tcp).await.unwrap();
        s.write_all(b"  V2").await.unwrap();
        Conn(s)
    }

    pub async fn cmd(&mut self, c: Command) {
        let mut b = bytes::BytesMut::new();
        c.encode(&mut b);
        self.0.write_all(&b).await.unwrap();
    }

    pub async fn identify(&mut self, json: &str) {
        let mut b = b"IDENTIFY\n".to_vec();
        b.extend_from_slice(&(json.len() as u32).to_be_bytes());
        b.extend_from_slice(json.as_bytes());
        self.0.write_all(&b).await.unwrap();
        self.expect_ok().await;
    }

    /// Frame type and data.
    pub async fn frame(&mut self) -> (u32, Vec<u8>) {
        let size = timeout(STEP, self.0.read_u32())
            .await
            .expect("frame in time")
            .expect("connection open") as usize;
        let mut rest = vec![0u8; size];
        timeout(STEP, self.0.read_exact(&mut rest))
            .await
            .unwrap()
            .unwrap();
        let t = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        (t, rest[4..].to_vec())
    }

    pub async fn expect_ok(&mut self) {
        assert_eq!(self.frame().await, (0, b"OK".to_vec()));
    }

    /// The next message frame: (id, body); heartbeats are answered.
    pub async fn message(&mut self) -> ([u8; 16], Vec<u8>) {
        loop {
            let (t, d) = self.frame().await;
            if t == 0 && d == b"_heartbeat_" {
                self.cmd(Command::Nop).await;
                continue;
            }
            assert_eq!(
                t,
                2,
                "expected a message, got {:?}",
                String::from_utf8_lossy(&d)
            );
            let mut id = [0u8; 16];
            id.copy_from_slice(&d[10..26]);
            return (id, d[26..].to_vec());
        }
    }

    pub async fn sub(&mut self, topic: &str, channel: &str) {
        self.cmd(Command::Sub {
            topic: topic.parse().unwrap(),
            channel: channel.parse().unwrap(),
        })
        .await;
        self.expect_ok().await;
    }

    pub async fn publish(&mut self, topic: &str, body: &[u8]) {
        self.cmd(Command::Pub {
            topic: topic.parse().unwrap(),
            body: bytes::Bytes::copy_from_slice(body),
        })
        .await;
        self.expect_ok().await;
    }
}
