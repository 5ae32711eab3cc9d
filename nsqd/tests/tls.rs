//! Feature negotiation in-process: the exact bytes of the TLS, snappy and
//! deflate upgrade sequences, `--tls-required` over TCP and HTTP, HTTPS, and
//! AUTH against an auth server the test runs. Certificates are made here.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nsq_test_support::http::parse_response;
use nsq_test_support::in_process;
use nsq_test_support::in_process::{http, start, STEP};
use nsq_test_support::nsqd_stats::{clients_in, topic_stats_target};
use nsq_test_support::{Certs, HttpResponse};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::rustls;

async fn start_args(args: &[String]) -> nsq_test_support::in_process::Nsqd {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    start(&refs).await
}

fn frame(frame_type: u32, data: &[u8]) -> Vec<u8> {
    let mut f = ((data.len() + 4) as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&frame_type.to_be_bytes());
    f.extend_from_slice(data);
    f
}

fn identify_cmd(body: &Value) -> Vec<u8> {
    let body = body.to_string();
    let mut b = b"IDENTIFY\n".to_vec();
    b.extend_from_slice(&(body.len() as u32).to_be_bytes());
    b.extend_from_slice(body.as_bytes());
    b
}

fn pub_cmd(topic: &str, body: &[u8]) -> Vec<u8> {
    let mut b = format!("PUB {topic}\n").into_bytes();
    b.extend_from_slice(&(body.len() as u32).to_be_bytes());
    b.extend_from_slice(body);
    b
}

