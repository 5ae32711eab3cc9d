//! The bench tools run as real processes against a real nsqd on port 0: exact counts over many connections, every channel of a topic drained, latency percentiles.
//!
//! Figures are never asserted (timings depend on the machine); what must
//! hold is what the benchmark's numbers rest on: the writer publishes
//! exactly `--count` messages, and the reader finishes every message of
//! every channel it was given, whatever the spread of connections.

use std::process::Command;

use nsq_test_support::NsqdProcess;
use serde_json::Value;

/// Run a bench tool to its end and parse the JSON line it prints.
async fn run(exe: &'static str, args: Vec<String>) -> Value {
    let out = tokio::task::spawn_blocking(move || Command::new(exe).args(&args).output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{exe} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{exe} printed no JSON line ({e}): {stderr}"))
}

fn channel_depths(nsqd: &NsqdProcess, topic: &str) -> Vec<(String, u64, u64)> {
    let stats = nsqd
        .http_get(&format!("/stats?format=json&topic={topic}"))
        .json();
    stats["topics"][0]["channels"]
        .as_array()
        .expect("the topic's channels")
        .iter()
        .map(|c| {
            (
                c["channel_name"].as_str().unwrap().to_owned(),
                c["depth"].as_u64().unwrap(),
                c["in_flight_count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_reader_cover_every_channel_and_connection() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = format!("--nsqd-tcp-address={}", nsqd.tcp_addr());
    for ch in ["c0", "c1", "c2"] {
        nsqd.create_channel("fan", ch);
    }

    // 5,000 is no multiple of the batch: the last MPUB is short, and the
    // count exact over connections claiming batches concurrently.
    let w = run(
        env!("CARGO_BIN_EXE_bench_writer"),
        vec![
            addr.clone(),
            "--topic=fan".into(),
            "--count=5000".into(),
            "--runfor=0".into(),
            "--connections=4".into(),
            "--batch-size=7".into(),
            "--size=64".into(),
        ],
    )
    .await;
    assert_eq!(
        (w["msgs"].as_u64(), w["connections"].as_u64()),
        (Some(5000), Some(4)),
        "{w}"
    );

    // Five connections over three channels: every channel gets at least one.
    let r = run(
        env!("CARGO_BIN_EXE_bench_reader"),
        vec![
            addr.clone(),
            "--topic=fan".into(),
            "--channel=c".into(),
            "--channels=3".into(),
            "--connections=5".into(),
            "--count=15000".into(),
            "--runfor=60s".into(),
            "--size=64".into(),
        ],
    )
    .await;
    assert_eq!(r["msgs"].as_u64(), Some(15000), "{r}");
    assert_eq!(r["count_reached"], true, "{r}");
    assert_eq!(r["connections"].as_u64(), Some(5), "{r}");
    // The FINs of the last read are written before the tool exits, but
    // nsqd may not have processed them yet: nothing may be left queued.
    for (name, depth, _) in channel_depths(&nsqd, "fan") {
        assert_eq!(depth, 0, "channel {name} still holds messages");
    }

    let l = run(
        env!("CARGO_BIN_EXE_bench_latency"),
        vec![
            addr,
            "--count=50".into(),
            "--runfor=0".into(),
            "--publishers=2".into(),
        ],
    )
    .await;
    assert_eq!(l["msgs"].as_u64(), Some(100), "{l}");
    assert!(l["p50_us"].as_f64().unwrap() > 0.0, "{l}");
    let latency_topic = nsqd
        .http_get("/stats?format=json&topic=bench_latency")
        .json();
    assert_eq!(
        latency_topic["topics"][0]["message_count"], 100,
        "{latency_topic}"
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_fail_before_any_traffic() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = format!("--nsqd-tcp-address={}", nsqd.tcp_addr());
    for (exe, args) in [
        (env!("CARGO_BIN_EXE_bench_writer"), vec!["--runfor=0"]),
        (
            env!("CARGO_BIN_EXE_bench_reader"),
            vec!["--channels=2", "--channel=x#ephemeral"],
        ),
    ] {
        let mut all = vec![addr.clone()];
        all.extend(args.iter().map(|a| a.to_string()));
        let out = tokio::task::spawn_blocking(move || Command::new(exe).args(&all).output())
            .await
            .unwrap()
            .unwrap();
        assert!(!out.status.success(), "{exe} {args:?} should fail");
        assert!(out.stdout.is_empty(), "{exe} printed a report");
    }
    let stats = nsqd.http_get("/stats?format=json").json();
    assert_eq!(stats["topics"].as_array().map(Vec::len), Some(0), "{stats}");
}
