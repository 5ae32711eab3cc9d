//! `/stats` (JSON and text) against upstream's golden samples, end-to-end
//! latency percentiles, `/metrics` through a real Prometheus text-format
//! parser, and statsd datagrams received on a UDP socket.

use std::collections::BTreeMap;

use nsq_protocol::Command;
use nsq_test_support::in_process::{self, *};
use nsq_test_support::prometheus::{find, num, scrape, Value as PValue};
use nsq_test_support::samples::*;
use nsq_test_support::{http_keepalive, poll, RawConn};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

/// Upstream's sample state: topic X with five 5-byte messages, channel c1
/// created before them and `eph#ephemeral` after.
async fn sample_state(d: &Nsqd) {
    post_ok(d, "/topic/create?topic=X").await;
    post_ok(d, "/channel/create?topic=X&channel=c1").await;
    let r = http(
        d,
        "POST",
        "/mpub?topic=X",
        b"msg-1\nmsg-2\nmsg-3\nmsg-4\nmsg-5",
    )
    .await;
    assert_eq!(r.text(), "OK");
    post_ok(d, "/channel/create?topic=X&channel=eph%23ephemeral").await;
}

async fn stats_json(d: &Nsqd, query: &str) -> Value {
    let r = http(d, "GET", &format!("/stats?format=json{query}"), b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Replace each run of digits and the spaces after it with `N `, so text
/// layouts compare without their numbers.
fn mask_numbers(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            while chars.peek().is_some_and(|c| c.is_ascii_digit()) {
                chars.next();
            }
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            out.push_str("N ");
        } else {
            out.push(c);
        }
    }
    out
}

