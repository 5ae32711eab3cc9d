//! End-to-end tests of nsqd's HTTP API against a real in-process server:
//! every endpoint, each of its error paths with upstream's status and error
//! name, methods and OPTIONS, and the golden upstream headers and bodies.

use nsq_test_support::in_process::{self, *};
use nsq_test_support::samples::*;
use nsq_test_support::{http_exchange, http_keepalive, poll, HttpResponse};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[in_process::test]
async fn ping_reports_health() {
    let d = start(&[]).await;
    let r = http(&d, "GET", "/ping", b"").await;
    assert_like_sample(&r, "nsqd_ping");
    d.inner.set_health(Err("failed to write to disk".into()));
    let r = http(&d, "GET", "/ping", b"").await;
    assert_eq!(
        (r.status, r.text()),
        (500, "NOK - failed to write to disk".into())
    );
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("X-NSQ-Content-Type"), None);
    let stats = http(&d, "GET", "/stats?format=json", b"").await.json();
    assert_eq!(stats["health"], "NOK - failed to write to disk");
    d.inner.set_health(Ok(()));
    assert_eq!(http(&d, "GET", "/ping", b"").await.text(), "OK");
}

#[in_process::test]
async fn info_has_upstreams_fields_and_the_real_ports() {
    let d = start(&["--broadcast-address=127.0.0.1"]).await;
    let r = http(&d, "GET", "/info", b"").await;
    assert_like_sample_in_order(&r, "nsqd_info");
    let v = r.json();
    assert_eq!(v["http_port"], d.http.port());
    assert_eq!(v["tcp_port"], d.tcp.port());
    assert_eq!(v["broadcast_address"], "127.0.0.1");
    assert_eq!(v["max_heartbeat_interval"], 60_000_000_000i64);
}

#[in_process::test]
async fn unknown_paths_methods_and_options() {
    let d = start(&[]).await;
    assert_like_sample(&http(&d, "GET", "/nope", b"").await, "nsqd_404");
    assert_like_sample(&http(&d, "GET", "/pub?topic=X", b"").await, "nsqd_pub_get");
    // Every route: its methods answer, others get 405 with Allow.
    let routes: &[(&str, &str)] = &[
        ("/ping", "GET, OPTIONS"),
        ("/info", "GET, OPTIONS"),
        ("/stats", "GET, OPTIONS"),
        ("/metrics", "GET, OPTIONS"),
        ("/pub", "OPTIONS, POST"),
        ("/mpub", "OPTIONS, POST"),
        ("/topic/create", "OPTIONS, POST"),
        ("/topic/delete", "OPTIONS, POST"),
        ("/topic/empty", "OPTIONS, POST"),
        ("/topic/pause", "OPTIONS, POST"),
        ("/topic/unpause", "OPTIONS, POST"),
        ("/channel/create", "OPTIONS, POST"),
        ("/channel/delete", "OPTIONS, POST"),
        ("/channel/empty", "OPTIONS, POST"),
        ("/channel/pause", "OPTIONS, POST"),
        ("/channel/unpause", "OPTIONS, POST"),
        ("/config/msg_timeout", "GET, OPTIONS, PUT"),
    ];
    for (path, allow) in routes {
        let r = http(&d, "DELETE", path, b"").await;
        r.assert_error(405, "METHOD_NOT_ALLOWED");
        assert_eq!(r.header("Allow"), Some(*allow), "{path}");
        // httprouter answers OPTIONS itself: 200, Allow, nothing else.
        let r = http(&d, "OPTIONS", path, b"").await;
        assert_eq!((r.status, r.text()), (200, String::new()), "{path}");
        assert_eq!(r.header("Allow"), Some(*allow), "{path}");
        assert_eq!(r.header("X-NSQ-Content-Type"), None, "{path}");
    }
    for path in ["/config/", "/config/a/b", "/debug/pprof/", "/topic", "/put"] {
        http(&d, "GET", path, b"")
            .await
            .assert_error(404, "NOT_FOUND");
    }
    http_error(&d, "OPTIONS", "/nope", 404, "NOT_FOUND").await;
}

