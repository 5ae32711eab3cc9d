//! Heartbeats against the real nsqd: a client that ignores them is disconnected, one that
//! answers them stays connected.

use std::time::{Duration, Instant};

use nsq_protocol::Frame;
use nsq_test_support::{describe, NsqdProcess};
use serde_json::json;

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ignoring_heartbeats_is_disconnected() {
    let nsqd = NsqdProcess::start(&[]);
    let mut c = nsqd.connect().await;
    let start = Instant::now();
    let reply = c.identify_ok(json!({"heartbeat_interval": 1000})).await;
    assert_eq!(reply["version"], "1.3.0");

    // Send nothing more. The read deadline is two heartbeat intervals (2 s) after the
    // last command; 10 s leaves room for a loaded machine.
    let frames = c.expect_closed_within(Duration::from_secs(10)).await;
    let elapsed = start.elapsed();
    let heartbeats = frames
        .iter()
        .filter(|f| matches!(f, Frame::Response(d) if d == nsq_protocol::HEARTBEAT))
        .count();
    let others: Vec<String> = frames
        .iter()
        .filter(|f| !matches!(f, Frame::Response(d) if d == nsq_protocol::HEARTBEAT))
        .map(describe)
        .collect();
    assert!(
        heartbeats >= 1,
        "closed after {elapsed:?} without a heartbeat first"
    );
    assert!(others.is_empty(), "unexpected frames: {others:?}");
    // Not closed for some other reason straight away: at least one interval passed.
    assert!(
        elapsed >= Duration::from_secs(1),
        "closed after {elapsed:?}"
    );
}

/// go-nsq's producer heartbeat test: with a 1 s interval, answering heartbeats with NOP keeps
/// the connection alive well past two intervals, and publishing still works afterwards.
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_answering_heartbeats_stays_connected() {
    let nsqd = NsqdProcess::start(&[]);
    let mut c = nsqd.connect().await;
    c.identify_ok(json!({"heartbeat_interval": 1000})).await;
    let start = Instant::now();
    for _ in 0..4 {
        c.expect_response(nsq_protocol::HEARTBEAT).await;
        c.send(&nsq_protocol::Command::Nop).await;
    }
    assert!(start.elapsed() >= Duration::from_secs(2));
    c.publish("after_heartbeats", b"still here").await;
}
