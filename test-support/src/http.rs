//! Tiny HTTP/1.1 clients for the daemons' HTTP APIs, and the one response type they share.
//!
//! - [`http_request`] and friends: blocking, on `std::net::TcpStream` with `Connection: close`
//!   so that "the response ends at EOF". Blocking is fine from async tests on the
//!   multi-threaded runtime: calls are short and loopback-only.
//! - [`http_keepalive`] / [`http_exchange`]: async, sending a request the way curl does
//!   (keep-alive, so the daemon answers with the headers the golden samples show) and reading
//!   one response by its `Content-Length`.
//!
//! No HTTP library stands between the test and the bytes the daemon actually sends (a test can
//! check exact status lines and headers). Every socket operation has a timeout, so a call can
//! never hang a test.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bound on connecting, and on each read or write, of one request.
pub const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status line as sent, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    pub status: u16,
    /// Header names and values as sent (names keep their case; look up with [`Self::header`]).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if the server used chunked transfer encoding.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }

    /// `{"message":"NAME"}` with that status and upstream's error headers, as nsqd answers
    /// errors.
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

/// Send one request and read the whole response.
///
/// `target` is the request target, e.g. `/pub?topic=t`. A body is sent with `Content-Length`
/// (also for an empty body on POST/PUT, as curl and Go's client do).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
) -> io::Result<HttpResponse> {
    http_request_with_headers(addr, method, target, &[], body)
}

/// [`http_request`] with extra request headers (e.g. the user header an
/// nsqadmin ACL checks).
pub fn http_request_with_headers(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_IO_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_IO_TIMEOUT))?;
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: nsq-tests\r\n\
         Accept: */*\r\nConnection: close\r\n"
    )
    .into_bytes();
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "DELETE") {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    stream.write_all(&req)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// `GET target`.
pub fn http_get(addr: SocketAddr, target: &str) -> io::Result<HttpResponse> {
    http_request(addr, "GET", target, b"")
}

/// `POST target` with `body`.
pub fn http_post(addr: SocketAddr, target: &str, body: &[u8]) -> io::Result<HttpResponse> {
    http_request(addr, "POST", target, body)
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Where the head of `raw` ends (the index of its blank line), if it is all there.
fn head_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Parse a complete response read up to EOF.
pub fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let head_end = head_end(raw).ok_or_else(|| {
        bad(format!(
            "no end of headers in {:?}",
            String::from_utf8_lossy(raw)
        ))
    })?;
    let mut resp = parse_head(&raw[..head_end])?;
    let rest = &raw[head_end + 4..];
    resp.body = if resp
        .header("Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = resp.header("Content-Length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        if rest.len() < len {
            return Err(bad(format!(
                "body cut short: {} of {len} bytes",
                rest.len()
            )));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(resp)
}

/// Parse a status line and headers (without the blank line that ends them); the body is left
/// empty.
pub fn parse_head(head: &[u8]) -> io::Result<HttpResponse> {
    let head = std::str::from_utf8(head).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("bad status line {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(HttpResponse {
        status_line: status_line.to_owned(),
        status,
        headers,
        body: Vec::new(),
    })
}

/// One request sent the way curl sends it (keep-alive; POST and PUT always carry a
/// `Content-Length`), its response read by [`http_exchange`].
pub async fn http_keepalive(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if matches!(method, "POST" | "PUT") || !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    http_exchange(addr, &raw, method == "HEAD").await
}

/// Send `request` as it is over a fresh connection and read one response, its body by its
/// `Content-Length` (none after a `HEAD`); panics after [`HTTP_IO_TIMEOUT`].
pub async fn http_exchange(addr: SocketAddr, request: &[u8], head: bool) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write request");
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = head_end(&raw) {
                let mut resp = parse_head(&raw[..end]).expect("a valid response head");
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
    tokio::time::timeout(HTTP_IO_TIMEOUT, fut)
        .await
        .expect("HTTP request timed out")
}

fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("chunk size line not terminated"))?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| bad("bad chunk size"))?;
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(bad("chunk cut short"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nOKjunk")
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "OK"));
        assert_eq!(r.header("x-a"), Some("b"));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "abcde"));
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }
}
