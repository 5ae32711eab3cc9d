//! End-to-end tests of the tools that pass messages on — `nsq_to_http` to
//! HTTP servers this test runs, `nsq_to_nsq` to other nsqds — and of
//! `nsq_tail` logging its lookupd queries, run as real processes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nsq_test_support::tool::Tool;
use nsq_test_support::{wait_until, NsqdProcess, NsqlookupdProcess};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 server that records every request and answers each with
/// the status it is set to.
struct HttpSink {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    status: Arc<AtomicU16>,
}

impl HttpSink {
    fn start() -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let (log, answer) = (seen.clone(), status.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (log, answer) = (log.clone(), answer.clone());
                // One thread per connection: the tool keeps connections alive.
                std::thread::spawn(move || serve(stream, log, answer));
            }
        });
        HttpSink { addr, seen, status }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: std::net::TcpStream, log: Arc<Mutex<Vec<Seen>>>, answer: Arc<AtomicU16>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((n, v)) = h.trim_end().split_once(':') {
                headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0usize);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = answer.load(Ordering::SeqCst);
        // Record only what is accepted: the rest will come again.
        if status == 200 {
            log.lock().unwrap().push(Seen {
                line: line.trim_end().to_owned(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        let _ = write!(writer, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
    }
}

/// Retry failures at once and without backoff, so a test need not wait.
const QUICK_RETRY: [&str; 2] = [
    "--consumer-opt=default_requeue_delay,0s",
    "--consumer-opt=backoff_multiplier,0s",
];

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsq_to_http_posts_round_robin_with_headers_and_survives_a_failing_endpoint() {
    let nsqd = NsqdProcess::start(&[]);
    let (a, b) = (HttpSink::start(), HttpSink::start());
    let mut raw = nsqd.connect_identified().await;
    let bodies: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_bytes()).collect();
    raw.publish_multi("to_http", &refs).await;

    let mut args = vec![
        "--topic=to_http".to_string(),
        format!("--nsqd-tcp-address={}", nsqd.tcp_addr()),
        format!("--post=http://{}/in", a.addr),
        format!("--post=http://{}/in", b.addr),
        "--mode=round-robin".into(),
        "--n=1".into(),
        "--content-type=text/plain".into(),
        "--header=X-Test: yes".into(),
    ];
    args.extend(QUICK_RETRY.iter().map(|s| s.to_string()));
    let tool = Tool::spawn(env!("CARGO_BIN_EXE_nsq_to_http"), &args, None);
    wait_until(Duration::from_secs(20), "20 POSTs", || {
        match a.seen().len() + b.seen().len() {
            20 => Ok(()),
            n => Err(format!("{n}; {}", tool.stderr_so_far())),
        }
    })
    .await
    .unwrap();
    // One handler, round-robin: every other message to each endpoint.
    assert_eq!((a.seen().len(), b.seen().len()), (10, 10));
    let r = &a.seen()[0];
    assert_eq!(r.line, "POST /in HTTP/1.1");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-test"), Some("yes"));
    assert!(r.header("user-agent").unwrap().starts_with("nsq_to_http/"));
    let mut got: Vec<String> = a
        .seen()
        .into_iter()
        .chain(b.seen())
        .map(|s| s.body)
        .collect();
    got.sort();
    let mut want = bodies.clone();
    want.sort();
    assert_eq!(got, want);

    // An endpoint answering 500 fails its messages; they are requeued
    // and, in hostpool mode, delivered to the endpoint that works.
    tool.terminate();
    assert!(tool.finish().await.status.success());
    b.status.store(500, Ordering::SeqCst);
    let before = a.seen().len();
    let more: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    let refs: Vec<&[u8]> = more.iter().map(|b| b.as_bytes()).collect();
    raw.publish_multi("to_http", &refs).await;
    args[4] = "--mode=hostpool".into();
    let tool = Tool::spawn(env!("CARGO_BIN_EXE_nsq_to_http"), &args, None);
    wait_until(
        Duration::from_secs(20),
        "10 more POSTs to the healthy endpoint",
        || match a.seen().len() - before {
            10 => Ok(()),
            n => Err(format!("{n}; {}", tool.stderr_so_far())),
        },
    )
    .await
    .unwrap();
    assert_eq!(b.seen().len(), 10);
    tool.stop_ok().await;
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsq_to_http_gets_with_the_body_escaped_into_the_url() {
    let nsqd = NsqdProcess::start(&[]);
    let sink = HttpSink::start();
    let mut raw = nsqd.connect_identified().await;
    raw.publish("to_get", b"a b&c").await;
    let tool = Tool::spawn(
        env!("CARGO_BIN_EXE_nsq_to_http"),
        &[
            "--topic=to_get".to_string(),
            format!("--nsqd-tcp-address={}", nsqd.tcp_addr()),
            format!("--get=http://{}/hit?data=%s", sink.addr),
        ],
        None,
    );
    wait_until(Duration::from_secs(20), "a GET", || {
        match sink.seen().first() {
            Some(s) => Ok(s.line.clone()),
            None => Err(tool.stderr_so_far()),
        }
    })
    .await
    .map(|line| assert_eq!(line, "GET /hit?data=a+b%26c HTTP/1.1"))
    .unwrap();

    Tool::expect_failure(
        env!("CARGO_BIN_EXE_nsq_to_http"),
        &[
            "--topic=t".to_string(),
            "--nsqd-tcp-address=127.0.0.1:1".into(),
            "--get=http://x/".into(),
        ],
        "invalid GET address - must be a printf string",
    )
    .await;
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsq_to_nsq_copies_to_a_destination_topic_round_robin() {
    let source = NsqdProcess::start(&[]);
    let (d1, d2) = (NsqdProcess::start(&[]), NsqdProcess::start(&[]));
    let mut raw = source.connect_identified().await;
    let bodies: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"i":{i},"keep":true}}"#))
        .collect();
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_bytes()).collect();
    raw.publish_multi("src", &refs).await;
    let tool = Tool::spawn(
        env!("CARGO_BIN_EXE_nsq_to_nsq"),
        &[
            "--topic=src".to_string(),
            format!("--nsqd-tcp-address={}", source.tcp_addr()),
            format!("--destination-nsqd-tcp-address={}", d1.tcp_addr()),
            format!("--destination-nsqd-tcp-address={}", d2.tcp_addr()),
            "--destination-topic=dst".into(),
            "--mode=round-robin".into(),
            "--require-json-field=keep".into(),
        ],
        None,
    );
    let count = |n: &NsqdProcess| n.topic_stats("dst")["message_count"].as_u64().unwrap_or(0);
    wait_until(Duration::from_secs(20), "20 messages copied", || {
        match count(&d1) + count(&d2) {
            20 => Ok(()),
            n => Err(format!("{n}; {}", tool.stderr_so_far())),
        }
    })
    .await
    .unwrap();
    assert_eq!((count(&d1), count(&d2)), (10, 10));
    // Each source message was finished only after its copy: none left.
    wait_until(
        Duration::from_secs(10),
        "the source channel drained",
        || {
            let ch = &source.topic_stats("src")["channels"][0];
            match (ch["depth"].as_u64(), ch["in_flight_count"].as_u64()) {
                (Some(0), Some(0)) => Ok(()),
                _ => Err(ch.to_string()),
            }
        },
    )
    .await
    .unwrap();
    tool.stop_ok().await;
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsq_tail_logs_each_lookupd_query_and_its_answer() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let tool = Tool::spawn(
        env!("CARGO_BIN_EXE_nsq_tail"),
        &[
            "--topic=unknown_yet".to_string(),
            format!("--lookupd-http-address={}", lookupd.http_addr()),
        ],
        None,
    );
    let url = format!("http://{}/lookup?topic=unknown_yet", lookupd.http_addr());
    wait_until(
        Duration::from_secs(20),
        "the query and its 404 logged",
        || {
            let err = tool.stderr_so_far();
            if err.contains(&format!("querying nsqlookupd {url}"))
                && err.contains(&format!(
                    "error querying nsqlookupd ({url}) - got response 404"
                ))
            {
                Ok(())
            } else {
                Err(err)
            }
        },
    )
    .await
    .unwrap();
    tool.terminate();
    assert!(tool.finish().await.status.success());
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_tools_take_tls_compression_and_auth_options() {
    let certs = nsq_test_support::Certs::new();
    let auth = nsq_test_support::AuthServer::start(&[
        r#"{"ttl":3600,"identity":"tail","authorizations":[{"topic":".*","channels":[".*"],"permissions":["subscribe","publish"]}]}"#,
    ]);
    let mut args = certs.nsqd_args();
    args.push(auth.nsqd_arg());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let nsqd = NsqdProcess::start(&refs);
    let tool = Tool::spawn(
        env!("CARGO_BIN_EXE_nsq_tail"),
        &[
            "--topic=secure".to_string(),
            format!("--nsqd-tcp-address={}", nsqd.tcp_addr()),
            "--n=1".into(),
            "--consumer-opt=tls_v1,true".into(),
            format!(
                "--consumer-opt=tls_root_ca_file,{}",
                certs.path("ca.pem").display()
            ),
            "--consumer-opt=snappy,true".into(),
            "--consumer-opt=auth_secret,tail-secret".into(),
        ],
        None,
    );
    wait_until(
        Duration::from_secs(20),
        "nsq_tail subscribed over TLS",
        || {
            let clients = nsqd.topic_stats("secure")["channels"][0]["clients"].clone();
            match clients.get(0) {
                Some(c) if c["tls"] == true && c["snappy"] == true && c["authed"] == true => Ok(()),
                _ => Err(format!("{clients}; {}", tool.stderr_so_far())),
            }
        },
    )
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    nsqd.http_post("/pub?topic=secure", b"over tls");
    let done = tool.finish().await;
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout, "over tls\n");
    assert!(auth
        .requests()
        .iter()
        .any(|r| r.contains("secret=tail-secret")));
}
