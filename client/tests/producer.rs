//! End-to-end tests of `nsq::Producer` against a real nsqd on port 0.

use std::time::Duration;

use nsq::{Config, Error, Producer};
use nsq_protocol::frame::FrameError;
use nsq_test_support::NsqdProcess;

/// The message count nsqd reports for `topic` (depth + in flight + done).
fn message_count(nsqd: &NsqdProcess, topic: &str) -> u64 {
    nsqd.topic_stats(topic)["message_count"]
        .as_u64()
        .unwrap_or(0)
}

/// The remote addresses of the publishing clients nsqd lists.
fn producer_addresses(nsqd: &NsqdProcess) -> Vec<String> {
    let stats = nsqd.http_get("/stats?format=json").json();
    stats["producers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["remote_address"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[nsq_test_support::test]
async fn publish_mpub_dpub_and_pipelining() {
    let nsqd = NsqdProcess::start(&[]);
    let producer = std::sync::Arc::new(Producer::new(
        nsqd.tcp_addr().to_string(),
        Config::default(),
    ));
    producer.ping().await.unwrap();
    producer.publish("p_topic", "one").await.unwrap();
    producer
        .multi_publish("p_topic", ["two", "three", "four"])
        .await
        .unwrap();
    producer
        .deferred_publish("p_topic", Duration::from_millis(10), "five")
        .await
        .unwrap();
    // Many publishes in flight at once on the one connection.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let p = producer.clone();
        tasks.push(tokio::spawn(async move {
            p.publish("p_topic", format!("m{i}")).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(message_count(&nsqd, "p_topic"), 205);
    producer.stop().await;
    assert!(matches!(
        producer.publish("p_topic", "late").await,
        Err(Error::Stopped)
    ));
}

#[nsq_test_support::test]
async fn error_frame_is_reported_and_next_publish_reconnects() {
    let nsqd = NsqdProcess::start(&[]);
    let producer = Producer::new(nsqd.tcp_addr().to_string(), Config::default());
    producer.publish("e_topic", "before").await.unwrap();
    // An empty body is a fatal E_BAD_MESSAGE: nsqd answers and closes.
    match producer.publish("e_topic", "").await {
        Err(Error::Server { command, text }) => {
            assert_eq!(command, "PUB");
            assert!(text.starts_with("E_BAD_MESSAGE"), "{text}");
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    // The old connection is closing; the publish after it reconnects
    // (one attempt may still meet the dying connection).
    let mut ok = false;
    for _ in 0..3 {
        match producer.publish("e_topic", "after").await {
            Ok(()) => {
                ok = true;
                break;
            }
            Err(Error::Closed) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(ok);
    assert_eq!(message_count(&nsqd, "e_topic"), 2);
    assert!(matches!(
        producer.publish("bad topic!", "x").await,
        Err(Error::BadTopic(_))
    ));
}

#[nsq_test_support::test]
async fn http_port_is_a_clear_error() {
    let nsqd = NsqdProcess::start(&[]);
    let producer = Producer::new(nsqd.http_addr().to_string(), Config::default());
    match producer.publish("t", "x").await {
        Err(Error::Frame(FrameError::UnexpectedHttp)) => {}
        other => panic!("expected UnexpectedHttp, got {other:?}"),
    }
    let nowhere = Producer::new("127.0.0.1:1", Config::default());
    assert!(matches!(
        nowhere.publish("t", "x").await,
        Err(Error::Connect { .. })
    ));
}

#[nsq_test_support::test]
async fn identify_errors_are_reported_and_heartbeats_are_answered() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = nsqd.tcp_addr().to_string();
    let bad = Producer::new(
        addr.clone(),
        Config {
            heartbeat_interval: Duration::from_millis(100),
            ..Config::default()
        },
    );
    match bad.publish("hb", "x").await {
        Err(Error::Server { command, text }) => {
            assert_eq!(command, "IDENTIFY");
            assert_eq!(
                text,
                "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid"
            );
        }
        other => panic!("expected an IDENTIFY error, got {other:?}"),
    }

    let producer = Producer::new(
        addr,
        Config {
            heartbeat_interval: Duration::from_secs(1),
            ..Config::default()
        },
    );
    producer.publish("hb", "first").await.unwrap();
    let before = producer_addresses(&nsqd);
    assert_eq!(before.len(), 1, "{before:?}");
    // Idle past two heartbeat intervals: nsqd closes a client that does
    // not answer its heartbeats, so the same connection still being there
    // (not a reconnect) shows the NOPs went out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    producer.publish("hb", "second").await.unwrap();
    assert_eq!(producer_addresses(&nsqd), before);
    assert_eq!(message_count(&nsqd, "hb"), 2);
}