fn auth_cmd(secret: &str) -> Vec<u8> {
    let mut b = b"AUTH\n".to_vec();
    b.extend_from_slice(&(secret.len() as u32).to_be_bytes());
    b.extend_from_slice(secret.as_bytes());
    b
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> (u32, Vec<u8>) {
    let fut = async {
        let mut head = [0u8; 8];
        s.read_exact(&mut head).await.expect("frame header");
        let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let mut data = vec![0u8; size - 4];
        s.read_exact(&mut data).await.expect("frame body");
        (u32::from_be_bytes(head[4..].try_into().unwrap()), data)
    };
    timeout(STEP, fut).await.expect("no frame in time")
}

/// Read response frames, skipping heartbeats, until one that is not.
async fn reply<S: AsyncRead + Unpin>(s: &mut S) -> (u32, String) {
    loop {
        let (t, d) = read_frame(s).await;
        if d != b"_heartbeat_" {
            return (t, String::from_utf8_lossy(&d).into_owned());
        }
    }
}

async fn expect_closed<S: AsyncRead + Unpin>(s: &mut S) {
    let mut b = [0u8; 64];
    let n = timeout(STEP, s.read(&mut b))
        .await
        .expect("connection not closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "unexpected bytes {:?}", &b[..n]);
}

async fn connect(nsqd: &nsq_test_support::in_process::Nsqd) -> TcpStream {
    let mut s = TcpStream::connect(nsqd.tcp).await.unwrap();
    s.write_all(b"  V2").await.unwrap();
    s
}

/// [`connect`], then IDENTIFY with `body`; the reply is left to read.
async fn connect_and_identify(nsqd: &nsq_test_support::in_process::Nsqd, body: Value) -> TcpStream {
    let mut tcp = connect(nsqd).await;
    tcp.write_all(&identify_cmd(&body)).await.unwrap();
    tcp
}

/// Read the next 10 bytes of `s`: they must be the `OK` response frame, byte for byte.
async fn expect_ok_frame(s: &mut (impl AsyncRead + Unpin)) {
    let mut ok = [0u8; 10];
    s.read_exact(&mut ok).await.unwrap();
    assert_eq!(ok, *b"\x00\x00\x00\x06\x00\x00\x00\x00OK");
}

/// The IDENTIFY reply nsqd sends with these grants, byte for byte.
fn negotiated(tls: bool, deflate: bool, level: u8, snappy: bool, auth: bool) -> String {
    format!(
        r#"{{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"msg_timeout":60000,"tls_v1":{tls},"deflate":{deflate},"deflate_level":{level},"max_deflate_level":6,"snappy":{snappy},"sample_rate":0,"auth_required":{auth},"output_buffer_size":16384,"output_buffer_timeout":250}}"#
    )
}

async fn clients(nsqd: &nsq_test_support::in_process::Nsqd, topic: &str) -> Vec<Value> {
    let stats = http(nsqd, "GET", &topic_stats_target(topic), b"").await;
    clients_in(&stats.json())
}

#[in_process::test]
async fn tls_upgrade_answers_json_then_ok_inside_tls() {
    let certs = Certs::new();
    let nsqd = start_args(&certs.nsqd_args()).await;
    let mut tcp =
        connect_and_identify(&nsqd, json!({"feature_negotiation": true, "tls_v1": true})).await;
    // The JSON reply comes in the clear, and nothing after it.
    let want = frame(0, negotiated(true, false, 6, false, false).as_bytes());
    let mut got = vec![0u8; want.len()];
    tcp.read_exact(&mut got).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    let mut tls = certs.tls(tcp).await;
    expect_ok_frame(&mut tls).await;
    tls.write_all(&pub_cmd("t", b"over tls")).await.unwrap();
    assert_eq!(reply(&mut tls).await, (0, "OK".into()));
    tls.write_all(b"SUB t c\nRDY 1\n").await.unwrap();
    assert_eq!(reply(&mut tls).await, (0, "OK".into()));
    let (t, m) = read_frame(&mut tls).await;
    assert_eq!((t, &m[26..]), (2, &b"over tls"[..]));
    let c = clients(&nsqd, "t").await;
    let c = c
        .iter()
        .find(|c| c["tls"] == json!(true))
        .expect("a TLS client");
    assert!(
        c["tls_version"] == "TLS1.3" || c["tls_version"] == "TLS1.2",
        "{c}"
    );
    assert!(
        c["tls_cipher_suite"].as_str().unwrap().starts_with("TLS_"),
        "{c}"
    );
    assert_eq!(c["tls_negotiated_protocol_is_mutual"], json!(true));
}

#[in_process::test]
async fn snappy_upgrade_sends_a_framed_ok_and_reads_framed_commands() {
    let nsqd = start(&[]).await;
    let mut tcp =
        connect_and_identify(&nsqd, json!({"feature_negotiation": true, "snappy": true})).await;
    assert_eq!(
        reply(&mut tcp).await,
        (0, negotiated(false, false, 6, true, false))
    );
    // Stream identifier, then OK in one uncompressed chunk (too short to
    // gain from compression) with its masked CRC-32C.
    let ok = frame(0, b"OK");
    let crc = crc32c::crc32c(&ok)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8);
    let mut want = b"\xff\x06\x00\x00sNaPpY\x01\x0e\x00\x00".to_vec();
    want.extend_from_slice(&crc.to_le_bytes());
    want.extend_from_slice(&ok);
    let mut got = vec![0u8; want.len()];
    tcp.read_exact(&mut got).await.unwrap();
    assert_eq!(got, want);
    // Commands compressed by the snap crate's own encoder.
    let mut enc = snap::write::FrameEncoder::new(Vec::new());
    enc.write_all(&pub_cmd("s", &vec![b'x'; 100_000])).unwrap();
    enc.flush().unwrap();
    tcp.write_all(enc.get_ref()).await.unwrap();
    let mut wire = Vec::new();
    let mut buf = [0u8; 256];
    let mut plain = Vec::new();
    while plain.len() < 10 {
        let n = timeout(STEP, tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed");
        wire.extend_from_slice(&buf[..n]);
        let mut all = b"\xff\x06\x00\x00sNaPpY".to_vec();
        all.extend_from_slice(&wire);
        plain.clear();
        let _ = snap::read::FrameDecoder::new(&all[..]).read_to_end(&mut plain);
    }
    assert_eq!(plain, frame(0, b"OK"));
    let c = clients(&nsqd, "s").await;
    assert_eq!(c[0]["snappy"], json!(true), "{c:?}");
}

#[in_process::test]
async fn deflate_upgrade_is_raw_deflate_with_sync_flushes_and_level_capped() {
    let nsqd = start(&["--max-deflate-level=3"]).await;
    let mut tcp = connect_and_identify(
        &nsqd,
        json!({"feature_negotiation": true, "deflate": true, "deflate_level": 9}),
    )
    .await;
    let want = negotiated(false, true, 3, false, false)
        .replace(r#""max_deflate_level":6"#, r#""max_deflate_level":3"#);
    assert_eq!(reply(&mut tcp).await, (0, want));
    // Read until the sync-flush marker; raw inflate gives the OK frame.
    let mut wire = Vec::new();
    let mut buf = [0u8; 256];
    while !wire.ends_with(&[0, 0, 0xff, 0xff]) {
        let n = timeout(STEP, tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed");
        wire.extend_from_slice(&buf[..n]);
    }
    let mut inflate = flate2::Decompress::new(false);
    let mut out = vec![0u8; 64];
    inflate
        .decompress(&wire, &mut out, flate2::FlushDecompress::Sync)
        .unwrap();
    out.truncate(inflate.total_out() as usize);
    assert_eq!(out, frame(0, b"OK"));
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(5));
    enc.write_all(&pub_cmd("d", b"deflated")).unwrap();
    enc.flush().unwrap();
    tcp.write_all(enc.get_ref()).await.unwrap();
    let mut wire = Vec::new();
    while !wire.ends_with(&[0, 0, 0xff, 0xff]) {
        let n = timeout(STEP, tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed");
        wire.extend_from_slice(&buf[..n]);
    }
    let mut out = vec![0u8; 64];
    let before = inflate.total_out();
    inflate
        .decompress(&wire, &mut out, flate2::FlushDecompress::Sync)
        .unwrap();
    out.truncate((inflate.total_out() - before) as usize);
    assert_eq!(out, frame(0, b"OK"));
}

#[in_process::test]
async fn tls_then_snappy_each_answer_ok_in_order() {
    let certs = Certs::new();
    let nsqd = start_args(&certs.nsqd_args()).await;
    let mut tcp = connect_and_identify(
        &nsqd,
        json!({"feature_negotiation": true, "tls_v1": true, "snappy": true}),
    )
    .await;
    assert_eq!(
        reply(&mut tcp).await,
        (0, negotiated(true, false, 6, true, false))
    );
    let mut tls = certs.tls(tcp).await;
    expect_ok_frame(&mut tls).await;
    let mut id = [0u8; 10];
    tls.read_exact(&mut id).await.unwrap();
    assert_eq!(&id, b"\xff\x06\x00\x00sNaPpY");
    let mut head = [0u8; 4];
    tls.read_exact(&mut head).await.unwrap();
    let mut chunk = vec![0u8; usize::from(head[1])];
    tls.read_exact(&mut chunk).await.unwrap();
    let mut all = id.to_vec();
    all.extend_from_slice(&head);
    all.extend_from_slice(&chunk);
    let mut plain = Vec::new();
    snap::read::FrameDecoder::new(&all[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, frame(0, b"OK"));
}

#[in_process::test]
async fn both_compressions_at_once_is_fatal() {
    let nsqd = start(&[]).await;
    let mut tcp = connect_and_identify(
        &nsqd,
        json!({"feature_negotiation": true, "snappy": true, "deflate": true}),
    )
    .await;
    expect_fatal(
        &mut tcp,
        "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression",
    )
    .await;
    // With snappy switched off, asking for both grants deflate only.
    let nsqd = start(&["--snappy=false"]).await;
    let mut tcp = connect_and_identify(
        &nsqd,
        json!({"feature_negotiation": true, "snappy": true, "deflate": true}),
    )
    .await;
    assert_eq!(
        reply(&mut tcp).await,
        (0, negotiated(false, true, 6, false, false))
    );
}

async fn https_get(certs: &Certs, addr: SocketAddr, target: &str) -> HttpResponse {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = certs.tls(tcp).await;
    let req = format!("GET {target} HTTP/1.1\r\nHost: nsqd\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    timeout(STEP, tls.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    parse_response(&raw).expect("an HTTP response")
}

#[in_process::test]
async fn tls_required_refuses_plaintext_and_https_serves_the_api() {
    let certs = Certs::new();
    let mut args = certs.nsqd_args();
    args.push("--tls-required".into());
    let nsqd = start_args(&args).await;
    let https = nsqd.inner.https_addr().expect("HTTPS listener");
    // TCP: anything but IDENTIFY before TLS is fatal.
    let mut tcp = connect(&nsqd).await;
    tcp.write_all(&pub_cmd("t", b"x")).await.unwrap();
    expect_fatal(
        &mut tcp,
        "E_INVALID cannot PUB in current state (TLS required)",
    )
    .await;
    // IDENTIFY without TLS is answered, but the next command is refused.
    let mut tcp = connect_and_identify(&nsqd, json!({"feature_negotiation": true})).await;
    assert_eq!(
        reply(&mut tcp).await,
        (0, negotiated(false, false, 6, false, false))
    );
    tcp.write_all(b"NOP\n").await.unwrap();
    assert_eq!(
        reply(&mut tcp).await,
        (
            1,
            "E_INVALID cannot NOP in current state (TLS required)".into()
        )
    );
    // After the upgrade everything works.
    let mut tcp =
        connect_and_identify(&nsqd, json!({"feature_negotiation": true, "tls_v1": true})).await;
    reply(&mut tcp).await;
    let mut tls = certs.tls(tcp).await;
    assert_eq!(reply(&mut tls).await, (0, "OK".into()));
    tls.write_all(&pub_cmd("t", b"x")).await.unwrap();
    assert_eq!(reply(&mut tls).await, (0, "OK".into()));
    // HTTP: every path is 403 on the plain port, with the HTTPS port.
    let r = http(&nsqd, "GET", "/ping", b"").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.text(),
        format!(
            r#"{{"message": "TLS_REQUIRED", "https_port": {}}}"#,
            https.port()
        )
    );
    assert_eq!(r.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
    assert_eq!(http(&nsqd, "POST", "/pub?topic=t", b"x").await.status, 403);
    let r = https_get(&certs, https, "/ping").await;
    assert_eq!((r.status, r.text()), (200, "OK".to_string()));
    let r = https_get(&certs, https, "/stats?format=json&topic=t").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["topics"][0]["message_count"], json!(1));
}

#[in_process::test]
async fn tls_required_tcp_https_keeps_plain_http_open() {
    let certs = Certs::new();
    let mut args = certs.nsqd_args();
    args.push("--tls-required=tcp-https".into());
    let nsqd = start_args(&args).await;
    assert_eq!(http(&nsqd, "GET", "/ping", b"").await.text(), "OK");
    let mut tcp = connect(&nsqd).await;
    tcp.write_all(b"NOP\n").await.unwrap();
    assert_eq!(
        reply(&mut tcp).await,
        (
            1,
            "E_INVALID cannot NOP in current state (TLS required)".into()
        )
    );
}

#[tokio::test]
async fn tls_flags_are_checked_at_startup() {
    let bad = |args: &[&str]| {
        let mut argv = vec!["nsqd", "--tcp-address=127.0.0.1:0", "--http-address="];
        argv.extend_from_slice(args);
        let opts: nsqd::Options =
            nsq_app::flags::try_parse_options("nsqd", argv.iter().map(Into::into), &[]).unwrap();
        opts.validate().unwrap_err().to_string()
    };
    assert_eq!(
        bad(&["--tls-required"]),
        "cannot require TLS client connections without TLS key and cert"
    );
    assert_eq!(
        bad(&["--tls-client-auth-policy=require"]),
        "cannot require TLS client connections without TLS key and cert"
    );
    assert_eq!(
        bad(&["--tls-cert=a.pem"]),
        "--tls-cert and --tls-key must be given together"
    );
    assert_eq!(
        bad(&["--tls-min-version=tls9"]),
        "unknown tlsVersionOption \"tls9\""
    );
    // Unreadable certificate files are a startup error, not a silent no-TLS.
    let mut argv = vec![
        "nsqd",
        "--tcp-address=127.0.0.1:0",
        "--http-address=",
        "--tls-cert=/nonexistent/c.pem",
        "--tls-key=/nonexistent/k.pem",
    ];
    let dir = tempfile::tempdir().unwrap();
    let data = format!("--data-path={}", dir.path().display());
    argv.push(&data);
    let opts = nsq_app::flags::try_parse_options("nsqd", argv.iter().map(Into::into), &[]).unwrap();
    let err = nsqd::Server::bind(opts).await.err().expect("startup error");
    assert!(
        err.to_string()
            .starts_with("failed to build TLS config - open /nonexistent/c.pem"),
        "{err}"
    );
}

/// An auth server on port 0: answers each request with the next queued
/// reply (the last one repeats) and records the query strings it got.
struct AuthServer {
    addr: SocketAddr,
    replies: Arc<Mutex<VecDeque<(u16, String)>>>,
    queries: Arc<Mutex<Vec<String>>>,
}

impl AuthServer {
    async fn start(replies: &[(u16, &str)]) -> AuthServer {
        Self::start_with(replies, None).await
    }

    /// The auth server, answering over TLS when `tls` is given.
    async fn start_with(
        replies: &[(u16, &str)],
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let replies = Arc::new(Mutex::new(
            replies
                .iter()
                .map(|(s, b)| (*s, b.to_string()))
                .collect::<VecDeque<_>>(),
        ));
        let queries = Arc::new(Mutex::new(Vec::new()));
        let (r, q) = (replies.clone(), queries.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, q) = (r.clone(), q.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<_>| {
                        let (r, q) = (r.clone(), q.clone());
                        async move {
                            q.lock().unwrap().push(format!(
                                "{} {}",
                                req.uri().path(),
                                req.uri().query().unwrap_or("")
                            ));
                            let (status, body) = {
                                let mut r = r.lock().unwrap();
                                if r.len() > 1 {
                                    r.pop_front().unwrap()
                                } else {
                                    r.front().cloned().unwrap()
                                }
                            };
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        AuthServer {
            addr,
            replies,
            queries,
        }
    }

    fn set(&self, status: u16, body: &str) {
        let mut r = self.replies.lock().unwrap();
        r.clear();
        r.push_back((status, body.to_string()));
    }

    fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }

    /// nsqd's flag pointing at this server.
    fn nsqd_arg(&self) -> String {
        format!("--auth-http-address={}", self.addr)
    }
}

const GRANT: &str = r#"{"ttl":3600,"identity":"alice","identity_url":"https://id/alice","authorizations":[{"topic":"^ok","channels":[".*"],"permissions":["subscribe","publish"]}]}"#;

/// The next reply on `tcp` is the fatal error `want`, and then nsqd closes it.
async fn expect_fatal(tcp: &mut TcpStream, want: &str) {
    let got = reply(tcp).await;
    assert_fatal(tcp, got, want).await;
}

/// `got` is the fatal error `want`, and nsqd closes `tcp` after it.
async fn assert_fatal(tcp: &mut TcpStream, got: (u32, String), want: &str) {
    assert_eq!(got, (1, want.to_string()));
    expect_closed(tcp).await;
}

async fn authed_conn(
    nsqd: &nsq_test_support::in_process::Nsqd,
    secret: &str,
) -> (TcpStream, (u32, String)) {
    let mut tcp = connect_and_identify(nsqd, json!({"feature_negotiation": true})).await;
    assert_eq!(
        reply(&mut tcp).await,
        (0, negotiated(false, false, 6, false, true))
    );
    tcp.write_all(&auth_cmd(secret)).await.unwrap();
    let r = reply(&mut tcp).await;
    (tcp, r)
}

#[in_process::test]
async fn auth_allows_what_is_granted_and_refuses_the_rest() {
    let auth = AuthServer::start(&[(200, GRANT)]).await;
    let nsqd = start(&[&auth.nsqd_arg()]).await;
    // Nothing before AUTH.
    let mut tcp = connect(&nsqd).await;
    tcp.write_all(&pub_cmd("ok", b"x")).await.unwrap();
    expect_fatal(&mut tcp, "E_AUTH_FIRST AUTH required before PUB").await;

    let (mut tcp, r) = authed_conn(&nsqd, "s3cret &").await;
    assert_eq!(
        r,
        (
            0,
            r#"{"identity":"alice","identity_url":"https://id/alice","permission_count":1}"#.into()
        )
    );
    assert_eq!(
        auth.queries(),
        vec!["/auth common_name=&remote_ip=127.0.0.1&secret=s3cret+%26&tls=false".to_string()]
    );
    tcp.write_all(&pub_cmd("ok-topic", b"x")).await.unwrap();
    assert_eq!(reply(&mut tcp).await, (0, "OK".into()));
    let c = clients(&nsqd, "ok-topic").await;
    assert_eq!(c[0]["authed"], json!(true), "{c:?}");
    assert_eq!(c[0]["auth_identity"], json!("alice"));
    assert_eq!(c[0]["auth_identity_url"], json!("https://id/alice"));
    tcp.write_all(b"AUTH\n\x00\x00\x00\x01x").await.unwrap();
    expect_fatal(&mut tcp, "E_INVALID AUTH already set").await;

    let (mut tcp, _) = authed_conn(&nsqd, "s").await;
    tcp.write_all(&pub_cmd("other", b"x")).await.unwrap();
    expect_fatal(
        &mut tcp,
        r#"E_UNAUTHORIZED AUTH failed for PUB on "other" """#,
    )
    .await;

    let (mut tcp, _) = authed_conn(&nsqd, "s").await;
    tcp.write_all(b"SUB ok c\n").await.unwrap();
    assert_eq!(reply(&mut tcp).await, (0, "OK".into()));

    // An empty grant and a refusal.
    auth.set(200, r#"{"ttl":60,"authorizations":[]}"#);
    let (mut tcp, r) = authed_conn(&nsqd, "s").await;
    assert_fatal(&mut tcp, r, "E_UNAUTHORIZED AUTH no authorizations found").await;
    auth.set(403, r#"{"message":"no"}"#);
    let (mut tcp, r) = authed_conn(&nsqd, "s").await;
    assert_fatal(&mut tcp, r, "E_AUTH_FAILED AUTH failed").await;
}

#[in_process::test]
async fn an_expired_grant_is_fetched_again_on_use() {
    let auth = AuthServer::start(&[(
        200,
        r#"{"ttl":1,"identity":"bob","authorizations":[{"topic":".*","channels":[".*"],"permissions":["publish"]}]}"#,
    )])
    .await;
    let nsqd = start(&[&auth.nsqd_arg()]).await;
    let (mut tcp, r) = authed_conn(&nsqd, "s").await;
    assert_eq!(r.0, 0, "{r:?}");
    // From now on the server refuses; the cached grant holds for its ttl.
    auth.set(200, r#"{"ttl":60,"authorizations":[]}"#);
    // Publish until the grant expires and the refetch refuses; bounded.
    let deadline = tokio::time::Instant::now() + STEP;
    let refused = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired grant was never refetched"
        );
        tcp.write_all(&pub_cmd("t", b"x")).await.unwrap();
        match reply(&mut tcp).await {
            (0, ok) if ok == "OK" => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            other => break other,
        }
    };
    assert_eq!(
        refused,
        (1, r#"E_UNAUTHORIZED AUTH failed for PUB on "t" """#.into())
    );
    assert_eq!(auth.queries().len(), 2, "{:?}", auth.queries());
}

/// A TTL past what a clock can hold saturates: the grant simply never
/// expires, and the connection (and its place in the client list) lives on.
#[in_process::test]
async fn an_auth_ttl_of_i64_max_saturates_instead_of_killing_the_connection() {
    let grant = GRANT.replace(r#""ttl":3600"#, &format!(r#""ttl":{}"#, i64::MAX));
    let auth = AuthServer::start(&[(200, &grant)]).await;
    let nsqd = start(&[&auth.nsqd_arg()]).await;
    let (mut tcp, r) = authed_conn(&nsqd, "s").await;
    assert_eq!(r.0, 0, "{r:?}");
    tcp.write_all(&pub_cmd("ok", b"x")).await.unwrap();
    assert_eq!(reply(&mut tcp).await, (0, "OK".into()));
    assert_eq!(nsqd.inner.clients_snapshot().len(), 1);
    drop(tcp);
    nsq_test_support::poll("the client to be unregistered", || async {
        nsqd.inner.clients_snapshot().is_empty().then_some(())
    })
    .await;
}

/// Upstream passes the TLS client certificate's CN as `common_name`, and
/// reaches `https://` auth servers, trusting `--tls-root-ca-file`.
#[in_process::test]
async fn auth_over_https_carries_the_client_certificate_cn() {
    let certs = Certs::new();
    let auth = AuthServer::start_with(&[(200, GRANT)], Some(certs.acceptor())).await;
    let mut args = certs.nsqd_args();
    args.push(format!(
        "--auth-http-address=https://127.0.0.1:{}/auth",
        auth.addr.port()
    ));
    args.push("--tls-client-auth-policy=require-verify".into());
    args.push(format!(
        "--tls-root-ca-file={}",
        certs.path("ca.pem").display()
    ));
    let nsqd = start_args(&args).await;
    let mut tcp =
        connect_and_identify(&nsqd, json!({"feature_negotiation": true, "tls_v1": true})).await;
    assert_eq!(read_frame(&mut tcp).await.0, 0);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = timeout(STEP, certs.connector_with_cert().connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply(&mut tls).await, (0, "OK".into()));
    tls.write_all(&auth_cmd("s")).await.unwrap();
    let (t, body) = reply(&mut tls).await;
    assert_eq!(t, 0, "{body}");
    assert_eq!(
        auth.queries(),
        vec![
            "/auth common_name=worker+7.example&remote_ip=127.0.0.1&secret=s&tls=true".to_string()
        ]
    );
    tls.write_all(&pub_cmd("ok", b"x")).await.unwrap();
    assert_eq!(reply(&mut tls).await, (0, "OK".into()));
}

#[in_process::test]
async fn an_unreachable_or_silent_auth_server_fails_fast() {
    // Nothing listens on a port we just closed.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let addr = format!("--auth-http-address={dead}");
    let nsqd = start(&[&addr]).await;
    let (mut tcp, r) = authed_conn(&nsqd, "s").await;
    assert_fatal(&mut tcp, r, "E_AUTH_FAILED AUTH failed").await;

    // One that accepts and never answers is cut off by the request timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let addr = format!("--auth-http-address={silent_addr}");
    let nsqd = start(&[&addr, "--http-client-request-timeout=300ms"]).await;
    let (mut tcp, r) = authed_conn(&nsqd, "s").await;
    assert_fatal(&mut tcp, r, "E_AUTH_FAILED AUTH failed").await;
}

#[in_process::test]
async fn auth_without_auth_servers_is_disabled() {
    let nsqd = start(&[]).await;
    let mut tcp = connect(&nsqd).await;
    tcp.write_all(&auth_cmd("s")).await.unwrap();
    expect_fatal(&mut tcp, "E_AUTH_DISABLED AUTH disabled").await;
}
