//! Persistence through the real binary: messages past `--mem-queue-size` go
//! to disk, a graceful shutdown (SIGTERM) writes memory, in-flight and
//! deferred messages to disk, and a restart on the same data path delivers
//! all of them; topics and channels come back from nsqd.dat.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nsq_test_support::{binary, NsqdProcess, RawConn};

const BATCH: usize = 500;

fn body(i: usize) -> Vec<u8> {
    format!("message-{i:06}-{}", "x".repeat(i % 50)).into_bytes()
}

async fn publish_range(c: &mut RawConn, topic: &str, range: std::ops::Range<usize>) {
    let mut i = range.start;
    while i < range.end {
        let end = (i + BATCH).min(range.end);
        let bodies: Vec<Vec<u8>> = (i..end).map(body).collect();
        let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
        c.publish_multi(topic, &refs).await;
        i = end;
    }
}

/// Consume and FIN `n` messages; returns their bodies.
async fn drain(c: &mut RawConn, n: usize) -> BTreeSet<Vec<u8>> {
    let mut seen = BTreeSet::new();
    c.rdy(2500).await;
    for _ in 0..n {
        let m = c.read_message().await;
        c.fin(m.id).await;
        assert!(seen.insert(m.body.to_vec()), "duplicate {:?}", m.body);
    }
    seen
}

fn terminate_cleanly(nsqd: &mut NsqdProcess) {
    let status = nsqd.terminate();
    if !status.success() {
        nsqd.fail(&format!("SIGTERM gave {status}"));
    }
}