#[in_process::test]
async fn stats_json_matches_upstreams_samples() {
    let d = start(&[]).await;
    sample_state(&d).await;
    let r = http(&d, "GET", "/stats?format=json", b"").await;
    assert_like_sample_in_order(&r, "nsqd_stats");
    let v = r.json();
    assert_eq!(v["version"], "1.3.0");
    assert_eq!(v["health"], "OK");
    assert_eq!(v["start_time"], d.inner.start_time);
    assert_eq!(v["producers"], Value::Null);
    let x = &v["topics"][0];
    assert_eq!(
        (&x["topic_name"], &x["message_count"], &x["message_bytes"]),
        (&json!("X"), &json!(5), &json!(25))
    );
    assert_eq!(x["channels"][0]["channel_name"], "c1");
    assert_eq!(x["channels"][0]["depth"], 5);
    assert_eq!(x["channels"][1]["channel_name"], "eph#ephemeral");
    assert_eq!(x["channels"][1]["message_count"], 0);
    assert!(v["memory"]["heap_in_use_bytes"].as_u64().unwrap() > 0);

    let accept = [("Accept", "application/vnd.nsq; version=1.0")];
    let r = http_keepalive(d.http, "GET", "/stats?format=json", &accept, b"").await;
    assert_like_sample(&r, "nsqd_stats_v1_accept");
    let r = http(&d, "GET", "/stats?format=json&topic=X&channel=c1", b"").await;
    assert_like_sample(&r, "nsqd_stats_topic_channel");
    assert_eq!(
        r.json()["topics"][0]["channels"].as_array().unwrap().len(),
        1
    );
    let r = http(&d, "GET", "/stats?format=json&include_clients=false", b"").await;
    assert_like_sample(&r, "nsqd_stats_include_mem");
    let v = stats_json(&d, "&include_mem=false").await;
    assert!(v.get("memory").is_none());
    // Anything but false/0 is true.
    let v = stats_json(&d, "&include_mem=maybe&include_clients=2").await;
    assert!(v.get("memory").is_some());
    assert_eq!(v["topics"][0]["channels"][0]["clients"], json!([]));

    // A consumer with a message in flight and one deferred, as in
    // upstream's sample with a client.
    let mut c = RawConn::connect(d.tcp).await;
    c.identify_plain(r#"{"client_id":"sampler","hostname":"sampler","user_agent":"sampler/1.0"}"#)
        .await;
    c.sub("X", "c1").await;
    c.send(&Command::Rdy(2)).await;
    let id = c.read_message().await.id;
    c.read_message().await;
    // No refill once one goes back.
    c.send(&Command::Rdy(0)).await;
    c.send(&Command::Req {
        id,
        timeout_ms: 60_000,
    })
    .await;
    let v = poll("one deferred message", || async {
        let v = stats_json(&d, "").await;
        (v["topics"][0]["channels"][0]["deferred_count"] == 1).then_some(v)
    })
    .await;
    let want_body = sample_body("nsqd_stats_with_client.json");
    let want: Value = serde_json::from_slice(&want_body).unwrap();
    assert_eq!(shape(&v), shape(&want));
    let raw = http(&d, "GET", "/stats?format=json", b"").await.body;
    assert_eq!(key_order(&raw), key_order(&want_body));
    let c1 = &v["topics"][0]["channels"][0];
    assert_eq!(
        (&c1["in_flight_count"], &c1["requeue_count"]),
        (&json!(1), &json!(1))
    );
    let client = &c1["clients"][0];
    assert_eq!(client["client_id"], "sampler");
    assert_eq!(client["user_agent"], "sampler/1.0");
    assert_eq!(client["state"], 3);
    assert_eq!(client["ready_count"], 0);
    assert_eq!(client["in_flight_count"], 1);
    assert_eq!(client["message_count"], 2);
    assert_eq!(client["requeue_count"], 1);
    assert_eq!(client["version"], "V2");
    assert!(client["remote_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));

    // Filters: an unknown topic gives null topics (and no producers);
    // an unknown channel leaves the topic out.
    let v = stats_json(&d, "&topic=nope").await;
    assert_eq!(
        (&v["topics"], &v["producers"]),
        (&Value::Null, &Value::Null)
    );
    let v = stats_json(&d, "&channel=nope").await;
    assert_eq!(v["topics"], json!([]));
    let v = stats_json(&d, "&channel=eph%23ephemeral").await;
    assert_eq!(
        v["topics"][0]["channels"][0]["channel_name"],
        "eph#ephemeral"
    );
    http_error(&d, "GET", "/stats?format=json&x=%", 400, "INVALID_REQUEST").await;
}

#[in_process::test]
async fn producers_are_tcp_publishers_with_one_pub_count() {
    let d = start(&[]).await;
    let mut p = RawConn::connect(d.tcp).await;
    p.identify_plain(r#"{"client_id":"pub","hostname":"pubhost","user_agent":"p/1"}"#)
        .await;
    p.publish("A", b"1").await;
    p.publish("A", b"2").await;
    p.publish("B", b"3").await;
    // HTTP publishers are not listed.
    http(&d, "POST", "/pub?topic=A", b"h").await;
    let v = stats_json(&d, "").await;
    let producers = v["producers"].as_array().unwrap();
    assert_eq!(producers.len(), 1);
    assert_eq!(producers[0]["client_id"], "pub");
    assert_eq!(
        producers[0]["pub_counts"],
        json!([{"topic": "A", "count": 2}])
    );
    // With a topic filter the count is that topic's.
    let v = stats_json(&d, "&topic=B").await;
    assert_eq!(
        v["producers"][0]["pub_counts"],
        json!([{"topic": "B", "count": 1}])
    );
    let v = stats_json(&d, "&include_clients=false").await;
    assert_eq!(v["producers"], Value::Null);
    let text = http(&d, "GET", "/stats", b"").await.text();
    assert!(
        text.contains("\nProducers:\n   [V2 pubhost:") && text.contains("topics: A=2 connected: "),
        "{text}"
    );
}

#[in_process::test]
async fn stats_text_lays_out_like_upstream() {
    let d = start(&[]).await;
    let r = http(&d, "GET", "/stats", b"").await;
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
    assert!(r.text().contains("\nTopics: None\n"), "{}", r.text());

    sample_state(&d).await;
    let got = http(&d, "GET", "/stats?format=text", b"").await.text();
    let want = String::from_utf8(sample_body("nsqd_stats.txt")).unwrap() + "\n";
    let got_lines: Vec<&str> = got.lines().collect();
    let want_lines: Vec<&str> = want.lines().collect();
    assert!(
        got_lines[0].starts_with("nsqd v1.3.0 (nsq-rs "),
        "{}",
        got_lines[0]
    );
    assert!(got_lines[1].starts_with("start_time 20") && got_lines[1].ends_with('Z'));
    assert!(got_lines[2].starts_with("uptime "));
    assert_eq!(
        mask_numbers(&got_lines[3..].join("\n")),
        mask_numbers(&want_lines[3..].join("\n"))
    );
    assert!(got.ends_with("Producers: None\n"));

    // Paused marks and client lines.
    post_ok(&d, "/topic/pause?topic=X").await;
    post_ok(&d, "/channel/pause?topic=X&channel=c1").await;
    let mut c = RawConn::connect(d.tcp).await;
    c.identify_plain(r#"{"client_id":"c","hostname":"h","user_agent":"ua"}"#)
        .await;
    c.sub("X", "c1").await;
    let text = http(&d, "GET", "/stats", b"").await.text();
    assert!(text.contains("\n*P [X              ] depth: "), "{text}");
    assert!(
        text.contains("\n   *P [c1                       ] depth: "),
        "{text}"
    );
    assert!(text.contains("\n        [V2 h:"), "{text}");
    assert!(
        text.contains("] state: 3 inflt: 0    rdy: 0    fin: 0 "),
        "{text}"
    );
    let text = http(&d, "GET", "/stats?include_mem=false", b"")
        .await
        .text();
    assert!(!text.contains("Memory:"));
}

/// Consume and FIN `n` messages on `channel`.
async fn consume(d: &Nsqd, topic: &str, channel: &str, n: usize) {
    let mut c = RawConn::connect(d.tcp).await;
    c.identify_plain("{}").await;
    c.sub(topic, channel).await;
    c.send(&Command::Rdy(n as u64)).await;
    for _ in 0..n {
        let id = c.read_message().await.id;
        c.send(&Command::Fin(id)).await;
    }
    c.send(&Command::Nop).await;
}

#[in_process::test]
async fn e2e_latency_percentiles_per_channel_and_merged_per_topic() {
    let d = start(&["--e2e-processing-latency-percentile=0.5,0.99"]).await;
    http(&d, "POST", "/topic/create?topic=T", b"").await;
    for c in ["a", "b"] {
        http(
            &d,
            "POST",
            &format!("/channel/create?topic=T&channel={c}"),
            b"",
        )
        .await;
    }
    // A topic without channels reports no percentiles, as upstream.
    http(&d, "POST", "/topic/create?topic=Empty", b"").await;
    let body: Vec<u8> = (0..20)
        .flat_map(|i| format!("m{i}\n").into_bytes())
        .collect();
    http(&d, "POST", "/mpub?topic=T", &body).await;
    consume(&d, "T", "a", 20).await;
    consume(&d, "T", "b", 10).await;
    let v = poll("30 latencies recorded", || async {
        let v = stats_json(&d, "&topic=T").await;
        (v["topics"][0]["e2e_processing_latency"]["count"] == 30).then_some(v)
    })
    .await;
    let t = &v["topics"][0];
    for (e, count) in [
        (&t["e2e_processing_latency"], 30),
        (&t["channels"][0]["e2e_processing_latency"], 20),
        (&t["channels"][1]["e2e_processing_latency"], 10),
    ] {
        assert_eq!(e["count"], count, "{e}");
        let p = e["percentiles"].as_array().unwrap();
        // Highest first, as upstream sorts the flag's values.
        assert_eq!(
            (&p[0]["quantile"], &p[1]["quantile"]),
            (&json!(0.99), &json!(0.5))
        );
        let (p99, p50) = (
            p[0]["value"].as_f64().unwrap(),
            p[1]["value"].as_f64().unwrap(),
        );
        assert!(p99 >= p50 && p50 > 0.0, "{e}");
        assert!(p99 < 60e9, "{e}");
    }
    let v = stats_json(&d, "&topic=Empty").await;
    assert_eq!(
        v["topics"][0]["e2e_processing_latency"],
        json!({"count": 0, "percentiles": null})
    );
    let text = http(&d, "GET", "/stats?topic=T", b"").await.text();
    let line = text
        .lines()
        .find(|l| l.contains("[T "))
        .unwrap()
        .to_string();
    let e2e = line.split("e2e%: ").nth(1).unwrap();
    assert_eq!(e2e.split(", ").count(), 2, "{line}");
    assert!(e2e.ends_with('s'), "{line}");
    let r = http(&d, "GET", "/config/e2e_processing_latency_percentiles", b"").await;
    assert_eq!(r.json(), json!([0.99, 0.5]));
}

#[in_process::test]
async fn metrics_in_prometheus_text_format() {
    let d = start(&[
        "--e2e-processing-latency-percentile=0.99",
        "--e2e-processing-latency-percentile=0.5",
    ])
    .await;
    sample_state(&d).await;
    consume(&d, "X", "c1", 2).await;
    let mut c = RawConn::connect(d.tcp).await;
    c.identify_plain("{}").await;
    c.sub("X", "c1").await;
    c.send(&Command::Rdy(1)).await;
    c.read_message().await;
    let s = poll("one in flight", || async {
        let r = http(&d, "GET", "/metrics", b"").await;
        assert_eq!(
            r.header("Content-Type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let s = scrape(&r.text());
        let c1 = [("topic", "X"), ("channel", "c1")];
        // The first consumer's disconnect is handled asynchronously.
        let settled = num(find(&s, "nsq_channel_in_flight", &c1)) == 1.0
            && num(find(&s, "nsq_clients", &[])) == 1.0;
        settled.then_some(s)
    })
    .await;
    let x = [("topic", "X")];
    let c1 = [("topic", "X"), ("channel", "c1")];
    assert_eq!(num(find(&s, "nsq_topic_messages_total", &x)), 5.0);
    assert_eq!(num(find(&s, "nsq_topic_message_bytes_total", &x)), 25.0);
    assert_eq!(num(find(&s, "nsq_topic_depth", &x)), 0.0);
    assert_eq!(num(find(&s, "nsq_topic_backend_depth", &x)), 0.0);
    assert_eq!(num(find(&s, "nsq_topic_channels", &x)), 2.0);
    assert_eq!(num(find(&s, "nsq_channel_depth", &c1)), 2.0);
    assert_eq!(num(find(&s, "nsq_channel_messages_total", &c1)), 5.0);
    assert_eq!(num(find(&s, "nsq_channel_requeued_total", &c1)), 0.0);
    assert_eq!(num(find(&s, "nsq_channel_timed_out_total", &c1)), 0.0);
    assert_eq!(num(find(&s, "nsq_channel_deferred", &c1)), 0.0);
    assert_eq!(num(find(&s, "nsq_channel_clients", &c1)), 1.0);
    assert_eq!(num(find(&s, "nsq_channel_paused", &c1)), 0.0);
    let eph = [("topic", "X"), ("channel", "eph#ephemeral")];
    assert_eq!(num(find(&s, "nsq_channel_depth", &eph)), 0.0);
    assert_eq!(num(find(&s, "nsq_healthy", &[])), 1.0);
    assert_eq!(num(find(&s, "nsq_info", &[("version", "1.3.0")])), 1.0);
    assert_eq!(num(find(&s, "nsq_topics", &[])), 1.0);
    assert_eq!(num(find(&s, "nsq_clients", &[])), 1.0);
    assert!(num(find(&s, "process_resident_memory_bytes", &[])) > 0.0);
    assert!(num(find(&s, "process_open_fds", &[])) > 0.0);
    assert!(num(find(&s, "process_cpu_seconds_total", &[])) >= 0.0);
    assert!(num(find(&s, "process_start_time_seconds", &[])) > 1e9);
    for (name, labels) in [
        ("nsq_channel_e2e_processing_latency_seconds", &c1[..]),
        ("nsq_topic_e2e_processing_latency_seconds", &x[..]),
    ] {
        let Some(PValue::Summary(qs)) = find(&s, name, labels) else {
            panic!("{name} is not a summary");
        };
        let qs: BTreeMap<String, f64> = qs
            .iter()
            .map(|q| (q.quantile.to_string(), q.count))
            .collect();
        assert_eq!(qs.keys().collect::<Vec<_>>(), ["0.5", "0.99"]);
        assert!(qs.values().all(|v| *v > 0.0 && *v < 60.0), "{qs:?}");
        assert_eq!(num(find(&s, &format!("{name}_count"), labels)), 2.0);
        assert!(num(find(&s, &format!("{name}_sum"), labels)) > 0.0);
    }
    assert!(s.docs.contains_key("nsq_channel_in_flight"));
}

#[in_process::test]
async fn metrics_without_latency_percentiles_has_no_summaries() {
    let d = start(&[]).await;
    sample_state(&d).await;
    let text = http(&d, "GET", "/metrics", b"").await.text();
    let s = scrape(&text);
    assert!(!text.contains("e2e_processing_latency"));
    assert_eq!(
        num(find(&s, "nsq_channel_depth", &[("channel", "c1")])),
        5.0
    );
}

/// Datagrams from nsqd's statsd pushes, until `done` says enough.
/// A UDP socket on a free port standing in for statsd, and nsqd's flag naming it.
/// A UDP socket standing for statsd, and an nsqd started with `args` pushing to it every 50 ms.
async fn statsd_nsqd(args: &[&str]) -> (UdpSocket, Nsqd) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let flag = format!("--statsd-address={}", sock.local_addr().unwrap());
    let d = start(&[&[flag.as_str(), "--statsd-interval=50ms"][..], args].concat()).await;
    (sock, d)
}

async fn statsd_packets(sock: &UdpSocket, mut done: impl FnMut(&[String]) -> bool) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !done(&lines) {
        let n = tokio::time::timeout(STEP, sock.recv(&mut buf))
            .await
            .expect("a statsd datagram")
            .unwrap();
        let p = buf[..n].to_vec();
        lines.extend(
            String::from_utf8(p.clone())
                .unwrap()
                .lines()
                .map(String::from),
        );
        packets.push(p);
    }
    packets
}

fn sum_counter(packets: &[Vec<u8>], key: &str) -> i64 {
    packets
        .iter()
        .flat_map(|p| {
            String::from_utf8_lossy(p)
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_suffix("|c"))
                .map(String::from)
        })
        .map(|v| v.trim_start_matches(':').parse::<i64>().unwrap())
        .sum()
}

#[in_process::test]
async fn statsd_pushes_upstreams_metrics_in_bounded_datagrams() {
    let (sock, d) = statsd_nsqd(&[
        "--statsd-udp-packet-size=200",
        "--broadcast-address=127.0.0.1",
        "--e2e-processing-latency-percentile=0.99",
    ])
    .await;
    sample_state(&d).await;
    consume(&d, "X", "c1", 1).await;
    let prefix = format!("nsq.127_0_0_1_{}.", d.http.port());
    let channel_key = format!("{prefix}topic.X.channel.c1.message_count:");
    let packets = statsd_packets(&sock, |lines| {
        let joined = lines.join("\n");
        // Two pushes after the publish: the counter deltas add up.
        joined.contains(&format!("{prefix}mem.gc_runs:"))
            && joined.contains(&format!(
                "{prefix}topic.X.channel.c1.e2e_processing_latency_99:"
            ))
            && joined.matches(&channel_key).count() >= 2
    })
    .await;
    for p in &packets {
        assert!(p.len() <= 200, "datagram of {} bytes", p.len());
        assert!(p.ends_with(b"\n"), "line split across datagrams: {p:?}");
        for line in String::from_utf8_lossy(p).lines() {
            let (key, rest) = line.rsplit_once(':').expect("key:value|type");
            assert!(key.starts_with(&prefix), "{line}");
            let (value, kind) = rest.split_once('|').unwrap();
            value.parse::<i64>().unwrap();
            assert!(kind == "c" || kind == "g", "{line}");
        }
    }
    assert_eq!(
        sum_counter(&packets, &format!("{prefix}topic.X.message_count")),
        5
    );
    assert_eq!(
        sum_counter(&packets, &format!("{prefix}topic.X.message_bytes")),
        25
    );
    assert_eq!(
        sum_counter(
            &packets,
            &format!("{prefix}topic.X.channel.c1.message_count")
        ),
        5
    );
    let all: String = packets.iter().map(|p| String::from_utf8_lossy(p)).collect();
    for key in [
        "topic.X.depth:0|g",
        "topic.X.backend_depth:0|g",
        "topic.X.channel.c1.depth:4|g",
        "topic.X.channel.c1.in_flight_count:0|g",
        "topic.X.channel.c1.deferred_count:0|g",
        "topic.X.channel.c1.clients:",
        "topic.X.channel.c1.requeue_count:0|c",
        "topic.X.channel.c1.timeout_count:0|c",
        "topic.X.channel.eph#ephemeral.depth:0|g",
        "topic.X.e2e_processing_latency_99:",
        "mem.heap_in_use_bytes:",
    ] {
        assert!(all.contains(&format!("{prefix}{key}")), "missing {key}");
    }
}

#[in_process::test]
async fn statsd_can_skip_ephemeral_names_and_memory() {
    let (sock, d) = statsd_nsqd(&[
        "--statsd-exclude-ephemeral",
        "--statsd-mem-stats=false",
        "--statsd-prefix=custom",
    ])
    .await;
    http(&d, "POST", "/topic/create?topic=T%23ephemeral", b"").await;
    sample_state(&d).await;
    // Two pushes that include X: the first is then wholly received.
    let packets = statsd_packets(&sock, |lines| {
        lines
            .iter()
            .filter(|l| l.starts_with("custom.topic.X.depth:"))
            .count()
            >= 2
    })
    .await;
    let all: String = packets.iter().map(|p| String::from_utf8_lossy(p)).collect();
    assert!(!all.contains("ephemeral"), "{all}");
    assert!(!all.contains("mem."), "{all}");
    assert!(all.lines().all(|l| l.starts_with("custom.")));
    assert!(all.contains("custom.topic.X.channel.c1.depth:5|g"), "{all}");
}

#[in_process::test]
async fn backend_depth_counts_what_spilled_to_disk() {
    let (sock, d) = statsd_nsqd(&["--mem-queue-size=2", "--statsd-prefix="]).await;
    http(&d, "POST", "/topic/create?topic=S", b"").await;
    http(&d, "POST", "/channel/create?topic=S&channel=c", b"").await;
    http(&d, "POST", "/mpub?topic=S", b"1\n2\n3\n4\n5").await;
    let c = poll("five queued, three on disk", || async {
        let v = stats_json(&d, "&topic=S").await;
        let c = v["topics"][0]["channels"][0].clone();
        (c["depth"] == 5 && c["backend_depth"] == 3).then_some(c)
    })
    .await;
    assert_eq!(c["message_count"], 5);
    let s = scrape(&http(&d, "GET", "/metrics", b"").await.text());
    let sc = [("topic", "S"), ("channel", "c")];
    assert_eq!(num(find(&s, "nsq_channel_backend_depth", &sc)), 3.0);
    assert_eq!(num(find(&s, "nsq_channel_depth", &sc)), 5.0);
    // An empty prefix sends bare keys.
    statsd_packets(&sock, |lines| {
        lines
            .iter()
            .any(|l| l == "topic.S.channel.c.backend_depth:3|g")
    })
    .await;
}