#[in_process::test]
async fn a_raw_tcp_client_on_the_http_port_gets_http() {
    let d = start(&[]).await;
    answered_in_http(&d, b"  V2IDENTIFY\n\0\0\0\x02{}").await;
}

#[tokio::test]
async fn pub_and_its_errors() {
    within(async {
        let d = start(&["--max-msg-size=16", "--max-req-timeout=10s"]).await;
        assert_like_sample(
            &http(&d, "POST", "/pub?topic=X", b"hello").await,
            "nsqd_pub",
        );
        assert_like_sample(
            &http(&d, "POST", "/pub?topic=X&defer=1000", b"later").await,
            "nsqd_pub_defer",
        );
        assert_like_sample(
            &http(&d, "POST", "/pub?topic=bad!", b"x").await,
            "nsqd_pub_badtopic",
        );
        expect_errors(
            &d,
            &[
                ("POST", "/pub?topic=X", b"", 400, "MSG_EMPTY"),
                ("POST", "/pub", b"x", 400, "MISSING_ARG_TOPIC"),
                ("POST", "/pub?topic=X", &[b'a'; 17], 413, "MSG_TOO_BIG"),
                // The body is read before the query is looked at.
                ("POST", "/pub", &[b'a'; 17], 413, "MSG_TOO_BIG"),
                ("POST", "/pub?topic=X&a=%zz", b"x", 400, "INVALID_REQUEST"),
            ],
        )
        .await;
        for bad in ["-1", "10001", "soon", ""] {
            http(&d, "POST", &format!("/pub?topic=D&defer={bad}"), b"x")
                .await
                .assert_error(400, "INVALID_DEFER");
        }
        // Upstream's surprise: the topic exists even though defer was bad.
        assert!(d.inner.topic("D").is_some());
        // A chunked body over the limit is caught while reading.
        let req = "POST /pub?topic=X HTTP/1.1\r\nHost: n\r\nTransfer-Encoding: chunked\r\n\r\n\
                   11\r\naaaaaaaaaaaaaaaaa\r\n0\r\n\r\n";
        http_exchange(d.http, req.as_bytes(), false)
            .await
            .assert_error(413, "MSG_TOO_BIG");
        let big = format!(
            "POST /pub?topic=X HTTP/1.1\r\nHost: n\r\nTransfer-Encoding: chunked\r\n\r\n\
             64\r\n{}\r\n0\r\n\r\n",
            "a".repeat(100)
        );
        http_exchange(d.http, big.as_bytes(), false)
            .await
            .assert_error(413, "MSG_TOO_BIG");
        let stats = http(&d, "GET", "/stats?format=json&topic=X", b"")
            .await
            .json();
        assert_eq!(stats["topics"][0]["message_count"], 2);
        assert_eq!(stats["topics"][0]["message_bytes"], 10);
    })
    .await
}

