//! Memory bounds under hostile input, asserted from the real nsqd's
//! `/proc/PID/status`: a deflate bomb, and large or lying MPUBs, must not
//! leave nsqd holding memory in proportion to what peers send.

use std::time::Duration;

use flate2::write::DeflateEncoder;
use flate2::Compression;
use nsq_test_support::{topic, wait_until, NsqdProcess, RawConn};
use std::io::Write;

const MIB: u64 = 1024 * 1024;

/// A `/proc/PID/status` figure in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    kib * 1024
}

/// Messages published to `topic_name` so far, from `/stats`.
fn message_count(nsqd: &NsqdProcess, topic_name: &str) -> Result<u64, String> {
    let stats = nsqd.http_get(&format!("/stats?format=json&topic={topic_name}"));
    let json = stats.json();
    json["topics"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["topic_name"] == topic_name))
        .and_then(|t| t["message_count"].as_u64())
        .ok_or_else(|| format!("no topic {topic_name} in {json}"))
}

/// Raw DEFLATE of one PUB followed by `nops` NOP commands, sync-flushed so
/// the server can decode all of it.
fn bomb(topic_name: &str, nops: usize) -> Vec<u8> {
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
    let mut cmd = bytes::BytesMut::new();
    nsq_protocol::Command::Pub {
        topic: topic(topic_name),
        body: bytes::Bytes::from_static(b"x"),
    }
    .encode(&mut cmd);
    enc.write_all(&cmd).unwrap();
    let block = b"NOP\n".repeat(64 * 1024);
    for _ in 0..nops / (64 * 1024) {
        enc.write_all(&block).unwrap();
    }
    enc.flush().unwrap();
    enc.get_ref().clone()
}

/// Sixteen connections each send ~32 KB of raw DEFLATE that inflates to
/// 32 MiB of `NOP\n`. Inflating a chunk in one go holds 32 MiB per busy
/// connection (87 MiB peak before the fix, and the busy ones starved the
/// rest, /stats included);
/// inflating as the command decoder asks keeps nsqd near its idle size.
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_bomb_is_inflated_incrementally() {
    const CONNS: u64 = 16;
    let nsqd = NsqdProcess::start(&[]);
    let wire = bomb("bomb", 8 * 1024 * 1024);
    assert!(wire.len() < 64 * 1024, "bomb is {} bytes", wire.len());
    let mut conns: Vec<RawConn> = Vec::new();
    for _ in 0..CONNS {
        let mut c = nsqd.connect().await;
        let reply = c
            .identify_ok(serde_json::json!({"deflate": true, "deflate_level": 1}))
            .await;
        assert_eq!(reply["deflate"], true);
        conns.push(c);
    }
    for c in &mut conns {
        c.write_raw(&wire).await;
    }
    // Each connection's PUB comes first in its stream: once all are
    // counted, every bomb has reached nsqd's decompressor.
    wait_until(
        Duration::from_secs(30),
        "every PUB is counted",
        || match message_count(&nsqd, "bomb")? {
            n if n >= CONNS => Ok(()),
            n => Err(format!("{n} messages")),
        },
    )
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    let peak = status_bytes(nsqd.pid(), "VmHWM");
    let rss = status_bytes(nsqd.pid(), "VmRSS");
    eprintln!(
        "deflate bomb: VmHWM {} MiB, VmRSS {} MiB",
        peak / MIB,
        rss / MIB
    );
    assert!(
        peak < 64 * MIB,
        "nsqd peaked at {} MiB under {CONNS} deflate bombs",
        peak / MIB
    );
    drop(conns);
}

/// Forty producers each send one valid MPUB of five ~1 MiB messages (the
/// 5 MiB `--max-body-size`) and stay connected. The messages go to disk
/// (`--mem-queue-size=0`), so what stays resident is what the connections
/// keep: each read buffer must shrink back once its MPUB is done.
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_mpubs_do_not_stay_resident_in_idle_connections() {
    const PRODUCERS: usize = 40;
    let nsqd = NsqdProcess::start(&["--mem-queue-size=0"]);
    let body = vec![b'm'; 1024 * 1024 - 8];
    let mut wire = bytes::BytesMut::new();
    nsq_protocol::Command::Mpub {
        topic: topic("big"),
        bodies: (0..5).map(|_| bytes::Bytes::from(body.clone())).collect(),
    }
    .encode(&mut wire);
    let mut conns: Vec<RawConn> = Vec::new();
    for _ in 0..PRODUCERS {
        let mut c = nsqd.connect().await;
        c.write_raw(&wire).await;
        c.expect_ok().await;
        conns.push(c);
    }
    let rss = status_bytes(nsqd.pid(), "RssAnon");
    eprintln!(
        "{PRODUCERS} idle producers after a 5 MiB MPUB each: RssAnon {} MiB",
        rss / MIB
    );
    assert!(
        rss < 100 * MIB,
        "nsqd keeps {} MiB for {PRODUCERS} idle producers",
        rss / MIB
    );
    drop(conns);
}
