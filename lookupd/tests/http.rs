//! The HTTP API over real HTTP against an in-process nsqlookupd, compared
//! with upstream 1.3.0's golden responses in shared/spec/samples.

use std::time::Duration;

use nsq_test_support::in_process;
use nsq_test_support::in_process::{http, start_lookupd};
use nsq_test_support::raw_lookup::RawLookupConn;
use nsq_test_support::samples::{assert_like_sample, sample};
use nsq_test_support::{http_keepalive, poll, HttpResponse};
use nsqlookupd::{Lookupd, Options};
use serde_json::{json, Value};

/// The state the golden samples were taken in: one nsqd (broadcast
/// 127.0.0.1, hostname vm, ports 24150/24151) with topic X and channels c1
/// and eph#ephemeral. Returns the connection (it must stay open) and its id.
async fn sample_state(lookupd: &Lookupd) -> (RawLookupConn, String) {
    let mut c = RawLookupConn::identified(lookupd.tcp_addr(), 24150, 24151).await;
    assert_eq!(c.command(b"REGISTER X c1\n").await, "OK");
    assert_eq!(c.command(b"REGISTER X eph#ephemeral\n").await, "OK");
    let id = c.local_addr();
    (c, id)
}

/// Replace what differs between runs (our client port, wall-clock stamps)
/// with the sample's values, so whole bodies can be compared byte for byte.
fn normalise(body: &str, id: &str) -> String {
    let mut v: Value = serde_json::from_str(body).unwrap();
    if let Some(map) = v.as_object_mut() {
        for list in map.values_mut() {
            for p in list.as_array_mut().into_iter().flatten() {
                if p.get("last_update").is_some() {
                    p["last_update"] = json!(1795314094514764627i64);
                }
            }
        }
    }
    serde_json::to_string(&v)
        .unwrap()
        .replace(id, "127.0.0.1:60058")
}

/// serde_json's map is sorted, so compare sample bodies through it too.
fn canonical(bytes: &[u8]) -> String {
    serde_json::to_string(&serde_json::from_slice::<Value>(bytes).unwrap()).unwrap()
}

#[in_process::test]
async fn discovery_endpoints_match_golden_samples() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let (_conn, id) = sample_state(&lookupd).await;
    for (target, name, accept) in [
        ("/info", "lookupd_info", None),
        ("/topics", "lookupd_topics", None),
        ("/channels?topic=X", "lookupd_channels", None),
        ("/lookup?topic=X", "lookupd_lookup", None),
        (
            "/lookup?topic=X",
            "lookupd_lookup_v1_accept",
            Some("application/vnd.nsq; version=1.0"),
        ),
        ("/nodes", "lookupd_nodes", None),
        ("/debug", "lookupd_debug", None),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let got = http_keepalive(lookupd.http_addr(), "GET", target, &headers, b"").await;
        assert_like_sample(&got, name);
        // Key order matters to nobody but costs nothing to keep: compare
        // the raw bytes too, for all but /debug (a sorted map either way).
        let want = sample(name);
        let got_text = normalise(&got.text(), &id);
        assert_eq!(got_text, canonical(&want.body), "{name}: body");
        if name != "lookupd_debug" {
            assert_eq!(
                got.text().replace(&id, "127.0.0.1:60058").into_bytes(),
                want.body,
                "{name}: exact bytes"
            );
        }
    }
}