#[in_process::test]
async fn mpub_text_binary_and_errors() {
    let d = start(&["--max-msg-size=8", "--max-body-size=64"]).await;
    assert_like_sample(
        &http(&d, "POST", "/mpub?topic=X", b"one\ntwo\n\nthree\r").await,
        "nsqd_mpub",
    );
    let count = |d: &Nsqd| {
        let nsqd = d.inner.clone();
        async move {
            let (s, _) = nsqd.topic("X").unwrap().stats();
            s.message_count
        }
    };
    assert_eq!(count(&d).await, 3);
    // Zero messages is still OK.
    assert_eq!(
        http(&d, "POST", "/mpub?topic=X", b"\n\n").await.text(),
        "OK"
    );
    let mut bin = 2i32.to_be_bytes().to_vec();
    for m in [&b"ab"[..], b"cde"] {
        bin.extend((m.len() as i32).to_be_bytes());
        bin.extend(m);
    }
    for flag in ["binary=true", "binary=1", "binary=yes"] {
        let r = http(&d, "POST", &format!("/mpub?topic=X&{flag}"), &bin).await;
        assert_eq!((r.status, r.text()), (200, "OK".into()), "{flag}");
    }
    assert_eq!(count(&d).await, 9);
    // binary=false reads the same bytes as text lines.
    http(&d, "POST", "/mpub?topic=X&binary=0", b"x\ny").await;
    assert_eq!(count(&d).await, 11);
    expect_errors(
        &d,
        &[
            ("POST", "/mpub?topic=X", &[b'a'; 65], 413, "BODY_TOO_BIG"),
            (
                "POST",
                "/mpub?topic=X",
                b"ok\n123456789\n",
                413,
                "MSG_TOO_BIG",
            ),
            (
                "POST",
                "/mpub?topic=X&binary=true",
                &0i32.to_be_bytes(),
                413,
                "BAD_BODY",
            ),
        ],
    )
    .await;
    let mut bad = 1i32.to_be_bytes().to_vec();
    bad.extend(100i32.to_be_bytes());
    bad.extend(b"short");
    expect_errors(
        &d,
        &[
            (
                "POST",
                "/mpub?topic=X&binary=true",
                &bad,
                413,
                "BAD_MESSAGE",
            ),
            ("POST", "/mpub", b"a", 400, "MISSING_ARG_TOPIC"),
            ("POST", "/mpub?topic=a*b", b"a", 400, "INVALID_TOPIC"),
        ],
    )
    .await;
    // Nothing of a refused batch was queued.
    assert_eq!(count(&d).await, 11);
}