/// Publish bodies `0..n` to `topic`, stop nsqd with SIGTERM, start it again on the same data
/// (`--mem-queue-size=100`) and drain all `n` from `channel`.
async fn publish_restart_and_drain(
    mut nsqd: NsqdProcess,
    topic: &str,
    channel: &str,
    n: usize,
) -> BTreeSet<Vec<u8>> {
    let mut p = nsqd.connect().await;
    publish_range(&mut p, topic, 0..n).await;
    drop(p);
    terminate_cleanly(&mut nsqd);

    let nsqd = nsqd.restart(&["--mem-queue-size=100"]);
    let mut c = nsqd.connect().await;
    c.sub(topic, channel).await;
    drain(&mut c, n).await
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_messages_survive_a_restart() {
    const N: usize = 50_000;
    let nsqd = NsqdProcess::start(&["--mem-queue-size=100"]);
    // One consumer creates channel `c` and goes away; `c` keeps collecting.
    let mut sub = nsqd.connect().await;
    sub.sub("spill", "c").await;
    sub.abort();
    let got = publish_restart_and_drain(nsqd, "spill", "c", N).await;
    let want: BTreeSet<Vec<u8>> = (0..N).map(body).collect();
    assert_eq!(got, want);
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_without_channels_keeps_what_it_holds_across_a_restart() {
    const N: usize = 5_000;
    let nsqd = NsqdProcess::start(&["--mem-queue-size=100"]);
    let got = publish_restart_and_drain(nsqd, "held", "first", N).await;
    assert_eq!(got, (0..N).map(body).collect());
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_and_deferred_messages_survive_and_keep_their_due_time() {
    let mut nsqd = NsqdProcess::start(&[]);
    let mut c = nsqd.connect().await;
    c.sub("keep", "c").await;
    let mut p = nsqd.connect().await;
    for i in 0..10 {
        p.publish("keep", format!("inflight-{i}").as_bytes()).await;
    }
    let published = Instant::now();
    p.publish_deferred("keep", 6_000, b"deferred").await;
    c.rdy(10).await;
    let held = c.read_messages(10).await;
    assert!(held.iter().all(|m| m.attempts == 1));
    terminate_cleanly(&mut nsqd);

    let nsqd = nsqd.restart(&[]);
    let mut c = nsqd.connect().await;
    c.sub("keep", "c").await;
    c.rdy(20).await;
    let again = c.read_messages(10).await;
    let bodies: BTreeSet<_> = again.iter().map(|m| m.body.to_vec()).collect();
    let want: BTreeSet<_> = (0..10)
        .map(|i| format!("inflight-{i}").into_bytes())
        .collect();
    assert_eq!(bodies, want);
    assert!(
        again.iter().all(|m| m.attempts == 2),
        "attempts are kept across the restart"
    );
    let late = c.read_message_within(Duration::from_secs(30)).await;
    assert_eq!(&late.body[..], b"deferred");
    let waited = published.elapsed();
    assert!(
        waited >= Duration::from_secs(6),
        "the deferred message came {waited:?} after publishing, before its 6 s"
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_come_back_from_metadata() {
    let mut nsqd = NsqdProcess::start(&[]);
    for ch in ["a", "b"] {
        let mut c = nsqd.connect().await;
        c.sub("meta", ch).await;
        c.abort();
    }
    terminate_cleanly(&mut nsqd);
    let dat = std::fs::read_to_string(nsqd.data_path().join("nsqd.dat")).unwrap();
    assert!(dat.contains("\"name\":\"meta\""), "{dat}");

    let nsqd = nsqd.restart(&[]);
    let mut p = nsqd.connect().await;
    p.publish("meta", b"to both").await;
    // Both channels existed before anyone subscribed again, so each has
    // its own copy.
    for ch in ["a", "b"] {
        let mut c = nsqd.connect().await;
        c.sub("meta", ch).await;
        c.rdy(1).await;
        assert_eq!(&c.read_message().await.body[..], b"to both");
    }
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_nsqd_on_the_same_data_path_refuses_to_start() {
    let nsqd = NsqdProcess::start(&[]);
    let out = std::process::Command::new(binary("nsqd"))
        .arg("--tcp-address=127.0.0.1:0")
        .arg("--http-address=127.0.0.1:0")
        .arg(format!("--data-path={}", nsqd.data_path().display()))
        .output()
        .expect("run a second nsqd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("possibly in use by another instance of nsqd"),
        "{stderr}"
    );
}

/// The segment files of queue `name` in `dir`, oldest first.
fn segments(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let prefix = format!("{name}.diskqueue.");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let f = p.file_name().unwrap().to_string_lossy().to_string();
            f.starts_with(&prefix) && f.ends_with(".dat")
        })
        .collect();
    files.sort();
    files
}

/// Fill channel `c` of `topic` on disk, stop nsqd, let `damage` edit the
/// segments, restart, and consume everything left. Returns the bodies
/// received, the channel's `/stats` entry and the files set aside as `.bad`.
async fn damaged(
    topic: &str,
    n: usize,
    args: &[&str],
    damage: impl FnOnce(&[std::path::PathBuf]),
) -> (BTreeSet<Vec<u8>>, serde_json::Value, Vec<String>) {
    let mut nsqd = NsqdProcess::start(args);
    let mut sub = nsqd.connect().await;
    sub.sub(topic, "c").await;
    sub.abort();
    let mut p = nsqd.connect().await;
    publish_range(&mut p, topic, 0..n).await;
    drop(p);
    terminate_cleanly(&mut nsqd);
    damage(&segments(nsqd.data_path(), &format!("{topic}:c")));

    let nsqd = nsqd.restart(args);
    let mut c = nsqd.connect().await;
    c.sub(topic, "c").await;
    c.rdy(2500).await;
    let mut got = BTreeSet::new();
    // Whatever survived arrives; then the queue is empty.
    while let Ok(nsq_protocol::Frame::Message(m)) = c.try_read_frame(Duration::from_secs(2)).await {
        c.fin(m.id).await;
        assert!(got.insert(m.body.to_vec()), "duplicate {:?}", m.body);
    }
    let stats = nsqd
        .http_get(&format!("/stats?format=json&topic={topic}"))
        .json();
    let channel = stats["topics"][0]["channels"][0].clone();
    let bad = std::fs::read_dir(nsqd.data_path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|f| f.ends_with(".bad"))
        .collect();
    (got, channel, bad)
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_skipped_counted_and_the_rest_delivered() {
    const N: usize = 1_000;
    let (got, channel, bad) = damaged("crc", N, &["--mem-queue-size=0"], |segs| {
        // Flip a byte inside the first record's payload
        // ([u32 len][u32 crc][payload]): its checksum no longer matches.
        let mut data = std::fs::read(&segs[0]).unwrap();
        data[8 + 30] ^= 0xff;
        std::fs::write(&segs[0], data).unwrap();
    })
    .await;
    assert_eq!(got.len(), N - 1, "exactly the damaged record is lost");
    let want: BTreeSet<Vec<u8>> = (1..N).map(body).collect();
    assert_eq!(got, want);
    assert_eq!(channel["disk_corrupt_records"], 1, "{channel}");
    assert_eq!(channel["depth"], 0, "{channel}");
    assert!(
        bad.is_empty(),
        "no segment set aside for one bad record: {bad:?}"
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_segment_is_set_aside_and_the_others_delivered() {
    const N: usize = 2_000;
    let args = ["--mem-queue-size=0", "--max-bytes-per-file=4096"];
    let mut damaged_name = None;
    let (got, channel, bad) = damaged("bad", N, &args, |segs| {
        assert!(segs.len() > 3, "small segments roll: {segs:?}");
        // An impossible length at the start of the second segment.
        let mut data = std::fs::read(&segs[1]).unwrap();
        data[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        std::fs::write(&segs[1], data).unwrap();
        damaged_name = Some(segs[1].file_name().unwrap().to_string_lossy().to_string());
    })
    .await;
    let want: BTreeSet<Vec<u8>> = (0..N).map(body).collect();
    assert!(got.is_subset(&want), "only genuine messages are delivered");
    let lost = N - got.len();
    assert!(
        lost > 0 && lost < 200,
        "one segment's worth lost, not more: {lost}"
    );
    assert_eq!(channel["disk_bad_segments"], 1, "{channel}");
    let kept = format!("{}.bad", damaged_name.unwrap());
    assert_eq!(
        bad,
        vec![kept],
        "the damaged segment is kept for an operator"
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_data_path_is_taken_over_with_its_backlog() {
    // What upstream nsqd 1.3.0 leaves behind: nsqd.dat and, per channel,
    // `[i32 len][ts, attempts, hex id, body]` records with a text meta.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nsqd.dat"),
        r#"{"topics":[{"name":"up","paused":false,"channels":[{"name":"c","paused":false}]}],"version":"1.3.0"}"#,
    )
    .unwrap();
    let mut data = Vec::new();
    for i in 0..100u64 {
        let mut rec = 1_700_000_000_000_000_000i64.to_be_bytes().to_vec();
        rec.extend_from_slice(&1u16.to_be_bytes());
        rec.extend_from_slice(format!("{:016x}", 0xabc00 + i).as_bytes());
        rec.extend_from_slice(format!("legacy-{i}").as_bytes());
        data.extend_from_slice(&(rec.len() as u32).to_be_bytes());
        data.extend_from_slice(&rec);
    }
    std::fs::write(dir.path().join("up:c.diskqueue.000000.dat"), &data).unwrap();
    std::fs::write(
        dir.path().join("up:c.diskqueue.meta.dat"),
        format!("100\n0,0\n0,{}\n", data.len()),
    )
    .unwrap();

    let nsqd = NsqdProcess::start_with_data_dir(dir.path(), &[]);
    let mut c = nsqd.connect().await;
    c.sub("up", "c").await;
    c.rdy(200).await;
    let mut got = BTreeSet::new();
    for _ in 0..100 {
        let m = c.read_message().await;
        assert_eq!(
            m.attempts, 2,
            "upstream's attempt is kept, plus this delivery"
        );
        c.fin(m.id).await;
        got.insert(String::from_utf8(m.body.to_vec()).unwrap());
    }
    assert_eq!(got, (0..100).map(|i| format!("legacy-{i}")).collect());
    assert!(!dir.path().join("up:c.diskqueue.meta.dat").exists());
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_data_path_without_topics_is_accepted() {
    // Exactly what upstream 1.3.0 leaves behind when it has no topics.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nsqd.dat"),
        br#"{"topics":null,"version":"1.3.0"}"#,
    )
    .unwrap();
    let mut nsqd = NsqdProcess::start_with_data_dir(dir.path(), &[]);
    let mut p = nsqd.connect().await;
    p.publish("after_upstream", b"hello").await;
    drop(p);
    terminate_cleanly(&mut nsqd);
    let saved = std::fs::read_to_string(dir.path().join("nsqd.dat")).unwrap();
    assert!(saved.contains("after_upstream"), "{saved}");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_segment_is_counted_as_lost() {
    const N: usize = 2_000;
    let args = ["--mem-queue-size=0", "--max-bytes-per-file=4096"];
    let (got, channel, _) = damaged("gone", N, &args, |segs| {
        assert!(segs.len() > 3, "small segments roll: {segs:?}");
        std::fs::remove_file(&segs[1]).unwrap();
    })
    .await;
    let want: BTreeSet<Vec<u8>> = (0..N).map(body).collect();
    assert!(got.is_subset(&want), "only genuine messages are delivered");
    let lost = (N - got.len()) as u64;
    assert!(lost > 0, "a segment's messages are gone");
    assert_eq!(
        channel["disk_corrupt_records"], lost,
        "every lost message is counted: {channel}"
    );
    assert_eq!(channel["disk_bad_segments"], 1, "{channel}");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_a_good_checksum_but_no_message_is_counted() {
    const N: usize = 1_000;
    let (got, channel, _) = damaged("undecodable", N, &["--mem-queue-size=0"], |segs| {
        // The first record ([u32 len][u32 crc][payload]) gets a payload
        // that is not a message (an unknown format byte) and a checksum
        // that matches it.
        let mut data = std::fs::read(&segs[0]).unwrap();
        let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        data[8] ^= 0x55;
        let crc = crc32(&data[8..8 + len]);
        data[4..8].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(&segs[0], data).unwrap();
    })
    .await;
    assert_eq!(got.len(), N - 1, "exactly the damaged record is lost");
    assert_eq!(channel["disk_corrupt_records"], 1, "{channel}");
}

/// CRC-32 (IEEE), as the disk queue checks records.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