#[in_process::test]
async fn ping_and_error_responses_match_golden_samples() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    assert_like_sample(&http(&lookupd, "GET", "/ping", b"").await, "lookupd_ping");
    let got = http(&lookupd, "GET", "/lookup", b"").await;
    assert_like_sample(&got, "lookupd_lookup_noparam");
    assert_eq!(got.body, sample("lookupd_lookup_noparam").body);
    let got = http(&lookupd, "GET", "/lookup?topic=missing", b"").await;
    assert_like_sample(&got, "lookupd_lookup_missing");
    assert_eq!(got.body, sample("lookupd_lookup_missing").body);
    let got = http(&lookupd, "POST", "/topic/create?topic=X", b"").await;
    assert_like_sample(&got, "lookupd_topic_create");
    assert!(got.body.is_empty());
    // Unknown path and wrong method: the same V1 error conventions
    // (nsqd's samples, as upstream shares the code).
    let got = http(&lookupd, "GET", "/nope", b"").await;
    assert_like_sample(&got, "nsqd_404");
    assert_eq!(got.body, br#"{"message":"NOT_FOUND"}"#);
    let got = http(&lookupd, "GET", "/topic/create?topic=X", b"").await;
    assert_like_sample(&got, "nsqd_pub_get");
    assert_eq!(got.body, br#"{"message":"METHOD_NOT_ALLOWED"}"#);
}

fn message(r: &HttpResponse) -> (u16, String) {
    (
        r.status,
        r.json()["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[in_process::test]
async fn routing_methods_and_redirects() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let got = http(&lookupd, "POST", "/lookup?topic=X", b"").await;
    assert_eq!(message(&got), (405, "METHOD_NOT_ALLOWED".into()));
    assert_eq!(got.header("Allow"), Some("GET, OPTIONS"));
    // HEAD is not GET for upstream's router.
    let got = http(&lookupd, "HEAD", "/ping", b"").await;
    assert_eq!(got.status, 405);
    let got = http(&lookupd, "OPTIONS", "/topic/delete", b"").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("Allow"), Some("OPTIONS, POST"));
    assert!(got.body.is_empty());
    let got = http(&lookupd, "GET", "/ping/", b"").await;
    assert_eq!(got.status, 301);
    assert_eq!(got.header("Location"), Some("/ping"));
    let got = http(&lookupd, "POST", "/Topic/Create?topic=a", b"").await;
    assert_eq!(got.status, 307);
    assert_eq!(got.header("Location"), Some("/topic/create?topic=a"));
    let got = http(&lookupd, "GET", "/debug/pprof", b"").await;
    assert_eq!(message(&got), (404, "NOT_FOUND".into()));
}

#[in_process::test]
async fn parameter_errors() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let cases = [
        ("GET", "/channels", 400, "MISSING_ARG_TOPIC"),
        ("GET", "/lookup?topic=%zz", 400, "INVALID_REQUEST"),
        ("GET", "/channels?topic=a;b", 400, "INVALID_REQUEST"),
        ("GET", "/lookup?topic", 404, "TOPIC_NOT_FOUND"),
        ("POST", "/topic/create", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/topic/create?topic=bad$", 400, "INVALID_ARG_TOPIC"),
        ("POST", "/topic/create?topic=", 400, "INVALID_ARG_TOPIC"),
        ("POST", "/topic/delete", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/channel/create", 400, "MISSING_ARG_TOPIC"),
        (
            "POST",
            "/channel/create?topic=bad$",
            400,
            "INVALID_ARG_TOPIC",
        ),
        (
            "POST",
            "/channel/create?topic=t",
            400,
            "MISSING_ARG_CHANNEL",
        ),
        (
            "POST",
            "/channel/create?topic=t&channel=bad$",
            400,
            "INVALID_ARG_CHANNEL",
        ),
        ("POST", "/channel/delete", 400, "MISSING_ARG_TOPIC"),
        (
            "POST",
            "/channel/delete?topic=t&channel=bad$",
            400,
            "INVALID_ARG_CHANNEL",
        ),
        (
            "POST",
            "/channel/delete?topic=t&channel=c",
            404,
            "CHANNEL_NOT_FOUND",
        ),
        ("POST", "/topic/tombstone", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/topic/tombstone?topic=t", 400, "MISSING_ARG_NODE"),
    ];
    for (method, target, status, name) in cases {
        let got = http(&lookupd, method, target, b"").await;
        assert_eq!(
            message(&got),
            (status, name.to_owned()),
            "{method} {target}"
        );
        assert_eq!(got.header("X-Nsq-Content-Type"), Some("nsq; version=1.0"));
        assert_eq!(
            got.header("Content-Type"),
            Some("application/json; charset=utf-8")
        );
    }
    // Endpoints that take no parameters ignore a malformed query.
    assert_eq!(
        http(&lookupd, "GET", "/topics?x=%zz", b"").await.status,
        200
    );
}

/// POST `target` with no body: the answer's status and body length.
async fn post(lookupd: &Lookupd, target: &str) -> (u16, usize) {
    let got = http(lookupd, "POST", target, b"").await;
    (got.status, got.body.len())
}

#[in_process::test]
async fn create_and_delete_topics_and_channels() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let get = |target: &'static str| {
        let lookupd = &lookupd;
        async move { http(lookupd, "GET", target, b"").await.json() }
    };
    assert_eq!(get("/topics").await, json!({"topics": []}));
    assert_eq!(get("/channels?topic=t").await, json!({"channels": []}));
    assert_eq!(get("/debug").await, json!({}));
    assert_eq!(get("/nodes").await, json!({"producers": []}));

    assert_eq!(post(&lookupd, "/topic/create?topic=t").await, (200, 0));
    assert_eq!(
        post(&lookupd, "/channel/create?topic=u&channel=c%23ephemeral").await,
        (200, 0)
    );
    assert_eq!(get("/topics").await, json!({"topics": ["t", "u"]}));
    assert_eq!(
        get("/channels?topic=u").await,
        json!({"channels": ["c#ephemeral"]})
    );
    assert_eq!(
        get("/lookup?topic=t").await,
        json!({"channels": [], "producers": []})
    );
    // Keys without producers do not appear in /debug.
    assert_eq!(get("/debug").await, json!({}));

    assert_eq!(
        post(&lookupd, "/channel/delete?topic=u&channel=c%23ephemeral").await,
        (200, 0)
    );
    assert_eq!(get("/channels?topic=u").await, json!({"channels": []}));

    // /topic/delete takes its channels along and never 404s.
    assert_eq!(
        post(&lookupd, "/channel/create?topic=t&channel=c").await,
        (200, 0)
    );
    assert_eq!(post(&lookupd, "/topic/delete?topic=t").await, (200, 0));
    assert_eq!(post(&lookupd, "/topic/delete?topic=t").await, (200, 0));
    assert_eq!(get("/topics").await, json!({"topics": ["u"]}));
    assert_eq!(get("/channels?topic=t").await, json!({"channels": []}));
    let got = http(&lookupd, "GET", "/lookup?topic=t", b"").await;
    assert_eq!(message(&got), (404, "TOPIC_NOT_FOUND".into()));
}

#[in_process::test]
async fn tombstone_hides_a_producer_for_its_lifetime() {
    let opts = Options {
        tombstone_lifetime: Duration::from_secs(2).into(),
        ..Options::for_tests()
    };
    let lookupd = start_lookupd(opts).await;
    let mut a = RawLookupConn::identified(lookupd.tcp_addr(), 4150, 4151).await;
    let mut b = RawLookupConn::identified(lookupd.tcp_addr(), 5150, 5151).await;
    for c in [&mut a, &mut b] {
        c.command(b"REGISTER t\n").await;
        c.command(b"REGISTER u\n").await;
    }
    let http_ports = |lookup: Value| -> Vec<i64> {
        let mut ports: Vec<i64> = lookup["producers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["http_port"].as_i64().unwrap())
            .collect();
        ports.sort();
        ports
    };

    assert_eq!(
        post(&lookupd, "/topic/tombstone?topic=t&node=127.0.0.1:4151").await,
        (200, 0)
    );
    // Nothing matching is still 200.
    let got = http(
        &lookupd,
        "POST",
        "/topic/tombstone?topic=t&node=nowhere:1",
        b"",
    )
    .await;
    assert_eq!(got.status, 200);

    let lookup = http(&lookupd, "GET", "/lookup?topic=t", b"").await.json();
    assert_eq!(http_ports(lookup), vec![5151]);
    let lookup = http(&lookupd, "GET", "/lookup?topic=u", b"").await.json();
    assert_eq!(http_ports(lookup), vec![4151, 5151]);
    // /nodes keeps the node and flags the topic, parallel to `topics`.
    let nodes = http(&lookupd, "GET", "/nodes", b"").await.json();
    let node = nodes["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["http_port"] == 4151)
        .unwrap()
        .clone();
    assert_eq!(node["topics"], json!(["t", "u"]));
    assert_eq!(node["tombstones"], json!([true, false]));

    poll("the tombstone to expire", || async {
        let lookup = http(&lookupd, "GET", "/lookup?topic=t", b"").await.json();
        (http_ports(lookup) == vec![4151, 5151]).then_some(())
    })
    .await;
}

#[in_process::test]
async fn raw_tcp_on_the_http_port_gets_an_http_answer() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let mut c = RawLookupConn::connect_without_magic(lookupd.http_addr()).await;
    c.write_raw(b"  V1PING\n").await;
    // go-nsq recognises an HTTP server by a reply size that reads "HTTP".
    let size = c.peek_reply_size().await;
    assert_eq!(size, u32::from_be_bytes(*b"HTTP"));
}
