//! nsqadmin's JSON API end to end: the real nsqadmin over a real nsqlookupd
//! and nsqd. Reads are compared with upstream's captured answers
//! (`spec/samples/nsqadmin_*`: same keys, same JSON types); every action is
//! checked where it lands (nsqd's or lookupd's own API); errors, partial
//! failures, the ACL, notifications, `--base-path` and the chart history
//! are each exercised. Every wait polls with a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use nsq_test_support::admin::{AdminCluster, SETTLE};
use nsq_test_support::{wait_until, NsqadminProcess, NsqdProcess};
use serde_json::{json, Value};

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/spec/samples");

fn sample(name: &str) -> Value {
    let path = format!("{SAMPLES}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Where `ours` differs from `theirs` in shape: key sets of objects, JSON
/// types of values (arrays compared by their first elements when both have
/// one).
fn shape_diff(ours: &Value, theirs: &Value, path: &str, out: &mut Vec<String>) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let mut ka: Vec<&String> = a.keys().collect();
            let mut kb: Vec<&String> = b.keys().collect();
            ka.sort();
            kb.sort();
            if ka != kb {
                out.push(format!("{path}: keys {ka:?} vs upstream {kb:?}"));
            }
            for (k, v) in a {
                if let Some(w) = b.get(k) {
                    shape_diff(v, w, &format!("{path}.{k}"), out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if let (Some(x), Some(y)) = (a.first(), b.first()) {
                shape_diff(x, y, &format!("{path}[0]"), out);
            }
        }
        (Value::Null, Value::Null)
        | (Value::Bool(_), Value::Bool(_))
        | (Value::String(_), Value::String(_)) => {}
        (Value::Number(a), Value::Number(b)) => {
            if a.is_f64() != b.is_f64() {
                out.push(format!("{path}: number {a} vs upstream {b}"));
            }
        }
        _ => out.push(format!("{path}: {ours} vs upstream {theirs}")),
    }
}

fn assert_shape(c: &AdminCluster, what: &str, ours: &Value, theirs: &Value) {
    let mut diffs = Vec::new();
    shape_diff(ours, theirs, what, &mut diffs);
    if !diffs.is_empty() {
        c.fail(&format!(
            "{what} differs from upstream's shape:\n{}\nours: {ours}",
            diffs.join("\n")
        ));
    }
}

/// Check `resp` is a V1 JSON answer with `status` and `message`.
fn assert_error(
    c: &AdminCluster,
    resp: &nsq_test_support::HttpResponse,
    status: u16,
    message: &str,
) {
    if resp.status != status || resp.json()["message"] != message {
        c.fail(&format!(
            "expected {status} {message:?}, got {} {}",
            resp.status,
            resp.text()
        ));
    }
    assert_eq!(
        resp.header("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(resp.header("X-Nsq-Content-Type"), Some("nsq; version=1.0"));
}

async fn wait(c: &AdminCluster, what: &str, mut probe: impl FnMut() -> Result<(), String>) {
    if let Err(e) = wait_until(SETTLE, what, &mut probe).await {
        c.fail(&e);
    }
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_have_upstreams_shapes() {
    let c = AdminCluster::start(&[]);
    c.nsqd_topic_channel("X", "c1").await;
    let mut pub_conn = c.nsqd.connect().await;
    for i in 0..5 {
        pub_conn.publish("X", format!("m{i}").as_bytes()).await;
    }
    // A consumer with one message in flight, so clients are listed.
    let mut sub = c.nsqd.connect().await;
    sub.identify_ok(
        json!({"client_id": "sampler", "hostname": "sampler", "user_agent": "sampler/1.0"}),
    )
    .await;
    sub.sub("X", "c1").await;
    sub.rdy(1).await;
    sub.read_message().await;

    let ping = c.admin.request("GET", "/ping", &[], b"");
    assert_eq!((ping.status, ping.text().as_str()), (200, "OK"));
    assert_eq!(
        ping.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );

    let topics = c.admin.request("GET", "/api/topics", &[], b"");
    assert_eq!(
        topics.header("X-Nsq-Content-Type"),
        Some("nsq; version=1.0")
    );
    assert_eq!(topics.json(), json!({"topics": ["X"], "message": ""}));

    let topic = c.admin_json("/api/topics/X");
    assert_shape(
        &c,
        "topic",
        &topic,
        &sample("nsqadmin_api_topic_X_with_client.json"),
    );
    assert_eq!(topic["message_count"], 5);
    assert_eq!(topic["nodes"][0]["node"], c.node());
    assert_eq!(topic["channels"][0]["client_count"], 1);
    assert_eq!(topic["channels"][0]["in_flight_count"], 1);
    assert_eq!(topic["channels"][0]["depth"], 4);

    let channel = c.admin_json("/api/topics/X/c1");
    assert_shape(
        &c,
        "channel",
        &channel,
        &sample("nsqadmin_api_channel_X_c1_with_client.json"),
    );
    assert_eq!(channel["node"], "*");
    assert_eq!(channel["clients"][0]["client_id"], "sampler");
    assert_eq!(channel["clients"][0]["user_agent"], "sampler/1.0");
    assert_eq!(channel["clients"][0]["node"], c.node());

    let nodes = c.admin_json("/api/nodes");
    assert_shape(&c, "nodes", &nodes, &sample("nsqadmin_api_nodes.json"));
    assert_eq!(nodes["nodes"][0]["http_port"], c.nsqd.http_addr().port());
    assert_eq!(
        nodes["nodes"][0]["topics"],
        json!([{"topic": "X", "tombstoned": false}])
    );

    let node = c.admin_json(&format!("/api/nodes/{}", c.node()));
    assert_shape(&c, "node", &node, &sample("nsqadmin_api_node.json"));
    assert_eq!(node["total_messages"], 5);
    assert_eq!(node["total_clients"], 1);

    let counter = c.admin_json("/api/counter");
    let theirs = sample("nsqadmin_api_counter.json");
    let key = format!("X:c1:{}", c.node());
    let entry = &counter["stats"][&key];
    let their_entry = theirs["stats"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_shape(&c, "counter entry", entry, their_entry);
    assert_eq!(entry["message_count"], 5);
    assert_eq!(counter["message"], "");

    // No lookupd topic is without producers here.
    assert_eq!(
        c.admin_json("/api/topics?inactive=true"),
        json!({"topics": {}, "message": ""})
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_reach_nsqd_and_lookupd() {
    let c = AdminCluster::start(&[]);
    let post = |target: &str, body: Value| {
        let r = c
            .admin
            .request("POST", target, &[], body.to_string().as_bytes());
        if r.status != 200 || r.json()["message"] != "" {
            c.fail(&format!("POST {target} {body}: {} {}", r.status, r.text()));
        }
    };
    let delete = |target: &str, body: &[u8]| {
        let r = c.admin.request("DELETE", target, &[], body);
        if r.status != 200 || r.json()["message"] != "" {
            c.fail(&format!("DELETE {target}: {} {}", r.status, r.text()));
        }
    };

    // Create goes to lookupd (no nsqd has the topic yet).
    post("/api/topics", json!({"topic": "made", "channel": "here"}));
    let topics = c.lookupd.http_get("/topics").json();
    assert!(
        topics["topics"]
            .as_array()
            .unwrap()
            .contains(&json!("made")),
        "{topics}"
    );
    let chans = c.lookupd.http_get("/channels?topic=made").json();
    assert_eq!(chans["channels"], json!(["here"]));
    // ...and the lookup page lists it as a topic without producers.
    let inactive = c.admin_json("/api/topics?inactive=true");
    assert_eq!(inactive["topics"]["made"], json!(["here"]));

    c.nsqd_topic_channel("T", "c").await;
    post("/api/topics/T", json!({"action": "pause"}));
    assert_eq!(c.nsqd_topic("T").unwrap()["paused"], true);
    post("/api/topics/T", json!({"action": "unpause"}));
    assert_eq!(c.nsqd_topic("T").unwrap()["paused"], false);

    post("/api/topics/T/c", json!({"action": "pause"}));
    assert_eq!(c.nsqd_channel("T", "c").unwrap()["paused"], true);
    let seen = c.admin_json("/api/topics/T/c");
    assert_eq!(seen["paused"], true);
    post("/api/topics/T/c", json!({"action": "unpause"}));
    assert_eq!(c.nsqd_channel("T", "c").unwrap()["paused"], false);

    let mut conn = c.nsqd.connect().await;
    for _ in 0..3 {
        conn.publish("T", b"x").await;
    }
    assert_eq!(c.nsqd_channel("T", "c").unwrap()["depth"], 3);
    post("/api/topics/T/c", json!({"action": "empty"}));
    assert_eq!(c.nsqd_channel("T", "c").unwrap()["depth"], 0);
    post("/api/topics/T", json!({"action": "empty"}));

    // A channel for a topic nsqd has is created on nsqd too.
    post("/api/topics", json!({"topic": "T", "channel": "c2"}));
    assert!(c.nsqd_channel("T", "c2").is_some());
    delete("/api/topics/T/c2", b"");
    assert!(c.nsqd_channel("T", "c2").is_none());

    // Ephemeral names travel percent-encoded.
    post(
        "/api/topics",
        json!({"topic": "T", "channel": "e#ephemeral"}),
    );
    assert!(c.nsqd_channel("T", "e#ephemeral").is_some());
    delete("/api/topics/T/e%23ephemeral", b"");
    assert!(c.nsqd_channel("T", "e#ephemeral").is_none());

    // Tombstone: lookupd marks the producer, nsqd lets go of the topic.
    delete(&format!("/api/nodes/{}", c.node()), br#"{"topic":"T"}"#);
    assert!(c.nsqd_topic("T").is_none());

    c.nsqd_topic_channel("gone", "c").await;
    delete("/api/topics/gone", b"");
    assert!(c.nsqd_topic("gone").is_none());
    wait(&c, "lookupd forgets the deleted topic", || {
        let t = c.lookupd.http_get("/topics").json();
        if t["topics"].as_array().unwrap().contains(&json!("gone")) {
            Err(t.to_string())
        } else {
            Ok(())
        }
    })
    .await;
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_upstreams_errors() {
    let c = AdminCluster::start(&[]);
    c.nsqd_topic_channel("T", "c").await;
    let req = |m: &str, t: &str, body: &str| c.admin.request(m, t, &[], body.as_bytes());

    for (method, target, body, status, message) in [
        ("POST", "/api/topics", "{nope", 400, "INVALID_BODY"),
        (
            "POST",
            "/api/topics",
            r#"{"topic":"a b"}"#,
            400,
            "INVALID_TOPIC",
        ),
        (
            "POST",
            "/api/topics",
            r#"{"topic":""}"#,
            400,
            "INVALID_TOPIC",
        ),
        (
            "POST",
            "/api/topics",
            r#"{"topic":"ok","channel":"x y"}"#,
            400,
            "INVALID_CHANNEL",
        ),
        (
            "POST",
            "/api/topics/T",
            r#"{"action":"burn"}"#,
            400,
            "INVALID_ACTION",
        ),
        ("POST", "/api/topics/T/c", "{}", 400, "INVALID_ACTION"),
        ("POST", "/api/topics/T", "[1", 400, "INVALID_BODY"),
        ("DELETE", "/api/nodes/x:1", "nope", 400, "INVALID_BODY"),
        (
            "DELETE",
            "/api/nodes/x:1",
            r#"{"topic":"!"}"#,
            400,
            "INVALID_TOPIC",
        ),
        ("GET", "/api/topics/nope", "", 404, "TOPIC_NOT_FOUND"),
        ("GET", "/api/topics/T/nope", "", 404, "CHANNEL_NOT_FOUND"),
        (
            "POST",
            "/api/topics/nope",
            r#"{"action":"pause"}"#,
            404,
            "TOPIC_NOT_FOUND",
        ),
        (
            "GET",
            "/api/nodes/127.0.0.9:4151",
            "",
            404,
            "NODE_NOT_FOUND",
        ),
        ("GET", "/api/nope", "", 404, "NOT_FOUND"),
        ("GET", "/static/nope.js", "", 404, "NOT_FOUND"),
    ] {
        assert_error(&c, &req(method, target, body), status, message);
    }
    let r = req("PUT", "/api/topics", "");
    assert_error(&c, &r, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("Allow"), Some("GET, OPTIONS, POST"));
    // Nothing was paused or created by the bad requests.
    assert_eq!(c.nsqd_topic("T").unwrap()["paused"], false);
    assert!(c.nsqd_topic("ok").is_none());
}

/// A port with nothing listening on it.
fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nodes_are_reported() {
    let nsqd = NsqdProcess::start(&["--broadcast-address=127.0.0.1"]);
    nsqd.create_channel("T", "c");
    let dead = dead_addr();
    let admin =
        NsqadminProcess::start_with_nsqds(&[nsqd.http_addr(), dead], &["--history-interval=100ms"]);
    let r = admin.request("GET", "/api/topics", &[], b"");
    let body = r.json();
    assert_eq!(r.status, 200, "{body}");
    assert_eq!(body["topics"], json!(["T"]));
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("WARNING: ") && msg.contains(&dead.to_string()),
        "{msg}"
    );

    let topic = admin.request("GET", "/api/topics/T", &[], b"").json();
    assert_eq!(topic["channels"][0]["channel_name"], "c", "{topic}");

    // The live view names the dead node as unreachable.
    let seen = wait_until(SETTLE, "the sampler marks the dead nsqd", || {
        let live = admin.request("GET", "/api/live", &[], b"").json();
        let nodes = live["nodes"].as_array().cloned().unwrap_or_default();
        let down = nodes
            .iter()
            .find(|n| n["address"] == dead.to_string() && n["reachable"] == false);
        let up = nodes.iter().any(|n| n["reachable"] == true);
        match down {
            Some(d) if up => Ok(d.clone()),
            _ => Err(live.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| admin.fail(&e));
    assert!(!seen["error"].as_str().unwrap().is_empty());

    // With no node answering at all, the question fails as upstream's does.
    let only_dead = NsqadminProcess::start_with_nsqds(&[dead], &[]);
    let r = only_dead.request("GET", "/api/topics", &[], b"");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("UPSTREAM_ERROR: "));
    let r = only_dead.request("GET", "/api/nodes", &[], b"");
    assert_eq!(r.status, 502, "{}", r.text());
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqd_mode_creates_on_every_nsqd() {
    let a = NsqdProcess::start(&["--broadcast-address=127.0.0.1"]);
    let b = NsqdProcess::start(&["--broadcast-address=127.0.0.1"]);
    let admin = NsqadminProcess::start_with_nsqds(&[a.http_addr(), b.http_addr()], &[]);
    let r = admin.request(
        "POST",
        "/api/topics",
        &[],
        br#"{"topic":"both","channel":"ch"}"#,
    );
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (200, json!("")),
        "{}",
        r.text()
    );
    for n in [&a, &b] {
        let s = n.http_get("/stats?format=json&topic=both").json();
        assert_eq!(s["topics"][0]["channels"][0]["channel_name"], "ch", "{s}");
    }
    // The topic now sums over both nodes.
    let t = admin.request("GET", "/api/topics/both", &[], b"").json();
    assert_eq!(t["nodes"].as_array().unwrap().len(), 2, "{t}");
    let nodes = admin.request("GET", "/api/nodes", &[], b"").json();
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 2, "{nodes}");
    // No lookupd: nothing is "inactive".
    let idle = admin
        .request("GET", "/api/topics?inactive=true", &[], b"")
        .json();
    assert_eq!(idle, json!({"topics": {}, "message": ""}));
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_users_gate_actions() {
    let c = AdminCluster::start(&["--admin-user=alice", "--acl-http-header=X-User"]);
    c.nsqd_topic_channel("T", "c").await;
    let pause = br#"{"action":"pause"}"#;
    let r = c.admin.request("POST", "/api/topics/T", &[], pause);
    assert_error(&c, &r, 403, "FORBIDDEN");
    let r = c
        .admin
        .request("POST", "/api/topics/T", &[("X-User", "bob")], pause);
    assert_error(&c, &r, 403, "FORBIDDEN");
    let r = c.admin.request("DELETE", "/api/topics/T", &[], b"");
    assert_error(&c, &r, 403, "FORBIDDEN");
    assert_eq!(c.nsqd_topic("T").unwrap()["paused"], false);
    let r = c
        .admin
        .request("POST", "/api/topics/T", &[("X-User", "alice")], pause);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.nsqd_topic("T").unwrap()["paused"], true);
    // Reads are open to all; the page knows whether to offer buttons.
    assert_eq!(
        c.admin.request("GET", "/api/topics/T", &[], b"").status,
        200
    );
    let page = c.admin.request("GET", "/", &[], b"").text();
    assert!(page.contains(r#""is_admin":false"#), "{page}");
    let page = c
        .admin
        .request("GET", "/", &[("X-User", "alice")], b"")
        .text();
    assert!(page.contains(r#""is_admin":true"#), "{page}");
}

/// A one-shot HTTP endpoint that hands each request body it gets to the test.
fn notification_endpoint() -> (SocketAddr, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Ok(v) = serde_json::from_slice(&body) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    (addr, rx)
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_notified() {
    let (endpoint, rx) = notification_endpoint();
    let c = AdminCluster::start(&[&format!(
        "--notification-http-endpoint=http://{endpoint}/notify"
    )]);
    c.nsqd_topic_channel("T", "c").await;
    // One admin action, answered 200, and the notification it sent.
    let notified = |method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]| {
        let r = c.admin.request(method, target, headers, body);
        assert_eq!(r.status, 200, "{}", r.text());
        rx.recv_timeout(SETTLE)
            .unwrap_or_else(|_| c.fail(&format!("no notification of {method} {target}")))
    };
    let n = notified(
        "POST",
        "/api/topics/T/c",
        // "alice:pw"
        &[("Authorization", "Basic YWxpY2U6cHc=")],
        br#"{"action":"pause"}"#,
    );
    assert_eq!(n["action"], "pause_channel");
    assert_eq!(n["topic"], "T");
    assert_eq!(n["channel"], "c");
    assert_eq!(n["user"], "alice");
    assert_eq!(n["user_agent"], "nsq-tests");
    assert_eq!(
        n["url"],
        format!("http://{}/api/topics/T/c", c.admin.http_addr())
    );
    assert!(
        n["remote_ip"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{n}"
    );
    assert!(n["timestamp"].as_i64().unwrap() > 1_600_000_000, "{n}");
    assert!(n["via"].is_string() && n.get("node").is_none(), "{n}");

    let n = notified(
        "DELETE",
        &format!("/api/nodes/{}", c.node()),
        &[],
        br#"{"topic":"T"}"#,
    );
    assert_eq!(n["action"], "tombstone_topic_producer");
    assert_eq!(n["node"], c.node());
    assert!(n.get("channel").is_none() && n.get("user").is_none(), "{n}");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_records_rate_and_depth() {
    let c = AdminCluster::start(&["--history-interval=100ms"]);
    c.nsqd_topic_channel("H", "c").await;
    // A rate needs a sample from before the publish: under load the first
    // sample could otherwise already count all 50, and no rate would show.
    wait(&c, "a sample of the empty channel", || {
        let h = c.admin_json("/api/history/topics/H/c");
        match h["points"].as_array() {
            Some(p) if p.iter().any(|p| p["message_count"] == 0) => Ok(()),
            _ => Err(h.to_string()),
        }
    })
    .await;
    let mut conn = c.nsqd.connect().await;
    let bodies: Vec<Vec<u8>> = (0..50).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    conn.publish_multi("H", &refs).await;
    wait(&c, "the charts see 50 messages arrive", || {
        let h = c.admin_json("/api/history/topics/H/c");
        let points = h["points"].as_array().cloned().unwrap_or_default();
        let grew = points
            .iter()
            .any(|p| p["rate"].as_f64().unwrap_or(0.0) > 0.0);
        let last = points.last().cloned().unwrap_or(Value::Null);
        if grew && last["depth"] == 50 && last["message_count"] == 50 {
            Ok(())
        } else {
            Err(h.to_string())
        }
    })
    .await;
    let t = c.admin_json("/api/history/topics/H");
    assert_eq!(t["interval_ms"], 100);
    assert_eq!(t["topic"], "H");
    let live = c.admin_json("/api/live");
    let topic = live["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic_name"] == "H")
        .cloned()
        .unwrap_or_else(|| c.fail(&format!("H not in {live}")));
    // Channel c took all 50; the topic itself holds none.
    assert_eq!(
        (topic["depth"].clone(), topic["channel_depth"].clone()),
        (json!(0), json!(50))
    );
    assert_eq!(topic["message_count"], 50);
    assert_eq!(topic["channel_count"], 1);
    assert_eq!(live["lookupds"][0]["reachable"], true);
    assert!(c.admin_json("/api/history/topics/nope")["points"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_assets_live_under_the_base_path() {
    let c = AdminCluster::start(&["--base-path=/admin/"]);
    for page in [
        "/admin/",
        "/admin/topics/T/c",
        "/admin/nodes",
        "/admin/counter",
        "/admin/lookup",
    ] {
        let r = c.admin.request("GET", page, &[], b"");
        assert_eq!(r.status, 200, "{page}");
        assert_eq!(r.header("Content-Type"), Some("text/html"));
        assert!(r.text().contains(r#"src="/admin/static/app.js""#));
        assert!(r.text().contains(r#""base_path":"/admin""#));
    }
    let js = c.admin.request("GET", "/admin/static/app.js", &[], b"");
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("Content-Type"),
        Some("application/javascript; charset=utf-8")
    );
    let css = c.admin.request("GET", "/admin/static/app.css", &[], b"");
    assert_eq!(css.header("Content-Type"), Some("text/css; charset=utf-8"));
    assert_eq!(
        c.admin.request("GET", "/admin/api/topics", &[], b"").status,
        200
    );
    assert_eq!(c.admin.request("GET", "/admin/ping", &[], b"").text(), "OK");
    assert_eq!(c.admin.request("GET", "/api/topics", &[], b"").status, 404);
    assert_eq!(c.admin.request("GET", "/", &[], b"").status, 404);
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reads_and_changes_options() {
    let c = AdminCluster::start(&[]);
    c.nsqd_topic_channel("T", "c").await;
    let lookupd = c.lookupd.http_addr().to_string();
    assert_eq!(
        c.admin_json("/config/nsqlookupd_http_addresses"),
        json!([lookupd])
    );
    assert_eq!(
        c.admin_json("/config/http_client_connect_timeout"),
        json!(2_000_000_000i64)
    );
    assert_eq!(
        c.admin_json("/config/acl_http_header"),
        json!("X-Forwarded-User")
    );
    assert_eq!(c.admin_json("/config/log_level"), json!(2));

    let put = |opt: &str, body: &str| {
        c.admin
            .request("PUT", &format!("/config/{opt}"), &[], body.as_bytes())
    };
    let r = put("log_level", "debug");
    assert_eq!((r.status, r.json()), (200, json!(1)), "{}", r.text());
    assert_error(&c, &put("log_level", "loud"), 400, "INVALID_VALUE");
    assert_error(
        &c,
        &put("nsqlookupd_http_addresses", "{"),
        400,
        "INVALID_VALUE",
    );
    assert_error(
        &c,
        &put("nsqlookupd_http_addresses", "[]"),
        400,
        "INVALID_VALUE",
    );
    assert_error(&c, &put("http_address", "\"x\""), 400, "INVALID_OPTION");
    assert_error(&c, &put("log_level", ""), 413, "INVALID_VALUE");
    let r = c.admin.request("GET", "/config/nope", &[], b"");
    assert_error(&c, &r, 400, "INVALID_OPTION");

    // Point nsqadmin at an empty lookupd: the node is gone from its view;
    // and back.
    let empty = nsq_test_support::NsqlookupdProcess::start(&[]);
    let r = put(
        "nsqlookupd_http_addresses",
        &json!([empty.http_addr().to_string()]).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.admin_json("/api/nodes")["nodes"], json!([]));
    let r = put("nsqlookupd_http_addresses", &json!([lookupd]).to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        c.admin_json("/api/nodes")["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Outside --allow-config-from-cidr, /config is forbidden.
    let fenced = NsqadminProcess::start_with_lookupds(
        &[c.lookupd.http_addr()],
        &["--allow-config-from-cidr=10.0.0.0/8"],
    );
    let r = fenced.request("GET", "/config/log_level", &[], b"");
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (403, json!("FORBIDDEN"))
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_nsqd_is_shown_unreachable_in_lookupd_mode() {
    let c = AdminCluster::start(&[
        "--history-interval=100ms",
        "--http-client-request-timeout=500ms",
    ]);
    c.nsqd_topic_channel("T", "c").await;
    // A second nsqd with the same topic, then frozen: lookupd keeps
    // listing it (its connection stays open) but it answers nothing.
    let frozen = NsqdProcess::start(&[
        &format!("--lookupd-tcp-address={}", c.lookupd.tcp_addr()),
        "--broadcast-address=127.0.0.1",
    ]);
    frozen.create_topic("T");
    wait(&c, "both nsqds produce T", || {
        let t = c.admin_json("/api/topics/T");
        match t["nodes"].as_array().map(Vec::len) {
            Some(2) => Ok(()),
            _ => Err(t.to_string()),
        }
    })
    .await;
    frozen.signal(nix::sys::signal::Signal::SIGSTOP);
    let frozen_node = format!("127.0.0.1:{}", frozen.http_addr().port());

    let t = c.admin_json("/api/topics/T");
    assert_eq!(t["nodes"].as_array().unwrap().len(), 1, "{t}");
    let msg = t["message"].as_str().unwrap();
    assert!(
        msg.starts_with("WARNING: ") && msg.contains(&frozen_node),
        "{msg}"
    );
    assert_eq!(
        c.admin_json("/api/nodes")["nodes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    wait(&c, "the live view marks the frozen nsqd", || {
        let live = c.admin_json("/api/live");
        let nodes = live["nodes"].as_array().cloned().unwrap_or_default();
        let state = |addr: &str| {
            nodes
                .iter()
                .find(|n| n["address"] == addr)
                .map(|n| n["reachable"].clone())
        };
        if state(&frozen_node) == Some(json!(false)) && state(&c.node()) == Some(json!(true)) {
            Ok(())
        } else {
            Err(live.to_string())
        }
    })
    .await;
    // An action reaches the live node and reports the frozen one.
    let r = c
        .admin
        .request("POST", "/api/topics/T", &[], br#"{"action":"pause"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        msg.starts_with("WARNING: ") && msg.contains(&frozen_node),
        "{msg}"
    );
    assert_eq!(c.nsqd_topic("T").unwrap()["paused"], true);
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_actions_are_refused() {
    let c = AdminCluster::start(&[]);
    c.nsqd_topic_channel("T", "c").await;
    let admin = c.admin.http_addr();
    let pause = br#"{"action":"pause"}"#;
    let send = |method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]| {
        nsq_test_support::http_request_with_headers(admin, method, target, headers, body)
            .unwrap_or_else(|e| c.fail(&format!("{method} {target}: {e}")))
    };
    // What a hostile page can send without a CORS preflight: a form-like
    // text/plain POST, from its own origin.
    let evil = "http://evil.example";
    for (headers, status, message) in [
        (
            vec![("Content-Type", "text/plain"), ("Origin", evil)],
            403,
            "CROSS_ORIGIN_FORBIDDEN",
        ),
        (
            vec![
                ("Content-Type", "text/plain;charset=UTF-8"),
                ("Sec-Fetch-Site", "cross-site"),
            ],
            403,
            "CROSS_ORIGIN_FORBIDDEN",
        ),
        // Even without browser headers a non-JSON body is refused.
        (
            vec![("Content-Type", "text/plain")],
            415,
            "CONTENT_TYPE_NOT_JSON",
        ),
        (
            vec![("Content-Type", "application/x-www-form-urlencoded")],
            415,
            "CONTENT_TYPE_NOT_JSON",
        ),
        (vec![], 415, "CONTENT_TYPE_NOT_JSON"),
        // JSON, but from another site.
        (
            vec![("Content-Type", "application/json"), ("Origin", evil)],
            403,
            "CROSS_ORIGIN_FORBIDDEN",
        ),
        (
            vec![
                ("Content-Type", "application/json"),
                ("Sec-Fetch-Site", "same-site"),
            ],
            403,
            "CROSS_ORIGIN_FORBIDDEN",
        ),
        (
            vec![("Content-Type", "application/json"), ("Origin", "null")],
            403,
            "CROSS_ORIGIN_FORBIDDEN",
        ),
    ] {
        let r = send("POST", "/api/topics/T", &headers, pause);
        assert_error(&c, &r, status, message);
        let r = send(
            "POST",
            "/api/topics/T/c",
            &headers,
            br#"{"action":"empty"}"#,
        );
        assert_error(&c, &r, status, message);
    }
    for (method, target) in [("DELETE", "/api/topics/T/c"), ("DELETE", "/api/topics/T")] {
        let r = send(method, target, &[("Origin", evil)], b"");
        assert_error(&c, &r, 403, "CROSS_ORIGIN_FORBIDDEN");
        let r = send(method, target, &[("Sec-Fetch-Site", "cross-site")], b"");
        assert_error(&c, &r, 403, "CROSS_ORIGIN_FORBIDDEN");
    }
    assert_eq!(c.nsqd_topic("T").unwrap()["paused"], false);
    assert!(c.nsqd_channel("T", "c").is_some(), "the channel survived");

    // The dashboard's own requests: JSON, same origin.
    let own = format!("http://{admin}");
    let r = send(
        "POST",
        "/api/topics/T",
        &[
            ("Content-Type", "application/json"),
            ("Origin", &own),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        pause,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.nsqd_topic("T").unwrap()["paused"], true);
    // A tool without browser headers, sending JSON, still works.
    let r = send(
        "POST",
        "/api/topics/T",
        &[("Content-Type", "application/json; charset=utf-8")],
        br#"{"action":"unpause"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.nsqd_topic("T").unwrap()["paused"], false);
    let r = send("DELETE", "/api/topics/T/c", &[("Origin", &own)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(c.nsqd_channel("T", "c").is_none(), "the channel is gone");
}