/// `garbage` sent to the HTTP port gets an HTTP answer (what go-nsq looks for), and nsqd goes
/// on serving.
async fn answered_in_http(d: &Nsqd, garbage: &[u8]) {
    let mut s = TcpStream::connect(d.http).await.unwrap();
    s.write_all(garbage).await.unwrap();
    let mut head = [0u8; 4];
    tokio::time::timeout(STEP, s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP");
    assert_eq!(http(d, "GET", "/ping", b"").await.status, 200);
}

/// Each request `(method, target, body)` is refused with `(status, message)`, in upstream's
/// error format.
async fn expect_errors(d: &Nsqd, cases: &[(&str, &str, &[u8], u16, &str)]) {
    for &(method, target, body, status, message) in cases {
        let r = http(d, method, target, body).await;
        assert_eq!(
            (r.status, r.json()),
            (status, json!({ "message": message })),
            "{method} {target}"
        );
        r.assert_error(status, message);
    }
}

async fn get(d: &Nsqd, opt: &str) -> HttpResponse {
    http(d, "GET", &format!("/config/{opt}"), b"").await
}

fn metadata(d: &Nsqd) -> Value {
    std::fs::read(d.data.path().join("nsqd.dat"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// Wait until nsqd.dat says what `check` wants.
async fn metadata_until(d: &Nsqd, what: &str, check: impl Fn(&Value) -> bool) {
    poll(what, || {
        let ok = check(&metadata(d));
        async move { ok.then_some(()) }
    })
    .await
}

#[in_process::test]
async fn topic_endpoints_and_their_errors() {
    let d = start(&[]).await;
    assert_like_sample(
        &http(&d, "POST", "/topic/create?topic=X", b"").await,
        "nsqd_topic_create",
    );
    assert!(d.inner.topic("X").is_some());
    expect_errors(
        &d,
        &[
            ("POST", "/topic/create", b"", 400, "MISSING_ARG_TOPIC"),
            ("POST", "/topic/create?topic=", b"", 400, "INVALID_TOPIC"),
            (
                "POST",
                "/topic/create?topic=a;b",
                b"",
                400,
                "INVALID_REQUEST",
            ),
        ],
    )
    .await;

    http(&d, "POST", "/pub?topic=X", b"held").await;
    post_ok(&d, "/topic/empty?topic=X").await;
    assert_eq!(d.inner.topic("X").unwrap().stats().0.depth, 0);
    expect_errors(
        &d,
        &[
            ("POST", "/topic/empty", b"", 400, "MISSING_ARG_TOPIC"),
            ("POST", "/topic/empty?topic=b@d", b"", 400, "INVALID_TOPIC"),
            ("POST", "/topic/empty?topic=Y", b"", 404, "TOPIC_NOT_FOUND"),
        ],
    )
    .await;

    post_ok(&d, "/topic/pause?topic=X").await;
    assert!(d.inner.topic("X").unwrap().is_paused());
    metadata_until(&d, "paused topic in nsqd.dat", |m| {
        m["topics"][0]["paused"] == true
    })
    .await;
    post_ok(&d, "/topic/unpause?topic=X").await;
    assert!(!d.inner.topic("X").unwrap().is_paused());
    metadata_until(&d, "unpaused topic in nsqd.dat", |m| {
        m["topics"][0]["paused"] == false
    })
    .await;
    for p in ["pause", "unpause"] {
        expect_errors(
            &d,
            &[
                (
                    "POST",
                    &format!("/topic/{p}"),
                    b"",
                    400,
                    "MISSING_ARG_TOPIC",
                ),
                // Not validated, only looked up.
                (
                    "POST",
                    &format!("/topic/{p}?topic=b@d"),
                    b"",
                    404,
                    "TOPIC_NOT_FOUND",
                ),
            ],
        )
        .await;
    }

    expect_errors(
        &d,
        &[
            ("POST", "/topic/delete", b"", 400, "MISSING_ARG_TOPIC"),
            (
                "POST",
                "/topic/delete?topic=b@d",
                b"",
                404,
                "TOPIC_NOT_FOUND",
            ),
        ],
    )
    .await;
    post_ok(&d, "/topic/delete?topic=X").await;
    assert!(d.inner.topic("X").is_none());
    metadata_until(&d, "topic gone from nsqd.dat", |m| m["topics"] == json!([])).await;
    http_error(&d, "POST", "/topic/delete?topic=X", 404, "TOPIC_NOT_FOUND").await;
}

#[in_process::test]
async fn channel_endpoints_and_their_errors() {
    let d = start(&[]).await;
    http_error(
        &d,
        "POST",
        "/channel/create?topic=X&channel=c1",
        404,
        "TOPIC_NOT_FOUND",
    )
    .await;
    post_ok(&d, "/topic/create?topic=X").await;
    assert_like_sample(
        &http(&d, "POST", "/channel/create?topic=X&channel=c1", b"").await,
        "nsqd_channel_create",
    );
    assert_like_sample(
        &http(
            &d,
            "POST",
            "/channel/create?topic=X&channel=eph%23ephemeral",
            b"",
        )
        .await,
        "nsqd_ephemeral_create",
    );
    let x = d.inner.topic("X").unwrap();
    assert_eq!(x.channel_count(), 2);
    for op in ["create", "delete", "empty", "pause", "unpause"] {
        let e = |q: &str| format!("/channel/{op}?{q}");
        expect_errors(
            &d,
            &[
                ("POST", &e("channel=c1"), b"", 400, "MISSING_ARG_TOPIC"),
                (
                    "POST",
                    &e("topic=b@d&channel=c1"),
                    b"",
                    400,
                    "INVALID_ARG_TOPIC",
                ),
                ("POST", &e("topic=X"), b"", 400, "MISSING_ARG_CHANNEL"),
                (
                    "POST",
                    &e("topic=X&channel=b@d"),
                    b"",
                    400,
                    "INVALID_ARG_CHANNEL",
                ),
                (
                    "POST",
                    &e("topic=Y&channel=c1"),
                    b"",
                    404,
                    "TOPIC_NOT_FOUND",
                ),
                (
                    "POST",
                    &e("topic=X&channel=c1&x=%"),
                    b"",
                    400,
                    "INVALID_REQUEST",
                ),
            ],
        )
        .await;
        if op != "create" {
            http(&d, "POST", &e("topic=X&channel=nope"), b"")
                .await
                .assert_error(404, "CHANNEL_NOT_FOUND");
        }
    }

    http(&d, "POST", "/pub?topic=X", b"m").await;
    let c1 = x.channel("c1").unwrap();
    assert_eq!(c1.stats().depth, 1);
    post_ok(&d, "/channel/empty?topic=X&channel=c1").await;
    assert_eq!(c1.stats().depth, 0);

    assert_like_sample(
        &http(&d, "POST", "/channel/pause?topic=X&channel=c1", b"").await,
        "nsqd_channel_pause",
    );
    assert!(c1.is_paused());
    metadata_until(&d, "paused channel in nsqd.dat", |m| {
        m["topics"][0]["channels"] == json!([{"name": "c1", "paused": true}])
    })
    .await;
    assert_like_sample(
        &http(&d, "POST", "/channel/unpause?topic=X&channel=c1", b"").await,
        "nsqd_channel_unpause",
    );
    assert!(!c1.is_paused());
    metadata_until(&d, "unpaused channel in nsqd.dat", |m| {
        m["topics"][0]["channels"] == json!([{"name": "c1", "paused": false}])
    })
    .await;

    post_ok(&d, "/channel/delete?topic=X&channel=c1").await;
    assert!(x.channel("c1").is_none());
    metadata_until(&d, "channel gone from nsqd.dat", |m| {
        m["topics"][0]["channels"].is_null()
    })
    .await;

    // An ephemeral topic goes with its last channel.
    post_ok(&d, "/topic/create?topic=e%23ephemeral").await;
    post_ok(&d, "/channel/create?topic=e%23ephemeral&channel=c").await;
    post_ok(&d, "/channel/delete?topic=e%23ephemeral&channel=c").await;
    assert!(d.inner.topic("e#ephemeral").is_none());
}

#[in_process::test]
async fn config_get_and_put() {
    let log = nsq_app::logging::init(nsq_app::LogLevel::Info, "[nsqd] ");
    let d = start_with(&["--max-msg-size=64"], |s| s.set_log_handle(log.clone())).await;
    assert_eq!(
        get(&d, "msg_timeout").await.json(),
        json!(60_000_000_000i64)
    );
    assert_eq!(get(&d, "mem_queue_size").await.json(), json!(10000));
    assert_eq!(get(&d, "tcp_address").await.json(), json!("127.0.0.1:0"));
    assert_eq!(get(&d, "id").await.json(), json!(1));
    assert_eq!(get(&d, "statsd_mem_stats").await.json(), json!(true));
    assert_eq!(
        get(&d, "e2e_processing_latency_percentiles").await.json(),
        Value::Null
    );
    assert_eq!(
        get(&d, "broadcast_http_port").await.json(),
        json!(d.http.port())
    );
    assert_eq!(get(&d, "log_level").await.json(), json!(2));
    assert_eq!(get(&d, "nsqlookupd_tcp_addresses").await.json(), json!([]));
    get(&d, "nope").await.assert_error(400, "INVALID_OPTION");
    get(&d, "verbose").await.assert_error(400, "INVALID_OPTION");

    // A lookupd that nsqd must connect to after the PUT.
    let lookupd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = lookupd.local_addr().unwrap().to_string();
    let body = serde_json::to_vec(&json!([addr])).unwrap();
    let r = http(&d, "PUT", "/config/nsqlookupd_tcp_addresses", &body).await;
    assert_eq!(r.json(), json!([addr]));
    assert_like_sample(
        &get(&d, "nsqlookupd_tcp_addresses").await,
        "nsqd_config_lookupd",
    );
    let (mut peer, _) = tokio::time::timeout(STEP, lookupd.accept())
        .await
        .expect("nsqd dials the new lookupd")
        .unwrap();
    let mut magic = [0u8; 4];
    peer.read_exact(&mut magic).await.unwrap();
    assert_eq!(&magic, b"  V1");
    // Removing it drops the connection.
    let r = http(&d, "PUT", "/config/nsqlookupd_tcp_addresses", b"[]").await;
    assert_eq!(r.json(), json!([]));
    assert!(d.inner.lookup.addresses().is_empty());
    let mut buf = [0u8; 1024];
    let closed = async {
        loop {
            match peer.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(STEP, closed)
        .await
        .expect("peer dropped");

    for bad in [&b"not json"[..], b"[1]", b"{\"a\":1}", b"\"x\""] {
        http(&d, "PUT", "/config/nsqlookupd_tcp_addresses", bad)
            .await
            .assert_error(400, "INVALID_VALUE");
    }
    expect_errors(
        &d,
        &[
            (
                "PUT",
                "/config/nsqlookupd_tcp_addresses",
                b"",
                413,
                "INVALID_VALUE",
            ),
            (
                "PUT",
                "/config/log_level",
                &[b'a'; 65],
                413,
                "INVALID_VALUE",
            ),
            ("PUT", "/config/msg_timeout", b"1", 400, "INVALID_OPTION"),
            ("PUT", "/config/nope", b"1", 400, "INVALID_OPTION"),
        ],
    )
    .await;

    let r = http(&d, "PUT", "/config/log_level", b"DEBUG").await;
    assert_eq!((r.status, r.json()), (200, json!(1)));
    assert_eq!(log.level(), nsq_app::LogLevel::Debug);
    assert_eq!(get(&d, "log_level").await.json(), json!(1));
    http(&d, "PUT", "/config/log_level", b"loud")
        .await
        .assert_error(400, "INVALID_VALUE");
    let r = http(&d, "PUT", "/config/log_level", b"warn").await;
    assert_eq!(r.json(), json!(3));
    assert_eq!(log.level(), nsq_app::LogLevel::Warn);
    // Quiet again for the other tests of this binary.
    http(&d, "PUT", "/config/log_level", b"fatal").await;
    assert_eq!(log.level(), nsq_app::LogLevel::Fatal);
}

#[in_process::test]
async fn statsd_prefix_is_read_back_effective() {
    let d = start(&["--broadcast-address=10.0.0.1", "--statsd-prefix=nsq.%s"]).await;
    let r = http(&d, "GET", "/config/statsd_prefix", b"").await;
    assert_eq!(r.json(), json!(format!("nsq.10_0_0_1_{}.", d.http.port())));
}

#[in_process::test]
async fn many_concurrent_bad_requests_do_not_stop_nsqd() {
    let d = start(&["--max-msg-size=32"]).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let addr = d.http;
        tasks.push(tokio::spawn(async move {
            let (m, t, b): (&str, String, Vec<u8>) = match i % 5 {
                0 => ("POST", "/pub?topic=%%".into(), b"x".to_vec()),
                1 => ("POST", "/mpub?topic=T&binary=1".into(), vec![0xff; 12]),
                2 => ("PUT", "/config/log_level".into(), vec![0xc3, 0x28]),
                3 => ("GET", "/stats?format=json&a=%".into(), vec![]),
                _ => ("POST", "/channel/pause?topic=T&channel=".into(), vec![]),
            };
            http_keepalive(addr, m, &t, &[], &b).await.status
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!((400..500).contains(&status), "{status}");
    }
    // A garbage request line gets an HTTP error, and nsqd keeps serving.
    answered_in_http(&d, b"\x00\x01\x02 nonsense\r\n\r\n").await;
}
